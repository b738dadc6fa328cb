"""Log-domain Sinkhorn: the PyTorch specification (METHODS.md C.2).

Shapes (the ops layer flattens leading batch dimensions to one): points ``x (B, N, D)``, ``y (B, M, D)``
or a cost matrix ``C (B, N, M)``; weights ``a (B, N)``, ``b (B, M)`` (zeros allowed); ``eps0 (B,)`` the
start of the epsilon schedule.

Conventions (POT's): ``C_ij = ||x_i - y_j||^2``, ``eps`` is POT's ``reg``, the plan is
``P_ij = a_i b_j exp((f_i + g_j - C_ij) / eps)``.

One iteration (alternating, Gauss-Seidel, as POT and OTT)::

    f <- damp * softmin_eps(C,   log b + g / eps)        softmin_eps(C, h)_i = -eps LSE_j(h_j - C_ij / eps)
    g <- damp * softmin_eps(C^T, log a + f / eps)        damp = rho / (rho + eps)  (1 when balanced)

starting from ``g = 0``. With ``eps_scaling = s`` in (0, 1), iteration ``t`` uses
``eps_t = max(eps, eps0 * s**t)`` (geometric annealing from the data diameter, as GeomLoss).

Error (checked after every iteration, only once ``eps_t == eps``; ``inf`` before):

* balanced: the L1 violation of the column marginal of the plan ``(f_new, g_old)``,
  ``sum_j b_j |exp((g_old_j - g_new_j) / eps) - 1|`` -- free, from the update itself (C.2.5);
* unbalanced: ``max(|f_new - f_old|, |g_new - g_old|) / eps``.

A problem stops (its potentials freeze) at the first iteration whose error is below ``tol``.

Backwards are the envelope gradients: the vector-Jacobian product, with the potentials held fixed, of
the dual objective (C.2.1, C.2.6)::

    D = <a, f> + <b, g> - eps (sum_ij a_i b_j e_ij - sum(a) sum(b))                     balanced
    D = -rho <a, e^{-f/rho} - 1> - rho <b, e^{-g/rho} - 1> - eps (sum_ij a_i b_j e_ij - sum(a) sum(b))
    e_ij = exp((f_i + g_j - C_ij) / eps)

whose value at the returned state is the ``cost`` the ops report.
"""
from __future__ import annotations

import math

import torch

PATHS = ("online", "matrix", "scaling")
_CHUNK_ELEMS = 1 << 24


def sq_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``||x_i - y_j||^2`` by explicit differences (exact for close points), chunked over rows."""
    B, N, D = x.shape
    M = y.shape[1]
    rows = max(1, _CHUNK_ELEMS // max(1, B * M * D))
    out = [((x[:, i0:i0 + rows, None, :] - y[:, None, :, :]) ** 2).sum(-1) for i0 in range(0, N, rows)]
    return torch.cat(out, dim=1) if out else x.new_zeros(B, 0, M)


def _log(w: torch.Tensor) -> torch.Tensor:
    return torch.log(w)  # log(0) = -inf: zero-weight points drop out of every log-sum-exp


def _softmin_matrix(eps: torch.Tensor, C: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``-eps_b * LSE_j(h_bj - C_bij / eps_b)`` for ``C (B, N, M)``, ``h (B, M)``."""
    return -eps[:, None] * torch.logsumexp(h[:, None, :] - C / eps[:, None, None], dim=2)


def _softmin_points(eps: torch.Tensor, X: torch.Tensor, Y: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The same with ``C = ||X_i - Y_j||^2`` recomputed by row chunks: memory O(chunk * M * D), never N x M."""
    B, N, D = X.shape
    M = Y.shape[1]
    rows = max(1, _CHUNK_ELEMS // max(1, B * M * max(D, 1)))
    out = []
    for i0 in range(0, N, rows):
        Cc = ((X[:, i0:i0 + rows, None, :] - Y[:, None, :, :]) ** 2).sum(-1)
        out.append(_softmin_matrix(eps, Cc, h))
    return torch.cat(out, dim=1) if out else X.new_zeros(B, 0)


def eps_schedule(eps: float, eps0: torch.Tensor, eps_scaling: float, t: int) -> torch.Tensor:
    """``eps_t = max(eps, eps0 * s**t)`` per problem (just ``eps`` when ``eps_scaling`` is 0)."""
    if not eps_scaling:
        return torch.full_like(eps0, eps)
    return torch.clamp(eps0 * eps_scaling ** t, min=eps)


def _solve(softmin_rows, softmin_cols, a, b, eps, rho, max_iter, tol, eps0, eps_scaling):
    B, N = a.shape
    M = b.shape[1]
    dt = a.dtype
    la, lb = _log(a), _log(b)
    f = a.new_zeros(B, N)
    g = b.new_zeros(B, M)
    n_iter = torch.zeros(B, dtype=torch.int64, device=a.device)
    error = torch.full((B,), math.inf, dtype=dt, device=a.device)
    active = torch.ones(B, dtype=torch.bool, device=a.device)
    balanced = math.isinf(rho)
    for t in range(max_iter):
        e = eps_schedule(eps, eps0, eps_scaling, t).to(dt)
        damp = torch.ones_like(e) if balanced else rho / (rho + e)
        f_new = damp[:, None] * softmin_rows(e, lb + g / e[:, None])
        g_new = damp[:, None] * softmin_cols(e, la + f_new / e[:, None])
        if balanced:
            col = torch.where(b > 0, b * (torch.exp((g - g_new) / e[:, None]) - 1).abs(), torch.zeros_like(b))
            err = col.sum(1)
        else:
            err = torch.maximum((f_new - f).abs().amax(1), (g_new - g).abs().amax(1)) / e
        at_target = e <= eps
        err = torch.where(at_target, err, torch.full_like(err, math.inf))
        keep = active[:, None]
        f = torch.where(keep, f_new, f)
        g = torch.where(keep, g_new, g)
        n_iter = n_iter + active.to(torch.int64)
        error = torch.where(active, err, error)
        active = active & ~(err < tol)
        if not bool(active.any()):
            break
    return f, g, n_iter, error


def _stats(B: int, n_iter: torch.Tensor) -> torch.Tensor:
    """Per-problem path counters ``[log-domain iterations, scaling iterations, kernel rebuilds]``."""
    st = torch.zeros(B, 3, dtype=torch.int64, device=n_iter.device)
    st[:, 0] = n_iter
    return st


def sinkhorn_forward(x, y, a, b, eps: float, rho: float, max_iter: int, tol: float, eps0, eps_scaling: float,
                     path: str):
    """Potentials for point clouds: ``(f (B,N), g (B,M), n_iter (B,), error (B,), stats (B,3))``.

    ``path="online"`` recomputes costs by row chunks (O(N + M) memory per chunk); every other path
    materialises C (the reference has no stabilised-scaling variant: it computes the same iterates).
    """
    if path == "online":
        rows = lambda e, h: _softmin_points(e, x, y, h)  # noqa: E731
        cols = lambda e, h: _softmin_points(e, y, x, h)  # noqa: E731
    else:
        C = sq_distances(x, y)
        Ct = C.transpose(1, 2)
        rows = lambda e, h: _softmin_matrix(e, C, h)  # noqa: E731
        cols = lambda e, h: _softmin_matrix(e, Ct, h)  # noqa: E731
    f, g, n_iter, error = _solve(rows, cols, a, b, eps, rho, max_iter, tol, eps0, eps_scaling)
    return f, g, n_iter, error, _stats(a.shape[0], n_iter)


def sinkhorn_matrix_forward(C, a, b, eps: float, rho: float, max_iter: int, tol: float, eps0, eps_scaling: float,
                            path: str):
    """Potentials for a cost matrix ``C (B, N, M)``; same outputs as :func:`sinkhorn_forward`."""
    del path
    Ct = C.transpose(1, 2)
    f, g, n_iter, error = _solve(lambda e, h: _softmin_matrix(e, C, h), lambda e, h: _softmin_matrix(e, Ct, h),
                                 a, b, eps, rho, max_iter, tol, eps0, eps_scaling)
    return f, g, n_iter, error, _stats(a.shape[0], n_iter)


def dual_objective(C, a, b, f, g, eps: float, rho: float) -> torch.Tensor:
    """The dual objective ``D(f, g; a, b, C)`` per problem (see the module docstring)."""
    E = torch.exp((f[:, :, None] + g[:, None, :] - C) / eps)
    mass = torch.einsum("bi,bij,bj->b", a, E, b)
    if math.isinf(rho):
        lin = (a * f).sum(1) + (b * g).sum(1)
    else:
        lin = -rho * (a * torch.expm1(-f / rho)).sum(1) - rho * (b * torch.expm1(-g / rho)).sum(1)
    return lin - eps * (mass - a.sum(1) * b.sum(1))


def sinkhorn_backward(grad, x, y, a, b, f, g, eps: float, rho: float, needs=(True, True, True, True)):
    """Envelope gradients ``(grad_x, grad_y, grad_a, grad_b)`` of ``sum(grad * D)`` with f, g held fixed."""
    del needs
    f, g = f.detach(), g.detach()
    _, vjp = torch.func.vjp(lambda x_, y_, a_, b_: dual_objective(sq_distances(x_, y_), a_, b_, f, g, eps, rho),
                            x, y, a, b)
    return vjp(grad)


def sinkhorn_matrix_backward(grad, C, a, b, f, g, eps: float, rho: float, needs=(True, True, True)):
    """Envelope gradients ``(grad_C, grad_a, grad_b)``; ``grad_C = grad * P`` (the plan)."""
    del needs
    f, g = f.detach(), g.detach()
    _, vjp = torch.func.vjp(lambda C_, a_, b_: dual_objective(C_, a_, b_, f, g, eps, rho), C, a, b)
    return vjp(grad)


def sinkhorn_unrolled(x, y, C, a, b, eps: float, rho: float, max_iter: int, tol: float, eps0, eps_scaling: float):
    """The solver loop left to autograd (``grad="unrolled"``): differentiable ``(f, g, n_iter, error)``.

    Memory grows with the iterations (each keeps its B x N x M log-sum-exp input); for checking and small
    problems. ``C`` may be given instead of ``(x, y)``.
    """
    if C is None:
        C = sq_distances(x, y)
    Ct = C.transpose(1, 2)
    return _solve(lambda e, h: _softmin_matrix(e, C, h), lambda e, h: _softmin_matrix(e, Ct, h),
                  a, b, eps, rho, max_iter, tol, eps0, eps_scaling)
