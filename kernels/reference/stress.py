"""Kruskal stress-1: the PyTorch specification (METHODS.md C.3).

Shapes (the ops layer flattens leading batch dimensions to one): ``x (B, N, D1)`` the points in the
original space, ``y (B, N, D2)`` the same points in the projection. With ``delta_pq = ||x_p - x_q||`` and
``d_pq = ||y_p - y_q||``, every backend returns the four sums over the pairs ``p < q``

    R = sum (delta - d)^2      T = sum delta^2      Q = sum d^2      E = sum (delta - d) d

(stress-1 is ``sqrt(R / T)``; the scale-normalised stress is ``sqrt((R - E^2 / Q) / T)``, C.3.5), and, when
asked, the raw gradient accumulators

    Gy_p = sum_{q != p} r_pq (y_p - y_q),     r_pq = delta_pq / d_pq   (0 when d_pq <= d_tiny)
    Gx_p = sum_{q != p} s_pq (x_p - x_q),     s_pq = d_pq / delta_pq   (0 when delta_pq <= d_tiny)

from which the ops layer forms the gradient of any function of (R, T, Q, E) in O(N D):
``dF/dy_p = 2 (F_R + F_Q - F_E) (N y_p - sum_q y_q) - (2 F_R - F_E) Gy_p`` and
``dF/dx_p = 2 (F_R + F_T) (N x_p - sum_q x_q) - (2 F_R - F_E) Gx_p`` (F_R = dF/dR, ...).
The accumulators are computed in the forward pass because the weights do not depend on the stress value;
the fused kernels get the whole gradient from the distance tiles they already hold.

``d_tiny`` is the zero-distance convention of C.3.3 (the minimum-norm subgradient: a pair of coincident
points contributes nothing). Distances come from explicit differences (exact for close points), rows in
chunks to bound the B x n x N x D temporary. Sums are float64.
"""
from __future__ import annotations

import torch

D_TINY = {torch.float32: 1e-18, torch.float64: 1e-30}
_CHUNK_ELEMS = 1 << 24


def _rows(B: int, N: int, D: int) -> int:
    return max(1, _CHUNK_ELEMS // max(1, B * N * D))


def pairwise_distances(x: torch.Tensor) -> torch.Tensor:
    """``(B, N, D) -> (B, N, N)`` Euclidean distances from explicit differences."""
    B, N, D = x.shape
    step = _rows(B, N, D)
    out = [((x[:, i:i + step, None, :] - x[:, None, :, :]) ** 2).sum(-1).sqrt() for i in range(0, N, step)]
    return torch.cat(out, dim=1) if out else x.new_zeros(B, 0, N)


def _weighted_differences(w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``out_p = sum_q w_pq (v_p - v_q)`` from explicit differences (no cancellation), chunked."""
    B, N, D = v.shape
    step = _rows(B, N, D)
    out = [(w[:, i:i + step, :, None] * (v[:, i:i + step, None, :] - v[:, None, :, :])).sum(2)
           for i in range(0, N, step)]
    return torch.cat(out, dim=1) if out else v.new_zeros(B, 0, D)


def _ratio(num: torch.Tensor, den: torch.Tensor, tiny: float) -> torch.Tensor:
    ok = den > tiny
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(den))


def stress_forward(x: torch.Tensor, y: torch.Tensor, need_gx: bool = False, need_gy: bool = False):
    """``(sums (B, 4) float64 [R, T, Q, E], Gx (B, N, D1) or None, Gy (B, N, D2) or None)``."""
    dt = torch.float64 if x.dtype == torch.float64 else torch.float32
    x, y = x.to(dt), y.to(dt)
    N = x.shape[1]
    delta = pairwise_distances(x)
    d = pairwise_distances(y)
    upper = torch.ones(N, N, dtype=torch.bool, device=x.device).triu(1)
    dl, dd = delta[:, upper].double(), d[:, upper].double()
    e = dl - dd
    sums = torch.stack([(e * e).sum(-1), (dl * dl).sum(-1), (dd * dd).sum(-1), (e * dd).sum(-1)], dim=-1)
    off = ~torch.eye(N, dtype=torch.bool, device=x.device)
    gx = _weighted_differences(_ratio(d, delta, D_TINY[dt]) * off, x) if need_gx else None
    gy = _weighted_differences(_ratio(delta, d, D_TINY[dt]) * off, y) if need_gy else None
    return sums, gx, gy
