"""Benchmark cases for the Gram family: ops.gram, ops.gram_matvec, ops.mmd2 against their peers.

Peers: torch eager (the in-place GEMM expansion -- the fastest eager route -- and torch.cdist),
scikit-learn's rbf_kernel, KeOps LazyTensor reductions and GeomLoss SamplesLoss("gaussian") (tensorized
and online), dense torch for the reductions. All float32, gamma = 1 / D, x and y standard normal.
On a CUDA run the torch, KeOps and GeomLoss providers move to the GPU and multialign runs Triton.

The float64 references are computed in row blocks (``_BLOCK`` rows of K at a time) with autograd
where gradients are compared, so they fit in memory at N = 16384.
"""
from __future__ import annotations

import torch

from ..harness import Case, Unavailable, runs_on

_BLOCK = 2048


def _data(p, seed=0, grad=False, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(p.get("B", 1), p["N"], p["D"], generator=g).squeeze(0)
    y = torch.randn(p.get("B", 1), p.get("M", p["N"]), p["D"], generator=g).squeeze(0)
    x, y = x.to(dtype=dtype, device=p.get("device", "cpu")), y.to(dtype=dtype, device=p.get("device", "cpu"))
    if grad:
        x.requires_grad_()
        y.requires_grad_()
    return x, y, 1.0 / p["D"]


def _weights(p):
    W = torch.randn(p["N"], p.get("M", p["N"]), generator=torch.Generator().manual_seed(9))
    return W.to(p.get("device", "cpu"))


def _ma_backend(p):
    return "triton" if p.get("device", "cpu") == "cuda" else "numba"


def _rbf_inplace(x, y, gamma):
    """The fastest eager torch Gram: one addmm, then in-place clamp, scale and exp."""
    nx = (x * x).sum(-1, keepdim=True)
    ny = (y * y).sum(-1).unsqueeze(-2)
    if x.dim() == 2:
        K = torch.addmm(nx, x, y.transpose(-1, -2), alpha=-2.0)
    else:
        K = torch.baddbmm(nx, x, y.transpose(-1, -2), alpha=-2.0)
    return K.add_(ny).clamp_(min=0).mul_(-gamma).exp_()


def _rbf_autograd(x, y, gamma):
    d2 = (x * x).sum(-1, keepdim=True) + (y * y).sum(-1).unsqueeze(-2) - 2 * x @ y.transpose(-1, -2)
    return torch.exp(-gamma * d2.clamp(min=0))


def _rbf_f64(x, y, gamma):
    """Reference Gram block (float64 inputs: the GEMM expansion's cancellation is ~1e-14 here, far below float32)."""
    return torch.exp(-gamma * torch.cdist(x, y).square())


def _needs_cuda(p):
    if p.get("device") != "cuda":
        raise Unavailable("the Triton backend is timed on CUDA only (the interpreter is not benchmarked)")


# ------------------------------------------------------------------------------------------ gram forward
def _ma_gram(backend=None):
    def make(p):
        from multialign import ops

        be = backend or _ma_backend(p)
        x, y, gamma = _data(p)
        return lambda: ops.gram(x, y, kernel="rbf", gamma=gamma, backend=be)
    return make


@runs_on("cpu", "cuda")
def _torch_inplace(p):
    x, y, gamma = _data(p)
    return lambda: _rbf_inplace(x, y, gamma)


@runs_on("cpu", "cuda")
def _torch_cdist(p):
    x, y, gamma = _data(p)
    return lambda: torch.cdist(x, y).square_().mul_(-gamma).exp_()


def _sklearn(p):
    from sklearn.metrics.pairwise import rbf_kernel

    x, y, gamma = _data(p)
    if x.dim() != 2:
        raise Unavailable("rbf_kernel takes one (N, D) pair, no batch")
    xn, yn = x.numpy(), y.numpy()
    return lambda: rbf_kernel(xn, yn, gamma=gamma)


def _gram_ref(p):
    x, y, gamma = _data(dict(p, device="cpu"), dtype=torch.float64)
    return _rbf_f64(x, y, gamma)


def _gram_floor(p):
    n = p.get("B", 1) * p["N"] * p.get("M", p["N"])
    return {"flops": 2 * n * p["D"], "exps": n, "bytes": 4 * n}


# ------------------------------------------------------------------------------------------ gram fwd + bwd
def _ma_gram_fb(backend=None):
    def make(p):
        from multialign import ops

        be = backend or _ma_backend(p)
        x, y, gamma = _data(p, grad=True)
        W = _weights(p)

        def run():
            x.grad = y.grad = None
            (ops.gram(x, y, gamma=gamma, backend=be) * W).sum().backward()
            return x.grad, y.grad
        return run
    return make


def _torch_fb(which):
    @runs_on("cpu", "cuda")
    def make(p):
        x, y, gamma = _data(p, grad=True)
        W = _weights(p)
        f = (lambda: torch.exp(-gamma * torch.cdist(x, y) ** 2)) if which == "cdist" else (lambda: _rbf_autograd(x, y, gamma))

        def run():
            x.grad = y.grad = None
            (f() * W).sum().backward()
            return x.grad, y.grad
        return run
    return make


def _gram_fb_ref(p):
    p = dict(p, device="cpu")
    x, y, gamma = _data(p, grad=True, dtype=torch.float64)
    W = _weights(p).double()
    (_gram_ref_t(x, y, gamma) * W).sum().backward()
    return x.grad, y.grad


def _gram_ref_t(x, y, gamma):
    d2 = ((x * x).sum(-1, keepdim=True) + (y * y).sum(-1)[None, :] - 2 * x @ y.T).clamp(min=0)
    return torch.exp(-gamma * d2)


def _gram_fb_floor(p):
    n = p["N"] * p.get("M", p["N"])
    return {"flops": 3 * 2 * n * p["D"], "exps": n}


# ------------------------------------------------------------------------------------------ mmd2
def _ma_mmd(backend=None, backward=False):
    def make(p):
        from multialign import ops

        be = backend or _ma_backend(p)
        x, y, gamma = _data(p, grad=backward)
        if not backward:
            return lambda: ops.mmd2(x, y, gamma=gamma, backend=be)

        def run():
            x.grad = y.grad = None
            ops.mmd2(x, y, gamma=gamma, backend=be).backward()
            return x.grad, y.grad
        return run
    return make


@runs_on("cpu", "cuda")
def _torch_mmd_dense(p):
    x, y, gamma = _data(p)

    def run():
        return (_rbf_inplace(x, x, gamma).mean() + _rbf_inplace(y, y, gamma).mean()
                - 2 * _rbf_inplace(x, y, gamma).mean())
    return run


@runs_on("cpu", "cuda")
def _torch_mmd_dense_fb(p):
    x, y, gamma = _data(p, grad=True)

    def run():
        x.grad = y.grad = None
        (_rbf_autograd(x, x, gamma).mean() + _rbf_autograd(y, y, gamma).mean()
         - 2 * _rbf_autograd(x, y, gamma).mean()).backward()
        return x.grad, y.grad
    return run


def _keops_mmd(backward=False):
    @runs_on("cpu", "cuda")
    def make(p):
        from pykeops.torch import LazyTensor

        x, y, gamma = _data(p, grad=backward)

        def term(a, b):
            A, Bt = LazyTensor(a[:, None, :]), LazyTensor(b[None, :, :])
            return (-gamma * ((A - Bt) ** 2).sum(-1)).exp().sum(1).sum() / (a.shape[0] * b.shape[0])

        def val():
            return term(x, x) + term(y, y) - 2 * term(x, y)
        if not backward:
            return val

        def run():
            x.grad = y.grad = None
            val().backward()
            return x.grad, y.grad
        return run
    return make


def _geomloss_mmd(backend):
    @runs_on("cpu", "cuda")
    def make(p):
        from geomloss import SamplesLoss

        x, y, gamma = _data(p)
        blur = (1.0 / (2.0 * gamma)) ** 0.5  # GeomLoss "gaussian": exp(-|x-y|^2 / (2 blur^2)); returns MMD^2 / 2
        loss = SamplesLoss("gaussian", blur=blur, backend=backend)
        return lambda: 2 * loss(x, y)
    return make


def _mmd_ref(grad):
    """MMD^2 in float64, K built _BLOCK rows at a time (and each block's graph freed by its own backward)."""
    def ref(p):
        x, y, gamma = _data(dict(p, device="cpu"), grad=grad, dtype=torch.float64)
        n, m = x.shape[0], y.shape[0]
        total = torch.zeros((), dtype=torch.float64)
        for a, b, w in ((x, x, 1.0 / (n * n)), (y, y, 1.0 / (m * m)), (x, y, -2.0 / (n * m))):
            for i in range(0, a.shape[0], _BLOCK):
                s = _rbf_f64(a[i:i + _BLOCK], b, gamma).sum() * w
                if grad:
                    s.backward()
                total += s.detach()
        return (x.grad, y.grad) if grad else total
    return ref


def _mmd_floor(p):
    n = p["N"] * p.get("M", p["N"])
    return {"flops": 3 * 2 * n * p["D"], "exps": 3 * n}


def _mmd_fb_floor(p):
    n = p["N"] * p.get("M", p["N"])
    return {"flops": 3 * 3 * 2 * n * p["D"], "exps": 3 * n}


# ------------------------------------------------------------------------------------------ matvec
def _matvec_data(p, dtype=torch.float32):
    x, y, gamma = _data(p, dtype=dtype)
    v = torch.randn(p.get("M", p["N"]), p.get("C", 1), generator=torch.Generator().manual_seed(3))
    return x, y, v.to(dtype=dtype, device=p.get("device", "cpu")), gamma


def _ma_matvec(backend=None):
    def make(p):
        from multialign import ops

        be = backend or _ma_backend(p)
        x, y, v, gamma = _matvec_data(p)
        return lambda: ops.gram_matvec(x, y, v, gamma=gamma, backend=be)
    return make


@runs_on("cpu", "cuda")
def _torch_matvec_dense(p):
    x, y, v, gamma = _matvec_data(p)
    return lambda: _rbf_inplace(x, y, gamma) @ v


@runs_on("cpu", "cuda")
def _keops_matvec(p):
    from pykeops.torch import LazyTensor

    x, y, v, gamma = _matvec_data(p)
    X, Y = LazyTensor(x[:, None, :]), LazyTensor(y[None, :, :])
    K = (-gamma * ((X - Y) ** 2).sum(-1)).exp()
    return lambda: K @ v


def _matvec_ref(p):
    x, y, v, gamma = _matvec_data(dict(p, device="cpu"), dtype=torch.float64)
    return torch.cat([_rbf_f64(x[i:i + _BLOCK], y, gamma) @ v for i in range(0, x.shape[0], _BLOCK)])


def _matvec_floor(p):
    n = p["N"] * p.get("M", p["N"])
    return {"flops": 2 * n * (p["D"] + p.get("C", 1)), "exps": n}


# ------------------------------------------------------------------------------------------ the cases
def _ours(make_for):
    """multialign on Numba (CPU runs) and on Triton (CUDA runs)."""
    def triton(p):
        _needs_cuda(p)
        return make_for("triton")(p)
    return {"multialign-numba": make_for("numba"), "multialign-triton": runs_on("cuda")(triton)}


def _gram_case(size, params, tier, peers):
    return Case("gram", size, params, {**_ours(_ma_gram), **peers}, _gram_floor, reference=_gram_ref, tier=tier)


_GRAM_PEERS = {"torch-inplace-gemm": _torch_inplace, "torch-cdist": _torch_cdist, "sklearn-rbf_kernel": _sklearn}
_MMD_PEERS = {"torch-dense-inplace": _torch_mmd_dense, "keops-lazytensor": _keops_mmd(),
              "geomloss-tensorized": _geomloss_mmd("tensorized"), "geomloss-online": _geomloss_mmd("online")}
_MATVEC_PEERS = {"torch-dense": _torch_matvec_dense, "keops-lazytensor": _keops_matvec}
_FB_PEERS = {"torch-autograd-gemm": _torch_fb("gemm"), "torch-autograd-cdist": _torch_fb("cdist")}


def _mmd_case(n, tier, peers, note=""):
    p = {"N": n, "D": 64}
    ref = _mmd_ref(False) if n <= 16384 else None
    return Case("mmd2", f"{n}x64", p, {**_ours(lambda be: _ma_mmd(be)), **peers}, _mmd_floor, note=note,
                reference=ref, tier=tier)


CASES = [
    _gram_case("1024x64", {"N": 1024, "D": 64}, "small", _GRAM_PEERS),
    _gram_case("4096x64", {"N": 4096, "D": 64}, "medium", _GRAM_PEERS),
    _gram_case("8192x64", {"N": 8192, "D": 64}, "large", _GRAM_PEERS),
    _gram_case("8x1024x64", {"B": 8, "N": 1024, "D": 64}, "medium",
               {k: v for k, v in _GRAM_PEERS.items() if k != "sklearn-rbf_kernel"}),
    Case("gram_fwd_bwd", "1024x64", {"N": 1024, "D": 64}, {**_ours(_ma_gram_fb), **_FB_PEERS}, _gram_fb_floor,
         note="(L = sum K * W, grads to x and y)", reference=_gram_fb_ref, tier="small"),
    Case("gram_fwd_bwd", "4096x64", {"N": 4096, "D": 64}, {**_ours(_ma_gram_fb), **_FB_PEERS}, _gram_fb_floor,
         note="(L = sum K * W, grads to x and y)", reference=_gram_fb_ref, tier="medium"),
    Case("gram_matvec", "4096x64,C=1", {"N": 4096, "D": 64}, {**_ours(_ma_matvec), **_MATVEC_PEERS}, _matvec_floor,
         reference=_matvec_ref, tier="small"),
    Case("gram_matvec", "16384x64,C=1", {"N": 16384, "D": 64}, {**_ours(_ma_matvec), **_MATVEC_PEERS},
         _matvec_floor, reference=_matvec_ref, tier="medium"),
    Case("gram_matvec", "16384x64,C=16", {"N": 16384, "D": 64, "C": 16}, {**_ours(_ma_matvec), **_MATVEC_PEERS},
         _matvec_floor, reference=_matvec_ref, tier="medium"),
    _mmd_case(1024, "small", _MMD_PEERS),
    _mmd_case(4096, "medium", _MMD_PEERS),
    _mmd_case(16384, "medium", {k: v for k, v in _MMD_PEERS.items() if k != "geomloss-tensorized"},
              note="(GeomLoss tensorized: 5 GB, 10 s -- left out)"),
    _mmd_case(131072, "large", {}, note="(dense torch would need 3 x 64 GiB; the online peers ~10 min: left out; "
                                        "no float64 reference at this size)"),
    Case("mmd2_fwd_bwd", "1024x64", {"N": 1024, "D": 64},
         {**_ours(lambda be: _ma_mmd(be, backward=True)), "torch-dense-autograd": _torch_mmd_dense_fb,
          "keops-lazytensor": _keops_mmd(backward=True)}, _mmd_fb_floor, reference=_mmd_ref(True), tier="small"),
    Case("mmd2_fwd_bwd", "4096x64", {"N": 4096, "D": 64},
         {**_ours(lambda be: _ma_mmd(be, backward=True)), "torch-dense-autograd": _torch_mmd_dense_fb,
          "keops-lazytensor": _keops_mmd(backward=True)}, _mmd_fb_floor, reference=_mmd_ref(True), tier="medium"),
    Case("mmd2_fwd_bwd", "16384x64", {"N": 16384, "D": 64},
         {**_ours(lambda be: _ma_mmd(be, backward=True)), "torch-dense-autograd": _torch_mmd_dense_fb,
          "keops-lazytensor": _keops_mmd(backward=True)}, _mmd_fb_floor, reference=_mmd_ref(True), tier="medium"),
]
