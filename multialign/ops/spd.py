"""Batched functions of symmetric (positive definite) matrices, differentiable, on every backend.

    spd_eigh(S)                      -> (eigenvalues ascending (..., d), eigenvectors (..., d, d))
    spd_log(S), spd_sqrt(S), spd_invsqrt(S), spd_pow(S, p)        (with a ``min_eig`` floor)
    spd_exp(S)                                                     (any symmetric S)
    log_euclidean_distance(A, B), affine_invariant_distance(A, B), stein_divergence(A, B)
    frechet_distance(mu1, S1, mu2, S2)
    covariance(x, shrinkage=None | "ledoit_wolf" | "oas" | float)

Every function reads the symmetric part ``(S + S^T) / 2`` of its input (so a matrix that is symmetric
up to rounding is fine) and takes any number of leading batch dimensions.

Matrix functions are ``V diag(f(max(lam, floor))) V^T`` of the eigendecomposition ``S = V diag(lam) V^T``.
The floor (``min_eig``) guards near-singular input:

* ``min_eig=None`` (default): ``log``, ``invsqrt`` and negative powers clamp eigenvalues at
  ``max(a, r * lam_max)`` with ``(a, r) = (1e-20, 1e-12)`` in float64 and ``(1e-10, 1e-6)`` in float32;
  ``sqrt`` and non-negative powers clamp at 0; ``exp`` never clamps.
* ``min_eig=x``: clamp at exactly ``x``.

Gradients use the Daleckii-Krein formula with divided differences evaluated without cancellation, so
they are finite and correct at repeated eigenvalues (``S = c I`` included), where autograd through
``torch.linalg.eigh`` returns inf/NaN. The floor is treated as a constant; a clamped eigenvalue gets zero
gradient.

Backends: ``"numba"`` (CPU) solves 32 matrices at once, one per SIMD lane (cyclic Jacobi for d <= 5,
Householder tridiagonalisation + implicit QL for d <= 64; LAPACK through ``torch.linalg.eigh`` above),
with the matrix function and reconstruction fused into the eigensolver kernel and a lane-vectorised
Daleckii-Krein backward; ``"triton"`` runs one program per matrix (parallel Jacobi with the matrix function
and reconstruction fused, d <= 64); ``"torch"`` is the reference (``torch.linalg.eigh`` + the explicit
Daleckii-Krein backward).

With validation on (``multialign.set_validation(True)``) inputs are checked for non-finite entries and
for symmetry (``max |S - S^T| <= tol * max |S|``, tol = 1e-10 in float64, 1e-4 otherwise), and
``log``/``sqrt``/``invsqrt``/``pow`` reject clearly negative eigenvalues
(``lam_min < -sqrt(eps) * max |lam|``). float16/bfloat16 inputs are computed in float32.
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor

from .._backend import BackendError, kernel_module, resolve_backend
from .._validation import broadcast_batch, check_finite, check_same, check_tensor, validation_enabled
from ._common import flatten_batch

FUNCS = ("log", "sqrt", "invsqrt", "exp", "pow")
TRITON_MAX_D = 64


def _kern(backend: str):
    return kernel_module(backend, "spd")


# --------------------------------------------------------------------------------------------------
# custom ops on flattened (B, d, d) batches
# --------------------------------------------------------------------------------------------------


@torch.library.custom_op("multialign::spd_eigh", mutates_args=())
def _eigh_op(S: Tensor, backend: str) -> tuple[Tensor, Tensor]:
    return tuple(_kern(backend).eigh_forward(S))


@_eigh_op.register_fake
def _(S, backend):
    B, n = S.shape[0], S.shape[-1]
    return S.new_empty(B, n), S.new_empty(B, n, n)


@torch.library.custom_op("multialign::spd_eigh_backward", mutates_args=())
def _eigh_backward_op(gw: Tensor, gV: Tensor, w: Tensor, V: Tensor, backend: str) -> Tensor:
    return _kern(backend).eigh_backward(gw.contiguous(), gV.contiguous(), w, V)


@_eigh_backward_op.register_fake
def _(gw, gV, w, V, backend):
    return torch.empty_like(V)


def _eigh_setup(ctx, inputs, output):
    ctx.backend = inputs[1]
    ctx.set_materialize_grads(False)  # an unused output's gradient arrives as None, not as zeros
    ctx.save_for_backward(*output)


def _eigh_bwd(ctx, gw, gV):
    w, V = ctx.saved_tensors
    gw = torch.zeros_like(w) if gw is None else gw
    gV = torch.zeros_like(V) if gV is None else gV
    return _eigh_backward_op(gw, gV, w, V, ctx.backend), None


_eigh_op.register_autograd(_eigh_bwd, setup_context=_eigh_setup)


@torch.library.custom_op("multialign::spd_matfun", mutates_args=())
def _matfun_op(S: Tensor, func: str, p: float, abs_floor: float, rel_floor: float,
               backend: str) -> tuple[Tensor, Tensor, Tensor]:
    return tuple(_kern(backend).matfun_forward(S, func, p, abs_floor, rel_floor))


@_matfun_op.register_fake
def _(S, func, p, abs_floor, rel_floor, backend):
    B, n = S.shape[0], S.shape[-1]
    return S.new_empty(B, n, n), S.new_empty(B, n), S.new_empty(B, n, n)


@torch.library.custom_op("multialign::spd_matfun_backward", mutates_args=())
def _matfun_backward_op(grad: Tensor, w: Tensor, V: Tensor, func: str, p: float, abs_floor: float,
                        rel_floor: float, backend: str) -> Tensor:
    return _kern(backend).matfun_backward(grad.contiguous(), w, V, func, p, abs_floor, rel_floor)


@_matfun_backward_op.register_fake
def _(grad, w, V, func, p, abs_floor, rel_floor, backend):
    return torch.empty_like(V)


def _matfun_setup(ctx, inputs, output):
    _, func, p, abs_floor, rel_floor, backend = inputs
    _, w, V = output
    ctx.mark_non_differentiable(w, V)
    ctx.set_materialize_grads(False)  # no zero tensors for the gradients of w and V
    ctx.save_for_backward(w, V)
    ctx.args = (func, p, abs_floor, rel_floor, backend)


def _matfun_bwd(ctx, gF, gw, gV):
    w, V = ctx.saved_tensors
    if gF is None:
        return None, None, None, None, None, None
    return _matfun_backward_op(gF, w, V, *ctx.args), None, None, None, None, None


_matfun_op.register_autograd(_matfun_bwd, setup_context=_matfun_setup)

# --------------------------------------------------------------------------------------------------
# checks and plumbing
# --------------------------------------------------------------------------------------------------


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _check_square(op: str, name: str, S) -> None:
    check_tensor(name, S, op=op, min_dim=2, what="(..., d, d)")
    if S.shape[-1] != S.shape[-2]:
        raise ValueError(f"{op}: {name} must be a batch of square matrices (..., d, d), got shape {tuple(S.shape)}")
    if S.shape[-1] == 0:
        raise ValueError(f"{op}: {name} must have d >= 1, got shape {tuple(S.shape)}")


def _check_symmetric(op: str, name: str, S: Tensor) -> None:
    if not validation_enabled():
        return
    tol = 1e-10 if S.dtype == torch.float64 else 1e-4
    St = S.transpose(-1, -2)
    scale = S.abs().amax(dim=(-1, -2)).clamp_min(torch.finfo(S.dtype).tiny)
    asym = (S - St).abs().amax(dim=(-1, -2)) / scale
    worst = float(asym.max()) if asym.numel() else 0.0
    if worst > tol:
        raise ValueError(f"{op}: {name} must be symmetric; max |S - S^T| / max |S| = {worst:.3g} exceeds the "
                         f"tolerance {tol:g} (pass 0.5 * (S + S.mT) if the asymmetry is intended to be dropped)")


def _check_backend_size(op: str, backend: str, d: int) -> None:
    if backend == "triton" and d > TRITON_MAX_D:
        raise BackendError(f"{op}: backend='triton' runs its one-program-per-matrix Jacobi kernel for d <= "
                           f"{TRITON_MAX_D}, got d={d}; use backend='torch' (cuSOLVER) for larger matrices")


def _prepare(op: str, S: Tensor, backend: str, name: str = "S"):
    _check_square(op, name, S)
    check_finite(op, **{name: S})
    _check_symmetric(op, name, S)
    be = resolve_backend(backend, S, op=op)
    _check_backend_size(op, be, S.shape[-1])
    batch = S.shape[:-2]
    Sb = flatten_batch(S, batch, 2).to(_compute_dtype(S.dtype))
    return Sb, batch, be


def _check_positive(op: str, w: Tensor, what: str) -> None:
    if not validation_enabled() or w.numel() == 0:
        return
    eps = torch.finfo(w.dtype).eps
    top = w.abs().amax(dim=-1)
    low = w.amin(dim=-1)  # (w is unsorted for the matrix functions)
    bad = low < -math.sqrt(eps) * top
    if bool(bad.any()):
        k = int(bad.nonzero()[0, 0])
        raise ValueError(f"{op}: {what} needs positive (semi-)definite matrices; matrix {k} of the (flattened) "
                         f"batch has eigenvalue {float(low[k]):.4g} (largest |eigenvalue| {float(top[k]):.4g})")


def _floors(op: str, func: str, p: float, dtype: torch.dtype, min_eig) -> tuple[float, float]:
    if min_eig is not None:
        if isinstance(min_eig, bool) or not isinstance(min_eig, (int, float)) or not math.isfinite(min_eig):
            raise TypeError(f"{op}: min_eig must be None or a finite number, got {min_eig!r}")
        needs_positive = func in ("log", "invsqrt") or (func == "pow" and p < 0)
        if min_eig < 0 or (needs_positive and min_eig == 0):
            want = "> 0" if needs_positive else ">= 0"
            raise ValueError(f"{op}: min_eig must be {want}, got {min_eig!r}")
    from multialign.kernels.reference.spd import default_floors

    return default_floors(func, p, dtype, min_eig)


def _matfun(op: str, S: Tensor, func: str, p: float, min_eig, backend: str) -> Tensor:
    Sb, batch, be = _prepare(op, S, backend)
    abs_floor, rel_floor = _floors(op, func, p, Sb.dtype, min_eig)
    F, w, _ = _matfun_op(Sb, func, float(p), float(abs_floor), float(rel_floor), be)
    if func != "exp":
        _check_positive(op, w, f"the matrix {'power' if func == 'pow' else func}")
    return F.reshape(*batch, F.shape[-2], F.shape[-1]).to(S.dtype)


# --------------------------------------------------------------------------------------------------
# public ops
# --------------------------------------------------------------------------------------------------


def spd_eigh(S: Tensor, *, backend: str = "auto") -> tuple[Tensor, Tensor]:
    """Eigenvalues (ascending, ``(..., d)``) and eigenvectors (columns, ``(..., d, d)``) of symmetric ``S``.

    Each eigenvector is sign-normalised: its entry of largest magnitude is positive. Differentiable; the
    eigenvector gradient divides by eigenvalue gaps (as in ``torch.linalg.eigh``), with zero where two
    eigenvalues are exactly equal, so it is meaningful only for basis-independent losses at repeated
    eigenvalues. For functions of the matrix use ``spd_log`` & co., whose gradients need no gaps.
    """
    op = "spd_eigh"
    Sb, batch, be = _prepare(op, S, backend)
    w, V = _eigh_op(Sb, be)
    return w.reshape(*batch, w.shape[-1]).to(S.dtype), V.reshape(*batch, *V.shape[-2:]).to(S.dtype)


def spd_log(S: Tensor, *, min_eig: Optional[float] = None, backend: str = "auto") -> Tensor:
    """Matrix logarithm ``V diag(log max(lam, floor)) V^T`` of SPD ``S`` (see the module doc for the floor)."""
    return _matfun("spd_log", S, "log", 0.0, min_eig, backend)


def spd_sqrt(S: Tensor, *, min_eig: Optional[float] = None, backend: str = "auto") -> Tensor:
    """Principal square root ``V diag(sqrt max(lam, floor)) V^T`` (floor 0 by default) of PSD ``S``."""
    return _matfun("spd_sqrt", S, "sqrt", 0.5, min_eig, backend)


def spd_invsqrt(S: Tensor, *, min_eig: Optional[float] = None, backend: str = "auto") -> Tensor:
    """Inverse square root ``V diag(max(lam, floor)^-1/2) V^T`` of SPD ``S``."""
    return _matfun("spd_invsqrt", S, "invsqrt", -0.5, min_eig, backend)


def spd_exp(S: Tensor, *, backend: str = "auto") -> Tensor:
    """Matrix exponential ``V diag(exp lam) V^T`` of any symmetric ``S`` (no floor)."""
    return _matfun("spd_exp", S, "exp", 0.0, None, backend)


def spd_pow(S: Tensor, p: float, *, min_eig: Optional[float] = None, backend: str = "auto") -> Tensor:
    """Matrix power ``V diag(max(lam, floor)^p) V^T`` for a real exponent ``p`` (a Python number)."""
    op = "spd_pow"
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p):
        raise TypeError(f"{op}: p must be a finite real number, got {p!r}")
    return _matfun(op, S, "pow", float(p), min_eig, backend)


def _pair(op: str, A: Tensor, B: Tensor, names=("A", "B")):
    _check_square(op, names[0], A)
    _check_square(op, names[1], B)
    check_same(op, **{names[0]: A, names[1]: B})
    if A.shape[-1] != B.shape[-1]:
        raise ValueError(f"{op}: {names[0]} and {names[1]} must have the same matrix size, got "
                         f"{tuple(A.shape)} and {tuple(B.shape)}")
    batch = broadcast_batch(op, names, [A.shape[:-2], B.shape[:-2]])
    return A.expand(*batch, *A.shape[-2:]), B.expand(*batch, *B.shape[-2:])


def _frob(X: Tensor, squared: bool) -> Tensor:
    sq = (X * X).sum(dim=(-1, -2))
    return sq if squared else _safe_sqrt(sq)


def _safe_sqrt(x: Tensor) -> Tensor:
    """sqrt with a zero (not NaN) gradient at 0: the distance between equal matrices is a minimum."""
    pos = x > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, x, torch.ones_like(x))), torch.zeros_like(x))


def log_euclidean_distance(A: Tensor, B: Tensor, *, squared: bool = False, min_eig: Optional[float] = None,
                           backend: str = "auto") -> Tensor:
    """``||log A - log B||_F`` (pyRiemann ``distance_logeuclid``), ``(...)``; ``squared=True`` drops the root."""
    op = "log_euclidean_distance"
    A, B = _pair(op, A, B)
    LA = spd_log(A, min_eig=min_eig, backend=backend)
    LB = spd_log(B, min_eig=min_eig, backend=backend)
    return _frob(LA - LB, squared)


def _cholesky(op: str, name: str, A: Tensor) -> Tensor:
    L, info = torch.linalg.cholesky_ex(A)
    if validation_enabled() and bool((info > 0).any()):
        raise ValueError(f"{op}: {name} must be positive definite; its Cholesky factorisation failed "
                         f"for {int((info > 0).sum())} matrices of the batch")
    return L


def affine_invariant_distance(A: Tensor, B: Tensor, *, squared: bool = False, backend: str = "auto") -> Tensor:
    """Affine-invariant Riemannian distance ``||log(A^-1/2 B A^-1/2)||_F`` (pyRiemann ``distance_riemann``).

    Computed as ``||log(L^-1 B L^-T)||_F`` with ``A = L L^T`` (Cholesky and triangular solves, then the
    SPD logarithm of this op family), which avoids forming ``A^-1/2``.
    """
    op = "affine_invariant_distance"
    A, B = _pair(op, A, B)
    A = 0.5 * (A + A.transpose(-1, -2))
    L = _cholesky(op, "A", A)
    Y = torch.linalg.solve_triangular(L, 0.5 * (B + B.transpose(-1, -2)), upper=False)
    Z = torch.linalg.solve_triangular(L, Y.transpose(-1, -2), upper=False)
    return _frob(spd_log(Z, backend=backend), squared)


def _logdet_spd(op: str, name: str, A: Tensor) -> Tensor:
    L = _cholesky(op, name, A)
    return 2.0 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)


def stein_divergence(A: Tensor, B: Tensor) -> Tensor:
    """Stein (Jensen-Bregman LogDet) divergence ``logdet((A+B)/2) - (logdet A + logdet B)/2`` (``>= 0``).

    Its square root is a metric (pyRiemann's ``distance_logdet`` returns that root). Three Cholesky
    factorisations, no eigendecomposition; plain PyTorch on every device. Clamped at 0 against rounding.
    """
    op = "stein_divergence"
    A, B = _pair(op, A, B)
    A = 0.5 * (A + A.transpose(-1, -2))
    B = 0.5 * (B + B.transpose(-1, -2))
    val = _logdet_spd(op, "(A + B) / 2", 0.5 * (A + B)) - 0.5 * (_logdet_spd(op, "A", A) + _logdet_spd(op, "B", B))
    return val.clamp_min(0)


def _trace_sqrt_psd(M: Tensor, backend: str) -> Tensor:
    """``sum_i sqrt(max(mu_i, 0))`` over the eigenvalues of PSD ``M``; gradient ``V diag(1 / (2 sqrt mu)) V^T``
    with ``mu`` floored at ``eps * mu_max`` (a zero eigenvalue gets a large, finite gradient)."""
    w, _ = spd_eigh(M, backend=backend)
    eps = torch.finfo(w.dtype).eps
    floor = (eps * w[..., -1:].abs()).clamp_min(torch.finfo(w.dtype).tiny).detach()
    wc = w.clamp_min(0)
    # sqrt above the floor, its chord through the origin below it: value exact at 0, gradient finite
    small = wc < floor
    root = torch.where(small, wc / torch.sqrt(floor), torch.sqrt(torch.where(small, floor, wc)))
    return root.sum(-1)


def frechet_distance(mu1: Tensor, S1: Tensor, mu2: Tensor, S2: Tensor, *, backend: str = "auto") -> Tensor:
    """Fréchet distance between Gaussians (the FID formula), ``(...)``::

        ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)

    through the symmetric route ``M = S1^1/2 S2 S1^1/2`` (never the non-symmetric product ``S1 S2``).
    float32 input loses digits here as in every FID implementation; pass float64 for reporting.
    """
    op = "frechet_distance"
    for name, m in (("mu1", mu1), ("mu2", mu2)):
        check_tensor(name, m, op=op, min_dim=1, what="(..., d)")
    S1, S2 = _pair(op, S1, S2, names=("S1", "S2"))
    check_same(op, mu1=mu1, mu2=mu2, S1=S1)
    d = S1.shape[-1]
    if mu1.shape[-1] != d or mu2.shape[-1] != d:
        raise ValueError(f"{op}: mu1 and mu2 must have d={d} entries (the size of S1, S2), got shapes "
                         f"{tuple(mu1.shape)} and {tuple(mu2.shape)}")
    R = spd_sqrt(S1, backend=backend)
    M = R @ (0.5 * (S2 + S2.transpose(-1, -2))) @ R
    M = 0.5 * (M + M.transpose(-1, -2))
    diff = mu1 - mu2
    tr = torch.diagonal(S1, dim1=-2, dim2=-1).sum(-1) + torch.diagonal(S2, dim1=-2, dim2=-1).sum(-1)
    return (diff * diff).sum(-1) + tr - 2.0 * _trace_sqrt_psd(M, backend)


ShrinkageLike = Union[None, str, float]


def covariance(x: Tensor, shrinkage: ShrinkageLike = None, *, assume_centered: bool = False) -> Tensor:
    """Covariance ``(..., d, d)`` of the point sets ``x (..., k, d)`` (k points per set), optionally shrunk.

    * ``None``: the empirical covariance ``X^T X / k`` of the centred points (scikit-learn's
      ``empirical_covariance``: divides by k).
    * a float ``a`` in [0, 1]: ``(1 - a) S + a (tr S / d) I`` (scikit-learn's ``shrunk_covariance``).
    * ``"ledoit_wolf"``: the Ledoit-Wolf shrinkage ``a`` of scikit-learn's ``ledoit_wolf_shrinkage``.
    * ``"oas"``: the Oracle Approximating Shrinkage of scikit-learn's ``oas``.

    Shrunk results are positive definite whenever ``tr S > 0`` and ``a > 0``. Plain PyTorch, differentiable.
    """
    op = "covariance"
    check_tensor("x", x, op=op, min_dim=2, what="(..., k, d)")
    k, d = x.shape[-2], x.shape[-1]
    if k < 1 or d < 1:
        raise ValueError(f"{op}: x must hold at least one point of dimension >= 1, got shape {tuple(x.shape)}")
    X = x if assume_centered else x - x.mean(dim=-2, keepdim=True)
    S = X.transpose(-1, -2) @ X / k
    if shrinkage is None:
        return S
    mu = torch.diagonal(S, dim1=-2, dim2=-1).sum(-1) / d
    eye = torch.eye(d, dtype=S.dtype, device=S.device)
    if isinstance(shrinkage, str):
        if shrinkage not in ("ledoit_wolf", "oas"):
            raise ValueError(f"{op}: shrinkage must be None, a float in [0, 1], 'ledoit_wolf' or 'oas', got {shrinkage!r}")
        if d == 1:  # one feature: every shrinkage gives the same matrix (scikit-learn returns 0)
            return S
        if shrinkage == "ledoit_wolf":
            a = _ledoit_wolf_shrinkage(X, S, mu)
        else:
            a = _oas_shrinkage(S, mu, k)
    elif isinstance(shrinkage, (int, float)) and not isinstance(shrinkage, bool):
        if not 0.0 <= float(shrinkage) <= 1.0:
            raise ValueError(f"{op}: a numeric shrinkage must lie in [0, 1], got {shrinkage!r}")
        a = torch.full(S.shape[:-2], float(shrinkage), dtype=S.dtype, device=S.device)
    else:
        raise TypeError(f"{op}: shrinkage must be None, a float, 'ledoit_wolf' or 'oas', got {type(shrinkage).__name__}")
    a = a[..., None, None]
    return (1.0 - a) * S + a * mu[..., None, None] * eye


def _ledoit_wolf_shrinkage(X: Tensor, S: Tensor, mu: Tensor) -> Tensor:
    """scikit-learn's ``ledoit_wolf_shrinkage`` (METHODS.md C.4.5) for centred points ``X (..., k, d)``."""
    k, d = X.shape[-2], X.shape[-1]
    X2 = X * X
    beta_ = (X2.transpose(-1, -2) @ X2).sum(dim=(-1, -2)) / k
    sq_S = (S * S).sum(dim=(-1, -2))
    beta = (beta_ - sq_S) / (d * k)
    delta = (sq_S - 2.0 * mu * torch.diagonal(S, dim1=-2, dim2=-1).sum(-1) + d * mu * mu) / d
    beta = torch.minimum(beta, delta)
    return torch.where(beta == 0, torch.zeros_like(beta), beta / torch.where(delta == 0, torch.ones_like(delta), delta))


def _oas_shrinkage(S: Tensor, mu: Tensor, k: int) -> Tensor:
    """scikit-learn's ``oas`` shrinkage (its modified formula, METHODS.md C.4.5)."""
    d = S.shape[-1]
    alpha = (S * S).mean(dim=(-1, -2))
    num = alpha + mu * mu
    den = (k + 1.0) * (alpha - mu * mu / d)
    return torch.where(den == 0, torch.ones_like(den), torch.clamp(num / torch.where(den == 0, torch.ones_like(den), den), max=1.0))
