"""Entropic optimal transport by log-domain Sinkhorn, differentiable, on every backend.

    sinkhorn(x, y, a=None, b=None, *, eps=0.05, max_iter=1000, tol=1e-6, reach=None, eps_scaling=None,
             grad="envelope", path="auto", backend="auto")                  -> SinkhornResult
    sinkhorn_matrix(C, a=None, b=None, *, eps=0.05, ...)                      -> SinkhornResult
    sinkhorn_divergence(x, y, a=None, b=None, *, eps=0.05, ...)               -> (...)

Conventions are POT's (``ot.bregman.sinkhorn_log(a, b, ot.dist(x, y), reg=eps)``): cost
``C_ij = ||x_i - y_j||^2`` (no 1/2), ``eps`` is POT's ``reg``, weights sum to one (uniform when omitted),
plan ``P_ij = a_i b_j exp((f_i + g_j - C_ij) / eps)``, ``cost`` the entropic dual value ``<a, f> + <b, g>``.
GeomLoss's ``SamplesLoss("sinkhorn", p=2, blur=s)`` uses half this cost: it corresponds to ``eps = 2 s^2``
and reports half our value.

Paths (``result.path`` says which one ran; ``result.path_stats`` counts the log-domain and scaling iterations):

* ``"online"``: the cost is recomputed tile by tile inside the kernels from the points -- memory O(N + M).
* ``"matrix"``: log-domain iterations over a cost matrix held in memory (``sinkhorn_matrix``'s input, or
  computed once from the points).
* ``"scaling"`` (Numba only): Schmitzer's stabilised scaling -- linear-domain matrix-vector iterations on
  a kernel ``exp((f^ + g^ - C) / eps)`` re-centred ("absorbed") on the current potentials whenever the
  scalings drift, with log-domain iterations while the potentials move fast (first iterations,
  epsilon annealing) and as a per-row / per-problem fallback. Same iterates as the log domain, as stable,
  no exponential in the steady state. Needs one B x N x M kernel matrix.

``path="auto"``: Numba takes ``"scaling"`` when the kernel matrix fits the memory budget
(``MULTIALIGN_SINKHORN_MEMORY`` bytes, default min(2 GiB, a quarter of the available memory)) and
otherwise ``"online"`` (points) or ``"matrix"`` (cost matrix); Triton takes ``"online"`` / ``"matrix"``;
the PyTorch reference computes the same iterates with the cost matrix in memory.

Gradients (``grad="envelope"``, the default): the derivative of the converged dual value with the
potentials held fixed (Danskin) -- ``d cost / d x_i = 2 sum_j P_ij (x_i - y_j)``, ``d cost / d C = P``,
``d cost / d a_i = f_i`` (+ the marginal residual) -- computed by fused reductions that never form P for
point clouds. ``f``, ``g`` and ``plan()`` are returned detached in that mode. ``grad="unrolled"`` runs the
PyTorch reference loop under autograd (memory grows with the iterations; for checking and small problems).
"""
from __future__ import annotations

import math
import os
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .._backend import kernel_module, resolve_backend
from .._validation import broadcast_batch, check_finite, check_same, check_tensor, validation_enabled
from ._common import flatten_batch

PATHS = ("auto", "online", "matrix", "scaling")
GRADS = ("envelope", "unrolled")


class SinkhornResult(NamedTuple):
    """What a Sinkhorn solve returns; leading dimensions are the batch dimensions of the inputs.

    ``cost`` (...): the entropic dual value (balanced: ``<a, f> + <b, g>``; unbalanced: the dual objective
    of C.2.6), differentiable. ``f`` (..., N), ``g`` (..., M): the potentials. ``n_iter`` (...): iterations
    run per problem. ``error`` (...): the final error (balanced: L1 marginal violation; unbalanced:
    ``max |delta potential| / eps``; ``inf`` if the epsilon schedule did not reach ``eps``).
    ``converged`` (...): ``error < tol``. ``path``: the solver path that ran. ``path_stats`` (..., 3) int64:
    per problem ``[log-domain iterations, stabilised-scaling iterations, kernel (re)builds]`` -- with
    ``path="scaling"`` the first iterations (and any that drift) run in the log domain, this says how many.
    ``plan()``: the dense plan.
    """

    cost: Tensor
    f: Tensor
    g: Tensor
    n_iter: Tensor
    error: Tensor
    converged: Tensor
    path: str
    problem: tuple = ()
    path_stats: Optional[Tensor] = None

    def plan(self) -> Tensor:
        """The transport plan ``P_ij = a_i b_j exp((f_i + g_j - C_ij) / eps)`` of shape ``(..., N, M)``.

        Materialised on request (N x M memory), as ``ot.bregman.sinkhorn_log`` returns it. Detached unless
        the solve used ``grad="unrolled"``.
        """
        kind, p, q, a, b, eps, grad, batch = self.problem
        with torch.set_grad_enabled(grad == "unrolled" and torch.is_grad_enabled()):
            if kind == "points":
                from multialign.kernels.reference.sinkhorn import sq_distances

                C = sq_distances(p, q)
            else:
                C = p
            C = C.reshape(*batch, C.shape[-2], C.shape[-1])
            if grad != "unrolled":
                C = C.detach()
            f, g = self.f.to(C.dtype), self.g.to(C.dtype)
            # log weights: a zero-weight point's potential is a c-transform, whose exponent may overflow
            la, lb = torch.log(a.to(C.dtype)), torch.log(b.to(C.dtype))
            P = torch.exp(la[..., :, None] + lb[..., None, :] + (f[..., :, None] + g[..., None, :] - C) / eps)
        return P


# --------------------------------------------------------------------------------------------------
# custom ops (flattened (B, ...) problems; the public wrappers below do the checking)
# --------------------------------------------------------------------------------------------------


def _kern(backend: str):
    return kernel_module(backend, "sinkhorn")


def _fake_solve(a, b):
    B, N = a.shape
    M = b.shape[1]
    return (a.new_empty(B, N), b.new_empty(B, M), a.new_empty(B, dtype=torch.int64), a.new_empty(B),
            a.new_empty(B, 3, dtype=torch.int64))


@torch.library.custom_op("multialign::sinkhorn_solve", mutates_args=())
def _solve_op(x: Tensor, y: Tensor, a: Tensor, b: Tensor, eps0: Tensor, eps: float, rho: float, max_iter: int,
              tol: float, eps_scaling: float, path: str, backend: str) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    return tuple(_kern(backend).sinkhorn_forward(x, y, a, b, eps, rho, max_iter, tol, eps0, eps_scaling, path))


@_solve_op.register_fake
def _(x, y, a, b, eps0, eps, rho, max_iter, tol, eps_scaling, path, backend):
    return _fake_solve(a, b)


@torch.library.custom_op("multialign::sinkhorn_matrix_solve", mutates_args=())
def _solve_matrix_op(C: Tensor, a: Tensor, b: Tensor, eps0: Tensor, eps: float, rho: float, max_iter: int,
                     tol: float, eps_scaling: float, path: str,
                     backend: str) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    return tuple(_kern(backend).sinkhorn_matrix_forward(C, a, b, eps, rho, max_iter, tol, eps0, eps_scaling, path))


@_solve_matrix_op.register_fake
def _(C, a, b, eps0, eps, rho, max_iter, tol, eps_scaling, path, backend):
    return _fake_solve(a, b)


def dual_value(a: Tensor, b: Tensor, f: Tensor, g: Tensor, eps: float, rho: float) -> Tensor:
    """The dual objective at the solver's output state, where the column marginal is exact.

    Balanced: ``<a, f> + <b, g>``. Unbalanced (C.2.6): ``-rho <a, e^{-f/rho} - 1> - rho <b, e^{-g/rho} - 1>
    - eps (sum P - sum(a) sum(b))`` with ``sum P = <b, e^{-g/rho}>`` (exact after the g update).
    """
    if math.isinf(rho):
        return (a * f).sum(-1) + (b * g).sum(-1)
    ea = torch.expm1(-f / rho)
    eb = torch.expm1(-g / rho)
    mass = (b * eb).sum(-1) + b.sum(-1)
    return -rho * (a * ea).sum(-1) - rho * (b * eb).sum(-1) - eps * (mass - a.sum(-1) * b.sum(-1))


@torch.library.custom_op("multialign::sinkhorn_value", mutates_args=())
def _value_op(x: Tensor, y: Tensor, a: Tensor, b: Tensor, f: Tensor, g: Tensor, eps: float, rho: float,
              backend: str) -> Tensor:
    return dual_value(a, b, f, g, eps, rho)


@_value_op.register_fake
def _(x, y, a, b, f, g, eps, rho, backend):
    return a.new_empty(a.shape[0])


@torch.library.custom_op("multialign::sinkhorn_value_backward", mutates_args=())
def _value_backward_op(grad: Tensor, x: Tensor, y: Tensor, a: Tensor, b: Tensor, f: Tensor, g: Tensor, eps: float,
                       rho: float, backend: str, needs: list[bool]) -> list[Tensor]:
    gx, gy, ga, gb = _kern(backend).sinkhorn_backward(grad.contiguous(), x, y, a, b, f, g, eps, rho, tuple(needs))
    return [_or_empty(gx, x), _or_empty(gy, y), _or_empty(ga, a), _or_empty(gb, b)]


@_value_backward_op.register_fake
def _(grad, x, y, a, b, f, g, eps, rho, backend, needs):
    return [_fake_grad(x, needs[0]), _fake_grad(y, needs[1]), _fake_grad(a, needs[2]), _fake_grad(b, needs[3])]


def _value_setup(ctx, inputs, output):
    x, y, a, b, f, g, eps, rho, backend = inputs
    ctx.save_for_backward(x, y, a, b, f, g)
    ctx.args = (eps, rho, backend)


def _value_bwd(ctx, grad):
    x, y, a, b, f, g = ctx.saved_tensors
    eps, rho, backend = ctx.args
    needs = [bool(n) for n in ctx.needs_input_grad[:4]]
    gx, gy, ga, gb = _value_backward_op(grad, x, y, a, b, f, g, eps, rho, backend, needs)
    return (_none_if(gx, needs[0]), _none_if(gy, needs[1]), _none_if(ga, needs[2]), _none_if(gb, needs[3]),
            None, None, None, None, None)


_value_op.register_autograd(_value_bwd, setup_context=_value_setup)


@torch.library.custom_op("multialign::sinkhorn_matrix_value", mutates_args=())
def _value_matrix_op(C: Tensor, a: Tensor, b: Tensor, f: Tensor, g: Tensor, eps: float, rho: float,
                     backend: str) -> Tensor:
    return dual_value(a, b, f, g, eps, rho)


@_value_matrix_op.register_fake
def _(C, a, b, f, g, eps, rho, backend):
    return a.new_empty(a.shape[0])


@torch.library.custom_op("multialign::sinkhorn_matrix_value_backward", mutates_args=())
def _value_matrix_backward_op(grad: Tensor, C: Tensor, a: Tensor, b: Tensor, f: Tensor, g: Tensor, eps: float,
                              rho: float, backend: str, needs: list[bool]) -> list[Tensor]:
    gC, ga, gb = _kern(backend).sinkhorn_matrix_backward(grad.contiguous(), C, a, b, f, g, eps, rho, tuple(needs))
    return [_or_empty(gC, C), _or_empty(ga, a), _or_empty(gb, b)]


@_value_matrix_backward_op.register_fake
def _(grad, C, a, b, f, g, eps, rho, backend, needs):
    return [_fake_grad(C, needs[0]), _fake_grad(a, needs[1]), _fake_grad(b, needs[2])]


def _value_matrix_setup(ctx, inputs, output):
    C, a, b, f, g, eps, rho, backend = inputs
    ctx.save_for_backward(C, a, b, f, g)
    ctx.args = (eps, rho, backend)


def _value_matrix_bwd(ctx, grad):
    C, a, b, f, g = ctx.saved_tensors
    eps, rho, backend = ctx.args
    needs = [bool(n) for n in ctx.needs_input_grad[:3]]
    gC, ga, gb = _value_matrix_backward_op(grad, C, a, b, f, g, eps, rho, backend, needs)
    return (_none_if(gC, needs[0]), _none_if(ga, needs[1]), _none_if(gb, needs[2]), None, None, None, None, None)


_value_matrix_op.register_autograd(_value_matrix_bwd, setup_context=_value_matrix_setup)


def _or_empty(t: Optional[Tensor], like: Tensor) -> Tensor:
    return like.new_empty(0) if t is None else t


def _fake_grad(t: Tensor, needed: bool) -> Tensor:
    return torch.empty_like(t) if needed else t.new_empty(0)


def _none_if(t: Tensor, needed: bool) -> Optional[Tensor]:
    return t if needed else None


# --------------------------------------------------------------------------------------------------
# argument checks and path choice
# --------------------------------------------------------------------------------------------------


def _check_scalars(op: str, eps, max_iter, tol, reach, eps_scaling, grad, path):
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (eps > 0) or math.isinf(eps):
        raise ValueError(f"{op}: eps must be a finite number > 0 (POT's reg), got {eps!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"{op}: max_iter must be an integer >= 1, got {max_iter!r}")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not (tol >= 0):
        raise ValueError(f"{op}: tol must be a number >= 0, got {tol!r}")
    if reach is not None and (isinstance(reach, bool) or not isinstance(reach, (int, float)) or not (reach > 0)):
        raise ValueError(f"{op}: reach must be None (balanced) or a number > 0 (POT's reg_m), got {reach!r}")
    if eps_scaling is not None and (isinstance(eps_scaling, bool) or not isinstance(eps_scaling, (int, float))
                                    or not (0 < eps_scaling < 1)):
        raise ValueError(f"{op}: eps_scaling must be None or a number in (0, 1) (the factor eps shrinks by per "
                         f"iteration), got {eps_scaling!r}")
    if grad not in GRADS:
        raise ValueError(f"{op}: grad must be one of {GRADS}, got {grad!r}")
    if path not in PATHS:
        raise ValueError(f"{op}: path must be one of {PATHS}, got {path!r}")


def _compute_dtype(*ts: Tensor) -> torch.dtype:
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in ts) else torch.float32


def _weights(op: str, name: str, w: Optional[Tensor], n: int, npts: str, ref: Tensor, balanced: bool) -> Tensor:
    """Check a weight vector ``(..., n)``; ``None`` means uniform. Value checks run with validation on."""
    if w is None:
        return torch.full((n,), 1.0 / max(n, 1), dtype=ref.dtype, device=ref.device)
    check_tensor(name, w, op=op, min_dim=1, what=f"(..., {npts})")
    if w.device != ref.device:
        raise ValueError(f"{op}: {name} is on {w.device} but the points are on {ref.device}; expected one device")
    if w.shape[-1] != n:
        raise ValueError(f"{op}: {name} must have shape (..., {npts}) with {npts}={n} (one weight per point), "
                         f"got shape {tuple(w.shape)}")
    if validation_enabled():
        check_finite(op, **{name: w})
        if bool((w < 0).any()):
            raise ValueError(f"{op}: {name} must be >= 0, got a negative weight (min {float(w.min()):.3g})")
        if balanced:
            s = w.to(torch.float64).sum(-1)
            tol = 1e-4 if w.dtype != torch.float64 else 1e-8
            if bool(((s - 1).abs() > tol).any()):
                worst = float(s.reshape(-1)[(s - 1).abs().reshape(-1).argmax()])
                raise ValueError(f"{op}: {name} must sum to one along the last dimension (balanced OT), got a sum "
                                 f"of {worst:.6g}; normalise it or pass reach=... for unbalanced OT")
    return w


@torch.compiler.assume_constant_result
def _memory_budget() -> int:
    env = os.environ.get("MULTIALIGN_SINKHORN_MEMORY", "").strip()
    if env:
        return int(float(env))
    budget = 2 << 30
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    budget = min(budget, int(line.split()[1]) * 1024 // 4)
                    break
    except OSError:  # pragma: no cover - non-Linux
        pass
    return budget


def _pick_path(op: str, path: str, backend: str, kind: str, B: int, N: int, M: int, dtype: torch.dtype) -> str:
    if backend == "torch":
        return "online" if path == "online" and kind == "points" else "matrix"
    if backend == "triton":
        if path == "scaling":
            raise ValueError(f"{op}: path='scaling' runs on the Numba (CPU) backend only; on the GPU use "
                             f"path='online' or 'matrix' (the log-domain kernels are compute-bound there)")
        if path == "auto":
            return "online" if kind == "points" else "matrix"
        if path == "online" and kind == "matrix":
            raise ValueError(f"{op}: path='online' needs point clouds; sinkhorn_matrix has its cost matrix in memory")
        return path
    if path == "online" and kind == "matrix":
        raise ValueError(f"{op}: path='online' needs point clouds; sinkhorn_matrix has its cost matrix in memory")
    if path != "auto":
        return path
    itemsize = 8 if dtype == torch.float64 else 4
    if B * N * M * itemsize <= _memory_budget():
        return "scaling"
    return "online" if kind == "points" else "matrix"


def _finish(kind, p, q, a, b, f, g, n_iter, err, cost, eps, tol, path, grad, batch, out_dtype, stats=None):
    N, M = f.shape[-1], g.shape[-1]
    if stats is None:  # the unrolled reference loop: log-domain iterations only
        stats = torch.stack([n_iter, torch.zeros_like(n_iter), torch.zeros_like(n_iter)], -1)
    stats = stats.reshape(*batch, 3)
    cost = cost.reshape(batch).to(out_dtype)
    f = f.reshape(*batch, N).to(out_dtype)
    g = g.reshape(*batch, M).to(out_dtype)
    n_iter = n_iter.reshape(batch)
    err = err.reshape(batch)
    converged = err < tol
    a = a.reshape(*batch, N)
    b = b.reshape(*batch, M)
    return SinkhornResult(cost, f, g, n_iter, err, converged, path, (kind, p, q, a, b, eps, grad, batch), stats)


def _eps0_points(xb: Tensor, yb: Tensor) -> Tensor:
    """Squared diagonal of the bounding box of x and y, per problem: an upper bound on every cost."""
    lo = torch.minimum(xb.amin(1), yb.amin(1))
    hi = torch.maximum(xb.amax(1), yb.amax(1))
    return ((hi - lo) ** 2).sum(-1)


# --------------------------------------------------------------------------------------------------
# public ops
# --------------------------------------------------------------------------------------------------


def sinkhorn(x: Tensor, y: Tensor, a: Optional[Tensor] = None, b: Optional[Tensor] = None, *, eps: float = 0.05,
             max_iter: int = 1000, tol: float = 1e-6, reach: Optional[float] = None,
             eps_scaling: Optional[float] = None, grad: str = "envelope", path: str = "auto",
             backend: str = "auto") -> SinkhornResult:
    """Entropic OT between the point clouds ``x (..., N, D)`` and ``y (..., M, D)`` with weights ``a (..., N)``,
    ``b (..., M)`` (uniform when omitted): ``min <P, C> + eps KL(P | a b^T)`` over the couplings of a, b.

    ``C_ij = ||x_i - y_j||^2``; ``eps`` is POT's ``reg``. Leading batch dimensions of x, y, a, b broadcast;
    each problem stops on its own tolerance (``error < tol``, checked every iteration). ``reach``: unbalanced
    OT with ``reach * KL`` marginal penalties (POT's ``reg_m``); ``eps_scaling=s``: anneal epsilon as
    ``max(eps, diameter^2 * s^t)`` (GeomLoss's ``scaling=q`` is ``s = q^2``). See the module docstring for
    ``path`` and ``grad``.
    """
    op = "sinkhorn"
    _check_scalars(op, eps, max_iter, tol, reach, eps_scaling, grad, path)
    check_tensor("x", x, op=op, min_dim=2, what="(..., N, D)")
    check_tensor("y", y, op=op, min_dim=2, what="(..., M, D)")
    check_same(op, x=x, y=y)
    if y.shape[-1] != x.shape[-1]:
        raise ValueError(f"{op}: x and y must have the same number of features (last dimension); got x with "
                         f"D={x.shape[-1]} (shape {tuple(x.shape)}) and y with D={y.shape[-1]} (shape {tuple(y.shape)})")
    N, M = x.shape[-2], y.shape[-2]
    if N < 1 or M < 1:
        raise ValueError(f"{op}: x and y need at least one point each, got N={N}, M={M}")
    check_finite(op, x=x, y=y)
    rho = math.inf if reach is None else float(reach)
    a = _weights(op, "a", a, N, "N", x, reach is None)
    b = _weights(op, "b", b, M, "M", x, reach is None)
    batch = broadcast_batch(op, ("x", "y", "a", "b"), [x.shape[:-2], y.shape[:-2], a.shape[:-1], b.shape[:-1]])
    be = resolve_backend(backend, x, op=op)
    out_dtype = x.dtype
    dt = _compute_dtype(x)
    xb = flatten_batch(x.to(dt), batch, 2)
    yb = flatten_batch(y.to(dt), batch, 2)
    ab = flatten_batch(a.to(dt), batch, 1)
    bb = flatten_batch(b.to(dt), batch, 1)
    B = xb.shape[0]
    eps = float(eps)
    scal = float(eps_scaling) if eps_scaling is not None else 0.0
    eps0 = _eps0_points(xb.detach(), yb.detach()) if scal else xb.new_full((B,), eps)
    chosen = _pick_path(op, path, be, "points", B, N, M, dt)
    if grad == "unrolled":
        ref = kernel_module("torch", "sinkhorn")
        f, g, n_iter, err = ref.sinkhorn_unrolled(xb, yb, None, ab, bb, eps, rho, max_iter, float(tol), eps0, scal)
        cost = dual_value(ab, bb, f, g, eps, rho)
        return _finish("points", xb, yb, ab, bb, f, g, n_iter, err, cost, eps, tol, "matrix", grad, batch, out_dtype)
    xd, yd, ad, bd = xb.detach(), yb.detach(), ab.detach(), bb.detach()
    f, g, n_iter, err, stats = _solve_op(xd, yd, ad, bd, eps0, eps, rho, max_iter, float(tol), scal, chosen, be)
    cost = _value_op(xb, yb, ab, bb, f, g, eps, rho, be)
    return _finish("points", xd, yd, ad, bd, f, g, n_iter, err, cost, eps, tol, chosen, grad, batch, out_dtype,
                   stats)


def sinkhorn_matrix(C: Tensor, a: Optional[Tensor] = None, b: Optional[Tensor] = None, *, eps: float = 0.05,
                    max_iter: int = 1000, tol: float = 1e-6, reach: Optional[float] = None,
                    eps_scaling: Optional[float] = None, grad: str = "envelope", path: str = "auto",
                    backend: str = "auto") -> SinkhornResult:
    """:func:`sinkhorn` for a precomputed cost matrix ``C (..., N, M)``; differentiable in C, a and b
    (``d cost / d C = P``). The epsilon schedule starts at ``max C``."""
    op = "sinkhorn_matrix"
    _check_scalars(op, eps, max_iter, tol, reach, eps_scaling, grad, path)
    check_tensor("C", C, op=op, min_dim=2, what="(..., N, M)")
    N, M = C.shape[-2], C.shape[-1]
    if N < 1 or M < 1:
        raise ValueError(f"{op}: C needs at least one row and one column, got shape {tuple(C.shape)}")
    check_finite(op, C=C)
    rho = math.inf if reach is None else float(reach)
    a = _weights(op, "a", a, N, "N", C, reach is None)
    b = _weights(op, "b", b, M, "M", C, reach is None)
    batch = broadcast_batch(op, ("C", "a", "b"), [C.shape[:-2], a.shape[:-1], b.shape[:-1]])
    be = resolve_backend(backend, C, op=op)
    out_dtype = C.dtype
    dt = _compute_dtype(C)
    Cb = flatten_batch(C.to(dt), batch, 2)
    ab = flatten_batch(a.to(dt), batch, 1)
    bb = flatten_batch(b.to(dt), batch, 1)
    B = Cb.shape[0]
    eps = float(eps)
    scal = float(eps_scaling) if eps_scaling is not None else 0.0
    eps0 = Cb.detach().amax((1, 2)).clamp_min(eps) if scal else Cb.new_full((B,), eps)
    chosen = _pick_path(op, path, be, "matrix", B, N, M, dt)
    if grad == "unrolled":
        ref = kernel_module("torch", "sinkhorn")
        f, g, n_iter, err = ref.sinkhorn_unrolled(None, None, Cb, ab, bb, eps, rho, max_iter, float(tol), eps0, scal)
        cost = dual_value(ab, bb, f, g, eps, rho)
        return _finish("matrix", Cb, None, ab, bb, f, g, n_iter, err, cost, eps, tol, "matrix", grad, batch, out_dtype)
    Cd, ad, bd = Cb.detach(), ab.detach(), bb.detach()
    f, g, n_iter, err, stats = _solve_matrix_op(Cd.contiguous(), ad, bd, eps0, eps, rho, max_iter, float(tol), scal,
                                                chosen, be)
    cost = _value_matrix_op(Cb, ab, bb, f, g, eps, rho, be)
    return _finish("matrix", Cd, None, ad, bd, f, g, n_iter, err, cost, eps, tol, chosen, grad, batch, out_dtype,
                   stats)


def sinkhorn_divergence(x: Tensor, y: Tensor, a: Optional[Tensor] = None, b: Optional[Tensor] = None, *,
                        eps: float = 0.05, max_iter: int = 1000, tol: float = 1e-6, reach: Optional[float] = None,
                        eps_scaling: Optional[float] = None, grad: str = "envelope", path: str = "auto",
                        backend: str = "auto") -> Tensor:
    """The debiased Sinkhorn divergence ``OT(a, b) - OT(a, a) / 2 - OT(b, b) / 2`` (+ ``eps/2 (sum a - sum b)^2``
    when unbalanced), of shape ``(...)``: >= 0, zero when the two weighted clouds are equal (C.2.7).

    Solves the three problems with :func:`sinkhorn` (same options); gradients flow through all three.
    """
    kw = dict(eps=eps, max_iter=max_iter, tol=tol, reach=reach, eps_scaling=eps_scaling, grad=grad, path=path,
              backend=backend)
    ab = sinkhorn(x, y, a, b, **kw).cost
    aa = sinkhorn(x, x, a, a, **kw).cost
    bb = sinkhorn(y, y, b, b, **kw).cost
    out = ab - 0.5 * (aa + bb)
    if reach is not None:
        sa = a.sum(-1) if a is not None else 1.0
        sb = b.sum(-1) if b is not None else 1.0
        out = out + 0.5 * float(eps) * (sa - sb) ** 2
    return out
