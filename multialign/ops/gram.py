"""Kernel Gram matrices and fused Gram reductions, differentiable, on every backend.

    gram(x, y=None, *, kernel="rbf", gamma=None, degree=3, coef0=1.0, backend="auto")  -> (..., N, M)
    gram_matvec(x, y, v, *, kernel="rbf", gamma=None, ...)                             -> K(x, y) @ v
    mmd2(x, y, *, kernel="rbf", gamma=None, unbiased=False, ...)                        -> (...)

Kernels follow ``sklearn.metrics.pairwise``: ``rbf`` exp(-gamma ||x-y||^2), ``laplacian``
exp(-gamma ||x-y||_1), ``linear`` <x, y>, ``polynomial`` (gamma <x, y> + coef0)^degree, ``cosine``
<x, y>/(||x|| ||y||) (rows of zeros give 0, as scikit-learn). ``gamma=None`` is 1/D; ``gamma="median"``
is the median heuristic 1/(2 med^2), med the median pairwise distance of the pooled points of each
problem (at most 2048 of them, a fixed seeded subsample), detached. ``gamma`` may be a float or a
tensor that broadcasts over the leading batch dimensions; a tensor that requires grad gets one.

Each op is a ``torch.library`` custom op with a fake (meta) implementation and an autograd formula
whose backward is itself a fused reduction, so ``torch.compile(fullgraph=True)`` traces through it.
"""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

from .._backend import kernel_module, resolve_backend
from .._validation import broadcast_batch, check_finite, check_same, check_tensor, validation_enabled
from ._common import flatten_batch, param_dtype

KERNELS = ("rbf", "laplacian", "linear", "polynomial", "cosine")
_GAMMA_FREE = ("linear", "cosine")

# --------------------------------------------------------------------------------------------------
# custom ops (operate on flattened (B, N, D) problems; the public wrappers below do the checking)
# --------------------------------------------------------------------------------------------------


def _kern(backend: str):
    return kernel_module(backend, "gram")


def _compute_dtype(x: Tensor) -> torch.dtype:
    return x.dtype


@torch.library.custom_op("multialign::gram", mutates_args=())
def _gram_op(x: Tensor, y: Optional[Tensor], gamma: Tensor, kernel: str, degree: int, coef0: float,
             backend: str) -> Tensor:
    return _kern(backend).gram_forward(x, y, gamma, kernel, degree, coef0)


@_gram_op.register_fake
def _(x, y, gamma, kernel, degree, coef0, backend):
    M = x.shape[1] if y is None else y.shape[1]
    return x.new_empty(x.shape[0], x.shape[1], M)


@torch.library.custom_op("multialign::gram_backward", mutates_args=())
def _gram_backward_op(grad: Tensor, x: Tensor, y: Optional[Tensor], gamma: Tensor, K: Tensor, kernel: str,
                      degree: int, coef0: float, backend: str, needs: list[bool]) -> list[Tensor]:
    gx, gy, gg = _kern(backend).gram_backward(grad.contiguous(), x, y, gamma, K, kernel, degree, coef0, tuple(needs))
    return [_or_empty(gx, x), _or_empty(gy, x), _or_empty(gg, gamma)]


@_gram_backward_op.register_fake
def _(grad, x, y, gamma, K, kernel, degree, coef0, backend, needs):
    return [_fake_grad(x, needs[0]), _fake_grad(y, needs[1] and y is not None, like=x),
            _fake_grad(gamma, needs[2])]


def _or_empty(t: Optional[Tensor], like: Tensor) -> Tensor:
    return like.new_empty(0) if t is None else t


def _fake_grad(t: Optional[Tensor], needed: bool, like: Optional[Tensor] = None) -> Tensor:
    if t is None or not needed:
        return (like if t is None else t).new_empty(0)
    return torch.empty_like(t)


def _none_if_empty(t: Tensor, needed: bool) -> Optional[Tensor]:
    return t if needed else None


def _gram_setup(ctx, inputs, output):
    x, y, gamma, kernel, degree, coef0, backend = inputs
    ctx.save_for_backward(x, y, gamma, output)
    ctx.args = (kernel, degree, coef0, backend)


def _gram_bwd(ctx, grad):
    x, y, gamma, K = ctx.saved_tensors
    kernel, degree, coef0, backend = ctx.args
    needs = [bool(ctx.needs_input_grad[0]), bool(ctx.needs_input_grad[1]) and y is not None,
             bool(ctx.needs_input_grad[2]) and kernel != "linear"]
    gx, gy, gg = _gram_backward_op(grad, x, y, gamma, K, kernel, degree, coef0, backend, needs)
    return (_none_if_empty(gx, needs[0]), _none_if_empty(gy, needs[1]), _gamma_grad(gg, gamma, needs[2], ctx),
            None, None, None, None)


def _gamma_grad(gg: Tensor, gamma: Tensor, needed: bool, ctx) -> Optional[Tensor]:
    if needed:
        return gg
    if ctx.needs_input_grad[2]:  # linear kernel: gamma has no influence
        return torch.zeros_like(gamma)
    return None


_gram_op.register_autograd(_gram_bwd, setup_context=_gram_setup)


@torch.library.custom_op("multialign::gram_matvec", mutates_args=())
def _gram_matvec_op(x: Tensor, y: Optional[Tensor], v: Tensor, gamma: Tensor, kernel: str, degree: int,
                    coef0: float, backend: str) -> Tensor:
    return _kern(backend).gram_matvec_forward(x, y, v, gamma, kernel, degree, coef0)


@_gram_matvec_op.register_fake
def _(x, y, v, gamma, kernel, degree, coef0, backend):
    return x.new_empty(x.shape[0], x.shape[1], v.shape[2])


@torch.library.custom_op("multialign::gram_matvec_backward", mutates_args=())
def _gram_matvec_backward_op(grad: Tensor, x: Tensor, y: Optional[Tensor], v: Tensor, gamma: Tensor, kernel: str,
                             degree: int, coef0: float, backend: str, needs: list[bool]) -> list[Tensor]:
    gx, gy, gv, gg = _kern(backend).gram_matvec_backward(grad.contiguous(), x, y, v, gamma, kernel, degree, coef0,
                                                         tuple(needs))
    return [_or_empty(gx, x), _or_empty(gy, x), _or_empty(gv, v), _or_empty(gg, gamma)]


@_gram_matvec_backward_op.register_fake
def _(grad, x, y, v, gamma, kernel, degree, coef0, backend, needs):
    return [_fake_grad(x, needs[0]), _fake_grad(y, needs[1] and y is not None, like=x),
            _fake_grad(v, needs[2]), _fake_grad(gamma, needs[3])]


def _matvec_setup(ctx, inputs, output):
    x, y, v, gamma, kernel, degree, coef0, backend = inputs
    ctx.save_for_backward(x, y, v, gamma)
    ctx.args = (kernel, degree, coef0, backend)


def _matvec_bwd(ctx, grad):
    x, y, v, gamma = ctx.saved_tensors
    kernel, degree, coef0, backend = ctx.args
    ni = ctx.needs_input_grad
    needs = [bool(ni[0]), bool(ni[1]) and y is not None, bool(ni[2]), bool(ni[3]) and kernel != "linear"]
    gx, gy, gv, gg = _gram_matvec_backward_op(grad, x, y, v, gamma, kernel, degree, coef0, backend, needs)
    return (_none_if_empty(gx, needs[0]), _none_if_empty(gy, needs[1]), _none_if_empty(gv, needs[2]),
            _gamma_grad(gg, gamma, needs[3], _Shifted(ctx, 3)), None, None, None, None)


class _Shifted:
    """Expose ``needs_input_grad[k]`` of ctx at index 2 (what _gamma_grad reads)."""

    def __init__(self, ctx, k):
        self.needs_input_grad = (None, None, ctx.needs_input_grad[k])


_gram_matvec_op.register_autograd(_matvec_bwd, setup_context=_matvec_setup)

# --------------------------------------------------------------------------------------------------
# public wrappers
# --------------------------------------------------------------------------------------------------

GammaLike = Union[None, float, int, str, Tensor]


def _check_kernel(op: str, kernel) -> str:
    if not isinstance(kernel, str) or kernel not in KERNELS:
        raise ValueError(f"{op}: kernel must be one of {KERNELS}, got {kernel!r}")
    return kernel


def _check_points(op: str, x: Tensor, y: Optional[Tensor]):
    check_tensor("x", x, op=op, min_dim=2, what="(..., N, D)")
    if y is not None:
        check_tensor("y", y, op=op, min_dim=2, what="(..., M, D)")
        check_same(op, x=x, y=y)
        if y.shape[-1] != x.shape[-1]:
            raise ValueError(f"{op}: x and y must have the same number of features (last dimension); "
                             f"got x with D={x.shape[-1]} (shape {tuple(x.shape)}) and y with D={y.shape[-1]} "
                             f"(shape {tuple(y.shape)})")


def _median_gamma(x: Tensor, y: Optional[Tensor], batch: torch.Size) -> Tensor:
    """1 / (2 med^2), med = median pairwise distance of the pooled points of each problem (detached)."""
    with torch.no_grad():
        xb = flatten_batch(x, batch, 2).to(param_dtype(x.dtype))
        pts = xb if y is None else torch.cat([xb, flatten_batch(y, batch, 2).to(xb.dtype)], dim=1)
        n = pts.shape[1]
        if n > 2048:
            gen = torch.Generator(device="cpu").manual_seed(0)
            idx = torch.randperm(n, generator=gen)[:2048].to(pts.device)
            pts = pts[:, idx]
            n = 2048
        # explicit differences: exact for close points (this is a 2048^2 x D pass at most, chunked)
        from multialign.kernels.reference.gram import _pairwise

        d = _pairwise(pts, pts, 2).clamp_min_(0).sqrt_()
        iu = torch.triu_indices(n, n, offset=1, device=pts.device)
        dist = d[:, iu[0], iu[1]]
        if dist.shape[1] == 0:
            med = torch.ones(dist.shape[0], dtype=dist.dtype, device=dist.device)
        else:
            med = dist.median(dim=1).values
            nz = dist > 0
            mean_nz = (dist * nz).sum(1) / nz.sum(1).clamp_min(1)
            med = torch.where(med > 0, med, torch.where(mean_nz > 0, mean_nz, torch.ones_like(med)))
        return (0.5 / (med * med)).to(param_dtype(x.dtype))


def _gamma_tensor(op: str, gamma: GammaLike, kernel: str, x: Tensor, y: Optional[Tensor],
                  batch: torch.Size) -> Tensor:
    """The per-problem gamma as a (B,) tensor in the kernels' parameter dtype."""
    dtype = param_dtype(x.dtype)
    B = int(torch.Size(batch).numel())
    if kernel in _GAMMA_FREE and not isinstance(gamma, Tensor):
        return torch.ones(B, dtype=dtype, device=x.device)
    if gamma is None:
        return torch.full((B,), 1.0 / x.shape[-1], dtype=dtype, device=x.device)
    if isinstance(gamma, str):
        if gamma != "median":
            raise ValueError(f"{op}: gamma must be None, a positive float, a tensor or 'median', got {gamma!r}")
        return _median_gamma(x, y, batch)
    if isinstance(gamma, Tensor):
        if not gamma.dtype.is_floating_point:
            raise TypeError(f"{op}: gamma tensor must have a floating dtype, got {gamma.dtype}")
        if gamma.device != x.device:
            raise ValueError(f"{op}: gamma is on {gamma.device} but x is on {x.device}; expected one device")
        try:
            g = gamma.to(dtype).expand(batch)
        except RuntimeError:
            raise ValueError(f"{op}: gamma of shape {tuple(gamma.shape)} does not broadcast over the batch "
                             f"shape {tuple(batch)} of the inputs") from None
        if validation_enabled() and bool((g < 0).any()):
            raise ValueError(f"{op}: gamma must be >= 0, got a tensor with negative entries (min {float(g.min())})")
        return g.reshape(B)
    if isinstance(gamma, (int, float)) and not isinstance(gamma, bool):
        if not gamma >= 0 or gamma == float("inf"):
            raise ValueError(f"{op}: gamma must be a finite number >= 0, got {gamma!r}")
        return torch.full((B,), float(gamma), dtype=dtype, device=x.device)
    raise TypeError(f"{op}: gamma must be None, a float, a tensor or 'median', got {type(gamma).__name__}")


def _check_degree(op: str, kernel: str, degree, coef0):
    if kernel == "polynomial":
        if isinstance(degree, bool) or not isinstance(degree, int) or degree < 0:
            raise ValueError(f"{op}: degree must be an integer >= 0, got {degree!r}")
    if not isinstance(coef0, (int, float)) or isinstance(coef0, bool):
        raise TypeError(f"{op}: coef0 must be a number, got {type(coef0).__name__}")


def _normalise_rows(t: Tensor) -> Tensor:
    # scikit-learn's cosine_similarity leaves all-zero rows at zero
    return torch.nn.functional.normalize(t, dim=-1, eps=1e-30 if t.dtype == torch.float64 else 1e-20)


def gram(x: Tensor, y: Optional[Tensor] = None, *, kernel: str = "rbf", gamma: GammaLike = None, degree: int = 3,
         coef0: float = 1.0, backend: str = "auto") -> Tensor:
    """Kernel Gram matrix ``K[..., i, j] = k(x[..., i, :], y[..., j, :])`` of shape ``(..., N, M)``.

    ``y=None`` means ``y = x`` (the symmetric Gram matrix). Leading batch dimensions of x, y and gamma
    broadcast. Differentiable in x, y and a tensor gamma. float16/bfloat16 inputs are computed with float32
    accumulation and returned in the input dtype.
    """
    op = "gram"
    kernel = _check_kernel(op, kernel)
    _check_points(op, x, y)
    _check_degree(op, kernel, degree, coef0)
    check_finite(op, x=x, y=y)
    batch = broadcast_batch(op, ("x",) if y is None else ("x", "y"),
                            [x.shape[:-2]] if y is None else [x.shape[:-2], y.shape[:-2]])
    if isinstance(gamma, Tensor):
        batch = broadcast_batch(op, ("inputs", "gamma"), [batch, gamma.shape])
    be = resolve_backend(backend, x, op=op)
    g = _gamma_tensor(op, gamma, kernel, x, y, batch)
    if kernel == "cosine":
        x = _normalise_rows(x)
        y = None if y is None else _normalise_rows(y)
        kernel = "linear"
    xb = flatten_batch(x, batch, 2)
    yb = None if y is None else flatten_batch(y, batch, 2)
    K = _gram_op(xb, yb, g, kernel, int(degree), float(coef0), be)
    return K.reshape(*batch, K.shape[-2], K.shape[-1])


def gram_matvec(x: Tensor, y: Optional[Tensor], v: Tensor, *, kernel: str = "rbf", gamma: GammaLike = None,
                degree: int = 3, coef0: float = 1.0, backend: str = "auto") -> Tensor:
    """``K(x, y) @ v`` without materialising K: ``v (..., M)`` -> ``(..., N)``, ``v (..., M, C)`` -> ``(..., N, C)``.

    ``y=None`` means ``y = x``. Memory is O((N + M)(D + C)); the backward is another fused reduction.
    """
    op = "gram_matvec"
    kernel = _check_kernel(op, kernel)
    _check_points(op, x, y)
    _check_degree(op, kernel, degree, coef0)
    check_tensor("v", v, op=op, min_dim=1, what="(..., M) or (..., M, C)")
    check_same(op, x=x, v=v)
    M = x.shape[-2] if y is None else y.shape[-2]
    # v is (..., M) when its last dimension is M and it has fewer dims than a (..., M, C) reading needs
    vec = v.dim() == 1 or (v.shape[-1] == M and (v.dim() < x.dim() or v.shape[-2] != M))
    vv = v.unsqueeze(-1) if vec else v
    if vv.dim() < 2 or vv.shape[-2] != M:
        raise ValueError(f"{op}: v must have shape (..., M) or (..., M, C) with M={M} (the rows of "
                         f"{'x' if y is None else 'y'}), got shape {tuple(v.shape)}")
    check_finite(op, x=x, y=y, v=v)
    names = ["x"] + ([] if y is None else ["y"]) + ["v"]
    shapes = [x.shape[:-2]] + ([] if y is None else [y.shape[:-2]]) + [vv.shape[:-2]]
    batch = broadcast_batch(op, names, shapes)
    if isinstance(gamma, Tensor):
        batch = broadcast_batch(op, ("inputs", "gamma"), [batch, gamma.shape])
    be = resolve_backend(backend, x, op=op)
    g = _gamma_tensor(op, gamma, kernel, x, y, batch)
    if kernel == "cosine":
        x = _normalise_rows(x)
        y = None if y is None else _normalise_rows(y)
        kernel = "linear"
    xb = flatten_batch(x, batch, 2)
    yb = None if y is None else flatten_batch(y, batch, 2)
    vb = flatten_batch(vv, batch, 2)
    out = _gram_matvec_op(xb, yb, vb, g, kernel, int(degree), float(coef0), be)
    out = out.reshape(*batch, out.shape[-2], out.shape[-1])
    return out.squeeze(-1) if vec else out


def _diag_sum(x: Tensor, kernel: str, gamma: Tensor, degree: int, coef0: float) -> Tensor:
    """sum_i k(x_i, x_i) per problem, x (B, N, D), gamma (B,)."""
    if kernel in ("rbf", "laplacian"):
        return torch.full(x.shape[:1], float(x.shape[1]), dtype=x.dtype, device=x.device)
    sq = (x * x).sum(-1)
    if kernel in ("linear", "cosine"):
        return sq.sum(-1)
    return ((gamma[:, None] * sq + coef0) ** degree).sum(-1)


def mmd2(x: Tensor, y: Tensor, *, kernel: str = "rbf", gamma: GammaLike = None, unbiased: bool = False,
         degree: int = 3, coef0: float = 1.0, backend: str = "auto") -> Tensor:
    """Squared maximum mean discrepancy between the samples x ``(..., N, D)`` and y ``(..., M, D)``.

    Biased (V-statistic, >= 0):   mean K(x,x) + mean K(y,y) - 2 mean K(x,y)
    Unbiased (U-statistic):      the self terms average over i != j only (can be < 0; needs N, M >= 2).

    Built on three fused reductions (``gram_matvec`` with ``v = 1``): memory O(N + M), never N x M.
    ``gamma="median"`` pools x and y.
    """
    op = "mmd2"
    kernel = _check_kernel(op, kernel)
    if y is None:
        raise ValueError(f"{op}: y must be a tensor (..., M, D), got None")
    _check_points(op, x, y)
    _check_degree(op, kernel, degree, coef0)
    N, M = x.shape[-2], y.shape[-2]
    if unbiased and (N < 2 or M < 2):
        raise ValueError(f"{op}: the unbiased estimate needs at least 2 points in each sample, got N={N}, M={M}")
    if N < 1 or M < 1:
        raise ValueError(f"{op}: x and y need at least one point each, got N={N}, M={M}")
    check_finite(op, x=x, y=y)
    batch = broadcast_batch(op, ("x", "y"), [x.shape[:-2], y.shape[:-2]])
    if isinstance(gamma, Tensor):
        batch = broadcast_batch(op, ("inputs", "gamma"), [batch, gamma.shape])
    be = resolve_backend(backend, x, op=op)
    g = _gamma_tensor(op, gamma, kernel, x, y, batch)
    if kernel == "cosine":
        x, y, kernel = _normalise_rows(x), _normalise_rows(y), "linear"
    xb, yb = flatten_batch(x, batch, 2), flatten_batch(y, batch, 2)
    deg, c0 = int(degree), float(coef0)
    ones_n = xb.new_ones(xb.shape[0], N, 1)
    ones_m = xb.new_ones(xb.shape[0], M, 1)
    sxx = _gram_matvec_op(xb, None, ones_n, g, kernel, deg, c0, be).sum((-1, -2))
    syy = _gram_matvec_op(yb, None, ones_m, g, kernel, deg, c0, be).sum((-1, -2))
    sxy = _gram_matvec_op(xb, yb, ones_m, g, kernel, deg, c0, be).sum((-1, -2))
    if unbiased:
        dx = _diag_sum(xb, kernel, g, deg, c0)
        dy = _diag_sum(yb, kernel, g, deg, c0)
        val = (sxx - dx) / (N * (N - 1)) + (syy - dy) / (M * (M - 1)) - 2.0 * sxy / (N * M)
    else:
        val = sxx / (N * N) + syy / (M * M) - 2.0 * sxy / (N * M)
    return val.reshape(batch)
