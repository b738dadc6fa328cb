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
   sums and, per row group, their column sums (added up in a fixed order afterwards);
3. ``_colpass`` (only for blocks with close pairs; parallel over fixed column chunks): the column side of the
   exact close-pair terms;
4. the gradient products ``V_I += w v_J`` and ``V_J += w^T v_I`` as ``baddbmm_`` (MKL) into the output.

``G_p = S_p v_p - V_p + (exact terms)``, ``S_p`` the row sums of the weights over the Gram-form pairs.

Memory: the two (three or four, with close pairs and gradients) ``B x BI x BJ`` workspaces (~4 MB each,
reused across blocks and calls) and O(N) vectors besides the outputs -- independent of N.

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
BI_MAX = 512              # rows per block (512 x 2048 Gram blocks run MKL at ~410 GFLOP/s, 256 x 4096 at ~360)


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


@njit(**_EPI)
def _epilogue(A, C, x, y, nx, ny, nxJ, nyJ, i0, j0, theta, d_tiny, wx, wy, FX, FY, rowflag, rowacc, Sx, Sy, gx, gy,
              CSX, CSY, NG):
    """In place on A = <x_i, x_j>, C = <y_i, y_j> (B, BI, BJ), rows i0 + a, columns j0 + c (see the module
    docstring). Pairs with j <= i (the diagonal block) are skipped and, when weights are wanted, zeroed.

    One fused vector loop per row reads both Gram tiles and writes the weights over them; a row in which it
    met a close pair is redone by the scalar loop (exact distances for the close pairs, and for every pair of
    a space whose Gram row the vector loop already overwrote)."""
    B, BI, BJ = A.shape
    for t in prange(B * NG):
        b = t // NG
        g = t % NG
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
            nxi = nx[b, i]
            nyi = ny[b, i]
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
                    sx = nxi + nxJ[b, c]
                    sy = nyi + nyJ[b, c]
                    d2x = sx - (A[b, a, c] + A[b, a, c])
                    d2y = sy - (C[b, a, c] + C[b, a, c])
                    cnt += one if (d2x < theta * sx) | (d2y < theta * sy) else zero
                    d2x = max(d2x, zero)
                    d2y = max(d2y, zero)
                    dl = np.sqrt(d2x)
                    dd = np.sqrt(d2y)
                    e = dl - dd
                    sR += e * e
                    sT += d2x
                    sQ += d2y
                    sE += e * dd
                    r = dl / dd if dd > d_tiny else zero
                    C[b, a, c] = r
                    ry += r
            elif wx and wy:
                for c in range(jsu, BJu):
                    sx = nxi + nxJ[b, c]
                    sy = nyi + nyJ[b, c]
                    d2x = sx - (A[b, a, c] + A[b, a, c])
                    d2y = sy - (C[b, a, c] + C[b, a, c])
                    cnt += one if (d2x < theta * sx) | (d2y < theta * sy) else zero
                    d2x = max(d2x, zero)
                    d2y = max(d2y, zero)
                    dl = np.sqrt(d2x)
                    dd = np.sqrt(d2y)
                    e = dl - dd
                    sR += e * e
                    sT += d2x
                    sQ += d2y
                    sE += e * dd
                    r = dl / dd if dd > d_tiny else zero
                    s = dd / dl if dl > d_tiny else zero
                    C[b, a, c] = r
                    A[b, a, c] = s
                    ry += r
                    rx += s
            elif wx:
                for c in range(jsu, BJu):
                    sx = nxi + nxJ[b, c]
                    sy = nyi + nyJ[b, c]
                    d2x = sx - (A[b, a, c] + A[b, a, c])
                    d2y = sy - (C[b, a, c] + C[b, a, c])
                    cnt += one if (d2x < theta * sx) | (d2y < theta * sy) else zero
                    d2x = max(d2x, zero)
                    d2y = max(d2y, zero)
                    dl = np.sqrt(d2x)
                    dd = np.sqrt(d2y)
                    e = dl - dd
                    sR += e * e
                    sT += d2x
                    sQ += d2y
                    sE += e * dd
                    s = dd / dl if dl > d_tiny else zero
                    A[b, a, c] = s
                    rx += s
            else:
                for c in range(jsu, BJu):
                    sx = nxi + nxJ[b, c]
                    sy = nyi + nyJ[b, c]
                    d2x = sx - (A[b, a, c] + A[b, a, c])
                    d2y = sy - (C[b, a, c] + C[b, a, c])
                    cnt += one if (d2x < theta * sx) | (d2y < theta * sy) else zero
                    d2x = max(d2x, zero)
                    d2y = max(d2y, zero)
                    dl = np.sqrt(d2x)
                    dd = np.sqrt(d2y)
                    e = dl - dd
                    sR += e * e
                    sT += d2x
                    sQ += d2y
                    sE += e * dd
            if wx or wy:
                for c in range(js):
                    A[b, a, c] = zero
                    C[b, a, c] = zero
            rowflag[b, a] = cnt > zero
            if cnt > zero:  # rare: close pairs in this row (scalar code, exact distances and explicit-difference terms)
                sR = zero
                sT = zero
                sQ = zero
                sE = zero
                rx = zero
                ry = zero
                for c in range(BJ):
                    if wx:
                        FX[b, a, c] = zero
                    if wy:
                        FY[b, a, c] = zero
                for c in range(js, BJ):
                    j = j0 + c
                    sx = nxi + nx[b, j]
                    sy = nyi + ny[b, j]
                    if wx:  # the Gram row was overwritten
                        d2x = _exact_sq(x, b, i, j)
                        fx = d2x < theta * sx
                    else:
                        d2x = sx - (A[b, a, c] + A[b, a, c])
                        fx = d2x < theta * sx
                        d2x = _exact_sq(x, b, i, j) if fx else d2x
                    if wy:
                        d2y = _exact_sq(y, b, i, j)
                        fy = d2y < theta * sy
                    else:
                        d2y = sy - (C[b, a, c] + C[b, a, c])
                        fy = d2y < theta * sy
                        d2y = _exact_sq(y, b, i, j) if fy else d2y
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
                            C[b, a, c] = zero
                            FY[b, a, c] = r
                            if r != zero:
                                _add_row_term(r, y, b, i, j, gy)
                        else:
                            C[b, a, c] = r
                            ry += r
                    if wx:
                        s = dd / dl if dl > d_tiny else zero
                        if fx:
                            A[b, a, c] = zero
                            FX[b, a, c] = s
                            if s != zero:
                                _add_row_term(s, x, b, i, j, gx)
                        else:
                            A[b, a, c] = s
                            rx += s
            if wy:  # the row's weights into its group's column sums (the row is still in L1)
                for c in range(jsu, BJu):
                    CSY[t, c] += C[b, a, c]
            if wx:
                for c in range(jsu, BJu):
                    CSX[t, c] += A[b, a, c]
            rowacc[b, i, 0] += np.float64(sR)
            rowacc[b, i, 1] += np.float64(sT)
            rowacc[b, i, 2] += np.float64(sQ)
            rowacc[b, i, 3] += np.float64(sE)
            if wx:
                Sx[b, i] += rx
            if wy:
                Sy[b, i] += ry


@njit(**_EPI)
def _colpass(F, rowflag, v, i0, j0, G):
    """G[b, j0 + c] -= F[b, a, c] (v_{i0+a} - v_{j0+c}) for the flagged rows a: the column side of the exact
    close-pair terms (parallel over fixed column chunks: each task owns its rows of G)."""
    B, BI, BJ = F.shape
    nc = (BJ + CW - 1) // CW
    D = v.shape[2]
    zero = F.dtype.type(0)
    for t in prange(B * nc):
        b = t // nc
        c0 = (t % nc) * CW
        c1 = min(BJ, c0 + CW)
        for a in range(BI):
            if rowflag[b, a]:
                i = i0 + a
                for c in range(c0, c1):
                    f = F[b, a, c]
                    if f != zero:
                        j = j0 + c
                        for k in range(D):
                            G[b, j, k] -= f * (v[b, i, k] - v[b, j, k])


def block_sizes(B: int, N: int) -> tuple[int, int]:
    bi = min(N, BI_MAX)
    if B * bi * bi > ELEMS:
        bi = max(1, int((ELEMS // B) ** 0.5))
    bj = max(bi, ELEMS // max(1, B * bi))
    return bi, bj


def stress_blas(x: torch.Tensor, y: torch.Tensor, need_gx: bool, need_gy: bool, theta, d_tiny, gx, gy):
    """x (B, N, D1), y (B, N, D2) contiguous, same float dtype; gx / gy zero-initialised outputs (or None).
    Returns the (B, 4) float64 pair sums; gx / gy receive the raw accumulators."""
    passive_numba_pool()
    B, N, D1 = x.shape
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
    Sx_t, Sy_t = torch.from_numpy(Sx), torch.from_numpy(Sy)
    dummy = np.zeros((1, 1, 1), npdt)
    gxn = gx.numpy() if need_gx else dummy
    gyn = gy.numpy() if need_gy else dummy
    bi, bj = block_sizes(B, N)
    ng = min(bi, NG)
    dummy2 = np.zeros((1, 1), npdt)
    csx = np.empty(B * ng * min(bj, N), npdt) if need_gx else dummy2
    csy = np.empty(B * ng * min(bj, N), npdt) if need_gy else dummy2
    th = npdt(theta)
    tiny = npdt(d_tiny)
    for i0 in range(0, N, bi):
        i1 = min(N, i0 + bi)
        ni = i1 - i0
        for j0 in range(i0, N, bj):
            j1 = min(N, j0 + bj)
            nj = j1 - j0
            n = B * ni * nj
            A = workspace("stress0", n, dt).view(B, ni, nj)
            C = workspace("stress1", n, dt).view(B, ni, nj)
            FX = workspace("stress2", n, dt).view(B, ni, nj).numpy() if need_gx else dummy
            FY = workspace("stress3", n, dt).view(B, ni, nj).numpy() if need_gy else dummy
            torch.bmm(x[:, i0:i1], x[:, j0:j1].transpose(1, 2), out=A)
            torch.bmm(y[:, i0:i1], y[:, j0:j1].transpose(1, 2), out=C)
            rf = np.empty((B, ni), np.bool_)
            CSX = csx[:B * ng * nj].reshape(B * ng, nj) if need_gx else dummy2
            CSY = csy[:B * ng * nj].reshape(B * ng, nj) if need_gy else dummy2
            _epilogue(A.numpy(), C.numpy(), xn, yn, nx, ny, np.ascontiguousarray(nx[:, j0:j1]),
                      np.ascontiguousarray(ny[:, j0:j1]), i0, j0, th, tiny, need_gx, need_gy, FX, FY, rf,
                      rowacc, Sx, Sy, gxn, gyn, CSX, CSY, ng)
            anyflag = bool(rf.any())
            if need_gy:
                Sy_t[:, j0:j1] += torch.from_numpy(CSY).view(B, ng, nj).sum(1)
                if anyflag:
                    _colpass(FY, rf, yn, i0, j0, gyn)
                gy[:, i0:i1].baddbmm_(C, y[:, j0:j1], alpha=-1)
                gy[:, j0:j1].baddbmm_(C.transpose(1, 2), y[:, i0:i1], alpha=-1)
            if need_gx:
                Sx_t[:, j0:j1] += torch.from_numpy(CSX).view(B, ng, nj).sum(1)
                if anyflag:
                    _colpass(FX, rf, xn, i0, j0, gxn)
                gx[:, i0:i1].baddbmm_(A, x[:, j0:j1], alpha=-1)
                gx[:, j0:j1].baddbmm_(A.transpose(1, 2), x[:, i0:i1], alpha=-1)
    if need_gy:
        gy.addcmul_(y, Sy_t.unsqueeze(-1))
    if need_gx:
        gx.addcmul_(x, Sx_t.unsqueeze(-1))
    return torch.from_numpy(rowacc).sum(1)
