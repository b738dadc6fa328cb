"""Lane-interleaved plumbing shared by the Numba SPD kernels (``numba/spd.py``).

A group of ``L = LANES`` matrices is processed at once, lane ``l`` of every scratch array holding matrix
``l`` (``A[i, j, l]``), so that every per-matrix scalar operation becomes an elementwise operation over
``L`` contiguous lanes -- AVX2 code after LLVM's loop vectoriser. Two rules keep the vectoriser on:

* ``error_model="numpy"`` on every kernel: with Python's error model a float division checks for zero
  and the loop cannot be vectorised.
* LLVM hoists its run-time alias checks out of the enclosing loop and compares the whole address ranges
  a loop touches. A loop may read and write the same array only through disjoint contiguous blocks
  (e.g. rows p and q of ``A[p, r, l]``); interleaved streams (columns, or ``X[i, j]`` with ``X[j, i]``)
  go through a scratch copy or a separate loop. A loop that failed the check would silently run the
  scalar fallback (measured 5x slower). With runtime trip counts the vectoriser also needs ``L >= 32``
  lanes (float32) before it takes the vector path.

This module has the gather/scale step, the matrix function on the eigenvalues, the reconstruction
``V f(lam) V^T`` and the Daleckii-Krein backward with its cancellation-free Loewner matrix (evaluated in
float64 with the branch-free ``log64``/``exp64`` of ``_spd_math``, one matrix at a time, vectorised along
lanes).

Compile time: Numba re-optimises every compiled callee inside each caller's LLVM module, so the kernels
call these helpers from one level only (``numba/spd.py``), and the Loewner matrix is float64 for every
input dtype (one specialisation).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._spd_math import log64

LANES = 32
FUNC_CODES = {"log": 0, "sqrt": 1, "invsqrt": 2, "exp": 3, "pow": 4}

_JIT = dict(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")



@njit(**_JIT)
def load_group(S, b0, A, scale):
    """Gather matrices ``b0 .. b0+L-1`` of S (B, n, n) into lanes of A (n, n, L) as ``sym(S) * 2^-e``.

    ``2^-e`` puts max |a_ij| in [1/2, 1); lanes past the batch end hold the identity. The lanes are the
    innermost loop (contiguous writes, strided reads): writing each matrix's rows into the lanes in turn
    made every store touch a new cache line, 3x slower in float64 (where A outgrows L1).
    """
    B, n = S.shape[0], S.shape[1]
    L = A.shape[2]
    dt = A.dtype.type
    nb = min(L, B - b0)
    for i in range(n):
        for j in range(n):
            for l in range(nb):
                A[i, j, l] = dt(0.5) * (S[b0 + l, i, j] + S[b0 + l, j, i])
            for l in range(nb, L):
                A[i, j, l] = dt(1) if i == j else dt(0)
    for l in range(L):
        scale[l] = dt(0)
    for i in range(n):
        for j in range(n):
            for l in range(L):
                av = abs(A[i, j, l])
                scale[l] = av if av > scale[l] else scale[l]
    for l in range(L):
        amax = float(scale[l])
        sc = 1.0
        if amax > 0.0 and amax < np.inf:
            _, e = math.frexp(amax)
            sc = math.ldexp(1.0, -e)
        scale[l] = dt(sc)
    for i in range(n):
        for j in range(n):
            for l in range(L):
                A[i, j, l] *= scale[l]


@njit(inline="always")
def apply_func(x, func, p):
    if func == 0:
        return math.log(x)
    if func == 1:
        return math.sqrt(x)
    if func == 2:
        return 1.0 / math.sqrt(x)
    if func == 3:
        return math.exp(x)
    return x ** p


@njit(inline="always")
def floor_of(top, abs_floor, rel_floor):
    """``abs_floor``, raised to ``rel_floor * max(top, 0)`` when rel_floor > 0 (reference ``eig_floor``)."""
    f = abs_floor
    if rel_floor > 0.0:
        t = top if top > 0.0 else 0.0
        f = max(f, rel_floor * t)
    return f


@njit(**_JIT)
def eigvals_group(A, scale, lam):
    """``lam[k, l]`` = unscaled eigenvalue k of lane l (the diagonal of the converged A)."""
    n, L = A.shape[0], A.shape[2]
    for k in range(n):
        for l in range(L):
            lam[k, l] = A[k, k, l] / scale[l]


@njit(**_JIT)
def mirror_upper(A):
    """``A[i, j, l] = A[j, i, l]`` for j < i: the lower triangles from the upper ones, lanes innermost (row i
    reads rows < i and writes row i: no interleaved streams, one vectorised loop)."""
    n, L = A.shape[0], A.shape[2]
    for i in range(1, n):
        for j in range(i):
            for l in range(L):
                A[i, j, l] = A[j, i, l]


@njit(**_JIT)
def matfun_values(lam, func, p, abs_floor, rel_floor, fw):
    """``fw[k, l] = f(max(lam[k, l], floor_l))``. log and the square roots in vector loops across the lanes
    (``log64``: < 1 ulp, like libm's scalar calls, which it replaces); exp and powers through libm (the
    vectorisable ``exp64`` is 2 ulp; ``exp(p log x)`` would lose ``|p log x|`` ulp)."""
    n, L = lam.shape
    dt = fw.dtype.type
    fl = np.empty(L, np.float64)
    for l in range(L):
        top = -np.inf
        for k in range(n):
            top = max(top, float(lam[k, l]))
        fl[l] = floor_of(top, abs_floor, rel_floor)
    if func == 0:
        for k in range(n):
            for l in range(L):
                fw[k, l] = dt(log64(max(float(lam[k, l]), fl[l])))
    elif func == 1:
        for k in range(n):
            for l in range(L):
                fw[k, l] = dt(np.sqrt(max(float(lam[k, l]), fl[l])))
    elif func == 2:
        for k in range(n):
            for l in range(L):
                fw[k, l] = dt(1.0 / np.sqrt(max(float(lam[k, l]), fl[l])))
    else:
        for k in range(n):
            for l in range(L):
                fw[k, l] = dt(apply_func(max(float(lam[k, l]), fl[l]), func, p))


@njit(**_JIT)
def reconstruct_group(Vt, fw, W, F):
    """``F[i, j, l] = sum_k Vt[k, i, l] fw[k, l] Vt[k, j, l]`` for j >= i (upper triangle only)."""
    n, L = Vt.shape[0], Vt.shape[2]
    dt = F.dtype.type
    for i in range(n):
        for j in range(n):
            for l in range(L):
                F[i, j, l] = dt(0)
    for k in range(n):
        for i in range(n):
            for l in range(L):
                W[i, l] = Vt[k, i, l] * fw[k, l]
        for i in range(n):
            for j in range(i, n):
                for l in range(L):
                    F[i, j, l] += W[i, l] * Vt[k, j, l]


# ---------------------------------------------------------------------------------------------------
# Daleckii-Krein backward pieces
# ---------------------------------------------------------------------------------------------------


# Divided differences of f between 0 <= a <= b = a + d in float64, cancellation-free (reference
# ``loewner``). One pair costs at most one (vectorised) logarithm; exponentials and powers of single
# eigenvalues are computed once per eigenvalue (``fk``), so the pair loops stay small and vectorise.

_EXPM1_TERMS = 16  # expm1(y)/y = sum_k y^k/(k+1)!, |y| < 1/2: truncation < 2^-16/17! ~ 4e-20


@njit(inline="always")
def _expm1_over(y):
    r = 1.0 / 17.0
    for k in range(_EXPM1_TERMS - 1, 0, -1):
        r = 1.0 + y * r / (k + 1.0)
    return r


@njit(inline="always")
def _dd_log(a, b, fa, fb, ia, p):
    # log1p(d / a) / d = log(w) / ((w - 1) a) with w = fl(1 + d / a) (Goldberg's compensation: exact for the
    # u = w - 1 that w represents, so d / a may be d * (1 / a), one rounding more, one division less)
    w = 1.0 + (b - a) * ia
    v = log64(w) / ((w - 1.0) * a)
    v = ia if w == 1.0 else v
    return np.inf if a == 0.0 else v


@njit(inline="always")
def _dd_sqrt(a, b, fa, fb, ia, p):
    s = fa + fb  # fk = sqrt(lam_k)
    return 0.0 if s == 0.0 else 1.0 / s


@njit(inline="always")
def _dd_invsqrt(a, b, fa, fb, ia, p):
    sa = 1.0 / fa  # fk = lam_k^-1/2
    sb = 1.0 / fb
    return -1.0 / (sa * sb * (sa + sb))


@njit(inline="always")
def _dd_exp(a, b, fa, fb, ia, p):
    # fk = e^lam_k; (e^b - e^a) / d loses at most a factor e^d/(e^d - 1) < 2.6 for d >= 1/2
    d = b - a
    v = (fb - fa) / d
    return fa * _expm1_over(d) if d < 0.5 else v


@njit(inline="always")
def _dd_pow(a, b, fa, fb, ia, p):
    # fk = lam_k^p; with y = p log1p(d / a): a^p expm1(y) / d, from the series for |y| < 1/2,
    # from (b^p - a^p) / d otherwise (cancellation below a factor 2.6)
    d = b - a
    u = d * ia
    w = 1.0 + u
    l1p = u if w == 1.0 else log64(w) * (u / (w - 1.0))
    y = p * l1p
    v = fa * (y / d) * _expm1_over(y)
    v = (fb - fa) / d if abs(y) >= 0.5 else v
    v = fb / b if a == 0.0 else v
    diag = 1.0 if p == 1.0 else (0.0 if a == 0.0 else p * fa / a)
    return diag if d == 0.0 else v


@njit(inline="always")
def _loewner_pairs(lam, h, fh, ih, Lw, dd, p, clamped):
    """The upper triangle of the Loewner matrices (then mirrored). ``ih = 1 / h`` per eigenvalue (n divisions
    per matrix instead of one per pair). Without a clamped eigenvalue in the group (``clamped`` false: the
    usual case) the clamping correction ``(h_i - h_j) / (w_i - w_j)`` is left out: its division per pair
    would cost a fifth of the loop (which is bound by the divider)."""
    n, L = lam.shape
    for i in range(n):
        for j in range(i, n):
            if clamped:
                for l in range(L):
                    wi = lam[i, l]
                    wj = lam[j, l]
                    hi = h[i, l]
                    hj = h[j, l]
                    lo = hi <= hj
                    v = dd(hi if lo else hj, hj if lo else hi, fh[i, l] if lo else fh[j, l], fh[j, l] if lo else fh[i, l],
                           ih[i, l] if lo else ih[j, l], p)
                    # a clamped eigenvalue: the divided difference of h is L_f * (hi - hj) / (wi - wj)
                    dw = wi - wj
                    r = 0.0 if dw == 0.0 else (hi - hj) / dw
                    Lw[i, j, l] = v * r if (hi != wi or hj != wj) else v
            else:
                for l in range(L):
                    hi = h[i, l]
                    hj = h[j, l]
                    lo = hi <= hj
                    Lw[i, j, l] = dd(hi if lo else hj, hj if lo else hi, fh[i, l] if lo else fh[j, l],
                                     fh[j, l] if lo else fh[i, l], ih[i, l] if lo else ih[j, l], p)
    mirror_upper(Lw)


@njit(**_JIT)
def loewner_group(lam, func, p, abs_floor, rel_floor, Lw, h, fh, ih):
    """``Lw[i, j, l]``: Loewner matrix of ``x -> f(max(x, floor))`` at the eigenvalues ``lam[:, l]`` of lane
    l, vectorised across lanes. Everything float64 (one compiled specialisation for every input dtype);
    ``h``, ``fh``, ``ih`` (n, L) scratch."""
    n, L = lam.shape
    clamped = False
    for l in range(L):
        top = -np.inf
        for k in range(n):
            top = max(top, lam[k, l])
        fl = floor_of(top, abs_floor, rel_floor)
        for k in range(n):
            x = max(lam[k, l], fl)
            clamped |= x != lam[k, l]
            h[k, l] = x
            fh[k, l] = apply_func(x, func, p)
    for k in range(n):
        for l in range(L):
            ih[k, l] = 1.0 / h[k, l]
    if func == 0:
        _loewner_pairs(lam, h, fh, ih, Lw, _dd_log, p, clamped)
    elif func == 1:
        _loewner_pairs(lam, h, fh, ih, Lw, _dd_sqrt, p, clamped)
    elif func == 2:
        _loewner_pairs(lam, h, fh, ih, Lw, _dd_invsqrt, p, clamped)
    elif func == 3:
        _loewner_pairs(lam, h, fh, ih, Lw, _dd_exp, p, clamped)
    else:
        _loewner_pairs(lam, h, fh, ih, Lw, _dd_pow, p, clamped)


@njit(**_JIT)
def abt_group(A, B, C, upper, acc):
    """``C[a, b, l] = sum_c A[a, c, l] B[b, c, l]`` (C = A B^T per lane); with ``upper`` only b >= a is
    guaranteed (diagonal blocks also write some lower entries). ``acc``: scratch of 8 * LANES.

    Register-blocked on 4 x 2 output entries, 4 terms per pass: every loaded row of A serves two outputs and
    every row of B four (0.75 loads per multiply-add, against 1.75 with one output row and two columns),
    and the accumulators live in one scratch array at constant lane offsets, which LLVM vectorises with
    two run-time alias checks (A, B) -- four separate output rows would need more than it allows.
    Odd edges (rows past a multiple of 4, the last column when n is odd) go one entry at a time.
    Measured at d = 16, one thread: 25 GFLOP/s in float64, 41 in float32 (1.4x the previous products).
    """
    n = A.shape[0]
    L = LANES
    dt = C.dtype.type
    n4 = n - n % 4
    n2 = n - n % 2
    for a in range(0, n4, 4):
        for b in range(a if upper else 0, n2, 2):
            for l in range(L):
                acc[l] = dt(0)
                acc[LANES + l] = dt(0)
                acc[2 * LANES + l] = dt(0)
                acc[3 * LANES + l] = dt(0)
                acc[4 * LANES + l] = dt(0)
                acc[5 * LANES + l] = dt(0)
                acc[6 * LANES + l] = dt(0)
                acc[7 * LANES + l] = dt(0)
            for c in range(0, n4, 4):
                for l in range(L):
                    x00 = A[a, c, l]; x01 = A[a, c + 1, l]; x02 = A[a, c + 2, l]; x03 = A[a, c + 3, l]
                    x10 = A[a + 1, c, l]; x11 = A[a + 1, c + 1, l]; x12 = A[a + 1, c + 2, l]; x13 = A[a + 1, c + 3, l]
                    x20 = A[a + 2, c, l]; x21 = A[a + 2, c + 1, l]; x22 = A[a + 2, c + 2, l]; x23 = A[a + 2, c + 3, l]
                    x30 = A[a + 3, c, l]; x31 = A[a + 3, c + 1, l]; x32 = A[a + 3, c + 2, l]; x33 = A[a + 3, c + 3, l]
                    u00 = B[b, c, l]; u01 = B[b, c + 1, l]; u02 = B[b, c + 2, l]; u03 = B[b, c + 3, l]
                    u10 = B[b + 1, c, l]; u11 = B[b + 1, c + 1, l]; u12 = B[b + 1, c + 2, l]; u13 = B[b + 1, c + 3, l]
                    acc[l] += x00 * u00 + x01 * u01 + x02 * u02 + x03 * u03
                    acc[LANES + l] += x00 * u10 + x01 * u11 + x02 * u12 + x03 * u13
                    acc[2 * LANES + l] += x10 * u00 + x11 * u01 + x12 * u02 + x13 * u03
                    acc[3 * LANES + l] += x10 * u10 + x11 * u11 + x12 * u12 + x13 * u13
                    acc[4 * LANES + l] += x20 * u00 + x21 * u01 + x22 * u02 + x23 * u03
                    acc[5 * LANES + l] += x20 * u10 + x21 * u11 + x22 * u12 + x23 * u13
                    acc[6 * LANES + l] += x30 * u00 + x31 * u01 + x32 * u02 + x33 * u03
                    acc[7 * LANES + l] += x30 * u10 + x31 * u11 + x32 * u12 + x33 * u13
            for c in range(n4, n):
                for l in range(L):
                    acc[l] += A[a, c, l] * B[b, c, l]
                    acc[LANES + l] += A[a, c, l] * B[b + 1, c, l]
                    acc[2 * LANES + l] += A[a + 1, c, l] * B[b, c, l]
                    acc[3 * LANES + l] += A[a + 1, c, l] * B[b + 1, c, l]
                    acc[4 * LANES + l] += A[a + 2, c, l] * B[b, c, l]
                    acc[5 * LANES + l] += A[a + 2, c, l] * B[b + 1, c, l]
                    acc[6 * LANES + l] += A[a + 3, c, l] * B[b, c, l]
                    acc[7 * LANES + l] += A[a + 3, c, l] * B[b + 1, c, l]
            for l in range(L):
                C[a, b, l] = acc[l]
                C[a, b + 1, l] = acc[LANES + l]
            for l in range(L):
                C[a + 1, b, l] = acc[2 * LANES + l]
                C[a + 1, b + 1, l] = acc[3 * LANES + l]
            for l in range(L):
                C[a + 2, b, l] = acc[4 * LANES + l]
                C[a + 2, b + 1, l] = acc[5 * LANES + l]
            for l in range(L):
                C[a + 3, b, l] = acc[6 * LANES + l]
                C[a + 3, b + 1, l] = acc[7 * LANES + l]
    for a in range(n):
        b0 = n2 if a < n4 else 0
        if upper and a >= n4:
            b0 = a
        for b in range(b0, n):
            if a >= n4 or b >= n2:
                for l in range(L):
                    acc[l] = dt(0)
                for c in range(n):
                    for l in range(L):
                        acc[l] += A[a, c, l] * B[b, c, l]
                for l in range(L):
                    C[a, b, l] = acc[l]


@njit(**_JIT)
def dk_group(Vt, G, Lw, T, X, Vn, acc):
    """In place: ``G <- V [(V^T G V) o Lw] V^T`` for the L lanes (G symmetric, both triangles; Lw (n, n, L)
    symmetric, any float dtype; T, X, Vn scratch (n, n, L), ``acc`` scratch of 8 * LANES); only the upper
    triangle of G is written.

    Four products ``A B^T`` (``abt_group``): with ``Vn`` = V (Vt transposed) and the symmetry of G and X
    every operand is row-major. The two with symmetric results (X, and G) compute the upper triangle.
    """
    n, L = Vt.shape[0], Vt.shape[2]
    for k in range(n):
        for i in range(n):
            for l in range(L):
                Vn[i, k, l] = Vt[k, i, l]
    abt_group(Vt, G, T, False, acc)     # T = V^T G        T[k, j] = sum_i Vt[k, i] G[j, i]
    abt_group(T, Vt, X, True, acc)      # X = T V          X[k, m] = sum_j T[k, j] Vt[m, j], m >= k
    for k in range(n):
        for m in range(k, n):
            for l in range(L):
                X[k, m, l] *= Lw[k, m, l]
    mirror_upper(X)
    abt_group(Vn, X, T, False, acc)     # T = V X          T[i, m] = sum_k Vn[i, k] X[m, k]
    abt_group(T, Vn, G, True, acc)      # G = T V^T        G[i, j] = sum_m T[i, m] Vn[j, m], j >= i
