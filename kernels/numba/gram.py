"""Kernel Gram matrices and fused Gram reductions on the CPU (Numba + the BLAS torch links).

Same functions and signatures as ``kernels/reference/gram.py``. Two layouts:

* **GEMM + fused epilogue** (rbf, linear, polynomial -- ``gram``, ``gram_matvec``, ``mmd2`` and the
  backward passes): the inner products of a block of rows come from a BLAS GEMM (``torch.bmm``: MKL or
  OpenBLAS, ~370 GFLOP/s on the 2-core development VM, twice the register-tile product below), then one
  Numba pass over the block turns them into distances, repairs cancelled ones and applies the kernel
  function (``_gemm_epilogue``). ``gram`` runs the GEMM by row blocks into a reused 16 MB scratch and the
  pass writes the output once, exp included; a GEMM straight into a 64 MB output that is not in cache ran
  at half its rate (``_kernel_block``). Reductions (``gram_matvec``) run block by block in a workspace that
  is reused across blocks and calls, the block built in place (exp by torch there): memory
  O((N + M)(D + C)) + the block, never N x M. K(x, x) reductions build only the blocks on and right of
  the diagonal.
* **Register tiles** (laplacian, whose L1 distance has no GEMM form, and the symmetric ``gram(x)``, whose
  tiles are stored twice so that the result is exactly symmetric):

    prange over (problem b, block of R = 4 rows of x)
        for each panel of W = 16 points of y:
            tile  s[r, l] = <x_i, y_j>  (``panel_dot``)  or  ||x_i - y_j||_1  (``panel_l1``)
            epilogue in registers: distance, kernel value, then store / reduce

Tricks, and why they are faster or safer than the obvious code:

* **Close points keep their distance.** rbf uses ``||x||^2 + ||y||^2 - 2<x, y>`` (GEMM speed) on
  points centred on their common mean (distances are translation invariant, norms shrink), and an
  entry whose squared distance is below ``TAU * (||x||^2 + ||y||^2)`` -- where the expansion
  would have lost more than ~2 u / TAU of relative accuracy -- is recomputed from explicit
  differences. Float32: TAU = 1/8 (relative error of the distance <= ~2e-6); float64: TAU = 2^-12.
* **Working precision everywhere.** Numba types a Python int or float literal as int64 / float64, and
  ``2 * a`` or ``max(a, 0)`` with a float32 ``a`` then runs in scalar float64: constants come from the data
  (``a + a``, ``t - t``) or arrive as numpy scalars of the working dtype (``_typed``).
* **Vectorised exp** in the register-tile kernels (``_math.exp_flush``: kernel arguments are <= 0), not
  libm's scalar ``exp``.
* The rbf backward of ``gram`` reuses the saved output K (w = G * K needs no exp); the products
  ``W y`` and ``W^T x`` of every backward are BLAS GEMMs over row blocks of W.

float16/bfloat16 inputs are computed in float32 and the results cast back to the input dtype.
"""
from __future__ import annotations

import numpy as np
import torch
from numba import get_num_threads, get_thread_id, njit, prange

from .. import _alloc
from ._math import exp_flush, one_like
from ._pool import passive_numba_pool
from ._scratch import workspace
from ._tiles import R, W, pack_panels, pad_cols, pad_rows, panel_dot, panel_l1

KIND = {"rbf": 0, "laplacian": 1, "linear": 2, "polynomial": 3}
TAU = {torch.float32: 1.0 / 8.0, torch.float64: 1.0 / 4096.0}
_FLAGS = dict(parallel=True, cache=True, fastmath={"contract"})

# --------------------------------------------------------------------------------------------------
# jitted building blocks
# --------------------------------------------------------------------------------------------------


@njit(inline="always")
def _powi(b, n):
    """b ** n for an integer n >= 0 by repeated squaring (exact same rounding for every backend class)."""
    out = one_like(b)
    while n > 0:
        if n & 1:
            out *= b
        b *= b
        n >>= 1
    return out


@njit(inline="always")
def _exact_sqdist(X, i, Y, j):
    s = X[i, 0] * 0
    for d in range(X.shape[1]):
        t = X[i, d] - Y[j, d]
        s += t * t
    return s


@njit(inline="always")
def _sqdist_tile(Xp, i0, Yp, p, Xo, Yo, nx, ny, tau, M, acc):
    """acc <- squared distances of rows i0..i0+R-1 to panel p, exact for close pairs.

    Xp, Yp hold the centred points; the exact recompute reads the original points Xo (row-padded), Yo:
    centring itself rounds each coordinate to ~u |x - c|, more than a close pair's distance."""
    panel_dot(Xp, i0, Yp, p, acc)
    j0 = p * W
    need = False
    for r in range(R):
        for l in range(W):
            nn = nx[i0 + r] + ny[j0 + l]
            d2 = nn - (acc[r, l] + acc[r, l])   # not 2 * acc: an int literal promotes float32 to float64
            need |= d2 < tau * nn
            acc[r, l] = d2
    if need:
        for r in range(R):
            for l in range(min(W, M - j0)):
                nn = nx[i0 + r] + ny[j0 + l]
                if acc[r, l] < tau * nn:
                    acc[r, l] = _exact_sqdist(Xo, i0 + r, Yo, j0 + l)
    zero = tau - tau
    for r in range(R):
        for l in range(W):
            acc[r, l] = max(acc[r, l], zero)


@njit(inline="always")
def _kernel_tile(kind, Xp, i0, Yp, p, Xo, Yo, nx, ny, g, degree, coef0, tau, M, acc, s):
    """acc <- kernel values of the R x W tile; s <- its statistic (squared distance, L1 distance or dot)."""
    if kind == 0:
        _sqdist_tile(Xp, i0, Yp, p, Xo, Yo, nx, ny, tau, M, s)
        for r in range(R):
            for l in range(W):
                acc[r, l] = exp_flush(-g * s[r, l])
    elif kind == 1:
        panel_l1(Xp, i0, Yp, p, s)
        for r in range(R):
            for l in range(W):
                acc[r, l] = exp_flush(-g * s[r, l])
    elif kind == 2:
        panel_dot(Xp, i0, Yp, p, s)
        for r in range(R):
            for l in range(W):
                acc[r, l] = s[r, l]
    else:
        panel_dot(Xp, i0, Yp, p, s)
        for r in range(R):
            for l in range(W):
                acc[r, l] = _powi(g * s[r, l] + coef0, degree)


@njit(**_FLAGS)
def _gram_fwd(Xp, Yp, Xo, Yo, nx, ny, gam, kind, degree, coef0, tau, N, M, out):
    B = Xp.shape[0]
    nI = Xp.shape[1] // R
    nP = Yp.shape[1]
    for task in prange(B * nI):
        b = task // nI
        i0 = (task % nI) * R
        acc = np.empty((R, W), Xp.dtype)
        s = np.empty((R, W), Xp.dtype)
        g = gam[b]
        rows = min(R, N - i0)
        for p in range(nP):
            _kernel_tile(kind, Xp[b], i0, Yp[b], p, Xo[b], Yo[b], nx[b], ny[b], g, degree, coef0, tau, M, acc, s)
            j0 = p * W
            if rows == R and j0 + W <= M:
                for r in range(R):
                    for l in range(W):
                        out[b, i0 + r, j0 + l] = acc[r, l]
            else:
                for r in range(rows):
                    for l in range(min(W, M - j0)):
                        out[b, i0 + r, j0 + l] = acc[r, l]


@njit(inline="always")
def _rbf_row(src, dst, a, ny, Xo, i, Yo, mg, tau, with_exp):
    """dst[j] <- exp(mg d2(x_i, y_j)) (``with_exp``; else the exponent mg d2) from src[j] = <x_i, y_j> of the
    centred points (``a`` = ||x_i||^2, ``ny`` the norms of the y's); ``dst`` may be ``src`` itself.

    Three loops over the row, which stays in L1 (16 KB at M = 4096 float32) after the first:
    d2 = ||x||^2 + ||y||^2 - 2 s with a count of the entries below ``tau (||x||^2 + ||y||^2)`` (cancellation),
    the exact recompute of those from the original points Xo, Yo (rows with any only), then the exp."""
    zero = a - a
    cnt = 0
    for j in range(src.shape[0]):
        nn = a + ny[j]
        d2 = nn - (src[j] + src[j])   # not 2 * s: an int literal promotes float32 to float64
        cnt += d2 < tau * nn
        dst[j] = max(d2, zero)
    if cnt > 0:
        for j in range(src.shape[0]):
            if dst[j] < tau * (a + ny[j]):
                dst[j] = _exact_sqdist(Xo, i, Yo, j)
    if with_exp:
        for j in range(src.shape[0]):
            dst[j] = exp_flush(mg * dst[j])
    else:
        for j in range(src.shape[0]):
            dst[j] = mg * dst[j]


@njit(**_FLAGS)
def _gemm_epilogue(S, out, r0, nx, ny, Xo, Yo, gam, kind, degree, coef0, tau):
    """out[b, r0 + i, j] <- k(x_i, y_j) from S (B, N, M) = <x_i, y_j> of a BLAS GEMM (kinds rbf and polynomial;
    ``S`` a scratch block, not ``out``: ``_gemm_epilogue_inplace`` is the in-place form).

    Every scalar stays in the working precision: a Python int or float literal in a float32 expression
    would promote it to float64 and keep LLVM from vectorising the loop (8 float32 lanes on AVX2), so
    constants are built from the data (``a - a``) and ``tau``, ``coef0`` arrive typed."""
    B, N, M = S.shape
    for task in prange(B * N):
        b = task // N
        i = task % N
        g = gam[b]
        if kind == 0:
            _rbf_row(S[b, i], out[b, r0 + i], nx[b, i], ny[b], Xo[b], i, Yo[b], -g, tau, True)
        elif kind == 3:
            for j in range(M):
                out[b, r0 + i, j] = _powi(g * S[b, i, j] + coef0, degree)


@njit(**_FLAGS)
def _gemm_epilogue_inplace(K, nx, ny, Xo, Yo, gam, kind, degree, coef0, tau):
    """``_gemm_epilogue`` in place on K (B, N, M), except that rbf stops at the exponent -gamma d2: the
    caller applies torch's exp, which on a block that is still in cache beats the fused exp here (AVX-512
    against LLVM's 256-bit vectors: ``gram_matvec`` 16384 x 64 181 ms against 191-197 with the exp fused).

    A kernel of its own: with two array arguments LLVM cannot see that they are one array, and its
    run-time overlap check would send every row to the scalar loop; here the row is one value, read and
    written at the same index."""
    B, N, M = K.shape
    for task in prange(B * N):
        b = task // N
        i = task % N
        g = gam[b]
        row = K[b, i]
        if kind == 0:
            _rbf_row(row, row, nx[b, i], ny[b], Xo[b], i, Yo[b], -g, tau, False)
        elif kind == 3:
            for j in range(M):
                row[j] = _powi(g * row[j] + coef0, degree)


@njit(**_FLAGS)
def _gram_fwd_sym(Xp, Yp, Xo, nx, gam, kind, degree, coef0, tau, N, out):
    """K(x, x): tiles of the upper triangle only, each stored twice (the result is exactly symmetric).

    Super-blocks of W rows pair with panels p >= their own; task t does super-blocks t and nS-1-t so
    that all tasks do the same work. Xp/Xo are row-padded to a multiple of W."""
    B = Xp.shape[0]
    nP = Yp.shape[1]
    nT = (nP + 1) // 2
    for task in prange(B * nT):
        b = task // nT
        t = task % nT
        acc = np.empty((R, W), Xp.dtype)
        s = np.empty((R, W), Xp.dtype)
        g = gam[b]
        for half in range(2):
            S = t if half == 0 else nP - 1 - t
            if half == 1 and S == t:
                break
            for q in range(W // R):
                i0 = S * W + q * R
                if i0 >= N:
                    break
                rows = min(R, N - i0)
                for p in range(S, nP):
                    _kernel_tile(kind, Xp[b], i0, Yp[b], p, Xo[b], Xo[b], nx[b], nx[b], g, degree, coef0, tau, N,
                                 acc, s)
                    j0 = p * W
                    cols = min(W, N - j0)
                    for r in range(rows):
                        for l in range(cols):
                            out[b, i0 + r, j0 + l] = acc[r, l]
                    if p > S:
                        for l in range(cols):
                            for r in range(rows):
                                out[b, j0 + l, i0 + r] = acc[r, l]


@njit(**_FLAGS)
def _sqdist_block(Xp, Yp, Xo, Yo, nx, ny, tau, N, M, out):
    """out[b, i, j] = ||x_i - y_j||^2 (exact for close pairs): the rbf grad_gamma needs d2 itself."""
    B = Xp.shape[0]
    nI = Xp.shape[1] // R
    nP = Yp.shape[1]
    for task in prange(B * nI):
        b = task // nI
        i0 = (task % nI) * R
        s = np.empty((R, W), Xp.dtype)
        for p in range(nP):
            _sqdist_tile(Xp[b], i0, Yp[b], p, Xo[b], Yo[b], nx[b], ny[b], tau, M, s)
            j0 = p * W
            for r in range(min(R, N - i0)):
                for l in range(min(W, M - j0)):
                    out[b, i0 + r, j0 + l] = s[r, l]


@njit(**_FLAGS)
def _matvec_fwd(Xp, Yp, Xo, Yo, nx, ny, gam, kind, degree, coef0, tau, Vp, N, M, out):
    """out[b, i, c] = sum_j k(x_i, y_j) v[j, c]; Vp is v in panels (B, nP, C, W), zero beyond M."""
    B = Xp.shape[0]
    nI = Xp.shape[1] // R
    nP = Yp.shape[1]
    C = Vp.shape[2]
    for task in prange(B * nI):
        b = task // nI
        i0 = (task % nI) * R
        acc = np.empty((R, W), Xp.dtype)
        s = np.empty((R, W), Xp.dtype)
        lanes = np.zeros((R, C, W), Xp.dtype)
        g = gam[b]
        for p in range(nP):
            _kernel_tile(kind, Xp[b], i0, Yp[b], p, Xo[b], Yo[b], nx[b], ny[b], g, degree, coef0, tau, M, acc, s)
            if p * W + W > M:  # padded points of y: their v is zero, but k * 0 must not become NaN
                for r in range(R):
                    for l in range(M - p * W, W):
                        acc[r, l] = 0
            for c in range(C):
                for r in range(R):
                    for l in range(W):
                        lanes[r, c, l] += acc[r, l] * Vp[b, p, c, l]
        for r in range(min(R, N - i0)):
            for c in range(C):
                t = lanes[r, c, 0] * 0
                for l in range(W):
                    t += lanes[r, c, l]
                out[b, i0 + r, c] = t


@njit(**_FLAGS)
def _matvec_fwd_sym(Xp, Yp, Xo, Yo, nx, ny, gam, kind, degree, coef0, tau, Vp, Vr, N, out, colacc):
    """out[b, i, c] = sum_j k(x_i, x_j) v[j, c] over the upper triangle of tiles only (half the work).

    Super-blocks of W rows pair with panels p >= their own: the row sums take k_ij v_j for every pair
    in the tile, and off-diagonal tiles also add k_ij v_i to column j in a per-thread accumulator
    ``colacc (threads, B, nP, C, W)`` that the launcher sums. Tasks pair super-block t with nS-1-t so
    that every task does the same amount of work. Xp/Xo are row-padded to a multiple of W."""
    B = Xp.shape[0]
    nP = Yp.shape[1]
    C = Vp.shape[2]
    nT = (nP + 1) // 2
    for task in prange(B * nT):
        b = task // nT
        t = task % nT
        tid = get_thread_id()
        acc = np.empty((R, W), Xp.dtype)
        s = np.empty((R, W), Xp.dtype)
        lanes = np.empty((R, C, W), Xp.dtype)
        g = gam[b]
        for half in range(2):
            S = t if half == 0 else nP - 1 - t
            if half == 1 and S == t:
                break
            for q in range(W // R):
                i0 = S * W + q * R
                if i0 >= N:
                    break
                lanes[:] = 0
                for p in range(S, nP):
                    _kernel_tile(kind, Xp[b], i0, Yp[b], p, Xo[b], Xo[b], nx[b], ny[b], g, degree, coef0, tau, N,
                                 acc, s)
                    if p * W + W > N:
                        for r in range(R):
                            for l in range(N - p * W, W):
                                acc[r, l] = 0
                    for c in range(C):
                        for r in range(R):
                            for l in range(W):
                                lanes[r, c, l] += acc[r, l] * Vp[b, p, c, l]
                    if p > S:
                        for c in range(C):
                            v0 = Vr[b, i0, c]
                            v1 = Vr[b, i0 + 1, c]
                            v2 = Vr[b, i0 + 2, c]
                            v3 = Vr[b, i0 + 3, c]
                            for l in range(W):
                                colacc[tid, b, p, c, l] += acc[0, l] * v0 + acc[1, l] * v1 + acc[2, l] * v2 + acc[3, l] * v3
                for r in range(min(R, N - i0)):
                    for c in range(C):
                        tt = lanes[r, c, 0] * 0
                        for l in range(W):
                            tt += lanes[r, c, l]
                        out[b, i0 + r, c] = tt


@njit(**_FLAGS)
def _rbf_gram_bwd_rows(G, K, Yc, Xc, gam, gx):
    """grad_x of <G, K> for the rbf kernel from the saved K:
    gx_i = -2 gamma (x_i sum_j w_ij - sum_j w_ij y_j),  w = G * K.  Yc: (B, M, Dp), Dp % W == 0."""
    B, N, M = G.shape
    D = gx.shape[2]
    Dp = Yc.shape[2]
    nI = (N + R - 1) // R
    JC = 256
    for task in prange(B * nI):
        b = task // nI
        i0 = (task % nI) * R
        rows = min(R, N - i0)
        acc = np.zeros((R, Dp), Yc.dtype)
        part = np.empty((R, W), Yc.dtype)
        rs = np.zeros(R, Yc.dtype)
        if rows == R:
            for j0 in range(0, M, JC):
                jn = min(JC, M - j0)
                for d0 in range(0, Dp, W):
                    for r in range(R):
                        for l in range(W):
                            part[r, l] = acc[r, d0 + l]
                    for j in range(j0, j0 + jn):
                        w0 = G[b, i0, j] * K[b, i0, j]
                        w1 = G[b, i0 + 1, j] * K[b, i0 + 1, j]
                        w2 = G[b, i0 + 2, j] * K[b, i0 + 2, j]
                        w3 = G[b, i0 + 3, j] * K[b, i0 + 3, j]
                        for l in range(W):
                            yv = Yc[b, j, d0 + l]
                            part[0, l] += w0 * yv
                            part[1, l] += w1 * yv
                            part[2, l] += w2 * yv
                            part[3, l] += w3 * yv
                    for r in range(R):
                        for l in range(W):
                            acc[r, d0 + l] = part[r, l]
                for r in range(R):
                    t = rs[r] * 0
                    for j in range(j0, j0 + jn):
                        t += G[b, i0 + r, j] * K[b, i0 + r, j]
                    rs[r] += t
        else:
            for r in range(rows):
                for j in range(M):
                    w = G[b, i0 + r, j] * K[b, i0 + r, j]
                    rs[r] += w
                    for d in range(Dp):
                        acc[r, d] += w * Yc[b, j, d]
        m2g = -2 * gam[b]
        for r in range(rows):
            for d in range(D):
                gx[b, i0 + r, d] = m2g * (Xc[b, i0 + r, d] * rs[r] - acc[r, d])


@njit(**_FLAGS)
def _rbf_gram_bwd_cols(G, K, Xc, Yc, gam, gy):
    """grad_y of <G, K> for rbf: gy_j = -2 gamma (y_j sum_i w_ij - sum_i w_ij x_i).

    Programs own blocks of W columns; for each chunk of rows the W-wide slices of G and K (one cache
    line per row) stay in L1 while the 4-column sub-blocks and feature panels are swept.
    Xc: (B, N, Dp) with Dp % W == 0."""
    B, N, M = G.shape
    D = gy.shape[2]
    Dp = Xc.shape[2]
    nJ = (M + W - 1) // W
    IC = 128
    for task in prange(B * nJ):
        b = task // nJ
        j0 = (task % nJ) * W
        cols = min(W, M - j0)
        acc = np.zeros((W, Dp), Xc.dtype)
        part = np.empty((R, W), Xc.dtype)
        cs = np.zeros(W, Xc.dtype)
        for i0 in range(0, N, IC):
            i1 = min(N, i0 + IC)
            for c0 in range(0, cols - R + 1, R):
                for d0 in range(0, Dp, W):
                    for r in range(R):
                        for l in range(W):
                            part[r, l] = acc[c0 + r, d0 + l]
                    for i in range(i0, i1):
                        w0 = G[b, i, j0 + c0] * K[b, i, j0 + c0]
                        w1 = G[b, i, j0 + c0 + 1] * K[b, i, j0 + c0 + 1]
                        w2 = G[b, i, j0 + c0 + 2] * K[b, i, j0 + c0 + 2]
                        w3 = G[b, i, j0 + c0 + 3] * K[b, i, j0 + c0 + 3]
                        for l in range(W):
                            xv = Xc[b, i, d0 + l]
                            part[0, l] += w0 * xv
                            part[1, l] += w1 * xv
                            part[2, l] += w2 * xv
                            part[3, l] += w3 * xv
                    for r in range(R):
                        for l in range(W):
                            acc[c0 + r, d0 + l] = part[r, l]
            for c in range(cols - cols % R, cols):  # ragged tail columns
                for i in range(i0, i1):
                    w = G[b, i, j0 + c] * K[b, i, j0 + c]
                    for d in range(Dp):
                        acc[c, d] += w * Xc[b, i, d]
            for c in range(cols):
                t = cs[c] * 0
                for i in range(i0, i1):
                    t += G[b, i, j0 + c] * K[b, i, j0 + c]
                cs[c] += t
        m2g = -2 * gam[b]
        for c in range(cols):
            for d in range(D):
                gy[b, j0 + c, d] = m2g * (Yc[b, j0 + c, d] * cs[c] - acc[c, d])


@njit(inline="always")
def _weights_tile(kind, Xp, i0, Yp, p, Xo, Yo, nx, ny, g, degree, coef0, tau, M, u, w, dg, s):
    """From the upstream weights u of a tile: w <- the weight of the tile's gradient reduction and
    dg <- u * dk/dgamma.  (rbf: w = u k, the -2 gamma factor is applied per row at the end;
    laplacian: w = -gamma u k, reduced against sign(x_i - y_j); linear / polynomial: w = u dk/ds,
    reduced against y_j.)"""
    if kind == 0:
        _sqdist_tile(Xp, i0, Yp, p, Xo, Yo, nx, ny, tau, M, s)
        for r in range(R):
            for l in range(W):
                t = u[r, l] * exp_flush(-g * s[r, l])
                w[r, l] = t
                dg[r, l] = -t * s[r, l]
    elif kind == 1:
        panel_l1(Xp, i0, Yp, p, s)
        for r in range(R):
            for l in range(W):
                t = u[r, l] * exp_flush(-g * s[r, l])
                w[r, l] = -g * t
                dg[r, l] = -t * s[r, l]
    elif kind == 2:
        for r in range(R):
            for l in range(W):
                w[r, l] = u[r, l]
                dg[r, l] = 0
    else:
        panel_dot(Xp, i0, Yp, p, s)
        for r in range(R):
            for l in range(W):
                t = u[r, l] * degree * _powi(g * s[r, l] + coef0, degree - 1) if degree > 0 else u[r, l] * 0
                w[r, l] = g * t
                dg[r, l] = t * s[r, l]


@njit(**_FLAGS)
def _generic_bwd_rows(Xp, Yp, Yr, Xo, Yo, nx, ny, gam, kind, degree, coef0, tau, N, M, umode, U, Gb, V, gx, gg_rows):
    """grad_x of sum_ij u_ij k(x_i, y_j) for any kernel kind, in one pass (no N x M buffer).

    umode 0: u = U[b, i, j];  umode 1: u = U[b, j, i] (transposed read);  umode 2: u = <Gb[b, i], V[b, j]>.
    gg_rows[b, i] receives row i's share of grad_gamma."""
    B = Xp.shape[0]
    nI = Xp.shape[1] // R
    nP = Yp.shape[1]
    D = gx.shape[2]
    C = V.shape[2]
    for task in prange(B * nI):
        b = task // nI
        i0 = (task % nI) * R
        rows = min(R, N - i0)
        g = gam[b]
        u = np.zeros((R, W), Xp.dtype)
        w = np.empty((R, W), Xp.dtype)
        dg = np.empty((R, W), Xp.dtype)
        s = np.empty((R, W), Xp.dtype)
        acc = np.zeros((R, D), Xp.dtype)
        rs = np.zeros(R, Xp.dtype)
        ggr = np.zeros(R, Xp.dtype)
        for p in range(nP):
            j0 = p * W
            cols = min(W, M - j0)
            for r in range(R):
                for l in range(W):
                    u[r, l] = 0  # padded rows / columns carry no weight
            for r in range(rows):
                for l in range(cols):
                    if umode == 0:
                        u[r, l] = U[b, i0 + r, j0 + l]
                    elif umode == 1:
                        u[r, l] = U[b, j0 + l, i0 + r]
                    else:
                        t = u[r, l] * 0
                        for c in range(C):
                            t += Gb[b, i0 + r, c] * V[b, j0 + l, c]
                        u[r, l] = t
            _weights_tile(kind, Xp[b], i0, Yp[b], p, Xo[b], Yo[b], nx[b], ny[b], g, degree, coef0, tau, M, u, w, dg,
                          s)
            for r in range(rows):
                for l in range(cols):
                    wv = w[r, l]
                    rs[r] += wv
                    ggr[r] += dg[r, l]
                    if kind == 1:
                        for d in range(D):
                            t = Xp[b, i0 + r, d] - Yr[b, j0 + l, d]
                            acc[r, d] += wv * ((t > 0) * 1.0 - (t < 0) * 1.0)
                    else:
                        for d in range(D):
                            acc[r, d] += wv * Yr[b, j0 + l, d]
        for r in range(rows):
            gg_rows[b, i0 + r] = ggr[r]
            if kind == 0:
                m2g = -2 * g
                for d in range(D):
                    gx[b, i0 + r, d] = m2g * (Xp[b, i0 + r, d] * rs[r] - acc[r, d])
            else:
                for d in range(D):
                    gx[b, i0 + r, d] = acc[r, d]


# --------------------------------------------------------------------------------------------------
# launchers (the backend contract)
# --------------------------------------------------------------------------------------------------


def _cdtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


class _Prepared:
    """Inputs laid out for the tile kernels: centred (rbf), row-padded x, y in panels, norms."""

    def __init__(self, x, y, kind, dtype):
        sym = y is None
        xs = x.to(dtype)
        ys = xs if sym else y.to(dtype)
        self.xo = pad_rows(xs.contiguous())   # original points, for the exact recompute of close pairs
        self.yo = ys.contiguous()
        if kind == 0:  # translation invariance: centre on the common mean so norms (and cancellation) shrink
            n = xs.shape[1] + (0 if sym else ys.shape[1])
            centre = (xs.sum(1, keepdim=True) + (0 if sym else ys.sum(1, keepdim=True))) / max(n, 1)
            xs = xs - centre
            ys = xs if sym else ys - centre
        self.x = xs.contiguous()
        self.y = ys.contiguous()
        self.xp = pad_rows(self.x)
        self._yp = None
        self.nx = (self.xp * self.xp).sum(-1)
        self.ny = pad_rows((self.y * self.y).sum(-1, keepdim=True), W)[..., 0].contiguous()
        self.N, self.M = xs.shape[1], ys.shape[1]

    @property
    def yp(self):
        """y in panels for the register-tile kernels, packed on first use (the GEMM paths never need it)."""
        if self._yp is None:
            self._yp = pack_panels(self.y)
        return self._yp


def _np(t):
    return t.detach().numpy()


def _typed(v: float, dtype: torch.dtype):
    """A numpy scalar of the working precision: Numba types a Python float as float64, which would promote
    the float32 arithmetic it meets."""
    return np.float32(v) if dtype == torch.float32 else np.float64(v)


def _scalars(gamma, dtype):
    return _np(gamma.to(dtype).contiguous())


def _kernel_block(P, i0, i1, j0, j1, gam, kind, degree, coef0, dtype, out, r0=0, scratch=None):
    """k(x_i, y_j) for i in [i0, i1), j in [j0, j1), kinds rbf, linear, polynomial: the inner products by a
    BLAS GEMM (torch.bmm: MKL / OpenBLAS, on its own threads), then one Numba pass (``_gemm_epilogue``) for
    the distance check and the kernel function. Without ``scratch``, ``out`` is the block (B, i1 - i0,
    j1 - j0).

    With ``scratch`` (B, i1 - i0, j1 - j0; rbf and polynomial) the GEMM writes there and the pass writes rows
    ``r0 .. r0 + i1 - i0`` of ``out`` (whose width must be j1 - j0): each element of ``out`` is written once.
    A GEMM that writes straight into a large ``out`` which is not in cache runs at half its rate here (every
    store of a C tile misses), and a separate pass for the exp costs one more trip through memory. Without
    ``scratch`` the block is built in place in ``out`` (the reductions, whose block is itself a reused
    workspace).

    torch and Numba run two OpenMP runtimes; Numba's pool is started passive so that its spinning workers
    do not take the cores MKL needs on a busy machine (``_pool``)."""
    passive_numba_pool()
    direct = scratch is None
    target = out if direct else scratch
    torch.bmm(P.x[:, i0:i1], P.y[:, j0:j1].transpose(1, 2), out=target)
    if kind == 2:
        return out
    # the block's slices (copies only for B > 1: O((rows + cols) D) against the block's O(rows cols D) GEMM;
    # offsets into the whole arrays instead cost the loops their vectorisation, measured 3x slower)
    args = (_np(P.nx[:, i0:i1].contiguous()), _np(P.ny[:, j0:j1].contiguous()), _np(P.xo[:, i0:i1].contiguous()),
            _np(P.yo[:, j0:j1].contiguous()), gam, kind, int(degree), _typed(coef0, dtype), _typed(TAU[dtype], dtype))
    if direct:
        _gemm_epilogue_inplace(_np(target), *args)
        if kind == 0:
            # Seen on this VM (torch 2.13 CPU): in some fresh processes the first large exp_ after an MKL GEMM
            # is off by up to 5e-5 absolute (values <= 1), later calls by < 1 ulp -- plain torch code (mm,
            # then exp_) shows the same
            target.exp_()
    else:
        _gemm_epilogue(_np(scratch), _np(out), r0, *args)
    return out


def gram_forward(x, y, gamma, kernel: str, degree: int, coef0: float) -> torch.Tensor:
    dtype = _cdtype(x)
    kind = KIND[kernel]
    P = _Prepared(x, y, kind, dtype)
    if y is None:
        B, N = x.shape[0], x.shape[1]
        out = _alloc.empty((B, N, N), dtype=dtype, device=x.device)
        if out.numel():
            xp = pad_rows(P.x, W)
            xo = pad_rows(P.xo[:, :N], W)
            nx = (xp * xp).sum(-1)
            _gram_fwd_sym(_np(xp), _np(P.yp), _np(xo), _np(nx), _scalars(gamma, dtype), kind, int(degree),
                          _typed(coef0, dtype), _typed(TAU[dtype], dtype), N, _np(out))
        return out.to(x.dtype)
    B = x.shape[0]
    out = _alloc.empty((B, P.N, P.M), dtype=dtype, device=x.device)
    if out.numel() and kind == 2:
        _kernel_block(P, 0, P.N, 0, P.M, None, kind, degree, coef0, dtype, out)   # one GEMM, nothing after
    elif out.numel() and kind != 1:
        # by row blocks: GEMM on the BLAS torch links (MKL / OpenBLAS, ~2x the register-tile product here)
        # into a reused scratch block, then one fused pass from the scratch into the output
        gam = _scalars(gamma, dtype)
        BI = _row_block(B, P.M, FWD_SCRATCH_ELEMS)
        scratch = workspace("gram_fwd", B * min(BI, P.N) * P.M, dtype)
        for i0 in range(0, P.N, BI):
            i1 = min(P.N, i0 + BI)
            _kernel_block(P, i0, i1, 0, P.M, gam, kind, degree, coef0, dtype, out, r0=i0,
                          scratch=scratch[: B * (i1 - i0) * P.M].view(B, i1 - i0, P.M))
    elif out.numel():
        _gram_fwd(_np(P.xp), _np(P.yp), _np(P.xo), _np(P.yo), _np(P.nx), _np(P.ny), _scalars(gamma, dtype), kind, int(degree),
                  _typed(coef0, dtype), _typed(TAU[dtype], dtype), P.N, P.M, _np(out))
    return out.to(x.dtype)


def _blocked_matvec(P, sym_x, v, gamma, kind, degree, coef0, dtype):
    """K(x, y) v by row blocks of K: each block is built by ``_kernel_block`` (BLAS GEMM + fused epilogue)
    in a reusable workspace (``FWD_BLOCK_ELEMS``) and multiplied by v with a GEMM; memory O((N + M)(D + C)) + the block.

    With ``sym_x`` (K(x, x)) only the blocks on and right of the diagonal are built; an off-diagonal
    block adds its transpose product to the rows it stands for (half the GEMM and exp work)."""
    B, N, M, C = P.x.shape[0], P.N, P.M, v.shape[2]
    out = torch.zeros(B, N, C, dtype=dtype)
    if N == 0 or M == 0:
        return out
    gam = _scalars(gamma, dtype)
    BJ = min(M, MATVEC_BLOCK_COLS)
    BI = int(max(16, min(N, FWD_BLOCK_ELEMS // (B * BJ))))   # <= BJ whenever N = M (sym_x)
    buf = workspace("gram", B * BI * BJ, dtype)
    for i0 in range(0, N, BI):
        i1 = min(N, i0 + BI)
        for j0 in range(i0 if sym_x else 0, M, BJ):
            j1 = min(M, j0 + BJ)
            blk = buf[: B * (i1 - i0) * (j1 - j0)].view(B, i1 - i0, j1 - j0)
            _kernel_block(P, i0, i1, j0, j1, gam, kind, degree, coef0, dtype, blk)
            out[:, i0:i1].baddbmm_(blk, v[:, j0:j1])
            c0 = max(j0, i1)        # K(x, x): columns right of the diagonal block stand for rows too
            if sym_x and c0 < j1:
                out[:, c0:j1].baddbmm_(blk[:, :, c0 - j0:].transpose(1, 2), v[:, i0:i1])
    return out


def _matvec_sym(x, v, gamma, kind, degree, coef0, dtype):
    if kind != 1:
        return _blocked_matvec(_Prepared(x, None, kind, dtype), True, v.to(dtype), gamma, kind, degree, coef0, dtype)
    P = _Prepared(x, None, kind, dtype)
    B, N, C = x.shape[0], x.shape[1], v.shape[2]
    xp = pad_rows(P.x, W)
    xo = pad_rows(P.xo[:, :N], W)
    nx = (xp * xp).sum(-1)
    vs = v.to(dtype)
    vp = pack_panels(vs)                     # (B, nP, C, W)
    vr = pad_rows(vs, W)                     # (B, nP * W, C)
    nP = vp.shape[1]
    colacc = torch.zeros(get_num_threads(), B, nP, C, W, dtype=dtype)
    out = _alloc.empty((B, N, C), dtype=dtype, device=x.device)
    if out.numel():
        _matvec_fwd_sym(_np(xp), _np(P.yp), _np(xo), _np(xo), _np(nx), _np(nx), _scalars(gamma, dtype), kind,
                        int(degree), _typed(coef0, dtype), _typed(TAU[dtype], dtype), _np(vp), _np(vr), N, _np(out), _np(colacc))
        cols = colacc.sum(0).transpose(2, 3).reshape(B, nP * W, C)[:, :N]
        out += cols
    return out


def gram_matvec_forward(x, y, v, gamma, kernel: str, degree: int, coef0: float) -> torch.Tensor:
    dtype = _cdtype(x)
    kind = KIND[kernel]
    if y is None:
        return _matvec_sym(x, v, gamma, kind, degree, coef0, dtype).to(x.dtype)
    P = _Prepared(x, y, kind, dtype)
    B, C = x.shape[0], v.shape[2]
    if kind != 1:
        return _blocked_matvec(P, None, v.to(dtype), gamma, kind, degree, coef0, dtype).to(x.dtype)
    vp = pack_panels(v.to(dtype))  # (B, nP, C, W)
    out = _alloc.empty((B, P.N, C), dtype=dtype, device=x.device)
    if out.numel():
        _matvec_fwd(_np(P.xp), _np(P.yp), _np(P.xo), _np(P.yo), _np(P.nx), _np(P.ny), _scalars(gamma, dtype), kind, int(degree),
                    _typed(coef0, dtype), _typed(TAU[dtype], dtype), _np(vp), P.N, P.M, _np(out))
    return out.to(x.dtype)


def _generic_rows(P, gamma, kind, degree, coef0, umode, U, Gb, V, dtype):
    B = P.x.shape[0]
    D = P.x.shape[2]
    gx = _alloc.empty((B, P.N, D), dtype=dtype, device=P.x.device)
    ggr = _alloc.empty((B, P.N), dtype=dtype, device=P.x.device)
    if P.N:
        _generic_bwd_rows(_np(P.xp), _np(P.yp), _np(P.y), _np(P.xo), _np(P.yo), _np(P.nx), _np(P.ny), _scalars(gamma, dtype), kind,
                          int(degree), _typed(coef0, dtype), _typed(TAU[dtype], dtype), P.N, P.M, umode, _np(U), _np(Gb), _np(V),
                          _np(gx), _np(ggr))
    return gx, ggr.sum(1)


def _dummy(dtype):
    return torch.zeros(1, 1, 1, dtype=dtype)


FWD_BLOCK_ELEMS = 1 << 23   # elements of one block of a forward reduction: 32 MB in float32
FWD_SCRATCH_ELEMS = 1 << 22  # ... of the gram forward's GEMM scratch: 16 MB (1024 rows at M = 4096). In a loop that
                             # keeps its last result (4096 x 4096 x 64, same process, calls alternating): 512 rows
                             # 13.9 ms, 1024 rows 13.4, 2048 rows 15.6; the GEMM straight into the output 21-22
MATVEC_BLOCK_COLS = 8192    # columns per block of a forward reduction: at any M a block keeps >= 1024
                            # rows, an efficient GEMM shape (full-width 64-row blocks at M = 131072 are not)
BWD_BLOCK_ELEMS = 1 << 21   # ... of a backward pass, which streams three block-sized operands: 8 MB
GRAM_BWD_BLOCK_ELEMS = 1 << 22  # ... of the gram backward, where G and K are N x M anyway: 16 MB (1024 x 4096:
                                # its GEMMs ran 10-20 % faster per flop than on 2048-row blocks)


def _row_block(B: int, M: int, elems: int = BWD_BLOCK_ELEMS) -> int:
    """Rows per block so that one (B, rows, M) block holds ~``elems`` elements. Not smaller: every block
    costs a few BLAS calls, each a fork/join of the thread team, and on a busy machine a descheduled
    thread makes the join wait a time slice (measured: 512-row blocks of a 4096 x 4096 product ran 2.5x
    slower than 1024-row ones under load). Measured at N = M = 16384 on the development VM: the forward
    reductions gain ~7 % from 32 MB blocks, the backward (three block-sized operands) loses 25 %."""
    return int(max(16, min(1 << 16, elems // max(1, B * M))))


def _blocked_backward(x, y, gamma, kind, degree, coef0, dtype, weights, needs_x, needs_y, needs_g,
                      block_elems=BWD_BLOCK_ELEMS):
    """Gradients of sum_ij w_ij-weighted kernel terms, by row blocks of the weight matrix.

    ``weights(i0, i1, out)`` fills ``out (B, i1 - i0, M)`` with u_ij * dk/ds_ij (rbf: u_ij k_ij, the
    -2 gamma factor applied here). The reductions W @ y and W^T @ x are GEMMs on MKL/OpenBLAS
    (batched over the problems), so a block of W is the only N x M-shaped memory, reused across blocks
    and calls. Returns grad_x (B, N, D), grad_y (B, M, D) (or None) and sum_ij u_ij dk/dgamma (B,).

    rbf: grad_x_i = -2g (x_i sum_j w_ij - sum_j w_ij y_j). linear/polynomial: grad_x = W y,
    grad_y = W^T x. ``weights`` returns the block's share of grad_gamma (or None).

    The y side is accumulated transposed, ``[x, 1]^T W`` (B, D + 1, M): a wide output (MKL: 1.1-1.5x the
    rate of ``W^T x`` into a (M, D) output at D = 64, on 512-2048-row blocks), with the column sums of W (rbf) as its last row
    instead of a separate pass over the block."""
    passive_numba_pool()
    B, N, D = x.shape
    M = y.shape[1]
    g = gamma.to(dtype).view(B, 1, 1)
    BI = _row_block(B, M, block_elems)
    buf = workspace("gram", B * min(BI, N) * M, dtype)
    gx = torch.empty(B, N, D, dtype=dtype) if (needs_x or needs_g) else None
    gyt = xt = None
    if needs_y:
        extra = 1 if kind == 0 else 0
        xt = torch.empty(B, D + extra, N, dtype=dtype)
        xt[:, :D] = x.transpose(1, 2)
        if extra:
            xt[:, D] = 1
        gyt = torch.zeros(B, D + extra, M, dtype=dtype)
    gg = torch.zeros(B, dtype=dtype)
    for i0 in range(0, N, BI):
        i1 = min(N, i0 + BI)
        Wb = buf[: B * (i1 - i0) * M].view(B, i1 - i0, M)
        gdg = weights(i0, i1, Wb)
        if gdg is not None:
            gg += gdg
        if gx is not None:
            wy = torch.bmm(Wb, y)
            if kind == 0:
                gx[:, i0:i1] = x[:, i0:i1] * Wb.sum(-1).unsqueeze(-1) - wy
            else:
                gx[:, i0:i1] = wy
        if gyt is not None:
            gyt.baddbmm_(xt[:, :, i0:i1], Wb)
    gy = None
    if kind == 0:
        if gx is not None:
            gx.mul_(-2 * g)
        if gyt is not None:
            gy = (y * gyt[:, D].unsqueeze(-1) - gyt[:, :D].transpose(1, 2)).mul_(-2 * g)
    elif gyt is not None:
        gy = gyt.transpose(1, 2).contiguous()
    return gx, gy, gg


def _kernel_block_weights(P, gamma, kind, degree, coef0, dtype, U_rows, need_g=False):
    """weights(i0, i1, out): recompute the kernel block with the fused Numba tile kernel (rbf) or a GEMM
    (linear, polynomial) and multiply by the upstream weights U_rows(i0, i1) (B, i1 - i0, M).
    With ``need_g`` the rbf block is built from exact squared distances so grad_gamma = -sum u k d2."""
    B = P.x.shape[0]
    gam = _scalars(gamma, dtype)
    g = gamma.to(dtype).view(B, 1, 1)

    def weights(i0, i1, out):
        u = U_rows(i0, i1)
        if kind == 0:
            xp = pad_rows(P.x[:, i0:i1])
            xo = pad_rows(P.xo[:, i0:i1])
            nx = (xp * xp).sum(-1)
            if need_g:
                _sqdist_block(_np(xp), _np(P.yp), _np(xo), _np(P.yo), _np(nx), _np(P.ny), _typed(TAU[dtype], dtype), i1 - i0, P.M,
                              _np(out))
                wk = torch.exp(-g * out).mul_(u)
                dgam = -(wk * out).sum((-1, -2))
                out.copy_(wk)
                return dgam
            _kernel_block(P, i0, i1, 0, P.M, gam, 0, 0, 0.0, dtype, out)
            out.mul_(u)
            return None
        s = torch.bmm(P.x[:, i0:i1], P.y.transpose(1, 2), out=out)
        if kind == 2:
            out.copy_(u)
            return None
        base = s.mul_(g).add_(coef0)                   # polynomial: dk/ds = p g base^(p-1)
        if degree == 0:
            out.zero_()
            return torch.zeros(B, dtype=dtype)
        pw = base.pow(degree - 1)
        dgam = (u * degree * pw * (base - coef0) / torch.where(g == 0, torch.ones_like(g), g)).sum((-1, -2))
        dgam = torch.where(g.view(B) == 0, (u * degree * pw * 0).sum((-1, -2)), dgam)
        out.copy_(pw).mul_(u).mul_(degree * g)
        return dgam
    return weights


def gram_backward(grad, x, y, gamma, K, kernel: str, degree: int, coef0: float, needs=(True, True, True)):
    """(grad_x, grad_y, grad_gamma) of <grad, K>; grad_y is None when y is None (its share is in grad_x).

    rbf, linear and polynomial: row-blocked GEMMs against the given gradient (``_blocked_backward``);
    the rbf weights come from the saved K, so no exp is recomputed. laplacian (no GEMM form): the
    fused Numba pass ``_generic_bwd_rows``."""
    dtype = _cdtype(x)
    kind = KIND[kernel]
    G = grad.to(dtype).contiguous()
    sym = y is None
    need_y = needs[1] and not sym
    P = _Prepared(x, y, kind, dtype)
    if kind != 1:
        if kind == 0:
            Kc = K.to(dtype)

            def weights(i0, i1, out):
                torch.mul(G[:, i0:i1], Kc[:, i0:i1], out=out)
                return None
        elif kind == 2:
            def weights(i0, i1, out):
                out.copy_(G[:, i0:i1])
                return None
        else:
            weights = _kernel_block_weights(P, gamma, kind, degree, coef0, dtype, lambda i0, i1: G[:, i0:i1])
        # G and K are N x M already: 16 MB blocks (fewer BLAS fork/joins) cost no new order of memory
        gx, gy, gg = _blocked_backward(P.x, P.y, gamma, kind, degree, coef0, dtype, weights, needs[0],
                                       need_y or (sym and needs[0]), needs[2], GRAM_BWD_BLOCK_ELEMS)
        if sym and needs[0]:
            gx = gx + gy
            gy = None
        if kind == 0 and needs[2]:
            gg = _rbf_gamma_grad(P, G, Kc)
        return (_cast(gx, x) if needs[0] else None, _cast(gy, x) if need_y else None,
                gg.to(gamma.dtype) if needs[2] else None)
    d = _dummy(dtype)
    gx, gg = _generic_rows(P, gamma, kind, degree, coef0, 0, G, d, d, dtype)
    gy = None
    if sym and needs[0]:
        gx2, _ = _generic_rows(P, gamma, kind, degree, coef0, 1, G, d, d, dtype)
        gx = gx + gx2
    elif need_y:
        Q = _Prepared(y, x, kind, dtype)
        gy, _ = _generic_rows(Q, gamma, kind, degree, coef0, 1, G, d, d, dtype)
    return (_cast(gx, x) if needs[0] else None, _cast(gy, x) if need_y else None,
            gg.to(gamma.dtype) if needs[2] else None)


def _rbf_gamma_grad(P, G, K):
    """grad_gamma of <G, exp(-gamma d2)> = -sum G K d2, with d2 from the exact tile kernel (a forward pass
    with gamma = 0 gives exp(0) = 1, so use the distance-only path: K = exp(-d2) at gamma = 1 is lossy)."""
    B = P.x.shape[0]
    dtype = P.x.dtype
    out = torch.zeros(B, dtype=dtype)
    BI = _row_block(B, P.M)
    buf = workspace("gram", B * min(BI, P.N) * P.M, dtype)
    for i0 in range(0, P.N, BI):
        i1 = min(P.N, i0 + BI)
        d2 = buf[: B * (i1 - i0) * P.M].view(B, i1 - i0, P.M)
        xp = pad_rows(P.x[:, i0:i1])
        xo = pad_rows(P.xo[:, i0:i1])
        nx = (xp * xp).sum(-1)
        _sqdist_block(_np(xp), _np(P.yp), _np(xo), _np(P.yo), _np(nx), _np(P.ny), _typed(TAU[dtype], dtype), i1 - i0, P.M, _np(d2))
        out -= (G[:, i0:i1] * K[:, i0:i1] * d2).sum((-1, -2))
    return out


def _cast(t, like):
    return None if t is None else t.to(like.dtype)


def gram_matvec_backward(grad, x, y, v, gamma, kernel: str, degree: int, coef0: float, needs=(True, True, True, True)):
    """(grad_x, grad_y, grad_v, grad_gamma) of <grad, K(x, y) v>.

    grad_v = K(y, x) grad is another fused matvec. For grad_x / grad_y the weights u_ij = <grad_i, v_j>
    times dk/ds are rebuilt block by block (rbf: the fused Numba tile kernel recomputes K, exp included)
    and reduced with GEMMs (``_blocked_backward``); laplacian runs the fused Numba pass."""
    dtype = _cdtype(x)
    kind = KIND[kernel]
    Gb = grad.to(dtype).contiguous()
    V = v.to(dtype).contiguous()
    sym = y is None
    gx = gy = gv = gg = None
    P = _Prepared(x, y, kind, dtype)
    need_g = needs[3] and kind != 2
    if needs[0] or needs[1] or need_g:
        if kind != 1:
            U = lambda i0, i1: torch.bmm(Gb[:, i0:i1], V.transpose(1, 2))  # noqa: E731
            weights = _kernel_block_weights(P, gamma, kind, degree, coef0, dtype, U, need_g)
            gx, gy, gg = _blocked_backward(P.x, P.y, gamma, kind, degree, coef0, dtype, weights, needs[0],
                                           needs[1] or (sym and needs[0]), need_g)
            if sym and needs[0]:
                gx = gx + gy   # v_m enters both sides when y = x: rows (u_mj) and columns (u_im)
                gy = None
        else:
            d = _dummy(dtype)
            gx, gg = _generic_rows(P, gamma, kind, degree, coef0, 2, d, Gb, V, dtype)
            if needs[1] or (sym and needs[0]):
                Q = P if sym else _Prepared(y, x, kind, dtype)
                gyt, _ = _generic_rows(Q, gamma, kind, degree, coef0, 2, d, V, Gb, dtype)
                if sym:
                    gx = gx + gyt
                else:
                    gy = gyt
    if needs[2]:
        gv = gram_matvec_forward(x if sym else y, None if sym else x, Gb, gamma, kernel, degree, coef0).to(dtype)
    if needs[3] and gg is None:
        gg = torch.zeros(x.shape[0], dtype=dtype)
    return (_cast(gx, x) if needs[0] else None, _cast(gy, x) if (needs[1] and not sym) else None, _cast(gv, v),
            gg.to(gamma.dtype) if needs[3] else None)
