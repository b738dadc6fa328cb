"""Benchmark cases for the SPD family: the batched matrix logarithm ``ops.spd_log``, forward and
forward + backward, at (B, d) = (100000, 3), (10000, 16), (1000, 64) in float32 and float64 (issue 5).

Inputs as in PEERS.md: ``S = G G^T / (2d) + 1e-3 I`` with standard normal G, made exactly symmetric in
the benchmark dtype. The backward is that of ``L = sum(log(S) * W)`` for a fixed random W.

Peers: eager PyTorch through ``torch.linalg.eigh`` (``V diag(log w) V^T``; autograd for the backward,
which is what users write), pyRiemann's ``logm`` (numpy eigh underneath; no gradient) and SciPy's
``logm`` (Schur-Pade, one matrix at a time, one BLAS thread) looped over a subset of the batch -- its
time is for ``SCIPY_SUBSET[d]`` matrices; multiply by B / subset for the whole batch.

Floor: the dense symmetric eigensolver's unavoidable work per matrix -- Householder reduction and the
accumulation of Q (4/3 d^3 + 4/3 d^3 multiply-adds) and the reconstruction (d^3, symmetric half) -- plus
the four d^3 products of the backward; the d logarithms are counted as exps. The QL/Jacobi iterations
are not in it (data dependent), so no eigensolver reaches it.
"""
from __future__ import annotations

import torch

from ..harness import Case, Unavailable, runs_on

SIZES = ((100000, 3, "large"), (10000, 16, "medium"), (1000, 64, "medium"))
SCIPY_SUBSET = {3: 300, 16: 300, 64: 100}


def _dtype(p):
    return {"float32": torch.float32, "float64": torch.float64}[p["dtype"]]


def _data(p, grad=False, dtype=None):
    B, d = p["B"], p["d"]
    g = torch.Generator().manual_seed(0)
    G = torch.randn(B, d, d, generator=g, dtype=torch.float64)
    S = (G @ G.mT / (2 * d) + 1e-3 * torch.eye(d, dtype=torch.float64)).to(dtype or _dtype(p))
    S = 0.5 * (S + S.mT)
    S = S.to(p.get("device", "cpu"))
    return S.requires_grad_() if grad else S


def _weights(p, dtype=None):
    W = torch.randn(p["B"], p["d"], p["d"], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return W.to(dtype or _dtype(p)).to(p.get("device", "cpu"))


def _needs_cuda(p):
    if p.get("device") != "cuda":
        raise Unavailable("the Triton backend is timed on CUDA only (the interpreter is not benchmarked)")


def _torch_logm(S):
    w, V = torch.linalg.eigh(S)
    return (V * torch.log(w).unsqueeze(-2)) @ V.mT


# ----------------------------------------------------------------------------------------- forward
def _ma_fwd(backend):
    def make(p):
        from multialign import ops

        if backend == "triton":
            _needs_cuda(p)
        S = _data(p)
        return lambda: ops.spd_log(S, backend=backend)
    return runs_on("cuda")(make) if backend == "triton" else make


@runs_on("cpu", "cuda")
def _torch_fwd(p):
    S = _data(p)
    return lambda: _torch_logm(S)


def _pyriemann_fwd(p):
    try:
        from pyriemann.geometry.base import logm
    except ImportError:
        from pyriemann.utils.base import logm
    S = _data(p).numpy()
    return lambda: logm(S)


def _scipy_loop(p):
    import warnings

    import numpy as np
    import scipy.linalg
    from threadpoolctl import threadpool_limits

    S = _data(p).numpy()[: SCIPY_SUBSET[p["d"]]]

    def run():
        # one BLAS thread: with two, OpenBLAS' thread hand-off per tiny call made it 15x slower here
        with threadpool_limits(1), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "logm result may be inaccurate" (float32)
            return np.stack([scipy.linalg.logm(M) for M in S])
    return run


def _fwd_ref(p):
    return _torch_logm(_data(dict(p, device="cpu")).double())


# ----------------------------------------------------------------------------------------- forward + backward
def _ma_fb(backend):
    def make(p):
        from multialign import ops

        if backend == "triton":
            _needs_cuda(p)
        S, W = _data(p, grad=True), _weights(p)

        def run():
            S.grad = None
            (ops.spd_log(S, backend=backend) * W).sum().backward()
            return S.grad
        return run
    return runs_on("cuda")(make) if backend == "triton" else make


@runs_on("cpu", "cuda")
def _torch_fb(p):
    S, W = _data(p, grad=True), _weights(p)

    def run():
        S.grad = None
        (_torch_logm(S) * W).sum().backward()
        return S.grad
    return run


def _fb_ref(p):
    from multialign.kernels.reference import spd as ref

    S = _data(dict(p, device="cpu")).double()
    W = _weights(dict(p, device="cpu"), dtype=torch.float64)
    w, V = torch.linalg.eigh(S)
    return ref.matfun_backward(W, w, V, "log", 0.0, -float("inf"), 0.0)


# ----------------------------------------------------------------------------------------- floors
def _floor(backward):
    def floor(p):
        B, d = p["B"], p["d"]
        item = 4 if p["dtype"] == "float32" else 8
        flops = 2 * B * (8 / 3 * d ** 3 + 0.5 * d ** 3 + (4 * d ** 3 if backward else 0))
        return {"flops": flops, "exps": B * d, "bytes": (5 if backward else 2) * B * d * d * item}
    return floor


def _cases():
    out = []
    for B, d, tier in SIZES:
        for dtype in ("float32", "float64"):
            p = {"B": B, "d": d, "dtype": dtype}
            size = f"{B}x{d}x{d},{dtype}"
            out.append(Case("spd_log", size, p,
                            {"multialign-numba": _ma_fwd("numba"), "multialign-triton": _ma_fwd("triton"),
                             "torch-eigh-eager": _torch_fwd, "pyriemann-logm": _pyriemann_fwd,
                             f"scipy-logm-loop({SCIPY_SUBSET[d]} matrices)": _scipy_loop},
                            _floor(False), note="(S = G G^T / 2d + 1e-3 I)", reference=_fwd_ref, tier=tier))
            out.append(Case("spd_log_fwd_bwd", size, p,
                            {"multialign-numba": _ma_fb("numba"), "multialign-triton": _ma_fb("triton"),
                             "torch-eigh-autograd": _torch_fb},
                            _floor(True), note="(L = sum log(S) * W, gradient to S)", reference=_fb_ref, tier=tier))
    return out


CASES = _cases()
