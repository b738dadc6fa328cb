"""Stress pair sums and gradient accumulators as BLAS GEMM blocks + fused Numba epilogues (the CPU fast path).

Used by ``kernels/numba/stress.py::stress_forward`` (see its docstring for the contract). Per row block
``I`` (``BI`` points) and column chunk ``J`` (``BJ`` points, ``J`` starting at ``I``'s first row: the upper
triangle only):

1. ``A = x_I x_J^T`` (K = D1) and ``C = y_I y_J^T`` (K = D2) by ``torch.bmm(..., out=workspace)`` (MKL:
   ~2x the register-tile product of ``_tiles.panel_dot`` on the development machine);
2. ``_epilogue`` (one Numba parallel pass over ``NG`` fixed groups of rows of the block, in place):
   squared distances, close pairs recomputed from explicit differences, the four pair sums per row (added
   to float64 row accumulators: the sums do not depend on the thread count), and the weight tiles in place
   of the Gram tiles -- ``C <- r = delta / d`` (y side), ``A <- s = d / delta`` (x side) -- with their row
   sums and, per row group, their column sums (added up in a fixed order at the end of the same call, which
   returns the number of rows with close pairs);
3. ``_colpass`` (only for blocks with close pairs; parallel over fixed column chunks): the column side of the
   exact close-pair terms;
4. the gradient products ``V_I += w v_J`` and ``V_J += w^T v_I`` (MKL) into the output, split so that each
   MKL thread runs whole products (``_grad``): the I side as a batch of 128-row pieces, for skinny v the J
   side as two K-halves (a 64-column product split between the threads ran at 55 % of the Gram rate).

``G_p = S_p v_p - V_p + (exact terms)``, ``S_p`` the row sums of the weights over the Gram-form pairs.

Block sizes (``block_sizes``): one problem 1024-row blocks and 1024-column chunks (4 MB float32 tiles),
a batch 512-row blocks. Measured (N = 4096 fwd+bwd, interleaved in one process, medians of 50 calls):
512 x 2048 blocks with unsplit gradient products 47.2 ms; 1024 x 1024 with the I-side split 45.1 ms; with
the J-side split too 44.8 ms (forward alone 30.5 -> 29.4 ms; B = 2 unchanged, 95.8 / 94.1 ms); 8 MB tiles,
512 x 512 / 512 x 1024 tiles and 64- / 256- / 512-row gradient pieces no better.

Diagonal squares (one problem, B = 1): the row blocks' column chunks start past their own diagonal square;
the squares ``(BI x BI)`` of the first ``L = BI floor(N / BI)`` rows are split instead of being computed
whole with their lower halves dropped (25 % of the pairs at N = 4096, BI = 1024): for s = BI / 2, BI / 4,
..., DIAG_MIN the ``s x s`` rectangles above the diagonal of every ``2s x 2s`` square, batched over the
squares (one bmm / epilogue / baddbmm_ set per size), then the ``DIAG_MIN`` squares whole. A batch is ``E``
entries, each with its own problem, first row and first column (``pb``, ``r0``, ``c0``); the entries of one
batch have disjoint rows and disjoint columns. Measured (same process, N = 4096, fwd+bwd, BI = 512): 48.3 ->
45.9 ms; DIAG_MIN 32 / 64 / 128 / 256 within the noise of each other (64 / 128 / 256 again at BI = 1024).
Profile at N = 4096 (BI = 1024, 2 threads): the 128-level (rectangles and half-wasted squares) costs ~8 ns
per useful pair against ~4.6 in the main blocks, the 512- and 256-levels ~5.

Memory: the two (three or four, with close pairs and gradients) ``B x BI x BJ`` workspaces (~4 MB each,
reused across blocks and calls), the J-side halves (``2 BJ D``: 512 KB at D = 64) and O(N) vectors besides
the outputs -- independent of N.

Close pairs: ``||a||^2 + ||b||^2 - 2<a, b>`` loses relative accuracy ~u (||a||^2 + ||b||^2) / d^2; a pair
below ``theta (||a||^2 + ||b||^2)`` is recomputed exactly, its weight kept out of the Gram-form products
(weight 0 in A / C) and stored in ``FX`` / ``FY`` instead, from which its term is added from explicit
differences (row side in ``_epilogue``, column side in ``_colpass``: each pass writes rows it owns, no
races). Coincident pairs (``d <= d_tiny``) get the weight 0 (the minimum-norm subgradient).

Compiler notes (each checked in the assembly: the epilogue ran scalar when one was missed): float sums over
a row vectorise only with reassociation, so the epilogue passes carry ``fastmath={"contract", "reassoc"}``
(no ``nnan``/``ninf``: infs and NaNs keep their meaning); ``error_model="numpy"`` (Numba's default guards
every division with a ZeroDivisionError branch); the close-pair counter is a float (an int64 counter next to
float32 lanes stopped the vectoriser); row starts past the diagonal are unsigned (``np.uint64``); every
constant is a scalar of the working dtype (``A.dtype.type(0)``, or a numpy scalar argument: a Python literal
would promote float32 to float64 and stop the vectoriser). The diagonal block's lower
triangle is skipped by starting each row at ``j > i`` (no mask in the hot loop) and zeroed for the GEMMs.
"""
from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange

from ._pool import passive_numba_pool
from ._scratch import workspace

_EPI = dict(parallel=True, cache=True, fastmath={"contract", "reassoc"}, error_model="numpy")
CW = 256                  # columns per task of the column pass
NG = 8                    # row groups of the epilogue (fixed, each with its own column sums: thread-count independent)
ELEMS = 1 << 20           # elements per workspace tile (4 MB in float32)
BI_MAX = 1024             # rows per block of one problem (B = 1; see block_sizes)
BI_BATCH = 512            # rows per block of a batch (B > 1: no diagonal split, smaller squares waste less)
DIAG_MIN = 128            # smallest rectangle of the diagonal squares' split (then whole squares of this size)
GI_ROWS = 128             # row pieces of the I-side gradient product (see _grad)
GJ_DMAX = 128             # the J-side gradient product in two K halves for D <= GJ_DMAX (see _grad)


@njit(**_EPI)
def _sqnorms(v, out):
    B, N, D = v.shape
    for t in prange(B * N):
        b = t // N
        i = t % N
        s = v.dtype.type(0)
        for k in range(D):
            s += v[b, i, k] * v[b, i, k]
        out[b, i] = s


@njit(cache=True)
def _exact_sq(v, b, i, j):
    s = v.dtype.type(0)
    for k in range(v.shape[2]):
        d = v[b, i, k] - v[b, j, k]
        s += d * d
    return s


@njit(cache=True)
def _add_row_term(w, v, b, i, j, G):
    for k in range(v.shape[2]):
        G[b, i, k] += w * (v[b, i, k] - v[b, j, k])


@njit(cache=True)
def _colsums(CS, pb, c0, NG, S):
    """S[p, c0 + c] += sum_g CS[e * NG + g, c] (the row groups' column sums, in a fixed order)."""
    E = pb.shape[0]
    BJ = CS.shape[1]
    for e in range(E):
        p = pb[e]
        j0 = c0[e]
        for c in range(BJ):
            acc = CS[e * NG, c]
            for g in range(1, NG):
                acc += CS[e * NG + g, c]
            S[p, j0 + c] += acc


@njit(inline="always")
def _gram_pair(sx, sy, ax, cy, theta, zero, one):
    """One pair from the Gram form: (close flag, d2x, d2y, d_x, d_y) from the squared-norm sums sx, sy and the
    inner products ax = <x_i, x_j>, cy = <y_i, y_j>; close (1) when either distance lost its accuracy to the
    cancellation (``d2 < theta * (|a|^2 + |b|^2)``), the distances then recomputed by the caller."""
    d2x = sx - (ax + ax)
    d2y = sy - (cy + cy)
    close = one if (d2x < theta * sx) | (d2y < theta * sy) else zero
    d2x = max(d2x, zero)
    d2y = max(d2y, zero)
    return close, d2x, d2y, np.sqrt(d2x), np.sqrt(d2y)


@njit(**_EPI)
def _epilogue(A, C, x, y, nx, ny, nxJ, nyJ, pb, r0, c0, theta, d_tiny, wx, wy, FX, FY, rowflag, rowacc, Sx, Sy, gx,
              gy, CSX, CSY, NG):
    """In place on A = <x_i, x_j>, C = <y_i, y_j> (E, BI, BJ): entry q of problem pb[q], rows r0[q] + a, columns
    c0[q] + c (see the module docstring; the entries' rows are disjoint). Pairs with j <= i (a diagonal block)
    are skipped and, when weights are wanted, zeroed.

    One fused vector loop per row reads both Gram tiles and writes the weights over them; a row in which it
    met a close pair is redone by the scalar loop (exact distances for the close pairs, and for every pair of
    a space whose Gram row the vector loop already overwrote)."""
    E, BI, BJ = A.shape
    nflag = 0
    for t in prange(E * NG):
        q = t // NG
        g = t % NG
        p = pb[q]
        i0 = r0[q]
        j0 = c0[q]
        zero = A.dtype.type(0)
        for c in range(BJ):
            if wx:
                CSX[t, c] = zero
            if wy:
                CSY[t, c] = zero
        for a in range(g, BI, NG):
            i = i0 + a
            js = min(BJ, max(0, i + 1 - j0))
            jsu = np.uint64(js)          # unsigned lane indices: LLVM then knows they need no wraparound
            BJu = np.uint64(BJ)
            nxi = nx[p, i]
            nyi = ny[p, i]
            zero = A.dtype.type(0)
            one = A.dtype.type(1)
            cnt = zero
            sR = zero
            sT = zero
            sQ = zero
            sE = zero
            rx = zero
            ry = zero
            if wy and not wx:
                for c in range(jsu, BJu):
                    close, d2x, d2y, dl, dd = _gram_pair(nxi + nxJ[q, c], nyi + nyJ[q, c], A[q, a, c], C[q, a, c],
                                                         theta, zero, one)
                    cnt += close
                    e = dl - dd
                    sR += e * e
                    sT += d2x
                    sQ += d2y
                    sE += e * dd
                    r = dl / dd if dd > d_tiny else zero
                    C[q, a, c] = r
                    ry += r
            elif wx and wy:
                for c in range(jsu, BJu):
                    close, d2x, d2y, dl, dd = _gram_pair(nxi + nxJ[q, c], nyi + nyJ[q, c], A[q, a, c], C[q, a, c],
                                                         theta, zero, one)
                    cnt += close
                    e = dl - dd
                    sR += e * e
                    sT += d2x
                    sQ += d2y
                    sE += e * dd
                    r = dl / dd if dd > d_tiny else zero
                    s = dd / dl if dl > d_tiny else zero
                    C[q, a, c] = r
                    A[q, a, c] = s
                    ry += r
                    rx += s
            elif wx:
                for c in range(jsu, BJu):
                    close, d2x, d2y, dl, dd = _gram_pair(nxi + nxJ[q, c], nyi + nyJ[q, c], A[q, a, c], C[q, a, c],
                                                         theta, zero, one)
                    cnt += close
                    e = dl - dd
                    sR += e * e
                    sT += d2x
                    sQ += d2y
                    sE += e * dd
                    s = dd / dl if dl > d_tiny else zero
                    A[q, a, c] = s
                    rx += s
            else:
                for c in range(jsu, BJu):
                    close, d2x, d2y, dl, dd = _gram_pair(nxi + nxJ[q, c], nyi + nyJ[q, c], A[q, a, c], C[q, a, c],
                                                         theta, zero, one)
                    cnt += close
                    e = dl - dd
                    sR += e * e
                    sT += d2x
                    sQ += d2y
                    sE += e * dd
            if wx or wy:
                for c in range(js):
                    A[q, a, c] = zero
                    C[q, a, c] = zero
            rowflag[q, a] = cnt > zero
            nflag += 1 if cnt > zero else 0
            if cnt > zero:  # rare: close pairs in this row (scalar code, exact distances and explicit-difference terms)
                sR = zero
                sT = zero
                sQ = zero
                sE = zero
                rx = zero
                ry = zero
                for c in range(BJ):
                    if wx:
                        FX[q, a, c] = zero
                    if wy:
                        FY[q, a, c] = zero
                for c in range(js, BJ):
                    j = j0 + c
                    sx = nxi + nx[p, j]
                    sy = nyi + ny[p, j]
                    if wx:  # the Gram row was overwritten
                        d2x = _exact_sq(x, p, i, j)
                        fx = d2x < theta * sx
                    else:
                        d2x = sx - (A[q, a, c] + A[q, a, c])
                        fx = d2x < theta * sx
                        d2x = _exact_sq(x, p, i, j) if fx else d2x
                    if wy:
                        d2y = _exact_sq(y, p, i, j)
                        fy = d2y < theta * sy
                    else:
                        d2y = sy - (C[q, a, c] + C[q, a, c])
                        fy = d2y < theta * sy
                        d2y = _exact_sq(y, p, i, j) if fy else d2y
                    d2x = max(d2x, zero)
                    d2y = max(d2y, zero)
                    dl = np.sqrt(d2x)
                    dd = np.sqrt(d2y)
                    e = dl - dd
                    sR += e * e
                    sT += d2x
                    sQ += d2y
                    sE += e * dd
                    if wy:
                        r = dl / dd if dd > d_tiny else zero
                        if fy:
                            C[q, a, c] = zero
                            FY[q, a, c] = r
                            if r != zero:
                                _add_row_term(r, y, p, i, j, gy)
                        else:
                            C[q, a, c] = r
                            ry += r
                    if wx:
                        s = dd / dl if dl > d_tiny else zero
                        if fx:
                            A[q, a, c] = zero
                            FX[q, a, c] = s
                            if s != zero:
                                _add_row_term(s, x, p, i, j, gx)
                        else:
                            A[q, a, c] = s
                            rx += s
            if wy:  # the row's weights into its group's column sums (the row is still in L1)
                for c in range(jsu, BJu):
                    CSY[t, c] += C[q, a, c]
            if wx:
                for c in range(jsu, BJu):
                    CSX[t, c] += A[q, a, c]
            rowacc[p, i, 0] += np.float64(sR)
            rowacc[p, i, 1] += np.float64(sT)
            rowacc[p, i, 2] += np.float64(sQ)
            rowacc[p, i, 3] += np.float64(sE)
            if wx:
                Sx[p, i] += rx
            if wy:
                Sy[p, i] += ry
    if wx:  # the row groups' column sums into Sx / Sy (serial, fixed order: after the parallel loop)
        _colsums(CSX, pb, c0, NG, Sx)
    if wy:
        _colsums(CSY, pb, c0, NG, Sy)
    return nflag


@njit(**_EPI)
def _colpass(F, rowflag, v, pb, r0, c0, G):
    """G[p, c0 + c] -= F[e, a, c] (v_{r0+a} - v_{c0+c}) for the flagged rows a: the column side of the exact
    close-pair terms (parallel over fixed column chunks of each entry: the entries' columns are disjoint,
    so each task owns its rows of G)."""
    E, BI, BJ = F.shape
    nc = (BJ + CW - 1) // CW
    D = v.shape[2]
    zero = F.dtype.type(0)
    for t in prange(E * nc):
        e = t // nc
        p = pb[e]
        c0_ = (t % nc) * CW
        c1 = min(BJ, c0_ + CW)
        for a in range(BI):
            if rowflag[e, a]:
                i = r0[e] + a
                for c in range(c0_, c1):
                    f = F[e, a, c]
                    if f != zero:
                        j = c0[e] + c
                        for k in range(D):
                            G[p, j, k] -= f * (v[p, i, k] - v[p, j, k])


def _grad(gI, gJ, W, vI, vJ):
    """gI -= W vJ and gJ -= W^T vI for (E, ni, nj) weights W, per entry as products that MKL runs one per
    thread instead of splitting one product between the threads: the I side as a batch of ``GI_ROWS``-row
    pieces sharing vJ (when they divide ni); for skinny v (D <= GJ_DMAX) the J side as two K = ni / 2
    halves into a workspace, then subtracted (when ni >= 2 GI_ROWS). Measured at N = 4096, D = 64 (same
    process, the products' time per fwd+bwd): 10.5 -> 9.4 ms (I side split), 9.9 -> 9.5 ms (J side too); in
    isolation (1024 x 1024 weights) I 0.58 -> 0.42 ms, J 0.73 -> 0.57 ms. At D = 512 the J split measured
    no gain, the I split ~3 %. ``GI_ROWS = 0`` / ``GJ_DMAX = 0``: the plain products."""
    E, ni, nj = W.shape
    D = vI.shape[2]
    if GI_ROWS and ni > GI_ROWS and ni % GI_ROWS == 0:
        P = ni // GI_ROWS
        for e in range(E):
            gI[e].view(P, GI_ROWS, D).baddbmm_(W[e].view(P, GI_ROWS, nj), vJ[e].expand(P, nj, D), alpha=-1)
    else:
        gI.baddbmm_(W, vJ, alpha=-1)
    if D <= GJ_DMAX and GI_ROWS and ni >= 2 * GI_ROWS and ni % 2 == 0:
        h = ni // 2
        T = workspace("stress4", 2 * nj * D, W.dtype).view(2, nj, D)
        for e in range(E):
            torch.bmm(W[e].view(2, h, nj).transpose(1, 2), vI[e].view(2, h, D), out=T)
            gJ[e].sub_(T[0]).sub_(T[1])
    else:
        gJ.baddbmm_(W.transpose(1, 2), vI, alpha=-1)


def block_sizes(B: int, N: int) -> tuple[int, int]:
    """Rows per block ``bi`` and columns per chunk ``bj`` (``B bi bj`` ~ ELEMS). One problem: ``BI_MAX``,
    halved while it exceeds N and its half still splits (a power of two: the diagonal squares of the
    first ``bi floor(N / bi)`` rows are split, see ``_diag_sizes``); a batch: ``BI_BATCH``."""
    if B == 1:
        bi = BI_MAX
        while bi > N and bi // 2 >= 2 * DIAG_MIN:
            bi //= 2
    else:
        bi = BI_BATCH
    bi = min(N, bi)
    if B * bi * bi > ELEMS:
        bi = max(1, int((ELEMS // B) ** 0.5))
    bj = max(bi, ELEMS // max(1, B * bi))
    return bi, bj


def _diag_sizes(B: int, N: int, bi: int) -> list[int]:
    """Rectangle sizes of the diagonal squares' split (bi / 2, bi / 4, ..., DIAG_MIN), or [] (no split: the
    diagonal squares are the first column chunks of their row blocks, lower halves computed and dropped)."""
    if B != 1 or bi < 2 * DIAG_MIN or bi % DIAG_MIN or (bi // DIAG_MIN) & (bi // DIAG_MIN - 1) or N < bi:
        return []
    out, s = [], bi // 2
    while s >= DIAG_MIN:
        out.append(s)
        s //= 2
    return out


def _squares(t: torch.Tensor, e0: int, e1: int, w: int) -> torch.Tensor:
    """Rows [e0 w, e1 w) of problem 0 of t (1, N, D) as (e1 - e0, w, D)."""
    return t[0, e0 * w:e1 * w].view(e1 - e0, w, t.shape[2])


def stress_blas(x: torch.Tensor, y: torch.Tensor, need_gx: bool, need_gy: bool, theta, d_tiny, gx, gy):
    """x (B, N, D1), y (B, N, D2) contiguous, same float dtype; gx / gy zero-initialised outputs (or None).
    Returns the (B, 4) float64 pair sums; gx / gy receive the raw accumulators."""
    passive_numba_pool()
    B, N, D1 = x.shape
    D2 = y.shape[2]
    dt = x.dtype
    npdt = np.float32 if dt == torch.float32 else np.float64
    xn, yn = x.numpy(), y.numpy()
    nx = np.empty((B, N), npdt)
    ny = np.empty((B, N), npdt)
    _sqnorms(xn, nx)
    _sqnorms(yn, ny)
    rowacc = np.zeros((B, N, 4), np.float64)
    Sx = np.zeros((B, N) if need_gx else (1, 1), npdt)
    Sy = np.zeros((B, N) if need_gy else (1, 1), npdt)
    dummy = np.zeros((1, 1, 1), npdt)
    gxn = gx.numpy() if need_gx else dummy
    gyn = gy.numpy() if need_gy else dummy
    bi, bj = block_sizes(B, N)
    ng = min(bi, NG)
    dummy2 = np.zeros((1, 1), npdt)
    sizes = _diag_sizes(B, N, bi)
    ncs = max(B * ng * min(bj, N), max([min(N // s, max(1, ELEMS // (s * s))) * ng * s for s in sizes], default=0))
    csx = np.empty(ncs if need_gx else 1, npdt)   # the row groups' column sums
    csy = np.empty(ncs if need_gy else 1, npdt)
    th = npdt(theta)
    tiny = npdt(d_tiny)

    def block(xI, xJ, yI, yJ, pb, r0, c0, nxJ, nyJ, gxI, gxJ, gyI, gyJ):
        """One batch of E Gram blocks (E, ni, nj): entry e = rows r0[e] + [0, ni), columns c0[e] + [0, nj) of
        problem pb[e]; xI / xJ / yI / yJ the matching (E, n, D) views, g*I / g*J the output views."""
        E, ni = xI.shape[0], xI.shape[1]
        nj = xJ.shape[1]
        n = E * ni * nj
        gn = min(ni, ng)
        A = workspace("stress0", n, dt).view(E, ni, nj)
        C = workspace("stress1", n, dt).view(E, ni, nj)
        FX = workspace("stress2", n, dt).view(E, ni, nj).numpy() if need_gx else dummy
        FY = workspace("stress3", n, dt).view(E, ni, nj).numpy() if need_gy else dummy
        torch.bmm(xI, xJ.transpose(1, 2), out=A)
        torch.bmm(yI, yJ.transpose(1, 2), out=C)
        rf = np.empty((E, ni), np.bool_)
        CSX = csx[:E * gn * nj].reshape(E * gn, nj) if need_gx else dummy2
        CSY = csy[:E * gn * nj].reshape(E * gn, nj) if need_gy else dummy2
        anyflag = _epilogue(A.numpy(), C.numpy(), xn, yn, nx, ny, nxJ, nyJ, pb, r0, c0, th, tiny, need_gx, need_gy,
                            FX, FY, rf, rowacc, Sx, Sy, gxn, gyn, CSX, CSY, gn) > 0
        if need_gy:
            if anyflag:
                _colpass(FY, rf, yn, pb, r0, c0, gyn)
            _grad(gyI, gyJ, C, yI, yJ)
        if need_gx:
            if anyflag:
                _colpass(FX, rf, xn, pb, r0, c0, gxn)
            _grad(gxI, gxJ, A, xI, xJ)

    L = (N // bi) * bi if sizes else 0       # rows whose diagonal squares are split (B == 1)
    pbB = np.arange(B, dtype=np.int64)
    for i0 in range(0, N, bi):
        i1 = min(N, i0 + bi)
        for j0 in range(i1 if i1 <= L else i0, N, bj):
            j1 = min(N, j0 + bj)
            r0 = np.full(B, i0, np.int64)
            c0 = np.full(B, j0, np.int64)
            block(x[:, i0:i1], x[:, j0:j1], y[:, i0:i1], y[:, j0:j1], pbB, r0, c0,
                  np.ascontiguousarray(nx[:, j0:j1]), np.ascontiguousarray(ny[:, j0:j1]),
                  gx[:, i0:i1] if need_gx else None, gx[:, j0:j1] if need_gx else None,
                  gy[:, i0:i1] if need_gy else None, gy[:, j0:j1] if need_gy else None)
    # The diagonal squares of the first L rows (B == 1): for each size s, the (s x s) rectangles above the
    # diagonal of the (2s x 2s) squares, batched over the squares; then the (DIAG_MIN x DIAG_MIN) squares on
    # the diagonal (their lower halves dropped by the epilogue).
    for s, sq in [(s, False) for s in sizes] + ([(sizes[-1], True)] if sizes else []):
        w = s if sq else 2 * s
        M = L // w
        emax = max(1, ELEMS // (s * s))
        for e0 in range(0, M, emax):
            e1 = min(M, e0 + emax)
            E = e1 - e0
            off = 0 if sq else s
            r0 = np.arange(e0, e1, dtype=np.int64) * w
            c0 = r0 + off
            pb = np.zeros(E, np.int64)
            xv, yv = _squares(x, e0, e1, w), _squares(y, e0, e1, w)
            gxv = _squares(gx, e0, e1, w) if need_gx else None
            gyv = _squares(gy, e0, e1, w) if need_gy else None
            nxJ = np.ascontiguousarray(nx[0, e0 * w:e1 * w].reshape(E, w)[:, off:off + s])
            nyJ = np.ascontiguousarray(ny[0, e0 * w:e1 * w].reshape(E, w)[:, off:off + s])
            block(xv[:, :s], xv[:, off:off + s], yv[:, :s], yv[:, off:off + s], pb, r0, c0, nxJ, nyJ,
                  gxv[:, :s] if need_gx else None, gxv[:, off:off + s] if need_gx else None,
                  gyv[:, :s] if need_gy else None, gyv[:, off:off + s] if need_gy else None)
    if need_gy:
        gy.addcmul_(y, torch.from_numpy(Sy).unsqueeze(-1))
    if need_gx:
        gx.addcmul_(x, torch.from_numpy(Sx).unsqueeze(-1))
    return torch.from_numpy(rowacc).sum(1)
