"""Row passes of the Numba Sinkhorn solver (private to ``sinkhorn.py``).

Every half-iteration of log-domain Sinkhorn is a *row pass*: for a block of ``R`` rows it computes
``e_ij = exp(h_j - C_ij / eps - shift_i)`` (``h`` the log-weights plus potentials of the other side) and
the row sums -- a fused softmin that never stores C. The column update is obtained from the *same*
exponentials (see ``sinkhorn.py``), so one iteration costs N x M exponentials, not 2 N x M.

The shift is the row's previous potential (``-f_i / (damp eps)``), not the row maximum: the sum then lands
near 1 once the iterations settle, and the maximum sweep is saved. A row whose sum leaves
``[tiny, huge]`` (far from convergence) is redone exactly with its true maximum, so nothing overflows.

Where the cost tile comes from:

* points (``fill_*points``): the ``R x W`` register tile ``x . y^T`` of ``_tiles.panel_dot`` (y packed in
  panels), then ``C = |x|^2 + |y|^2 - 2 x.y`` clamped at 0, exponentiated in the tile epilogue. The launcher
  centres both clouds on their joint mean first, which keeps ``|x|^2 + |y|^2`` small next to C (the
  cancellation error of this formula is relative to the norms, and costs are translation invariant);
* a cost matrix in memory (``fill_*matrix_rows`` / ``fill_*matrix_cols``).

Measured in isolation (one thread, float32, this 2-core VM under load): exponential + store ~0.7 ns per
element with ``exp_flush`` below against ~1.0 with ``_math.fast_exp``; fusing the row sum into the
exponential loop stopped LLVM from vectorising it (9 ns/element), so the sum is a separate sweep over the
L1-resident block on ``W``-lane partial accumulators (LLVM will not vectorise a scalar float sum without
reassociation). No blanket fastmath: -inf and NaN must survive.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

from ._math import exp_flush
from ._tiles import R, W, panel_dot, rows_matmul_acc

_JIT = dict(cache=True, fastmath={"contract"}, nogil=True, _nrt=False)
_INL = dict(_JIT, inline="always")  # small helpers: inlined in Numba IR, so not re-optimised at every call level
_F = np.float32


@njit(**_JIT)
def fill_points(A, i0, Bp, nrow, ncol, h, inv, Z, acc, zero, two):
    """``Z[r, j] = h[j] - max(nrow[i0+r] + ncol[j] - 2 <A[i0+r], B_j>, 0) * inv`` for r < R, j < panels*W."""
    for p in range(Bp.shape[0]):
        panel_dot(A, i0, Bp, p, acc)
        j0 = p * W
        for r in range(R):
            nr = nrow[i0 + r]
            for l in range(W):
                c = nr + ncol[j0 + l] - two * acc[r, l]
                c = c if c > zero else zero
                Z[r, j0 + l] = h[j0 + l] - c * inv


@njit(**_JIT)
def fill_exp_points(A, i0, Bp, nrow, ncol, h, shift, inv, Z, acc, zero, two):
    """``Z[r, j] = exp(h[j] - shift[r] - C_{i0+r, j} * inv)`` with the cost tile from the points."""
    for p in range(Bp.shape[0]):
        panel_dot(A, i0, Bp, p, acc)
        j0 = p * W
        for r in range(R):
            nr = nrow[i0 + r]
            sh = shift[r]
            for l in range(W):
                c = nr + ncol[j0 + l] - two * acc[r, l]
                c = c if c > zero else zero
                Z[r, j0 + l] = exp_flush(h[j0 + l] - sh - c * inv)


@njit(**_INL)
def fill_matrix_rows(Cb, i0, nr, h, inv, Z, width, ninf):
    """``Z[r, j] = h[j] - C[i0+r, j] * inv`` for r < nr, j < M; ``-inf`` on the padding up to ``width``."""
    M = Cb.shape[1]
    for r in range(nr):
        i = i0 + r
        for j in range(M):
            Z[r, j] = h[j] - Cb[i, j] * inv
        for j in range(M, width):
            Z[r, j] = ninf


@njit(**_JIT)
def fill_exp_matrix_rows(Cb, i0, nr, h, shift, inv, Z, width, zero):
    """``Z[r, j] = exp(h[j] - shift[r] - C[i0+r, j] * inv)``; 0 on the padding."""
    M = Cb.shape[1]
    for r in range(nr):
        i = i0 + r
        sh = shift[r]
        for j in range(M):
            Z[r, j] = exp_flush(h[j] - sh - Cb[i, j] * inv)
        for j in range(M, width):
            Z[r, j] = zero


@njit(**_INL)
def fill_matrix_cols(Cb, j0, nr, h, inv, Z, width, ninf):
    """The transposed fill: ``Z[r, i] = h[i] - C[i, j0+r] * inv`` (rows of C^T)."""
    N = Cb.shape[0]
    for i in range(N):
        for r in range(nr):
            Z[r, i] = h[i] - Cb[i, j0 + r] * inv
    for r in range(nr):
        for i in range(N, width):
            Z[r, i] = ninf


@njit(**_JIT)
def fill_exp_matrix_cols(Cb, j0, nr, h, shift, inv, Z, width, zero):
    """``Z[r, i] = exp(h[i] - shift[r] - C[i, j0+r] * inv)`` (rows of C^T); 0 on the padding."""
    N = Cb.shape[0]
    for i in range(N):
        for r in range(nr):
            Z[r, i] = exp_flush(h[i] - shift[r] - Cb[i, j0 + r] * inv)
    for r in range(nr):
        for i in range(N, width):
            Z[r, i] = zero


# Pure sums may be reassociated -- LLVM then vectorises them into partial sums held in registers (4x faster
# than W-lane accumulators in memory). Only here: reassociation would break the range reduction of the
# exponential (``(v log2e + 1.5 2^23) - 1.5 2^23``), so no function with an exponential gets the flag.
_SUM = dict(cache=True, fastmath={"contract", "reassoc"}, nogil=True, _nrt=False)  # not inlined in Numba IR:
# an IR-inlined helper would be lowered with its caller's flags; LLVM inlining keeps these per instruction


@njit(**_SUM)
def row_sums(Z, nr, width, lane, sm, zero):
    """``sm[r] = sum_j Z[r, j]``."""
    for r in range(nr):
        s = zero
        for j in range(width):
            s += Z[r, j]
        sm[r] = s


@njit(**_SUM)
def dots4(K, i0, v, M, out, zero):
    """``out[r] = sum_j K[i0 + r, j] v[j]`` for the R = 4 rows of a block (one read of v for four rows)."""
    s0 = zero
    s1 = zero
    s2 = zero
    s3 = zero
    for j in range(M):
        vj = v[j]
        s0 += K[i0, j] * vj
        s1 += K[i0 + 1, j] * vj
        s2 += K[i0 + 2, j] * vj
        s3 += K[i0 + 3, j] * vj
    out[0] = s0
    out[1] = s1
    out[2] = s2
    out[3] = s3


@njit(**_SUM)
def dot_row(K, i, v, M, zero):
    s = zero
    for j in range(M):
        s += K[i, j] * v[j]
    return s


@njit(**_JIT)
def exact_row(Z2, r, width, lane, zero, ninf):
    """Stable log-sum-exp of row r of ``Z2`` (exponents): ``(max, sum exp(Z2 - max))``; exps left in ``Z2``."""
    for l in range(W):
        lane[l] = ninf
    for j in range(0, width, W):
        for l in range(W):
            v = Z2[r, j + l]
            lane[l] = v if v > lane[l] else lane[l]
    m = lane[0]
    for l in range(1, W):
        m = lane[l] if lane[l] > m else m
    if m == ninf:  # a row with no mass anywhere: exp(-inf - 0) = 0 instead of NaN
        m = zero
    for j in range(width):
        Z2[r, j] = exp_flush(Z2[r, j] - m)
    for l in range(W):
        lane[l] = zero
    for j in range(0, width, W):
        for l in range(W):
            lane[l] += Z2[r, j + l]
    s = lane[0]
    for l in range(1, W):
        s += lane[l]
    return m, s


@njit(**_INL)
def accumulate_cols(Z, nr, width, c, wacc):
    """``wacc[j] += sum_{r < nr} c[r] Z[r, j]`` (one load/store of wacc per R rows)."""
    if nr == R:
        c0 = c[0]
        c1 = c[1]
        c2 = c[2]
        c3 = c[3]
        for j in range(width):
            wacc[j] += c0 * Z[0, j] + c1 * Z[1, j] + c2 * Z[2, j] + c3 * Z[3, j]
    else:
        for r in range(nr):
            cr = c[r]
            for j in range(width):
                wacc[j] += cr * Z[r, j]


@njit(**_JIT)
def log_row_pass(src, A, Bp, nrow, ncol, Cb, transposed, n_rows, width, h, pot, w, eps, inv, damp, lo, hi,
                 Z, Z2, acc, lane, shift, sm, cbuf, wacc, accumulate, write_mode, zero, two, ninf, tiny, huge):
    """One log-domain half-iteration over the rows ``lo <= i < hi`` (multiples of R) of one problem.

    ``pot[i] <- damp * (-eps * LSE_j(h_j - C_ij / eps))`` for every row (``write_mode`` 1: only rows of
    zero weight). With ``accumulate``, also ``wacc[j] += w_i exp(pot_new_i / eps) * exp(h_j - C_ij / eps)``
    -- the column sums of the intermediate plan, divided by the column weights -- reusing the
    exponentials. Returns ``(max_i |delta pot_i| / eps, sum_i w_i |exp(-delta pot_i / eps) - 1|)``.
    """
    dmax = zero
    err = 0.0
    if accumulate:
        for j in range(width):
            wacc[j] = zero
    one = zero + 1
    sc = inv / damp
    for i0 in range(lo, hi, R):
        nr = min(R, n_rows - i0)
        if nr <= 0:
            break
        if write_mode == 1:
            any_zero = False
            for r in range(nr):
                if w[i0 + r] == zero:
                    any_zero = True
            if not any_zero:
                continue
        for r in range(R):
            shift[r] = -pot[i0 + r] * sc if r < nr else zero
        if src == 0:
            fill_exp_points(A, i0, Bp, nrow, ncol, h, shift, inv, Z, acc, zero, two)
        elif transposed:
            fill_exp_matrix_cols(Cb, i0, nr, h, shift, inv, Z, width, zero)
        else:
            fill_exp_matrix_rows(Cb, i0, nr, h, shift, inv, Z, width, zero)
        row_sums(Z, nr, width, lane, sm, zero)
        redo = False
        for r in range(nr):
            if not (sm[r] > tiny and sm[r] < huge):
                redo = True
        if redo:  # the previous potential was a poor shift for some row: exact maximum for those rows
            if src == 0:
                fill_points(A, i0, Bp, nrow, ncol, h, inv, Z2, acc, zero, two)
            elif transposed:
                fill_matrix_cols(Cb, i0, nr, h, inv, Z2, width, ninf)
            else:
                fill_matrix_rows(Cb, i0, nr, h, inv, Z2, width, ninf)
            for r in range(nr):
                if not (sm[r] > tiny and sm[r] < huge):
                    m, s = exact_row(Z2, r, width, lane, zero, ninf)
                    for j in range(width):
                        Z[r, j] = Z2[r, j]
                    shift[r] = m
                    sm[r] = s
        for r in range(nr):
            i = i0 + r
            ls = math.log(sm[r])
            new = -damp * eps * (shift[r] + ls)
            old = pot[i]
            d = abs(new - old) * inv
            dmax = d if d > dmax else dmax
            wi = w[i]
            if wi > zero:
                err += wi * abs(math.exp((old - new) * inv) - 1.0)
            if write_mode == 0 or wi == zero:
                pot[i] = new
            if accumulate:
                if wi == zero:
                    cbuf[r] = zero
                elif damp == one:
                    cbuf[r] = wi / sm[r]
                else:
                    cbuf[r] = wi * math.exp((1.0 - damp) * shift[r] - damp * ls)
        if accumulate:
            accumulate_cols(Z, nr, width, cbuf, wacc)
    return dmax, err


@njit(**_JIT)
def build_kernel_rows(src, A, Bp, nrow, ncol, Cb, n_rows, M, width, hk, fpot, bw, inv, lo, hi, K, fh,
                      Z, acc, zero, two, ninf, emax):
    """Absorption: ``K[i, j] = exp(min((f_i + g_j - C_ij) / eps, emax))`` for rows ``lo <= i < hi``
    (``hk = g / eps``; columns of zero weight get 0), and ``fh[i] = f[i]``."""
    for i0 in range(lo, hi, R):
        nr = min(R, n_rows - i0)
        if nr <= 0:
            break
        if src == 0:
            fill_points(A, i0, Bp, nrow, ncol, hk, inv, Z, acc, zero, two)
        else:
            fill_matrix_rows(Cb, i0, nr, hk, inv, Z, width, ninf)
        for r in range(nr):
            i = i0 + r
            fi = fpot[i] * inv
            for j in range(M):
                v = Z[r, j] + fi
                v = v if v < emax else emax
                K[i, j] = exp_flush(v) if bw[j] > zero else zero
            fh[i] = fpot[i]


@njit(**_JIT)
def scale_row_pass(K, n_rows, M, bv, lbv, f, fh, a, eps, inv, damp, tau, lo, hi, wacc, width,
                   src, A, Bp, nrow, ncol, Cb, hk, bw, Z, acc, lane, mx, sm, cbuf, zero, two, ninf, emax, tiny, huge):
    """One linear-domain half-iteration on the absorbed kernel ``K = exp((fh + gh - C) / eps)``.

    ``s_i = sum_j K_ij bv_j`` (``bv = b exp((g - gh) / eps)``), ``f_i <- damp (fh_i - eps log s_i)``; rows
    whose scaling ``exp((f_i - fh_i) / eps)`` leaves ``[e^-tau, e^tau]`` (or whose sum under/overflows) are
    recomputed in the log domain and their kernel row rebuilt around the new potential (a per-row
    absorption). Accumulates ``wacc[j] += a_i u_i K_ij``. Returns ``(max |delta f| / eps, rows refreshed)``.
    """
    dmax = zero
    nref = 0
    for j in range(width):
        wacc[j] = zero
    Mv = (M // W) * W
    for i0 in range(lo, hi, R):
        nr = min(R, n_rows - i0)
        if nr <= 0:
            break
        if nr == R:
            dots4(K, i0, bv, M, sm, zero)
        else:
            for r in range(nr):
                sm[r] = dot_row(K, i0 + r, bv, M, zero)
        refresh = False
        for r in range(nr):
            s = sm[r]
            if not (s > tiny and s < huge):
                refresh = True
            else:
                lu = (damp * (fh[i0 + r] - eps * math.log(s)) - fh[i0 + r]) * inv
                if abs(lu) > tau:
                    refresh = True
        if refresh:
            # exact log-domain rows, then their kernel rows rebuilt around the new potentials
            nref += nr
            if src == 0:
                fill_points(A, i0, Bp, nrow, ncol, hk, inv, Z, acc, zero, two)
            else:
                fill_matrix_rows(Cb, i0, nr, hk, inv, Z, width, ninf)
            for r in range(nr):
                i = i0 + r
                m = ninf
                for j in range(M):
                    v = Z[r, j] + lbv[j]
                    m = v if v > m else m
                if m == ninf:
                    m = zero
                for l in range(W):
                    lane[l] = zero
                for j0 in range(0, Mv, W):
                    for l in range(W):
                        lane[l] += exp_flush(Z[r, j0 + l] + lbv[j0 + l] - m)
                s = zero
                for j in range(Mv, M):
                    s += exp_flush(Z[r, j] + lbv[j] - m)
                for l in range(W):
                    s += lane[l]
                new = -damp * eps * (m + math.log(s))
                d = abs(new - f[i]) * inv
                dmax = d if d > dmax else dmax
                f[i] = new
                fh[i] = new
                fi = new * inv
                for j in range(M):
                    v = Z[r, j] + fi
                    v = v if v < emax else emax
                    K[i, j] = exp_flush(v) if bw[j] > zero else zero
                cbuf[r] = a[i]
        else:
            for r in range(nr):
                i = i0 + r
                new = damp * (fh[i] - eps * math.log(sm[r]))
                d = abs(new - f[i]) * inv
                dmax = d if d > dmax else dmax
                f[i] = new
                cbuf[r] = a[i] * math.exp((new - fh[i]) * inv)
        if nr == R:
            c0 = cbuf[0]
            c1 = cbuf[1]
            c2 = cbuf[2]
            c3 = cbuf[3]
            for j in range(M):
                wacc[j] += c0 * K[i0, j] + c1 * K[i0 + 1, j] + c2 * K[i0 + 2, j] + c3 * K[i0 + 3, j]
        else:
            for r in range(nr):
                cr = cbuf[r]
                for j in range(M):
                    wacc[j] += cr * K[i0 + r, j]
    return dmax, nref


@njit(**_INL)
def finalize_cols(M, wsum, wmul, bw, g, gh, gnew, eps, inv, damp, tau, check_drift, tiny, huge, zero):
    """Column update from the accumulated sums: ``w_j = wmul_j * wsum_j`` is the column marginal of the
    intermediate plan divided by ``b_j``; ``g_j <- damp (g_j - eps log w_j)`` (written to ``gnew``).

    Returns ``(bad columns, sum_j b_j |w_j - 1|, max |delta g| / eps)``; a column is bad when its sum
    under/overflowed (or, with ``check_drift``, its scaling left ``[e^-tau, e^tau]``). Columns of zero
    weight are skipped (the solver fixes them at the end).
    """
    bad = 0
    err = zero
    dmax = zero
    for j in range(M):
        bj = bw[j]
        if bj == zero:
            gnew[j] = g[j]
            continue
        wj = wsum[j] * wmul[j]
        if not (wj * bj > tiny and wj * bj < huge):
            bad += 1
            gnew[j] = g[j]
            continue
        new = damp * (g[j] - eps * math.log(wj))
        if check_drift and abs(new - gh[j]) * inv > tau:
            bad += 1
        d = abs(new - g[j]) * inv
        dmax = d if d > dmax else dmax
        err += bj * abs(wj - 1.0)
        gnew[j] = new
    return bad, err, dmax


@njit(cache=True, fastmath={"contract"}, nogil=True)
def envelope_rows(A, Bp, nrow, ncol, Ym, n_rows, width, h, pot, inv, lo, hi, Z, Z2, acc, lane, shift, sm, tacc,
                  rho_out, T_out, zero, two, ninf, tiny, huge):
    """The reductions of the envelope gradient for rows ``lo <= i < hi``: with
    ``q_ij = w_j exp((f_i + g_j - C_ij) / eps)`` (``h = log w + g / eps``, ``pot = f``),
    ``rho_out[i] = sum_j q_ij`` and ``T_out[i] = sum_j q_ij y_j`` (``Ym`` the other side, padded to a
    multiple of W columns). The shift is ``-f_i / eps`` itself, so the sums are ~1 at a converged state;
    rows whose sum leaves ``[tiny, huge]`` are redone around their maximum and rescaled."""
    for i0 in range(lo, hi, R):
        nr = min(R, n_rows - i0)
        if nr <= 0:
            break
        for r in range(R):
            shift[r] = -pot[i0 + r] * inv if r < nr else zero
        fill_exp_points(A, i0, Bp, nrow, ncol, h, shift, inv, Z, acc, zero, two)
        row_sums(Z, nr, width, lane, sm, zero)
        for r in range(R):
            acc[r, 0] = zero + 1  # per-row rescaling factor (acc is free after the fill)
        redo = False
        for r in range(nr):
            if not (sm[r] > tiny and sm[r] < huge):
                redo = True
        if redo:
            fill_points(A, i0, Bp, nrow, ncol, h, inv, Z2, acc, zero, two)
            for r in range(R):
                acc[r, 0] = zero + 1
            for r in range(nr):
                if not (sm[r] > tiny and sm[r] < huge):
                    m, s = exact_row(Z2, r, width, lane, zero, ninf)
                    for j in range(width):
                        Z[r, j] = Z2[r, j]
                    acc[r, 0] = math.exp(m - shift[r])
                    sm[r] = s
        for r in range(R):
            shift[r] = acc[r, 0]
        for r in range(R):
            for d in range(tacc.shape[1]):
                tacc[r, d] = zero
        for r in range(nr, R):
            for j in range(width):
                Z[r, j] = zero
        rows_matmul_acc(Z, Ym, 0, width, tacc)
        for r in range(nr):
            i = i0 + r
            sc = shift[r]
            rho_out[i] = sm[r] * sc
            for d in range(T_out.shape[1]):
                T_out[i, d] = tacc[r, d] * sc


@njit(cache=True, fastmath={"contract"}, nogil=True)
def plan_rows(Cb, aw, bw, f, g, inv, gr, lo, hi, gC, rho_out, colsum, zero):
    """Rows ``lo <= i < hi`` of ``q_ij = exp((f_i + g_j - C_ij) / eps)``: ``gC[i, j] = gr a_i b_j q_ij`` (0 where
    a weight is 0), ``rho_out[i] = sum_j b_j q_ij``, ``colsum[j] += a_i q_ij``."""
    M = Cb.shape[1]
    for i in range(lo, hi):
        fi = f[i] * inv
        ai = aw[i]
        s = zero
        for j in range(M):
            q = exp_flush(fi + g[j] * inv - Cb[i, j] * inv)
            bq = bw[j] * q if bw[j] > zero else zero
            s += bq
            gC[i, j] = gr * ai * bq if ai > zero else zero
            colsum[j] += ai * q if ai > zero else zero
        rho_out[i] = s
