"""Kruskal stress-1 and its gradient accumulators on the CPU (Numba), in O(N) memory.

Same functions and signatures as ``kernels/reference/stress.py``: ``stress_forward(x, y, need_gx, need_gy)``
returns the four pair sums ``(R, T, Q, E)`` of every problem and, when asked, the raw gradient
accumulators ``Gx_p = sum_q (d_pq / delta_pq) (x_p - x_q)`` and ``Gy_p = sum_q (delta_pq / d_pq) (y_p - y_q)``
from which the ops layer builds every gradient in O(N D) (METHODS.md C.3.4).

How it works, and why it is fast:

* **Upper triangle of blocks only.** Points are cut into blocks of ``SB`` rows; a task is one pair of
  blocks ``I <= J``. It computes both Gram tiles (``x_I x_J^T`` over D1 and ``y_I y_J^T`` over D2) as
  4 x 16 register tiles (the ``panel_dot`` scheme), turns them into distances while they are in
  registers and reduces them to the four pair sums. Half the pairs of a full N x N sweep, no N x N buffer.
* **Gradients in the same pass.** The weights ``delta/d`` and ``d/delta`` do not depend on the stress
  value, so when a gradient is wanted a task also stores its SB x SB weight tile ``w`` (only ``w``: the
  ``w^T`` product reads it transposed, four adjacent values per step, so no scattered transposed store);
  a second parallel loop of the round then runs the products ``G_I += rowsum(w) v_I - w v_J`` and
  ``G_J += colsum(w) v_J - w^T v_I`` as the same register tiles (K = SB) against feature panels of
  ``v``. A separate backward pass would recompute every distance tile (another Gram sweep); this way
  the backward costs O(N D). (Handing the products to torch's MKL between rounds was tried: the two
  OpenMP pools then spin against each other, 5-50x slower unless OMP_WAIT_POLICY=PASSIVE.)
* **Race-free without atomics or per-thread copies of G.** Tasks run in rounds of a round-robin
  tournament (the circle method): within a round every block appears in exactly one pair, so the
  gradient rows a task touches belong to it alone. A round's tasks run in chunks of ``WT_TASKS`` per
  thread, and the weight tiles of one chunk (64 KB each in float32: ~1 MB per thread and space, independent of N)
  are all that is ever stored. The pair sums are stored per task and added in a fixed order: results
  do not depend on the number of threads.
* **x is never copied** (it is the big input: 128 MB at N = 65536, D1 = 512): the row operand of a
  tile product is read straight from x; the column operand is packed into panels once for the whole
  problem when that copy is small (``PACK_BUDGET``), else per task into a per-thread scratch.
  y (small) is zero-padded once, and only when its row count is not a multiple of ``SB`` or its feature
  count not of ``W`` (or it is strided): an aligned y is read in place and Gy accumulated in the output.
* **Close points keep their distance.** ``||a||^2 + ||b||^2 - 2<a, b>`` loses relative accuracy
  ~u (||a||^2 + ||b||^2) / d^2; a pair whose squared distance is below ``THETA * (||a||^2 + ||b||^2)`` is
  recomputed from explicit differences of the original rows, and its gradient term is added from the
  explicit difference too (the Gram form ``w v_p - w v_q`` would cancel); its tile weight is 0.
* **Coincident points**: a pair with ``d <= d_tiny`` (or ``delta <= d_tiny`` on the x side) gets the
  weight 0 (the minimum-norm subgradient, METHODS.md C.3.3), never NaN.
* **Compiler notes** (each measured, 2-3x when missed): the tile loops sit directly in the ``prange``
  body, whose array arguments Numba marks ``noalias`` only if its alias analysis finds no array views
  there -- so arrays are indexed with full indices (``x[b, i, k]``), never sliced, and no tuples are
  built; the 4 x 16 accumulators are local arrays, operands and scratch are arguments. The gradient
  products get their own loop body: in the distance body LLVM stopped keeping the accumulators in
  registers. Lane indices count from 0 (``d0 = dq * W``) so that LLVM can prove them non-negative
  (Numba wraps negative indices; otherwise 16-wide loads become scalar gathers).

float16/bfloat16 are computed in float32 (the ops layer upcasts); float32 tiles accumulate in float32,
the per-task pair sums in float64.
"""
from __future__ import annotations

import numba
import numpy as np
import torch
from numba import njit, prange

from .. import _alloc
from ._tiles import R, W

SB = 128                     # points per block (a multiple of W and R)
PACK_BUDGET = 48 << 20       # bytes: pack the whole of x into panels once when the copy is at most this
WT_TASKS = 16                # weight tiles kept per thread (tasks of a round run in chunks of 16 x threads)
THETA = {torch.float32: 1.0 / 16.0, torch.float64: 1.0 / 4096.0}
D_TINY = {torch.float32: 1e-18, torch.float64: 1e-30}

_PAR = dict(parallel=True, cache=True, fastmath={"contract"})

# --------------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------------


@njit(inline="always")
def _tile_dot(A, b, a0, alast, Bp, bp, p, acc):
    """``acc[r, l] = sum_k A[b, min(a0 + r, alast), k] * Bp[bp, p, k, l]`` (R x W register tile).

    ``panel_dot`` with batch indices instead of 2-D views (no views in loop bodies: see the docstring);
    rows past ``alast`` repeat the last row instead of reading beyond the array."""
    r0 = min(a0, alast)
    r1 = min(a0 + 1, alast)
    r2 = min(a0 + 2, alast)
    r3 = min(a0 + 3, alast)
    acc[:] = 0
    for k in range(A.shape[2]):
        a_0 = A[b, r0, k]
        a_1 = A[b, r1, k]
        a_2 = A[b, r2, k]
        a_3 = A[b, r3, k]
        for l in range(W):
            v = Bp[bp, p, k, l]
            acc[0, l] += a_0 * v
            acc[1, l] += a_1 * v
            acc[2, l] += a_2 * v
            acc[3, l] += a_3 * v


@njit(inline="always")
def _tile_dot_w(WT, s, t, a0, Bp, bp, p, acc):
    """``acc[r, l] = sum_k WT[s, t, a0 + r, k] * Bp[bp, p, k, l]``: ``_tile_dot`` on a weight tile."""
    acc[:] = 0
    for k in range(WT.shape[3]):
        a_0 = WT[s, t, a0, k]
        a_1 = WT[s, t, a0 + 1, k]
        a_2 = WT[s, t, a0 + 2, k]
        a_3 = WT[s, t, a0 + 3, k]
        for l in range(W):
            v = Bp[bp, p, k, l]
            acc[0, l] += a_0 * v
            acc[1, l] += a_1 * v
            acc[2, l] += a_2 * v
            acc[3, l] += a_3 * v


@njit(inline="always")
def _tile_dot_wt(WT, s, t, a0, Bp, bp, p, acc):
    """``acc[r, l] = sum_k WT[s, t, k, a0 + r] * Bp[bp, p, k, l]``: ``_tile_dot_w`` on the transposed tile
    (its four A values of step k are adjacent in row k: no transposed copy of the tile is needed)."""
    acc[:] = 0
    for k in range(WT.shape[2]):
        a_0 = WT[s, t, k, a0]
        a_1 = WT[s, t, k, a0 + 1]
        a_2 = WT[s, t, k, a0 + 2]
        a_3 = WT[s, t, k, a0 + 3]
        for l in range(W):
            v = Bp[bp, p, k, l]
            acc[0, l] += a_0 * v
            acc[1, l] += a_1 * v
            acc[2, l] += a_2 * v
            acc[3, l] += a_3 * v


@njit(inline="always")
def _grad_side(WT, s, t, trans, V, b, orow, ocol, nrow, ncol, G, VF, th, rs, acc):
    """``G[b, orow + a] += rs[a] V[b, orow + a] - sum_c A[a, c] V[b, ocol + c]`` for a < nrow, with
    ``A = WT[s, t]`` (or its transpose when ``trans``).

    The rows ocol.. of V are packed into feature panels ``VF[th, dq, c, l] = V[b, ocol + c, dq W + l]``
    (zero past ncol and D) so that the product is exactly ``_tile_dot`` (K = SB)."""
    D = V.shape[2]
    nd = (D + W - 1) // W
    zero = V.dtype.type(0)
    for c in range(SB):
        row = min(ocol + c, ocol + ncol - 1)
        for dq in range(nd):
            for l in range(W):
                d = dq * W + l
                VF[th, dq, c, l] = V[b, row, min(d, D - 1)] if (c < ncol and d < D) else zero
    for dq in range(nd):
        d0 = dq * W
        wd = min(W, D - d0)
        for a0 in range(0, nrow, R):
            if trans:
                _tile_dot_wt(WT, s, t, a0, VF, th, dq, acc)
            else:
                _tile_dot_w(WT, s, t, a0, VF, th, dq, acc)
            for r in range(min(R, nrow - a0)):
                i = orow + a0 + r
                rsv = rs[a0 + r]
                for l in range(wd):
                    G[b, i, d0 + l] += rsv * V[b, i, d0 + l] - acc[r, l]


@njit(cache=True)
def _sqdist_exact(V, b, i, j):
    """||V[b, i] - V[b, j]||^2 from explicit differences (close pairs only: not on the hot path)."""
    s = V.dtype.type(0)
    for k in range(V.shape[2]):
        d = V[b, i, k] - V[b, j, k]
        s += d * d
    return s


@njit(cache=True)
def _add_exact_term(w, V, b, i, j, G):
    """G[b, i] += w (V[b, i] - V[b, j]);  G[b, j] -= the same  (explicit differences, for close pairs)."""
    for k in range(V.shape[2]):
        t = w * (V[b, i, k] - V[b, j, k])
        G[b, i, k] += t
        G[b, j, k] -= t


@njit(inline="always")
def _task_blocks(rnd, k, m, n_rounds, half):
    """Blocks (I, J), I <= J, of task k of round rnd: rounds < n_rounds are the circle-method tournament
    on m (even) players, the last two rounds the diagonal blocks. Returned as one int: I * m + J
    (a tuple would count as an array view for Numba's alias analysis)."""
    if rnd < n_rounds:
        P = rnd if k == 0 else (rnd + k) % (m - 1)
        Q = m - 1 if k == 0 else (rnd - k + (m - 1)) % (m - 1)
        return min(P, Q) * m + max(P, Q)
    I = k + (rnd - n_rounds) * half
    return I * m + I


# --------------------------------------------------------------------------------------------------
# the kernels
# --------------------------------------------------------------------------------------------------


@njit(**_PAR)
def _stress_prologue(x, y, XPbuf, use_global, nx, ny, N, zero_gx, zero_gy, gx, gy):
    """Squared norms (zero on padding rows), zeroed accumulators, and x in panels when kept whole."""
    B = x.shape[0]
    D1 = x.shape[2]
    D2 = y.shape[2]
    zero = x.dtype.type(0)
    nb = (N + SB - 1) // SB
    NP = SB // W
    for t in prange(B * nb):
        b = t // nb
        I = t % nb
        for a in range(SB):
            i = I * SB + a
            s = zero
            if i < N:
                for k in range(D1):
                    s += x[b, i, k] * x[b, i, k]
            nx[b, i] = s
            s = zero
            for k in range(D2):
                s += y[b, i, k] * y[b, i, k]
            ny[b, i] = s
            if zero_gy:
                for k in range(D2):
                    gy[b, i, k] = 0
            if zero_gx and i < N:
                for k in range(D1):
                    gx[b, i, k] = 0
        if use_global:
            for q in range(NP):
                for k in range(D1):
                    for l in range(W):
                        i = I * SB + q * W + l
                        XPbuf[b, I * NP + q, k, l] = x[b, min(i, N - 1), k] if i < N else zero


@njit(**_PAR)
def _stress_rounds(x, y, YP, XPbuf, use_global, nx, ny, N, wx, wy, theta, d_tiny, WT, ch, VF, sums, gx, gy,
                   rnd0, rnd1):
    """Rounds rnd0 .. rnd1 - 1 of block-pair tasks (see ``_task_blocks``).

    x (B, N, D1); y (B, Np, D2p) zero-padded, YP (B, Np/W, D2p, W) its panels; XPbuf the panels of x,
    (B, Np/W, D1, W) when ``use_global``, else (threads, SB/W, D1, W) packed per task; nx, ny (B, Np)
    squared norms; sums (B, slots, 4) float64 receives the pair sums of task k of round rnd at slot
    rnd * half + k. The B * half tasks of a round run ``ch`` at a time; when ``wx >= 0`` (``wy >= 0``) the x (y)
    weight tile of task t of such a chunk goes to WT[wx, t] (WT[wy, t]: WT holds ``ch`` tasks, so its size does
    not grow with N) and exact close-pair gradient terms are added to gx (gy: (B, Np, D2p))."""
    B = x.shape[0]
    D1 = x.shape[2]
    zero = x.dtype.type(0)
    one = x.dtype.type(1)
    nb = (N + SB - 1) // SB
    m = nb + (nb & 1)
    half = m // 2
    n_rounds = m - 1
    NP = SB // W
    ntask = B * half
    nch = (ntask + ch - 1) // ch
    for rc in range((rnd1 - rnd0) * nch):
        rnd = rnd0 + rc // nch
        c0 = (rc % nch) * ch
        for tt in prange(min(ch, ntask - c0)):
            t = c0 + tt
            b = t // half
            k = t % half
            IJ = _task_blocks(rnd, k, m, n_rounds, half)
            I = IJ // m
            J = IJ % m
            slot = rnd * half + k
            if J >= nb:  # the bye of an odd number of blocks, or past the last diagonal block
                for e in range(4):
                    sums[b, slot, e] = 0
                continue
            th = numba.get_thread_id()
            # local tiles (the accumulators must be local: see the docstring)
            ax = np.empty((R, W), x.dtype)
            ay = np.empty((R, W), x.dtype)
            dl = np.empty((R, W), x.dtype)
            dd = np.empty((R, W), x.dtype)
            mk = np.empty((R, W), x.dtype)
            fl = np.empty((R, W), np.int8)
            ln = np.zeros((4, W), x.dtype)
            i0 = I * SB
            j0 = J * SB
            ni = min(SB, N - i0)
            nj = min(SB, N - j0)
            diag = I == J
            if use_global:
                bp = b
                pj0 = j0 // W
            else:
                bp = th
                pj0 = 0
                for q in range(NP):
                    for kk in range(D1):
                        for l in range(W):
                            j = j0 + q * W + l
                            XPbuf[th, q, kk, l] = x[b, min(j, N - 1), kk] if j < N else zero
            for a0 in range(0, SB, R):
                for q in range(NP):
                    # the two Gram tiles <x_i, x_j> and <y_i, y_j>: rows i0 + a0.., columns of panel q
                    _tile_dot(x, b, i0 + a0, N - 1, XPbuf, bp, pj0 + q, ax)
                    _tile_dot(y, b, i0 + a0, N - 1, YP, b, j0 // W + q, ay)
                    # distances in registers; flag the pairs the Gram form cannot resolve
                    nflag = 0
                    for r in range(R):
                        a = a0 + r
                        nxa = nx[b, i0 + a]
                        nya = ny[b, i0 + a]
                        for l in range(W):
                            c = q * W + l
                            sx = nxa + nx[b, j0 + c]
                            sy = nya + ny[b, j0 + c]
                            d2x = sx - (ax[r, l] + ax[r, l])
                            d2y = sy - (ay[r, l] + ay[r, l])
                            valid = (a < ni) & (c < nj) & ((not diag) | (c > a))
                            f = np.int8(d2x < theta * sx) + np.int8(2) * np.int8(d2y < theta * sy)
                            f = f if valid else np.int8(0)
                            fl[r, l] = f
                            nflag += f
                            dl[r, l] = np.sqrt(max(d2x, zero))
                            dd[r, l] = np.sqrt(max(d2y, zero))
                            mk[r, l] = one if valid else zero
                    if nflag > 0:  # rare: close pairs, recomputed (and their gradient terms added) exactly
                        for r in range(R):
                            for l in range(W):
                                f = fl[r, l]
                                i = i0 + a0 + r
                                j = j0 + q * W + l
                                if f & 1:
                                    dl[r, l] = np.sqrt(_sqdist_exact(x, b, i, j))
                                if f & 2:
                                    dd[r, l] = np.sqrt(_sqdist_exact(y, b, i, j))
                                if (f & 1) and wx >= 0 and dl[r, l] > d_tiny:
                                    _add_exact_term(dd[r, l] / dl[r, l], x, b, i, j, gx)
                                if (f & 2) and wy >= 0 and dd[r, l] > d_tiny:
                                    _add_exact_term(dl[r, l] / dd[r, l], y, b, i, j, gy)
                    for r in range(R):
                        for l in range(W):
                            mv = mk[r, l]
                            dx = dl[r, l]
                            dy = dd[r, l]
                            e = dx - dy
                            ln[0, l] += mv * (e * e)
                            ln[1, l] += mv * (dx * dx)
                            ln[2, l] += mv * (dy * dy)
                            ln[3, l] += mv * (e * dy)
                    if wy >= 0:  # weight delta/d of the Gram-form products (exact pairs are done)
                        for r in range(R):
                            for l in range(W):
                                dy = dd[r, l]
                                keep = (mk[r, l] != zero) & (dy > d_tiny) & ((fl[r, l] & 2) == 0)
                                w = dl[r, l] / dy if keep else zero
                                WT[wy, tt, a0 + r, q * W + l] = w
                    if wx >= 0:
                        for r in range(R):
                            for l in range(W):
                                dx = dl[r, l]
                                keep = (mk[r, l] != zero) & (dx > d_tiny) & ((fl[r, l] & 1) == 0)
                                w = dd[r, l] / dx if keep else zero
                                WT[wx, tt, a0 + r, q * W + l] = w
            for e in range(4):
                s = 0.0
                for l in range(W):
                    s += ln[e, l]
                sums[b, slot, e] = s
        if wx < 0 and wy < 0:
            continue
        # the gradient products of the round: a separate parallel loop (see the docstring)
        for tt in prange(min(ch, ntask - c0)):
            t = c0 + tt
            b = t // half
            k = t % half
            IJ = _task_blocks(rnd, k, m, n_rounds, half)
            I = IJ // m
            J = IJ % m
            if J >= nb:
                continue
            th = numba.get_thread_id()
            acc = np.empty((R, W), x.dtype)
            cs = np.empty(SB, x.dtype)
            for sp in range(2):
                ws = wx if sp == 0 else wy
                if ws < 0:
                    continue
                for side in range(2):
                    # side 0: G_I += rowsum(w) V_I - w V_J;  side 1: G_J += colsum(w) V_J - w^T V_I
                    orow = (I if side == 0 else J) * SB
                    ocol = (J if side == 0 else I) * SB
                    nrow = min(SB, N - orow)
                    ncol = min(SB, N - ocol)
                    # row sums of the A operand: of w (side 0, in W lanes) or of w^T = column sums of w
                    if side == 0:
                        for a in range(SB):
                            cs[a] = 0
                            for c in range(SB):
                                cs[a] += WT[ws, tt, a, c]
                    else:
                        for c in range(SB):
                            cs[c] = 0
                        for a in range(SB):
                            for c in range(SB):
                                cs[c] += WT[ws, tt, a, c]
                    if sp == 0:
                        _grad_side(WT, ws, tt, side == 1, x, b, orow, ocol, nrow, ncol, gx, VF, th, cs, acc)
                    else:
                        _grad_side(WT, ws, tt, side == 1, y, b, orow, ocol, nrow, ncol, gy, VF, th, cs, acc)


# --------------------------------------------------------------------------------------------------
# launcher (the backend contract)
# --------------------------------------------------------------------------------------------------


def _cdtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def stress_forward(x: torch.Tensor, y: torch.Tensor, need_gx: bool = False, need_gy: bool = False):
    """Pair sums and (optionally) raw gradient accumulators; see ``kernels/reference/stress.py``.

    x (B, N, D1), y (B, N, D2) -> sums (B, 4) float64 [R, T, Q, E], Gx (B, N, D1) or None, Gy (B, N, D2) or None.
    """
    dt = _cdtype(x)
    x = x.to(dt).contiguous()
    y = y.to(dt)
    B, N, D1 = x.shape
    D2 = y.shape[2]
    nb = -(-N // SB)
    Np = nb * SB
    D2p = -(-max(D2, 1) // W) * W
    m = nb + (nb & 1)
    half = m // 2
    n_rounds = m - 1
    npdt = np.float64 if dt == torch.float64 else np.float32
    # y is small: its panels, and a zero-padded copy (rows to whole blocks, features to whole panels) only
    # when y is not already in that shape (then Gy is accumulated in place in the output, no copy either)
    aligned = Np == N and D2p == D2 and y.is_contiguous()
    if aligned:
        yp = y
    else:
        yp = torch.zeros(B, Np, D2p, dtype=dt)
        yp[:, :N, :D2] = y
    YP = yp.reshape(B, Np // W, W, D2p).transpose(2, 3).contiguous()
    # x is never copied; its panels are packed whole when that copy is small, else per task
    use_global = B * Np * D1 * x.element_size() <= PACK_BUDGET
    XPbuf = np.empty((B, Np // W, D1, W) if use_global else (numba.get_num_threads(), SB // W, D1, W), dtype=npdt)
    nx = np.empty((B, Np), dtype=npdt)
    ny = np.empty((B, Np), dtype=npdt)
    sums = np.empty((B, (n_rounds + 2) * half, 4), dtype=np.float64)
    gx = _alloc.empty((B, N, D1) if need_gx else (1, 1, 1), dtype=dt, device=x.device)
    if need_gy and aligned:
        gyp = _alloc.empty((B, N, D2), dtype=dt, device=x.device)
    else:
        gyp = torch.empty((B, Np, D2p) if need_gy else (1, 1, 1), dtype=dt)
    wx = 0 if need_gx else -1
    wy = int(need_gx) if need_gy else -1
    nslots = int(need_gx) + int(need_gy)            # one weight tile per space with a gradient
    ch = min(B * half, WT_TASKS * numba.get_num_threads()) if nslots else B * half
    WT = np.empty((nslots, ch, SB, SB) if nslots else (1, 1, 1, 1), dtype=npdt)
    dmax = max(D1 if need_gx else 1, D2p if need_gy else 1)
    VF = np.empty((numba.get_num_threads(), -(-dmax // W), SB, W) if nslots else (1, 1, 1, 1), dtype=npdt)
    xn, ypn = x.numpy(), yp.numpy()
    _stress_prologue(xn, ypn, XPbuf, use_global, nx, ny, N, need_gx, need_gy, gx.numpy(), gyp.numpy())
    _stress_rounds(xn, ypn, YP.numpy(), XPbuf, use_global, nx, ny, N, wx, wy, npdt(THETA[dt]), npdt(D_TINY[dt]),
                   WT, ch, VF, sums, gx.numpy(), gyp.numpy(), 0, n_rounds + 2)
    out = _alloc.empty((B, 4), dtype=torch.float64, device=x.device)
    out.copy_(torch.from_numpy(sums).sum(1))
    gy = None
    if need_gy and aligned:
        gy = gyp
    elif need_gy:
        gy = _alloc.empty((B, N, D2), dtype=dt, device=x.device)
        gy.copy_(gyp[:, :N, :D2])
    return out, (gx if need_gx else None), gy
