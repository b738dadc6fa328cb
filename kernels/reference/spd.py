"""Batched functions of symmetric matrices: the PyTorch specification.

Shapes (the ops layer flattens leading batch dimensions to one): ``S (B, n, n)``. Every function reads
the symmetric part ``sym(S) = (S + S^T) / 2``, so its gradient is symmetric.

Forward (METHODS.md C.4.1)::

    lam, V = eigh(sym(S))                     ascending eigenvalues, orthonormal eigenvectors
    lam_hat = max(lam, floor)                 floor = max(abs_floor, rel_floor * max(lam_max, 0))
                                              (rel_floor = 0: floor = abs_floor; -inf: no clamp)
    F = V diag(f(lam_hat)) V^T

with ``f`` one of ``log``, ``sqrt``, ``invsqrt`` (lam^-1/2), ``exp`` and ``pow`` (lam^p). The ops layer
chooses the floors (``abs_floor = -inf`` means no clamp).

Backward: Daleckii-Krein (METHODS.md C.4.2)::

    S_bar = V [ (V^T sym(F_bar) V) o L ] V^T,    L_ij = (h(lam_i) - h(lam_j)) / (lam_i - lam_j),  L_ii = h'(lam_i)

where ``h(lam) = f(max(lam, floor))`` (the floor is held constant). ``L`` is evaluated in forms that never
subtract nearly equal numbers (:func:`loewner`), so it is finite and accurate at repeated and nearly
repeated eigenvalues -- unlike autograd through ``torch.linalg.eigh``, whose eigenvector gradient divides
by ``lam_i - lam_j``.

``eigh_forward`` normalises the sign of every eigenvector (its entry of largest magnitude is positive)
so that all backends return the same vectors for distinct eigenvalues.
"""
from __future__ import annotations

import math

import torch

FUNCS = ("log", "sqrt", "invsqrt", "exp", "pow")


def sym(S: torch.Tensor) -> torch.Tensor:
    return 0.5 * (S + S.transpose(-1, -2))


def eig_floor(lam: torch.Tensor, abs_floor: float, rel_floor: float) -> torch.Tensor:
    """(B, 1) clamp value: ``abs_floor``, raised to ``rel_floor * max(lam_max, 0)`` when rel_floor > 0."""
    floor = torch.full(lam.shape[:-1] + (1,), abs_floor, dtype=lam.dtype, device=lam.device)
    if rel_floor > 0:
        top = lam.amax(dim=-1, keepdim=True).clamp_min(0)
        floor = torch.maximum(floor, rel_floor * top)
    return floor


def apply_func(x: torch.Tensor, func: str, p: float) -> torch.Tensor:
    if func == "log":
        return torch.log(x)
    if func == "sqrt":
        return torch.sqrt(x)
    if func == "invsqrt":
        return torch.rsqrt(x)
    if func == "exp":
        return torch.exp(x)
    if func == "pow":
        return torch.pow(x, p)
    raise ValueError(f"spd: unknown matrix function {func!r}; expected one of {FUNCS}")


def sign_normalise(V: torch.Tensor) -> torch.Tensor:
    """Flip each column so that its entry of largest magnitude (the first one, on ties) is positive."""
    idx = V.abs().argmax(dim=-2, keepdim=True)
    s = torch.sign(torch.gather(V, -2, idx))
    return V * torch.where(s == 0, torch.ones_like(s), s)


def eigh_forward(S: torch.Tensor):
    """(w, V): ascending eigenvalues ``(B, n)`` and sign-normalised eigenvectors ``(B, n, n)`` of sym(S)."""
    w, V = torch.linalg.eigh(sym(S))
    return w, sign_normalise(V)


def eigh_backward(gw: torch.Tensor, gV: torch.Tensor, w: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """Gradient w.r.t. S of <gw, w> + <gV, V>:  sym(V (diag(gw) + E o (V^T gV)) V^T).

    ``E_ij = 1 / (w_j - w_i)`` for distinct eigenvalues and 0 for equal ones. Eigenvectors of a repeated
    eigenvalue are not unique, so their gradient is only meaningful for losses that do not depend on the
    choice of basis (for those, the zeroed entries multiply zero).
    """
    diff = w[..., None, :] - w[..., :, None]
    E = torch.where(diff == 0, torch.zeros_like(diff), 1.0 / torch.where(diff == 0, torch.ones_like(diff), diff))
    inner = E * (V.transpose(-1, -2) @ gV) + torch.diag_embed(gw)
    return sym(V @ inner @ V.transpose(-1, -2))


def matfun_forward(S: torch.Tensor, func: str, p: float, abs_floor: float, rel_floor: float):
    """(F, w, V): ``F = V diag(f(max(w, floor))) V^T`` and the (unclamped) eigendecomposition it used."""
    w, V = torch.linalg.eigh(sym(S))
    lam = torch.maximum(w, eig_floor(w, abs_floor, rel_floor))
    F = (V * apply_func(lam, func, p)[..., None, :]) @ V.transpose(-1, -2)
    return sym(F), w, V


def loewner(lam: torch.Tensor, func: str, p: float) -> torch.Tensor:
    """Divided differences ``L_ij = (f(l_i) - f(l_j)) / (l_i - l_j)``, ``L_ii = f'(l_i)``, without cancellation.

    With ``a = min(l_i, l_j)``, ``d = |l_i - l_j|`` (exact when the two are close, by Sterbenz' lemma)
    and ``u = d / a``:

        log      log1p(u) / d                      (1 / l on the diagonal)
        sqrt     1 / (sqrt l_i + sqrt l_j)         (0 where both are 0)
        invsqrt  -1 / (sqrt l_i sqrt l_j (sqrt l_i + sqrt l_j))
        exp      exp(a) expm1(d) / d
        pow      a^p expm1(p log1p(u)) / d         (p a^(p-1) on the diagonal; a = 0: b^p / b)
    """
    li, lj = lam[..., :, None], lam[..., None, :]
    a = torch.minimum(li, lj)
    b = torch.maximum(li, lj)
    d = b - a
    same = d == 0
    d1 = torch.where(same, torch.ones_like(d), d)
    if func == "sqrt":
        s = torch.sqrt(li) + torch.sqrt(lj)
        return torch.where(s == 0, torch.zeros_like(s), 1.0 / torch.where(s == 0, torch.ones_like(s), s))
    if func == "invsqrt":
        si, sj = torch.sqrt(li), torch.sqrt(lj)
        return -1.0 / (si * sj * (si + sj))
    if func == "log":
        a1 = torch.where(a == 0, torch.ones_like(a), a)
        return torch.where(same, 1.0 / a, torch.log1p(d / a1) / d1)
    if func == "exp":
        return torch.exp(a) * torch.where(same, torch.ones_like(d), torch.expm1(d) / d1)
    if func == "pow":
        a1 = torch.where(a == 0, torch.ones_like(a), a)
        general = a ** p * torch.expm1(p * torch.log1p(d / a1)) / d1
        from_zero = b ** p / torch.where(b == 0, torch.ones_like(b), b)        # a == 0 < b
        diag = p * a ** (p - 1) if p != 1 else torch.ones_like(a)
        diag = torch.where(a == 0, torch.zeros_like(a) if p != 1 else torch.ones_like(a), diag)
        return torch.where(same, diag, torch.where(a == 0, from_zero, general))
    raise ValueError(f"spd: unknown matrix function {func!r}; expected one of {FUNCS}")


def clamped_loewner(w: torch.Tensor, func: str, p: float, abs_floor: float, rel_floor: float) -> torch.Tensor:
    """Loewner matrix of ``h(l) = f(max(l, floor))`` at the unclamped eigenvalues ``w``.

    ``(h(w_i) - h(w_j)) / (w_i - w_j) = L_f(lam_i, lam_j) * (lam_i - lam_j) / (w_i - w_j)`` with
    ``lam = max(w, floor)``: the factor is 1 where neither is clamped and in [0, 1) otherwise (0 on the
    diagonal of a clamped eigenvalue, where h' = 0).
    """
    lam = torch.maximum(w, eig_floor(w, abs_floor, rel_floor))
    L = loewner(lam, func, p)
    clamped = lam != w
    dw = w[..., :, None] - w[..., None, :]
    dl = lam[..., :, None] - lam[..., None, :]
    any_c = clamped[..., :, None] | clamped[..., None, :]
    ratio = torch.where(dw == 0, torch.zeros_like(dw), dl / torch.where(dw == 0, torch.ones_like(dw), dw))
    return torch.where(any_c, L * ratio, L)


def matfun_backward(grad: torch.Tensor, w: torch.Tensor, V: torch.Tensor, func: str, p: float,
                    abs_floor: float, rel_floor: float) -> torch.Tensor:
    """Daleckii-Krein: ``V [(V^T sym(grad) V) o L] V^T``."""
    L = clamped_loewner(w, func, p, abs_floor, rel_floor)
    Vt = V.transpose(-1, -2)
    return sym(V @ ((Vt @ sym(grad) @ V) * L) @ Vt)


def default_floors(func: str, p: float, dtype: torch.dtype, min_eig):
    """(abs_floor, rel_floor) for a function: METHODS.md C.4.1 step 3.

    ``min_eig=None``: log, invsqrt and negative powers clamp at ``max(a, r * lam_max)`` with
    (a, r) = (1e-20, 1e-12) in float64 and (1e-10, 1e-6) otherwise; sqrt and non-negative powers clamp at 0;
    exp does not clamp. A number ``min_eig`` clamps at exactly that value.
    """
    if func == "exp":
        return -math.inf, 0.0
    if min_eig is not None:
        return float(min_eig), 0.0
    if func in ("log", "invsqrt") or (func == "pow" and p < 0):
        return (1e-20, 1e-12) if dtype == torch.float64 else (1e-10, 1e-6)
    return 0.0, 0.0
