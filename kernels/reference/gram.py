"""Kernel Gram matrices and their fused reductions: the PyTorch specification.

Shapes (the ops layer flattens leading batch dimensions to one): ``x (B, N, D)``, ``y (B, M, D)`` or
``None`` (meaning ``y = x``), ``gamma (B,)``, ``v (B, M, C)``.

Kernels, with scikit-learn's conventions (``sklearn.metrics.pairwise``):

    rbf         k = exp(-gamma * ||x - y||_2^2)
    laplacian   k = exp(-gamma * ||x - y||_1)
    linear      k = <x, y>
    polynomial  k = (gamma * <x, y> + coef0) ** degree

(``cosine`` is ``linear`` on L2-normalised rows; the ops layer normalises before calling a backend.)

Distances are taken from explicit differences, never from ||x||^2 + ||y||^2 - 2<x, y>, so that this
oracle is exact for close points. Rows are processed in chunks to bound the B x n x M x D temporary.
Backwards are autograd of the forwards.
"""
from __future__ import annotations

import torch

KERNELS = ("rbf", "laplacian", "linear", "polynomial")
_CHUNK_ELEMS = 1 << 24


def _pairwise(x: torch.Tensor, y: torch.Tensor, p: int) -> torch.Tensor:
    """sum_d |x_id - y_jd|^p for p in (1, 2), by explicit differences, chunked over rows."""
    B, N, D = x.shape
    M = y.shape[1]
    rows = max(1, _CHUNK_ELEMS // max(1, B * M * D))
    out = []
    for i0 in range(0, N, rows):
        diff = x[:, i0:i0 + rows, None, :] - y[:, None, :, :]
        out.append(diff.abs().sum(-1) if p == 1 else (diff * diff).sum(-1))
    return torch.cat(out, dim=1) if out else x.new_zeros(B, 0, M)


def gram_forward(x, y, gamma, kernel: str, degree: int, coef0: float) -> torch.Tensor:
    y = x if y is None else y
    g = gamma[:, None, None]
    if kernel == "rbf":
        return torch.exp(-g * _pairwise(x, y, 2))
    if kernel == "laplacian":
        return torch.exp(-g * _pairwise(x, y, 1))
    s = x @ y.transpose(-1, -2)
    if kernel == "linear":
        return s
    if kernel == "polynomial":
        return (g * s + coef0) ** degree
    raise ValueError(f"gram: unknown kernel {kernel!r}; expected one of {KERNELS}")


def gram_backward(grad, x, y, gamma, K, kernel: str, degree: int, coef0: float, needs=(True, True, True)):
    """(grad_x, grad_y, grad_gamma) of <grad, gram_forward(...)>; grad_y is None when y is None."""
    del K, needs
    if y is None:
        _, vjp = torch.func.vjp(lambda a, g: gram_forward(a, None, g, kernel, degree, coef0), x, gamma)
        gx, gg = vjp(grad)
        return gx, None, gg
    _, vjp = torch.func.vjp(lambda a, b, g: gram_forward(a, b, g, kernel, degree, coef0), x, y, gamma)
    gx, gy, gg = vjp(grad)
    return gx, gy, gg


def gram_matvec_forward(x, y, v, gamma, kernel: str, degree: int, coef0: float) -> torch.Tensor:
    """K(x, y) @ v with ``v (B, M, C)`` -> ``(B, N, C)``."""
    return gram_forward(x, y, gamma, kernel, degree, coef0) @ v


def gram_matvec_backward(grad, x, y, v, gamma, kernel: str, degree: int, coef0: float,
                         needs=(True, True, True, True)):
    """(grad_x, grad_y, grad_v, grad_gamma); grad_y is None when y is None."""
    del needs
    if y is None:
        _, vjp = torch.func.vjp(lambda a, w, g: gram_matvec_forward(a, None, w, g, kernel, degree, coef0), x, v, gamma)
        gx, gv, gg = vjp(grad)
        return gx, None, gv, gg
    _, vjp = torch.func.vjp(lambda a, b, w, g: gram_matvec_forward(a, b, w, g, kernel, degree, coef0), x, y, v, gamma)
    return vjp(grad)
