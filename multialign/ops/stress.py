"""Kruskal stress-1 between the pairwise distances of two point clouds, differentiable, on every backend.

    stress(x, y, *, normalized=False, backend="auto")  -> (...)

``x (..., N, D1)`` are the points in the original space, ``y (..., N, D2)`` the same points in a
projection (row ``i`` of both is the same object); with ``delta_ij = ||x_i - x_j||`` and
``d_ij = ||y_i - y_j||``::

    stress     = sqrt( sum_{i<j} (delta_ij - d_ij)^2 / sum_{i<j} delta_ij^2 )                 (Kruskal 1964)
    normalized = min_s stress(x, s * y) = sqrt( (R - E^2 / Q) / T )                         (Smelser et al. 2024)

with ``R = sum (delta - d)^2``, ``T = sum delta^2``, ``Q = sum d^2``, ``E = sum (delta - d) d`` over ``i < j``
(METHODS.md C.3). Leading batch dimensions of x and y broadcast. Differentiable in x and in y.

How it runs: one fused pass over the upper triangle of the distance matrix computes the four sums
(memory O(N (D1 + D2)), never N x N). When x or y requires a gradient, the same pass also accumulates
``Gy_i = sum_j (delta_ij / d_ij)(y_i - y_j)`` and ``Gx_i = sum_j (d_ij / delta_ij)(x_i - x_j)`` -- the weights
do not depend on the stress value -- and the backward is then O(N D): for any function F of the sums,

    dF/dy_i = 2 (F_R + F_Q - F_E) (N y_i - sum_j y_j) - (2 F_R - F_E) Gy_i
    dF/dx_i = 2 (F_R + F_T) (N x_i - sum_j x_j) - (2 F_R - F_E) Gx_i

(``N v_i - sum_j v_j`` is formed as ``N (v_i - mean v)``, the mean subtracted in two steps -- the mean, then the
mean of what is left: in float32 the direct form cancels for a cloud far from the origin.)

Conventions: a pair with ``d_ij = 0`` (coincident projected points) contributes the minimum-norm
subgradient 0 (never NaN), likewise ``delta_ij = 0`` on the x side; at ``stress = 0`` the gradient is 0.
N = 1 has no pairs (an error). If every pair has ``delta_ij = 0`` the denominator T is 0 and the value
is inf (or NaN when R = 0 too), as the formula says. Second derivatives are not implemented.
The normalized value comes from the same one-pass sums: near 0 (a projection that is an exact scaling) its
absolute error is ~sqrt(u) (1e-8 in float64), elsewhere ~u / value. float16/bfloat16 inputs are computed in float32 and the result returned in the input dtype.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .._backend import kernel_module, resolve_backend
from .._validation import broadcast_batch, check_finite, check_same, check_tensor
from ._common import flatten_batch

# --------------------------------------------------------------------------------------------------
# custom op (flattened (B, N, D) problems; the public wrapper does the checking)
# --------------------------------------------------------------------------------------------------


@torch.library.custom_op("multialign::stress_terms", mutates_args=())
def _stress_terms_op(x: Tensor, y: Tensor, need_gx: bool, need_gy: bool, backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """(sums (B, 4) float64 [R, T, Q, E], Gx (B, N, D1) or empty, Gy (B, N, D2) or empty)."""
    sums, gx, gy = kernel_module(backend, "stress").stress_forward(x, y, need_gx, need_gy)
    return sums, (x.new_empty(0) if gx is None else gx), (y.new_empty(0) if gy is None else gy)


@_stress_terms_op.register_fake
def _(x, y, need_gx, need_gy, backend):
    return (x.new_empty(x.shape[0], 4, dtype=torch.float64), x.new_empty(x.shape if need_gx else (0,)),
            y.new_empty(y.shape if need_gy else (0,)))


def _setup(ctx, inputs, output):
    x, y, need_gx, need_gy, backend = inputs
    _, gx, gy = output
    ctx.save_for_backward(x, y, gx, gy)
    ctx.need = (need_gx, need_gy)


def _backward(ctx, g_sums, g_gx, g_gy):
    x, y, Gx, Gy = ctx.saved_tensors
    need_gx, need_gy = ctx.need
    if ctx.needs_input_grad[0] and not need_gx or ctx.needs_input_grad[1] and not need_gy:
        raise RuntimeError("stress: a gradient was requested for an input the forward pass was told would not "
                           "need one (call ops.stress with grad mode on and requires_grad set on that input)")
    if g_sums is None:
        return None, None, None, None, None
    gR, gT, gQ, gE = g_sums.unbind(-1)
    k = (2 * gR - gE)[:, None, None]
    gx = gy = None
    if need_gx and ctx.needs_input_grad[0]:
        gx = _combine(x, Gx, 2 * (gR + gT) * x.shape[1], k)
    if need_gy and ctx.needs_input_grad[1]:
        gy = _combine(y, Gy, 2 * (gR + gQ - gE) * y.shape[1], k)
    return gx, gy, None, None, None


def _combine(v: Tensor, G: Tensor, c: Tensor, k: Tensor) -> Tensor:
    """``c (v - mean v) - k G`` per problem, with the result as the only (B, N, D) temporary."""
    out = _deviations(v)
    out.mul_(c[:, None, None].to(v.dtype))
    out.addcmul_(G, k.to(v.dtype), value=-1)
    return out


def _deviations(v: Tensor) -> Tensor:
    """``v_p - mean_q v_q`` (= (N v_p - sum_q v_q) / N), accurate for a cloud far from the origin in float32.

    ``N v_p - sum_q v_q`` in float32 cancels (error ~u |v| N, against deviations that may be 1e-5 |v|). Here the
    mean is taken in two steps: ``v - mean(v)`` in the working precision (exact up to ~u |v_p - mean| whatever
    the rounding of that first mean), then the mean of those small deviations is subtracted too, so the result
    is accurate to ~u |deviation|. The only (B, N, D) buffer is the result (a float64 sum of v would first
    materialise a float64 copy of v: 2x its size)."""
    out = v - v.mean(1, keepdim=True)
    return out.sub_(out.mean(1, keepdim=True))


_stress_terms_op.register_autograd(_backward, setup_context=_setup)

# --------------------------------------------------------------------------------------------------
# public wrapper
# --------------------------------------------------------------------------------------------------


def _safe_sqrt(v: Tensor) -> Tensor:
    """sqrt with gradient 0 (not inf) at 0: stress = 0 is the non-smooth point of sqrt (METHODS.md C.3.2)."""
    pos = v > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, v, torch.ones_like(v))), torch.zeros_like(v))


def stress(x: Tensor, y: Tensor, *, normalized: bool = False, backend: str = "auto") -> Tensor:
    """Kruskal stress-1 between the pairwise Euclidean distances of x ``(..., N, D1)`` and y ``(..., N, D2)``.

    Returns shape ``(...)`` (the broadcast batch dimensions). ``normalized=True`` gives the scale-normalised
    stress ``min_s stress(x, s y)`` (closed form; for evaluation -- it ignores the scale of y).
    See the module docstring for the algorithm, the zero-distance convention and the gradient.
    """
    op = "stress"
    check_tensor("x", x, op=op, min_dim=2, what="(..., N, D1)")
    check_tensor("y", y, op=op, min_dim=2, what="(..., N, D2)")
    check_same(op, x=x, y=y)
    if not isinstance(normalized, bool):
        raise TypeError(f"{op}: normalized must be a bool, got {type(normalized).__name__}")
    if x.shape[-2] != y.shape[-2]:
        raise ValueError(f"{op}: x and y must have the same number of points N (dimension -2: row i of both is "
                         f"the same object); got x with N={x.shape[-2]} (shape {tuple(x.shape)}) and y with "
                         f"N={y.shape[-2]} (shape {tuple(y.shape)})")
    if x.shape[-2] < 2:
        raise ValueError(f"{op}: stress needs at least 2 points (N >= 2) to have a pair, got N={x.shape[-2]} "
                         f"(x shape {tuple(x.shape)})")
    if x.shape[-1] < 1 or y.shape[-1] < 1:
        raise ValueError(f"{op}: x and y need at least one feature, got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    check_finite(op, x=x, y=y)
    batch = broadcast_batch(op, ("x", "y"), [x.shape[:-2], y.shape[:-2]])
    be = resolve_backend(backend, x, op=op)
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    xb = flatten_batch(x.to(cdt), batch, 2)
    yb = flatten_batch(y.to(cdt), batch, 2)
    grad = torch.is_grad_enabled()
    sums, _, _ = _stress_terms_op(xb, yb, grad and xb.requires_grad, grad and yb.requires_grad, be)
    R, T, Q, E = sums.unbind(-1)
    if normalized:
        # R - E^2 / Q = min_s sum (delta - s d)^2, accumulated without the cancellation of T - A^2 / Q
        qpos = Q > 0
        num = torch.where(qpos, R - E * E / torch.where(qpos, Q, torch.ones_like(Q)), R).clamp_min(0)
    else:
        num = R
    v = num / T
    out = torch.where(torch.isnan(v), v, _safe_sqrt(v))    # 0 / 0 (every x coincides) stays NaN
    return out.to(x.dtype).reshape(batch)
