"""Benchmark cases for the stress family: ops.stress (Kruskal stress-1) against its peers.

The problem of the issue: N points in D1 = 512 dimensions (x, the originals) and their random linear
projection to D2 = 64 dimensions (y = x W, the embedding), float32. ``stress_fwd_bwd`` is the training
step of such an embedding: the gradient with respect to y (x is data).

Peers: torch eager written as a user would (two ``torch.cdist``, the sums over all ordered pairs --
the ratio is the same -- and autograd), the same with the x distances computed once outside the timed
call (a stronger per-call figure bought with an N x N matrix kept for the whole run), and SciPy's
``pdist`` (forward only, float64 internally). At
N = 65536 only multialign runs (torch eager would need tens of GB: N x N float32 is 16 GiB per matrix);
the figure there is the peak memory above the inputs.

The float64 references are computed in row blocks (``_BLOCK`` rows of the distance matrices at a time),
the gradient from the closed form of METHODS.md C.3.2, so they fit in memory at N = 16384.
Floors: the Gram products over the upper triangle, 2 (N^2 / 2)(D1 + D2) flops, plus the gradient
products ``w y_J`` and ``w^T y_I`` (2 N^2 D2 flops) for the backward.
"""
from __future__ import annotations

import math

import torch

from ..harness import Case, Unavailable, runs_on

_BLOCK = 1024
D1, D2 = 512, 64


def _data(p, dtype=torch.float32, grad=False):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(p["N"], p["D1"], generator=g, dtype=torch.float64)
    W = torch.randn(p["D1"], p["D2"], generator=g, dtype=torch.float64) / math.sqrt(p["D2"])
    y = x @ W
    dev = p.get("device", "cpu")
    x, y = x.to(dtype=dtype, device=dev), y.to(dtype=dtype, device=dev)
    if grad:
        y.requires_grad_()
    return x, y


def _ma_backend(p):
    return "triton" if p.get("device", "cpu") == "cuda" else "numba"


def _needs_cuda(p):
    if p.get("device") != "cuda":
        raise Unavailable("the Triton backend is timed on CUDA only (the interpreter is not benchmarked)")


# ------------------------------------------------------------------------------------------ providers
def _ma(backward, backend=None):
    def make(p):
        from multialign import ops

        be = backend or _ma_backend(p)
        x, y = _data(p, grad=backward)
        if not backward:
            return lambda: ops.stress(x, y, backend=be)

        def run():
            y.grad = None
            ops.stress(x, y, backend=be).backward()
            return y.grad
        return run
    return make


def _torch_stress(x, y):
    """What a torch user writes: full distance matrices, sums over all ordered pairs (same ratio)."""
    dl = torch.cdist(x, x)
    dd = torch.cdist(y, y)
    return torch.sqrt(((dl - dd) ** 2).sum() / (dl * dl).sum())


def _torch(backward):
    @runs_on("cpu", "cuda")
    def make(p):
        x, y = _data(p, grad=backward)
        if not backward:
            return lambda: _torch_stress(x, y)

        def run():
            y.grad = None
            _torch_stress(x, y).backward()
            return y.grad
        return run
    return make


@runs_on("cpu", "cuda")
def _torch_fixed_x(p):
    """torch eager with the x distances computed once (untimed) and kept: N x N memory for the whole run."""
    x, y = _data(p, grad=True)
    dl = torch.cdist(x, x)
    T = (dl * dl).sum()

    def run():
        y.grad = None
        torch.sqrt(((dl - torch.cdist(y, y)) ** 2).sum() / T).backward()
        return y.grad
    return run


def _scipy(p):
    import numpy as np
    from scipy.spatial.distance import pdist

    x, y = _data(p)
    xn, yn = x.numpy(), y.numpy()

    def run():
        dl, dd = pdist(xn), pdist(yn)
        e = dl - dd
        return np.sqrt((e @ e) / (dl @ dl))
    return run


# ------------------------------------------------------------------------------------------ references
def _blocks(p):
    x, y = _data(dict(p, device="cpu"), dtype=torch.float64)
    for i in range(0, x.shape[0], _BLOCK):
        dl = torch.cdist(x[i:i + _BLOCK], x)
        dd = torch.cdist(y[i:i + _BLOCK], y)
        yield i, x, y, dl, dd


def _ref_value(p):
    R = T = 0.0
    for _, _, _, dl, dd in _blocks(p):
        R += float(((dl - dd) ** 2).sum())
        T += float((dl * dl).sum())
    return torch.tensor(math.sqrt(R / T), dtype=torch.float64)


def _ref_grad(p):
    """dStress/dy = (1 / (S T)) sum_q (1 - delta/d)(y_p - y_q), T and R over unordered pairs (C.3.2)."""
    S = float(_ref_value(p))
    T = 0.0
    G = None
    for i, x, y, dl, dd in _blocks(p):
        T += float((dl * dl).sum()) / 2
        w = 1 - torch.where(dd > 0, dl / torch.where(dd > 0, dd, torch.ones_like(dd)), torch.zeros_like(dd))
        n = dl.shape[0]
        w[torch.arange(n), torch.arange(i, i + n)] = 0
        blk = w.sum(1, keepdim=True) * y[i:i + n] - w @ y
        G = blk if G is None else torch.cat([G, blk])
    return G / (S * T)


def _floor(p):
    return {"flops": p["N"] * p["N"] * (p["D1"] + p["D2"])}


def _floor_fb(p):
    return {"flops": p["N"] * p["N"] * (p["D1"] + p["D2"]) + 2 * p["N"] * p["N"] * p["D2"]}


# ------------------------------------------------------------------------------------------ the cases
def _ours(backward):
    def triton(p):
        _needs_cuda(p)
        return _ma(backward, "triton")(p)
    return {"multialign-numba": _ma(backward, "numba"), "multialign-triton": runs_on("cuda")(triton)}


def _case(n, tier, peers=True, reference=True, note=""):
    p = {"N": n, "D1": D1, "D2": D2}
    size = f"{n}x{D1}x{D2}"
    fwd_peers = {"torch-eager-cdist": _torch(False), "scipy-pdist": _scipy} if peers else {}
    fb_peers = {"torch-eager-cdist-autograd": _torch(True),
                "torch-eager-autograd-precomputed-x": _torch_fixed_x} if peers else {}
    return [Case("stress", size, p, {**_ours(False), **fwd_peers}, _floor, note=note,
                 reference=_ref_value if reference else None, tier=tier, tuned_malloc=peers),
            Case("stress_fwd_bwd", size, p, {**_ours(True), **fb_peers}, _floor_fb,
                 note=("(gradient w.r.t. y) " + note).strip(), reference=_ref_grad if reference else None,
                 tier=tier, tuned_malloc=peers)]


CASES = [
    *_case(1024, "small"),
    *_case(4096, "medium"),
    *_case(16384, "medium"),
    *_case(65536, "large", peers=False, reference=False,
           note="(ours only: torch eager needs N x N = 16 GiB per matrix; no float64 reference at this size)"),
]
