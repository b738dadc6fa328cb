"""asv suite for the Gram family: time, peak memory and accuracy (track_*) per backend and size."""
import torch

from multialign import ops

from ._util import points

BACKENDS = ["numba", "torch"]


class Gram:
    params = (BACKENDS, [1024, 4096], ["float32", "float64"])
    param_names = ["backend", "n", "dtype"]
    timeout = 600

    def setup(self, backend, n, dtype):
        self.x = points(n, 64, dtype, seed=0)
        self.y = points(n, 64, dtype, seed=1)
        ops.gram(self.x[:8], self.y[:8], backend=backend)  # JIT compilation outside the timing

    def time_gram_rbf(self, backend, n, dtype):
        ops.gram(self.x, self.y, backend=backend)

    def peakmem_gram_rbf(self, backend, n, dtype):
        ops.gram(self.x, self.y, backend=backend)

    def track_gram_rbf_max_abs_err(self, backend, n, dtype):
        """Max |K - K_float64 reference| on a 512-point slice: a faster-but-wrong change shows here."""
        x, y = self.x[:512], self.y[:512]
        got = ops.gram(x, y, backend=backend).double()
        want = ops.gram(x.double(), y.double(), backend="torch")
        return float((got - want).abs().max())

    track_gram_rbf_max_abs_err.unit = "abs error"


class GramFwdBwd:
    params = (BACKENDS, [1024, 4096])
    param_names = ["backend", "n"]
    timeout = 600

    def setup(self, backend, n):
        self.x = points(n, 64, seed=0, requires_grad=True)
        self.y = points(n, 64, seed=1, requires_grad=True)
        self.w = points(n, n, seed=2)
        self.time_gram_fwd_bwd(backend, n)

    def time_gram_fwd_bwd(self, backend, n):
        self.x.grad = self.y.grad = None
        (ops.gram(self.x, self.y, backend=backend) * self.w).sum().backward()

    def peakmem_gram_fwd_bwd(self, backend, n):
        self.time_gram_fwd_bwd(backend, n)


class Reductions:
    """The fused reductions: memory must stay O(N), never N x N."""
    params = (BACKENDS, [4096, 16384])
    param_names = ["backend", "n"]
    timeout = 900

    def setup(self, backend, n):
        if backend == "torch" and n > 4096:
            raise NotImplementedError  # the dense reference needs N x N memory; asv skips it
        self.x = points(n, 64, seed=0)
        self.y = points(n, 64, seed=1)
        self.v = points(n, 1, seed=2)
        ops.mmd2(self.x[:8], self.y[:8], backend=backend)
        ops.gram_matvec(self.x[:8], self.y[:8], self.v[:8], backend=backend)

    def time_mmd2(self, backend, n):
        ops.mmd2(self.x, self.y, backend=backend)

    def peakmem_mmd2(self, backend, n):
        ops.mmd2(self.x, self.y, backend=backend)

    def time_gram_matvec(self, backend, n):
        ops.gram_matvec(self.x, self.y, self.v, backend=backend)

    def peakmem_gram_matvec(self, backend, n):
        ops.gram_matvec(self.x, self.y, self.v, backend=backend)

    def track_mmd2_rel_err(self, backend, n):
        x, y = self.x[:1024], self.y[:1024]
        got = float(ops.mmd2(x, y, backend=backend))
        want = float(ops.mmd2(x.double(), y.double(), backend="torch"))
        return abs(got - want) / abs(want)

    track_mmd2_rel_err.unit = "rel error"
