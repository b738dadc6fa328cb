"""Householder tridiagonalisation + implicit QL, vectorised across a group of matrices (SIMD lanes).

The classical dense symmetric eigensolver (Golub & Van Loan 8.3; EISPACK ``tred2``/``tql2``, here
rewritten for lanes): ``A = Q T Q^T`` by n-2 Householder reflections (4/3 n^3 flops, no data-dependent
control flow), then implicitly shifted QL iterations on the tridiagonal ``T`` whose Givens rotations are
accumulated into ``Q``. Per eigenvalue it needs 1-3 QL iterations of at most n rotations, each touching
two rows of the eigenvector matrix -- about 1.5 n^2 rotations in all, against (7-9 sweeps) x n^2/2
rotations of the cyclic Jacobi method, each of which also updates two rows *and* two columns of A.
Measured on the development machine it is 3-4x faster than the lane-vectorised Jacobi at d = 16.

Lanes. Lane ``l`` of every array holds matrix ``l`` of the group. Per-matrix scalars of the textbook
algorithm are arrays of ``L`` lanes; branches become selects. In the QL phase every lane has its own
deflation point ``m``: the rotation loop runs from the largest ``m`` of the lanes still iterating, and a
lane is "active" at rotation ``i`` only for ``i < m_lane`` (it rotates by the identity otherwise, with
its carried state unchanged), which is exactly the textbook iteration for each lane. The deflation test
is EISPACK's absolute one (``|e_m| <= eps * max_k(|d_k| + |e_k|)``): eigenvalues accurate to
``eps * ||A||``, the LAPACK standard. From d = 32 on (``tql2_async_group``) the lanes do not wait for each
other: each works on its own eigenvalue, and a sweep covers the union of their windows (a third fewer
rotations; the per-lane bookkeeping makes it slower below d ~ 30).

Aliasing rules for LLVM's vectoriser: see ``_spd_jacobi``; every vectorised loop writes one array that it
does not also read through a second, interleaved stream (scratch copies where needed).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ._spd_lanes import LANES



_JIT = dict(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")

@njit(**_JIT)
def tred2_group(V, d, e, U, scale, h, hs, f, g, hh):
    """Reduce the symmetric matrices in V (n, n, L) to tridiagonal form, in place.

    On return ``V`` holds the orthogonal Q (columns), ``d[k]`` the diagonal of T and ``e[k]`` its
    sub-diagonal ``T[k, k-1]`` (e[0] = 0). ``U`` (n, L) and the (L,) arrays are scratch.
    """
    n, L = V.shape[0], V.shape[2]
    dt = V.dtype.type
    zero, one = dt(0), dt(1)
    for j in range(n):
        for l in range(L):
            d[j, l] = V[n - 1, j, l]
    for i in range(n - 1, 0, -1):
        for l in range(L):
            scale[l] = zero
            h[l] = zero
        for k in range(i):
            for l in range(L):
                scale[l] += abs(d[k, l])
        for l in range(L):
            scale[l] = scale[l] if scale[l] != zero else one  # zero row: the updates below vanish
        for k in range(i):
            for l in range(L):
                dk = d[k, l] / scale[l]
                d[k, l] = dk
                h[l] += dk * dk
        for l in range(L):
            fl = d[i - 1, l]
            gl = np.sqrt(h[l])
            gl = -gl if fl > zero else gl
            e[i, l] = scale[l] * gl
            hl = h[l] - fl * gl
            d[i - 1, l] = fl - gl
            h[l] = hl
            hs[l] = hl if hl != zero else one  # zero row: every update below is zero
        for j in range(i):
            for l in range(L):
                e[j, l] = zero
        for j in range(i):
            for l in range(L):
                V[j, i, l] = d[j, l]
                g[l] = e[j, l] + V[j, j, l] * d[j, l]
            for k in range(j + 1, i):
                for l in range(L):
                    vkj = V[k, j, l]
                    g[l] += vkj * d[k, l]
                    e[k, l] += vkj * d[j, l]
            for l in range(L):
                e[j, l] = g[l]
        for l in range(L):
            f[l] = zero
        for j in range(i):
            for l in range(L):
                ej = e[j, l] / hs[l]
                e[j, l] = ej
                f[l] += ej * d[j, l]
        for l in range(L):
            hh[l] = f[l] / (hs[l] + hs[l])
        for j in range(i):
            for l in range(L):
                e[j, l] -= hh[l] * d[j, l]
        for j in range(i):
            for k in range(j, i):
                for l in range(L):
                    V[k, j, l] -= d[j, l] * e[k, l] + e[j, l] * d[k, l]
            for l in range(L):
                d[j, l] = V[i - 1, j, l]
                V[i, j, l] = zero
        for l in range(L):
            d[i, l] = h[l]
    # accumulate the reflections into Q
    for i in range(n - 1):
        for l in range(L):
            V[n - 1, i, l] = V[i, i, l]
            V[i, i, l] = one
            hs[l] = d[i + 1, l] if d[i + 1, l] != zero else one
        for k in range(i + 1):
            for l in range(L):
                U[k, l] = V[k, i + 1, l]
                d[k, l] = U[k, l] / hs[l]
        for j in range(i + 1):
            for l in range(L):
                g[l] = zero
            for k in range(i + 1):
                for l in range(L):
                    g[l] += U[k, l] * V[k, j, l]
            for k in range(i + 1):
                for l in range(L):
                    V[k, j, l] -= g[l] * d[k, l]
        for k in range(i + 1):
            for l in range(L):
                V[k, i + 1, l] = zero
    for j in range(n):
        for l in range(L):
            d[j, l] = V[n - 1, j, l]
            V[n - 1, j, l] = zero
    for l in range(L):
        V[n - 1, n - 1, l] = one
        e[0, l] = zero


# Per-lane state of the QL iteration: one flat array ``W`` allocated inside the kernel, field k of lane l at
# ``W[k * LANES + l]``. Every lane loop vectorises, the rotation's square root and division included. A lane
# rotates at row i when FI0 <= i < FMA: its window [l0, m) as floats (compared with the row in the vector
# loops); the lock-step QL keeps FI0 = l0 for every lane and FMA = l0 for a converged one. X0, X1: per-lane
# results of the asynchronous QL's scalar steps.
_C, _S, _P, _DL1, _FSH, _TST, _EL1, _FI0, _FMA, _X0, _X1 = range(11)
NSTATE = 11


@njit(**_JIT)
def _ql_rotation(W, e1, d1, CR, SR, i):
    """One step of the QL sweep, rotation (i, i + 1), for every lane: the lane state in ``W``, d and e (flat,
    ``row * LANES + l``), the rotation into ``CR[i]``, ``SR[i]`` (the identity where a lane is inactive:
    outside its window FI0 <= i < FMA).

    d, e are indexed with unsigned (row * LANES + l): no negative-index wraparound (which turned the loads into
    gathers), rows at constant distances (no run-time alias check between them), so LLVM vectorises the loop,
    square root and division included. A separate function (LLVM still inlines it): written inside
    ``tql2_group`` with the per-row rotation arrays, the same loop ran as scalar code, with no vectoriser
    remark (QL 1.1x slower)."""
    dt = W.dtype.type
    zero, one = dt(0), dt(1)
    fi = dt(i)
    r0 = i * LANES
    r1 = r0 + LANES
    for l in range(LANES):
        a = (W[_FI0 * LANES + l] <= fi) & (fi < W[_FMA * LANES + l])
        ei = e1[np.uint64(r0 + l)]
        pl = W[_P * LANES + l]
        di = d1[np.uint64(r0 + l)]
        cl = W[_C * LANES + l]
        sl = W[_S * LANES + l]
        gg = cl * ei
        hh = cl * pl
        r = np.sqrt(pl * pl + ei * ei)
        ir = one / r
        sn = ei * ir
        cn = pl * ir
        pn = cn * di - sn * gg
        dnext = hh + sn * (cn * gg + sn * di)
        e1[np.uint64(r1 + l)] = sl * r if a else e1[np.uint64(r1 + l)]
        d1[np.uint64(r1 + l)] = dnext if a else d1[np.uint64(r1 + l)]
        W[_S * LANES + l] = sn if a else sl
        W[_C * LANES + l] = cn if a else cl
        W[_P * LANES + l] = pn if a else pl
        CR[i, l] = cn if a else one
        SR[i, l] = sn if a else zero


@njit(**_JIT)
def _rotate_pair(Zt, CR, SR, i):
    """Eigenvectors (rows of Zt = columns of Z): rotations i + 1, then i, in one pass over rows i .. i + 2
    (rotation i reads the row i + 1 that rotation i + 1 has just written, carried in a register): 3 row loads
    and stores for 2 rotations instead of 4."""
    n = Zt.shape[1]
    for k in range(n):
        for l in range(LANES):
            z = Zt[i + 2, k, l]
            zi = Zt[i + 1, k, l]
            Zt[i + 2, k, l] = SR[i + 1, l] * zi + CR[i + 1, l] * z
            z = CR[i + 1, l] * zi - SR[i + 1, l] * z
            zi = Zt[i, k, l]
            Zt[i + 1, k, l] = SR[i, l] * zi + CR[i, l] * z
            Zt[i, k, l] = CR[i, l] * zi - SR[i, l] * z


@njit(**_JIT)
def _rotate_one(Zt, CR, SR, i):
    """Rotation i alone (the last of a sweep with an odd number of rotations)."""
    n = Zt.shape[1]
    for k in range(n):
        for l in range(LANES):
            zi = Zt[i, k, l]
            zj = Zt[i + 1, k, l]
            Zt[i + 1, k, l] = SR[i, l] * zi + CR[i, l] * zj
            Zt[i, k, l] = CR[i, l] * zi - SR[i, l] * zj


@njit(**_JIT)
def _ql_start(e):
    """EISPACK's start of the QL: the sub-diagonal shifted to ``e[k] = T[k + 1, k]`` (e[n - 1] = 0), no shift
    accumulated yet, the deflation scale at 0. Returns the lane state ``W`` and the sweep's rotation rows
    ``CR``, ``SR`` (row i = rotation (i, i + 1) of every lane, the identity where a lane is inactive: read by
    the eigenvector updates and, for rows l0 + 1 and l0 + 2, by the sweep's closing step -- EISPACK's c2, s2,
    c3 -- which the rotation loop then need not carry)."""
    n = e.shape[0]
    zero = e.dtype.type(0)
    W = np.empty(NSTATE * LANES, e.dtype)
    CR = np.empty((n, LANES), e.dtype)
    SR = np.empty((n, LANES), e.dtype)
    for i in range(1, n):
        for l in range(LANES):
            e[i - 1, l] = e[i, l]
    for l in range(LANES):
        e[n - 1, l] = zero
        W[_FSH * LANES + l] = zero
        W[_TST * LANES + l] = zero
    return W, CR, SR


@njit(**_JIT)
def tql2_group(Zt, d, e, max_iter):
    """Eigenvalues (in ``d``) and eigenvectors (rows of ``Zt``) of the tridiagonal matrices (d, e).

    ``Zt`` (n, n, LANES) enters as ``Q^T`` (row k = column k of the tridiagonalising Q) and leaves with
    row k the eigenvector of ``d[k]``. ``e[k] = T[k, k-1]`` on entry; destroyed. Unsorted. Returns the
    number of QL iterations run.
    """
    n = Zt.shape[0]
    L = LANES
    dt = Zt.dtype.type
    # lane state, d and e as flat arrays indexed ``row * LANES + l`` (LANES a compile-time constant): the
    # rows of one array are then at constant distances, which lets LLVM vectorise the lane loops with
    # few run-time alias checks. Indices with a run-time row go through ``np.uint64``: a signed index gets
    # numba's negative-index wraparound, a select per lane that LLVM can only vectorise as a gather
    # (measured: the loops ran as scalar code, 8 % of the forward at d = 16)
    W, CR, SR = _ql_start(e)
    d1 = d.reshape(n * LANES)
    e1 = e.reshape(n * LANES)
    zero, one, two = dt(0), dt(1), dt(2)
    eps = dt(np.finfo(Zt.dtype).eps)
    iters = 0
    for l0 in range(n):
        nact = 0
        mmax = l0
        for l in range(L):
            t = abs(d[l0, l]) + abs(e[l0, l])
            tst = t if t > W[_TST * LANES + l] else W[_TST * LANES + l]
            W[_TST * LANES + l] = tst
            m = l0
            while m < n - 1 and not (abs(e[m, l]) <= eps * tst):
                m += 1
            # a lane rotates at l0 <= i < FMA: its deflation point m while it iterates, l0 (never) once converged
            W[_FI0 * LANES + l] = dt(l0)
            W[_FMA * LANES + l] = dt(m)
            nact += 1 if m > l0 else 0
            mmax = m if (m > mmax and m > l0) else mmax
        it = 0
        while nact > 0 and it < max_iter:
            it += 1
            iters += 1
            # shift from the leading 2x2 block
            q0 = l0 * LANES
            q1 = q0 + LANES
            fl0 = dt(l0)
            for l in range(L):
                a = fl0 < W[_FMA * LANES + l]
                gl = d1[np.uint64(q0 + l)]
                el = e1[np.uint64(q0 + l)]
                pp = (d1[np.uint64(q1 + l)] - gl) / (two * el)
                r = np.sqrt(pp * pp + one)
                r = -r if pp < zero else r
                dl = el / (pp + r)
                dn = el * (pp + r)
                hs = gl - dl
                d1[np.uint64(q0 + l)] = dl if a else gl
                d1[np.uint64(q1 + l)] = dn if a else d1[np.uint64(q1 + l)]
                W[_DL1 * LANES + l] = dn
                hs = hs if a else zero
                W[_FSH * LANES + l] += hs
                W[_P * LANES + l] = hs  # the shift, applied below
            for i in range(l0 + 2, n):
                for l in range(L):
                    d[i, l] -= W[_P * LANES + l]
            for l in range(L):
                ma = W[_FMA * LANES + l]
                W[_P * LANES + l] = d[int(ma), l] if fl0 < ma else zero
                W[_C * LANES + l] = one
                W[_S * LANES + l] = zero
                W[_EL1 * LANES + l] = e[l0 + 1, l]
            for i in range(mmax - 1, l0 - 1, -1):
                _ql_rotation(W, e1, d1, CR, SR, i)
                if (mmax - 1 - i) % 2 == 1:     # eigenvectors: rotations in pairs (i + 1, i)
                    _rotate_pair(Zt, CR, SR, i)
            if (mmax - l0) % 2 == 1:     # an odd number of rotations: the last one (i = l0) alone
                _rotate_one(Zt, CR, SR, l0)
            # closing step: EISPACK's c2, s2 (rotation l0 + 1) and c3 (rotation l0 + 2), the identity past the
            # sweep's last rotation (mmax - 1)
            nact = 0
            h1 = l0 + 1 < mmax
            h2 = l0 + 2 < mmax
            k1 = min(l0 + 1, n - 1)     # (rows in range even where h1 / h2 is false)
            k2 = min(l0 + 2, n - 1)
            for l in range(L):
                a = fl0 < W[_FMA * LANES + l]
                c2 = CR[k1, l] if h1 else one
                s2 = SR[k1, l] if h1 else zero
                c3 = CR[k2, l] if h2 else one
                sl = W[_S * LANES + l]
                ep = e1[np.uint64(q0 + l)]
                pn = -sl * s2 * c3 * W[_EL1 * LANES + l] * ep / W[_DL1 * LANES + l]
                en = sl * pn if a else ep
                e1[np.uint64(q0 + l)] = en
                d1[np.uint64(q0 + l)] = W[_C * LANES + l] * pn if a else d1[np.uint64(q0 + l)]
                still = a and abs(en) > eps * W[_TST * LANES + l]
                W[_FMA * LANES + l] = W[_FMA * LANES + l] if still else fl0
                nact += 1 if still else 0
        for l in range(L):
            d[l0, l] += W[_FSH * LANES + l]
            e[l0, l] = zero
    return iters


@njit(inline="always")
def _ql_advance(d, e, W, L0i, MAi, ITi, l, l0, eps):
    """Lane l from row l0 on: EISPACK's deflation search; eigenvalues already split off (m == l0) are finished
    (``d[l0] += f``) and skipped. Leaves the lane's next window [l0, m), or l0 = n when it is done."""
    n = d.shape[0]
    dt = d.dtype.type
    tst = W[_TST * LANES + l]
    m = l0
    while l0 < n:
        t = abs(d[l0, l]) + abs(e[l0, l])
        tst = t if t > tst else tst
        m = l0
        while m < n - 1 and not (abs(e[m, l]) <= eps * tst):
            m += 1
        if m > l0:
            break
        d[l0, l] += W[_FSH * LANES + l]
        e[l0, l] = dt(0)
        l0 += 1
    W[_TST * LANES + l] = tst
    L0i[l] = l0
    MAi[l] = m if l0 < n else n
    W[_FI0 * LANES + l] = dt(l0)
    W[_FMA * LANES + l] = dt(MAi[l])
    ITi[l] = 0


@njit(**_JIT)
def tql2_async_group(Zt, d, e, max_iter):
    """``tql2_group`` with every lane on its own eigenvalue: a lane whose eigenvalue has converged starts on
    the next one in the next sweep instead of waiting for the slowest lane of the group. Each lane runs the
    same arithmetic as in ``tql2_group`` (bit-identical results); a sweep covers the union of the lanes'
    windows. At d = 16, 443 rotation steps per group of 32 became 316, at d = 32 1730 -> 1164, but the
    per-sweep work on per-lane rows (gathers and stores at each lane's own row l0, in scalar loops: LLVM does
    not vectorise loads at data-dependent addresses here) costs ~1.7 us per sweep against ~0.5 us: measured,
    one thread, float64 QL at d = 16 1.17x slower, at d = 32 / 48 / 64 1.17x / 1.34x / 1.40x faster
    (float32: 0.91x at d = 24, 1.11x / 1.29x / 1.50x at 32 / 48 / 64). Used for d >= ``QL_ASYNC_MIN_D``.
    ``max_iter``: QL iterations per eigenvalue before it is accepted as it stands.
    """
    n = Zt.shape[0]
    L = LANES
    dt = Zt.dtype.type
    W, CR, SR = _ql_start(e)
    L0i = np.zeros(LANES, np.int64)
    MAi = np.zeros(LANES, np.int64)
    ITi = np.zeros(LANES, np.int64)
    Gt = np.empty((4, LANES), Zt.dtype)
    d1 = d.reshape(n * LANES)
    e1 = e.reshape(n * LANES)
    zero, one, two = dt(0), dt(1), dt(2)
    eps = dt(np.finfo(Zt.dtype).eps)
    nact = 0
    for l in range(L):
        _ql_advance(d, e, W, L0i, MAi, ITi, l, 0, eps)
        nact += 1 if L0i[l] < n else 0
    iters = 0
    while nact > 0:
        iters += 1
        lo = n
        hi = 0
        for l in range(L):
            if L0i[l] < n:
                lo = min(lo, L0i[l])
                hi = max(hi, MAi[l])
        # the shift from each lane's leading 2x2 block: its rows gathered by a scalar loop, the arithmetic
        # in a vector loop, the two results stored back by a scalar loop
        for l in range(L):
            q0 = (L0i[l] if L0i[l] < n else 0) * LANES + l
            Gt[0, l] = d1[q0]
            Gt[1, l] = e1[q0]
            Gt[2, l] = d1[q0 + LANES]
        for l in range(L):
            a = W[_FI0 * LANES + l] < W[_FMA * LANES + l]
            gl = Gt[0, l]
            el = Gt[1, l]
            pp = (Gt[2, l] - gl) / (two * el)
            r = np.sqrt(pp * pp + one)
            r = -r if pp < zero else r
            dl = el / (pp + r)
            dn = el * (pp + r)
            hs = gl - dl
            W[_X0 * LANES + l] = dl
            W[_X1 * LANES + l] = dn
            W[_DL1 * LANES + l] = dn
            hs = hs if a else zero
            W[_FSH * LANES + l] += hs
            W[_P * LANES + l] = hs
        for l in range(L):
            if L0i[l] < n:
                q0 = L0i[l] * LANES + l
                d1[q0] = W[_X0 * LANES + l]
                d1[q0 + LANES] = W[_X1 * LANES + l]
        for i in range(lo + 2, n):     # the shift, at each lane's rows >= l0 + 2
            fi = dt(i)
            for l in range(L):
                d[i, l] -= W[_P * LANES + l] if fi >= W[_FI0 * LANES + l] + two else zero
        for l in range(L):             # p = d[m], c = 1, s = 0, el1 = e[l0 + 1]
            if L0i[l] < n:
                W[_P * LANES + l] = d1[MAi[l] * LANES + l]
                W[_EL1 * LANES + l] = e1[(L0i[l] + 1) * LANES + l]
            else:
                W[_P * LANES + l] = zero
            W[_C * LANES + l] = one
            W[_S * LANES + l] = zero
        imax = hi - 1
        for i in range(imax, lo - 1, -1):
            _ql_rotation(W, e1, d1, CR, SR, i)
            if (imax - i) % 2 == 1:
                _rotate_pair(Zt, CR, SR, i)
        if (imax - lo) % 2 == 0:     # an odd number of rotations: the last one (i = lo) alone
            _rotate_one(Zt, CR, SR, lo)
        # closing step (EISPACK's c2, s2, c3 from the lane's rotations l0 + 1, l0 + 2: the identity past m)
        for l in range(L):
            l0 = L0i[l]
            m = MAi[l]
            act = l0 < n
            Gt[0, l] = e1[(l0 if act else 0) * LANES + l]
            Gt[1, l] = CR[l0 + 1, l] if act and l0 + 1 < m else one
            Gt[2, l] = SR[l0 + 1, l] if act and l0 + 1 < m else zero
            Gt[3, l] = CR[l0 + 2, l] if act and l0 + 2 < m else one
        for l in range(L):
            sl = W[_S * LANES + l]
            pn = -sl * Gt[2, l] * Gt[3, l] * W[_EL1 * LANES + l] * Gt[0, l] / W[_DL1 * LANES + l]
            W[_X0 * LANES + l] = sl * pn
            W[_X1 * LANES + l] = W[_C * LANES + l] * pn
        # store, test convergence; a converged lane moves on to its next eigenvalue
        nact = 0
        for l in range(L):
            if L0i[l] < n:
                l0 = L0i[l]
                q0 = l0 * LANES + l
                en = W[_X0 * LANES + l]
                e1[q0] = en
                d1[q0] = W[_X1 * LANES + l]
                ITi[l] += 1
                if not (abs(en) > eps * W[_TST * LANES + l]) or ITi[l] >= max_iter:
                    d[l0, l] += W[_FSH * LANES + l]
                    e[l0, l] = zero
                    _ql_advance(d, e, W, L0i, MAi, ITi, l, l0 + 1, eps)
                nact += 1 if L0i[l] < n else 0
    return iters


@njit(**_JIT)
def transpose_group(V, Zt):
    """``Zt[i, k, l] = V[k, i, l]``."""
    n, L = V.shape[0], V.shape[2]
    for k in range(n):
        for i in range(n):
            for l in range(L):
                Zt[i, k, l] = V[k, i, l]
