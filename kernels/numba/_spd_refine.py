"""Mixed-precision refinement of a float32 lane-group eigendecomposition (``numba/spd.py``).

A float32 solve has backward error ``eps32 ||S||``: the computed (lam, V) are exact for some ``S + dS``
with ``||dS|| ~ 1e-7 ||S||``, and ``f(S)`` inherits ``||L_f|| ||dS||`` -- for the logarithm
``eps32 * cond(S)`` (measured 1.6e-5 relative to max |log S| on the benchmark matrices, condition ~1e3;
4e-5 at condition 1e4). One first-order correction against the *input* S, in float64, removes it:

* ``M = V^T S V`` in float64 (V the float32 eigenvectors, rows of ``Vt``; S the float32 input, both exact
  in float64): diagonal up to ``E = offdiag(M) ~ eps32 ||S||``.
* ``f(M) = diag f(M_kk) + Lw o E + O(||E||^2 max|f''|)`` (Daleckii-Krein; ``Lw`` the Loewner matrix at
  the refined eigenvalues ``M_kk``; valid for close and repeated eigenvalues alike), and
  ``f(S) ~ V f(M) V^T = V Y V^T`` with ``Y_kk = f(M_kk)``, ``Y_km = Lw_km M_km``.
* V is orthogonal only to ``N = V^T V - I ~ n eps32``. The column norms are divided out exactly
  (``lam_k = M_kk / |v_k|^2``, ``Y_kk = f(lam_k) / |v_k|^2``: ``V D`` with unit columns,
  ``D = diag(1 / |v_k|)``); the first-order terms of the off-diagonal N (``Q = V (I - N/2)`` orthogonal)
  would change ``Y_km`` by ``-N_km (f_k + f_m) / 2 - Lw_km N_km (M_kk + M_mm) / 2``, both
  ``|N| * O(max |f|)`` (for log: ``Lw_km (lam_k + lam_m) / 2 <= max(1, log(lam_max / lam_min) / 2)``),
  ~1e-7 relative, at the float32 rounding of the result, so they are left out.

The remaining error is second order, ``||E||^2 max|f''|`` (for log: ``(eps32 cond)^2``) plus the float32
rounding of Y and of the final product: measured 3e-7 relative to max |log S| at d = 16, 64 (condition
~1e3) and d = 16, 33 at condition 1e4. Cost: float64 ``S V`` (d^3) and ``V^T (S V)`` (d^3 / 2), and a
float32 reconstruction with a full Y (1.5 d^3 instead of d^3 / 2).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ._spd_lanes import _dd_exp, _dd_invsqrt, _dd_pow, _dd_sqrt, apply_func, floor_of, mirror_upper
from ._spd_math import log64

_JIT = dict(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")


@njit(**_JIT)
def refine_products(Ss, scale, Vt, P, M, nrm):
    """``M = V^T S V / scale`` (upper triangle, float64) and ``nrm[k] = |v_k|^2`` for the L lanes.

    ``Ss`` (n, n, L) holds ``sym(S) * scale`` (exact, any float dtype); ``Vt`` (n, n, L) the eigenvectors
    as rows; ``P`` (n, n, L) float64 scratch (``P[k, i] = (S v_k)_i``). The sums run four terms per pass
    over the accumulator row (the lane loops are bound by its loads and stores); converting Ss and Vt
    to float64 copies first measured slower.
    """
    n, L = Vt.shape[0], Vt.shape[2]
    n4 = n - n % 4
    n2 = n - n % 2
    for i in range(n):
        for k in range(0, n2, 2):   # two rows of P per pass: each row of S is read once for both
            for l in range(L):
                P[k, i, l] = 0.0
                P[k + 1, i, l] = 0.0
            for j in range(0, n4, 4):
                for l in range(L):
                    s0 = np.float64(Ss[i, j, l])
                    s1 = np.float64(Ss[i, j + 1, l])
                    s2 = np.float64(Ss[i, j + 2, l])
                    s3 = np.float64(Ss[i, j + 3, l])
                    P[k, i, l] += (s0 * np.float64(Vt[k, j, l]) + s1 * np.float64(Vt[k, j + 1, l])
                                   + s2 * np.float64(Vt[k, j + 2, l]) + s3 * np.float64(Vt[k, j + 3, l]))
                    P[k + 1, i, l] += (s0 * np.float64(Vt[k + 1, j, l]) + s1 * np.float64(Vt[k + 1, j + 1, l])
                                       + s2 * np.float64(Vt[k + 1, j + 2, l]) + s3 * np.float64(Vt[k + 1, j + 3, l]))
            for j in range(n4, n):
                for l in range(L):
                    sj = np.float64(Ss[i, j, l])
                    P[k, i, l] += sj * np.float64(Vt[k, j, l])
                    P[k + 1, i, l] += sj * np.float64(Vt[k + 1, j, l])
        for k in range(n2, n):
            for l in range(L):
                P[k, i, l] = 0.0
            for j in range(n):
                for l in range(L):
                    P[k, i, l] += np.float64(Ss[i, j, l]) * np.float64(Vt[k, j, l])
    for k in range(n):
        for m in range(k, n):
            for l in range(L):
                M[k, m, l] = 0.0
            for i in range(0, n4, 4):
                for l in range(L):
                    M[k, m, l] += (np.float64(Vt[k, i, l]) * P[m, i, l]
                                   + np.float64(Vt[k, i + 1, l]) * P[m, i + 1, l]
                                   + np.float64(Vt[k, i + 2, l]) * P[m, i + 2, l]
                                   + np.float64(Vt[k, i + 3, l]) * P[m, i + 3, l])
            for i in range(n4, n):
                for l in range(L):
                    M[k, m, l] += np.float64(Vt[k, i, l]) * P[m, i, l]
            for l in range(L):
                M[k, m, l] /= np.float64(scale[l])
    for k in range(n):
        for l in range(L):
            nrm[k, l] = 0.0
        for i in range(n):
            for l in range(L):
                vki = np.float64(Vt[k, i, l])
                nrm[k, l] += vki * vki


@njit(**_JIT)
def refined_values(M, nrm, func, p, abs_floor, rel_floor, lam64, h, fh):
    """``lam64[k] = M_kk / |v_k|^2`` (the refined eigenvalues), ``h = max(lam64, floor)``, ``fh = f(h)``."""
    n, L = lam64.shape
    for k in range(n):
        for l in range(L):
            lam64[k, l] = M[k, k, l] / nrm[k, l]
    for l in range(L):
        top = -np.inf
        for k in range(n):
            top = max(top, lam64[k, l])
        fl = floor_of(top, abs_floor, rel_floor)
        for k in range(n):
            h[k, l] = max(lam64[k, l], fl)
    if func == 0:
        for k in range(n):
            for l in range(L):
                fh[k, l] = log64(h[k, l])
    else:
        for k in range(n):
            for l in range(L):
                fh[k, l] = apply_func(h[k, l], func, p)


@njit(**_JIT)
def refined_middle(M, nrm, lam64, h, fh, func, p, Y):
    """``Y`` (n, n, L), any float dtype: ``Y_kk = f_k / |v_k|^2``, ``Y_km = Lw_km M_km`` (M upper triangle),
    Lw the Loewner matrix of ``f(max(., floor))`` at ``lam64``.

    Lw multiplies a first-order correction (``|M_km| ~ eps32 ||S||``), so 1e-6 relative is plenty: for
    the logarithm it is ``(f_k - f_m) / (h_k - h_m)`` with float64 logarithms (relative error
    ``1e-16 / |log(h_k / h_m)|``) unless ``|h_k - h_m| <= 1e-3 (h_k + h_m)``, where ``2 / (h_k + h_m)``
    is within ``t^2 / 3 < 4e-7`` (``t = |h_k - h_m| / (h_k + h_m)``) of it. Other functions: the
    cancellation-free divided differences of ``_spd_lanes``. A clamped eigenvalue multiplies by
    ``(h_k - h_m) / (lam_k - lam_m)`` (0 when both are clamped), as ``_spd_lanes.loewner_group``.
    """
    n, L = fh.shape
    dt = Y.dtype.type
    for k in range(n):
        for l in range(L):
            Y[k, k, l] = dt(fh[k, l] / nrm[k, l])
        for m in range(k + 1, n):
            for l in range(L):
                hk = h[k, l]
                hm = h[m, l]
                dh = hk - hm
                if func == 0:
                    close = abs(dh) <= 1e-3 * (hk + hm)
                    v = 2.0 / (hk + hm) if close else (fh[k, l] - fh[m, l]) / dh
                else:
                    lo = hk <= hm
                    a = hk if lo else hm
                    b = hm if lo else hk
                    fa = fh[k, l] if lo else fh[m, l]
                    fb = fh[m, l] if lo else fh[k, l]
                    if func == 1:
                        v = _dd_sqrt(a, b, fa, fb, 0.0, 0.0)
                    elif func == 2:
                        v = _dd_invsqrt(a, b, fa, fb, 0.0, 0.0)
                    elif func == 3:
                        v = _dd_exp(a, b, fa, fb, 0.0, 0.0)
                    else:
                        v = _dd_pow(a, b, fa, fb, 1.0 / a, p)
                dw = lam64[k, l] - lam64[m, l]
                r = 0.0 if dw == 0.0 else dh / dw
                v = v * r if (hk != lam64[k, l] or hm != lam64[m, l]) else v
                Y[k, m, l] = dt(v * M[k, m, l])
    mirror_upper(Y)


@njit(**_JIT)
def reconstruct_full(Vt, Y, T, F):
    """``F = V Y V^T`` (upper triangle), ``V`` with rows ``Vt``, Y symmetric; T (n, n, L) scratch; F may be Y."""
    n, L = Vt.shape[0], Vt.shape[2]
    dt = F.dtype.type
    n4 = n - n % 4
    # T[k, j] = sum_m Y[k, m] V[j, m] = sum_m Y[k, m] Vt[m, j]
    for k in range(n):
        for j in range(n):
            for l in range(L):
                T[k, j, l] = dt(0)
            for m in range(0, n4, 4):
                for l in range(L):
                    T[k, j, l] += (Y[k, m, l] * Vt[m, j, l] + Y[k, m + 1, l] * Vt[m + 1, j, l]
                                   + Y[k, m + 2, l] * Vt[m + 2, j, l] + Y[k, m + 3, l] * Vt[m + 3, j, l])
            for m in range(n4, n):
                for l in range(L):
                    T[k, j, l] += Y[k, m, l] * Vt[m, j, l]
    # F[i, j] = sum_k V[i, k] T[k, j] = sum_k Vt[k, i] T[k, j], j >= i
    for i in range(n):
        for j in range(i, n):
            for l in range(L):
                F[i, j, l] = dt(0)
            for k in range(0, n4, 4):
                for l in range(L):
                    F[i, j, l] += (Vt[k, i, l] * T[k, j, l] + Vt[k + 1, i, l] * T[k + 1, j, l]
                                   + Vt[k + 2, i, l] * T[k + 2, j, l] + Vt[k + 3, i, l] * T[k + 3, j, l])
            for k in range(n4, n):
                for l in range(L):
                    F[i, j, l] += Vt[k, i, l] * T[k, j, l]
