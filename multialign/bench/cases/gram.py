"""Benchmark cases for the Gram family: ops.gram, ops.gram_matvec, ops.mmd2 against their peers.

Peers: torch eager (the in-place GEMM expansion -- the fastest eager route -- and torch.cdist),
scikit-learn's rbf_kernel, KeOps LazyTensor reductions and GeomLoss SamplesLoss("gaussian") on the
CPU, dense torch for the reductions. All float32, gamma = 1 / D, x and y standard normal.
"""
from __future__ import annotations

import torch

from ..harness import Case


def _data(p, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(p.get("B", 1), p["N"], p["D"], generator=g).squeeze(0)
    y = torch.randn(p.get("B", 1), p.get("M", p["N"]), p["D"], generator=g).squeeze(0)
    if grad:
        x.requires_grad_()
        y.requires_grad_()
    return x, y, 1.0 / p["D"]


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


# ------------------------------------------------------------------------------------------ gram forward
def _ma_gram(backend):
    def make(p):
        from multialign import ops

        x, y, gamma = _data(p)
        return lambda: ops.gram(x, y, kernel="rbf", gamma=gamma, backend=backend)
    return make


def _torch_inplace(p):
    x, y, gamma = _data(p)
    return lambda: _rbf_inplace(x, y, gamma)


def _torch_cdist(p):
    x, y, gamma = _data(p)
    return lambda: torch.cdist(x, y).square_().mul_(-gamma).exp_()


def _sklearn(p):
    from sklearn.metrics.pairwise import rbf_kernel

    x, y, gamma = _data(p)
    xn, yn = x.numpy(), y.numpy()
    return lambda: rbf_kernel(xn, yn, gamma=gamma)


def _gram_floor(p):
    n = p.get("B", 1) * p["N"] * p.get("M", p["N"])
    return {"flops": 2 * n * p["D"], "exps": n, "bytes": 4 * n}


# ------------------------------------------------------------------------------------------ gram fwd + bwd
def _ma_gram_fb(backend):
    def make(p):
        from multialign import ops

        x, y, gamma = _data(p, grad=True)
        W = torch.randn(p["N"], p.get("M", p["N"]), generator=torch.Generator().manual_seed(9))

        def run():
            x.grad = y.grad = None
            (ops.gram(x, y, gamma=gamma, backend=backend) * W).sum().backward()
        return run
    return make


def _torch_fb(which):
    def make(p):
        x, y, gamma = _data(p, grad=True)
        W = torch.randn(p["N"], p.get("M", p["N"]), generator=torch.Generator().manual_seed(9))
        f = (lambda: torch.exp(-gamma * torch.cdist(x, y) ** 2)) if which == "cdist" else (lambda: _rbf_autograd(x, y, gamma))

        def run():
            x.grad = y.grad = None
            (f() * W).sum().backward()
        return run
    return make


def _gram_fb_floor(p):
    n = p["N"] * p.get("M", p["N"])
    return {"flops": 3 * 2 * n * p["D"], "exps": n}


# ------------------------------------------------------------------------------------------ mmd2
def _ma_mmd(backend, backward=False):
    def make(p):
        from multialign import ops

        x, y, gamma = _data(p, grad=backward)
        if not backward:
            return lambda: ops.mmd2(x, y, gamma=gamma, backend=backend)

        def run():
            x.grad = y.grad = None
            ops.mmd2(x, y, gamma=gamma, backend=backend).backward()
        return run
    return make


def _torch_mmd_dense(p):
    x, y, gamma = _data(p)

    def run():
        return (_rbf_inplace(x, x, gamma).mean() + _rbf_inplace(y, y, gamma).mean()
                - 2 * _rbf_inplace(x, y, gamma).mean())
    return run


def _torch_mmd_dense_fb(p):
    x, y, gamma = _data(p, grad=True)

    def run():
        x.grad = y.grad = None
        (_rbf_autograd(x, x, gamma).mean() + _rbf_autograd(y, y, gamma).mean()
         - 2 * _rbf_autograd(x, y, gamma).mean()).backward()
    return run


def _keops_mmd(backward=False):
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
        return run
    return make


def _geomloss_mmd(backend):
    def make(p):
        from geomloss import SamplesLoss

        x, y, gamma = _data(p)
        blur = (1.0 / (2.0 * gamma)) ** 0.5  # GeomLoss "gaussian": exp(-|x-y|^2 / (2 blur^2)); returns MMD^2 / 2
        loss = SamplesLoss("gaussian", blur=blur, backend=backend)
        return lambda: 2 * loss(x, y)
    return make


def _mmd_floor(p):
    n = p["N"] * p.get("M", p["N"])
    return {"flops": 3 * 2 * n * p["D"], "exps": 3 * n}


def _mmd_fb_floor(p):
    n = p["N"] * p.get("M", p["N"])
    return {"flops": 3 * 3 * 2 * n * p["D"], "exps": 3 * n}


# ------------------------------------------------------------------------------------------ matvec
def _matvec_data(p):
    x, y, gamma = _data(p)
    v = torch.randn(p.get("M", p["N"]), p.get("C", 1), generator=torch.Generator().manual_seed(3))
    return x, y, v, gamma


def _ma_matvec(backend):
    def make(p):
        from multialign import ops

        x, y, v, gamma = _matvec_data(p)
        return lambda: ops.gram_matvec(x, y, v, gamma=gamma, backend=backend)
    return make


def _torch_matvec_dense(p):
    x, y, v, gamma = _matvec_data(p)
    return lambda: _rbf_inplace(x, y, gamma) @ v


def _keops_matvec(p):
    from pykeops.torch import LazyTensor

    x, y, v, gamma = _matvec_data(p)
    X, Y = LazyTensor(x[:, None, :]), LazyTensor(y[None, :, :])
    K = (-gamma * ((X - Y) ** 2).sum(-1)).exp()
    return lambda: K @ v


def _matvec_floor(p):
    n = p["N"] * p.get("M", p["N"])
    return {"flops": 2 * n * (p["D"] + p.get("C", 1)), "exps": n}


N1 = {"N": 4096, "D": 64}
N2 = {"N": 16384, "D": 64}
N3 = {"N": 131072, "D": 64}

CASES = [
    Case("gram", "4096x64", N1, {
        "multialign-numba": _ma_gram("numba"),
        "torch-inplace-gemm": _torch_inplace,
        "torch-cdist": _torch_cdist,
        "sklearn-rbf_kernel": _sklearn,
    }, _gram_floor),
    Case("gram", "8x1024x64", {"B": 8, "N": 1024, "D": 64}, {
        "multialign-numba": _ma_gram("numba"),
        "torch-inplace-gemm": _torch_inplace,
        "torch-cdist": _torch_cdist,
    }, _gram_floor),
    Case("gram_fwd_bwd", "4096x64", N1, {
        "multialign-numba": _ma_gram_fb("numba"),
        "torch-autograd-gemm": _torch_fb("gemm"),
        "torch-autograd-cdist": _torch_fb("cdist"),
    }, _gram_fb_floor, note="(L = sum K * W, grads to x and y)"),
    Case("gram_matvec", "16384x64,C=1", N2, {
        "multialign-numba": _ma_matvec("numba"),
        "torch-dense": _torch_matvec_dense,
        "keops-lazytensor": _keops_matvec,
    }, _matvec_floor),
    Case("gram_matvec", "16384x64,C=16", {**N2, "C": 16}, {
        "multialign-numba": _ma_matvec("numba"),
        "torch-dense": _torch_matvec_dense,
        "keops-lazytensor": _keops_matvec,
    }, _matvec_floor),
    Case("mmd2", "4096x64", N1, {
        "multialign-numba": _ma_mmd("numba"),
        "torch-dense-inplace": _torch_mmd_dense,
        "keops-lazytensor": _keops_mmd(),
        "geomloss-tensorized": _geomloss_mmd("tensorized"),
        "geomloss-online": _geomloss_mmd("online"),
    }, _mmd_floor),
    Case("mmd2", "16384x64", N2, {
        "multialign-numba": _ma_mmd("numba"),
        "torch-dense-inplace": _torch_mmd_dense,
        "keops-lazytensor": _keops_mmd(),
        "geomloss-online": _geomloss_mmd("online"),
    }, _mmd_floor),
    Case("mmd2_fwd_bwd", "16384x64", N2, {
        "multialign-numba": _ma_mmd("numba", backward=True),
        "torch-dense-autograd": _torch_mmd_dense_fb,
        "keops-lazytensor": _keops_mmd(backward=True),
    }, _mmd_fb_floor),
    Case("mmd2", "131072x64", N3, {
        "multialign-numba": _ma_mmd("numba"),
    }, _mmd_floor, note="(dense torch would need 3 x 64 GiB)"),
]
