"""Log-domain Sinkhorn on the CPU: fused online softmin, batched solves, stabilised-scaling fast path.

The tricks, and why they are fast:

* **One set of exponentials per iteration.** The row pass computes ``e_ij = exp(z_ij - m_i)`` with
  ``z_ij = log b_j + (g_j - C_ij) / eps`` and the exact row maximum ``m_i`` -- a stable log-sum-exp that
  gives ``f_i``. The column update needs ``sum_i a_i exp((f_i + g_j - C_ij) / eps)``, which is
  ``(1 / b_j) sum_i c_i e_ij`` with ``c_i = a_i exp(f_i / eps + m_i)`` (``= a_i / s_i`` when balanced): the
  same exponentials, weighted per row, accumulated while the row block is still in cache. So an
  iteration is one cost tile (or one read of C) and N x M exponentials, not two of each. The column sums
  are the column marginal of the intermediate plan, so the L1 marginal error comes for free. A column
  whose sum under- or overflows (far from convergence at tiny eps) is not trusted: that iteration's
  column update is redone by an exact log-domain pass over the transposed problem.
* **Online cost.** Points are centred on their joint mean, y is packed into ``W``-wide panels once per
  solve (x too, for the transposed pass) and the cost tile is ``|x|^2 + |y|^2 - 2 x.y`` from the
  ``_tiles.panel_dot`` register tile: O(N + M) memory.
* **Stabilised scaling (``path="scaling"``).** Once the potentials move by less than ``eps`` per
  iteration, the kernel ``K = exp((fh + gh - C) / eps)`` is stored and the iterations become
  linear-domain matrix-vector products ``u = 1 / K (b v)``, ``v = 1 / K^T (a u)`` fused in one streaming
  read of K (no exponential at all). A row whose scaling leaves ``[e^-tau, e^tau]`` is recomputed in the
  log domain and its kernel row rebuilt around the new potential (Schmitzer's absorption, per row); a
  drifting column sends the problem back to log-domain iterations until it settles again. Entries of K
  that underflow stay below ``e^{2 tau}`` times the float range, so nothing that matters is lost: the
  iterates are the log-domain ones.
* **Batched problems.** With at least as many problems as threads (or small problems), each thread solves
  whole problems, iterations included, with no synchronisation; otherwise every iteration is one parallel
  region over (problem, row chunk) items with private column accumulators. Each problem checks its own
  error every iteration and stops on its own.
"""
from __future__ import annotations

import math

import numba
import numpy as np
import torch
from numba import njit

from .. import _alloc
from ._math import exp_flush
from ._sinkhorn_passes import (build_kernel_rows, envelope_rows, finalize_cols, log_row_pass, plan_rows,
                               scale_row_pass)
from ._tiles import R, W, pack_panels, pad_rows

LOG, SCALE = 0, 1

# typed constants handed to the kernels as an array of the compute dtype
# [zero, two, -inf, emax, tiny, huge, tau, one]
_CONST = {
    np.float32: (0.0, 2.0, -np.inf, 60.0, 1e-30, 1e30, 16.0, 1.0),
    np.float64: (0.0, 2.0, -np.inf, 600.0, 1e-280, 1e280, 100.0, 1.0),
}
TAU_ENTER = 1.0        # switch to the scaling iterations once the potentials move by < eps per iteration
SMALL_PROBLEM = 65536  # N * M at or below which one thread solves a whole problem

_JIT = dict(cache=True, fastmath={"contract"}, nogil=True, _nrt=False)
_INL = dict(_JIT, inline="always")


# Arrays travel in tuples (numba unpacks them at no cost):
#   geo = (xa, yp, ya, xp, nx2, ny2, Cm, K)      points (centred, padded, packed), cost matrix, stored kernel
#   wts = (aw, bw, law, lbw)                     weights and their logs, padded to Nw / Mw
#   pot = (f, g, fh, gh)                         potentials and the absorbed potentials of K
#   wrk = (TS, H, HK, LBV, WM, GN, HT)           per-problem scalars (eps_t, 1/eps_t, damp, at-target) and vectors
#   scr = (Z, Z2, ACC, LANE, WACC, SMALL)        per-item scratch
#   si  = (MODE, ACTIVE, NEEDT, NEEDB, n_iter, HASZ, stats)   integer state;  sf = (PERR, PDF, PDG, ITEMD, ITEME, err)
# dims = [N, M, Nw, Mw, max_iter, nc, use_scaling, batched]; prm = [eps, eps_scaling, rho, tol]; tv: typed constants.

ROW, TRANS, FIX, BUILD = 0, 1, 2, 3


@njit(**_INL)
def _chunk(c, nc, n_rows):
    nb = (n_rows + R - 1) // R
    return (c * nb // nc) * R, ((c + 1) * nb // nc) * R


@njit(**_JIT)
def _prepare(b, t, prm, eps0, wts, pot, wrk, si, dims, tv):
    """eps_t and the per-problem vectors of this iteration (``h`` or ``b v``, multipliers for the column sums)."""
    aw, bw, law, lbw = wts
    f, g, fh, gh = pot
    TS, H, HK, LBV, WM, GN, HT = wrk
    MODE = si[0]
    M, Mw = dims[1], dims[3]
    eps, s, rho = prm[0], prm[1], prm[2]
    e = eps
    if s > 0.0:
        e = max(eps, eps0[b] * s ** t)
    TS[b, 0] = e
    TS[b, 1] = 1.0 / e
    TS[b, 2] = 1.0 if math.isinf(rho) else rho / (rho + e)
    TS[b, 3] = 1.0 if e <= eps else 0.0
    inv = TS[b, 1]
    ninf = tv[2]
    if MODE[b] == LOG:
        for j in range(M):
            H[b, j] = lbw[b, j] + g[b, j] * inv
            WM[b, j] = 1.0 / bw[b, j] if bw[b, j] > 0 else 0.0
        for j in range(M, Mw):
            H[b, j] = ninf
    else:
        for j in range(M):
            d = (g[b, j] - gh[b, j]) * inv
            v = exp_flush(d)
            H[b, j] = bw[b, j] * v
            LBV[b, j] = lbw[b, j] + d
            HK[b, j] = gh[b, j] * inv
            WM[b, j] = v
        for j in range(M, Mw):
            H[b, j] = tv[0]
            HK[b, j] = ninf
            LBV[b, j] = ninf


@njit(**_INL)
def _finalize(b, wts, pot, wrk, scr, si, sf, dims, tv):
    """Column update of problem b from its items' accumulators; flags a transposed pass when a column is bad."""
    aw, bw, law, lbw = wts
    f, g, fh, gh = pot
    TS, H, HK, LBV, WM, GN, HT = wrk
    WACC = scr[4]
    MODE, NEEDT = si[0], si[2]
    PERR, PDF, PDG, ITEMD = sf[0], sf[1], sf[2], sf[3]
    M, nc = dims[1], dims[5]
    i0 = b * nc
    for c in range(1, nc):
        for j in range(M):
            WACC[i0, j] += WACC[i0 + c, j]
    dmf = 0.0
    for c in range(nc):
        dmf = max(dmf, ITEMD[i0 + c])
    PDF[b] = dmf
    eps, inv, damp = TS[b, 0], TS[b, 1], TS[b, 2]
    bad, err, dmg = finalize_cols(M, WACC[i0], WM[b], bw[b], g[b], gh[b], GN[b], eps, inv, damp, tv[6],
                                  MODE[b] == SCALE, tv[4], tv[5], tv[0])
    if bad == 0:
        for j in range(M):
            g[b, j] = GN[b, j]
        PERR[b] = err
        PDG[b] = dmg
        NEEDT[b] = 0
    else:
        NEEDT[b] = 1
        MODE[b] = LOG


@njit(**_INL)
def _transposed_prepare(b, wts, pot, wrk, dims, tv):
    law = wts[2]
    f = pot[0]
    TS, HT = wrk[0], wrk[6]
    N, Nw = dims[0], dims[2]
    inv = TS[b, 1]
    for i in range(N):
        HT[b, i] = law[b, i] + f[b, i] * inv
    for i in range(N, Nw):
        HT[b, i] = tv[2]


@njit(**_INL)
def _after(b, t, prm, pot, wrk, si, sf, dims, tv):
    """Error, convergence and path bookkeeping of problem b after iteration t; flags a kernel build."""
    f, g, fh, gh = pot
    TS, HK = wrk[0], wrk[2]
    MODE, ACTIVE, NEEDT, NEEDB, n_iter, HASZ, stats = si
    PERR, PDF, PDG, ITEMD, ITEME, err_out = sf
    M, Mw, nc, use_scaling = dims[1], dims[3], dims[5], dims[6]
    i0 = b * nc
    if NEEDT[b] == 1:
        e = 0.0
        d = 0.0
        for c in range(nc):
            e += ITEME[i0 + c]
            d = max(d, ITEMD[i0 + c])
        PERR[b] = e
        PDG[b] = d
        stats[b, 0] += 1
    else:
        stats[b, MODE[b]] += 1
    dmax = max(PDF[b], PDG[b])
    e = PERR[b] if math.isinf(prm[2]) else dmax
    if TS[b, 3] == 0.0:
        e = np.inf
    err_out[b] = e
    n_iter[b] = t + 1
    NEEDB[b] = 0
    if e < prm[3]:
        ACTIVE[b] = 0
        return
    if use_scaling == 1 and MODE[b] == LOG and NEEDT[b] == 0 and TS[b, 3] == 1.0 and dmax < TAU_ENTER:
        NEEDB[b] = 1
        inv = TS[b, 1]
        for j in range(M):
            gh[b, j] = g[b, j]
            HK[b, j] = g[b, j] * inv
        for j in range(M, Mw):
            HK[b, j] = tv[2]


@njit(**_INL)
def _final(b, wts, pot, wrk, si, dims, tv):
    if si[5][b] == 1:  # zero-weight columns: their potentials are the c-transform of the final f
        _transposed_prepare(b, wts, pot, wrk, dims, tv)
        return FIX
    return -1


@njit(**_INL)
def _next_iteration(b, T, prm, eps0, wts, pot, wrk, si, dims, tv):
    T[b] += 1
    if T[b] >= dims[4]:
        return _final(b, wts, pot, wrk, si, dims, tv)
    _prepare(b, T[b], prm, eps0, wts, pot, wrk, si, dims, tv)
    return ROW


@njit(**_INL)
def _advance(b, k, T, prm, eps0, wts, pot, wrk, scr, si, sf, dims, tv):
    """Serial bookkeeping of problem b after its phase ``k``; returns the next phase (-1: finished)."""
    MODE, ACTIVE, NEEDT, NEEDB, n_iter, HASZ, stats = si
    if k == FIX:
        return -1
    if k == BUILD:
        MODE[b] = SCALE
        NEEDB[b] = 0
        stats[b, 2] += 1
        return _next_iteration(b, T, prm, eps0, wts, pot, wrk, si, dims, tv)
    if k == ROW:
        _finalize(b, wts, pot, wrk, scr, si, sf, dims, tv)
        if NEEDT[b] == 1:
            _transposed_prepare(b, wts, pot, wrk, dims, tv)
            return TRANS
    _after(b, T[b], prm, pot, wrk, si, sf, dims, tv)
    if ACTIVE[b] == 0:
        return _final(b, wts, pot, wrk, si, dims, tv)
    if NEEDB[b] == 1:
        return BUILD
    return _next_iteration(b, T, prm, eps0, wts, pot, wrk, si, dims, tv)


@njit(**_JIT)
def _run_items(lo_item, hi_item, KIND, T, src, prm, eps0, geo, wts, pot, wrk, scr, si, sf, dims, tv):
    """The work of the (problem, chunk) items ``lo_item <= item < hi_item`` (one thread's share): one phase
    each, or in batched mode whole problems (phases chained by ``_advance``). Each pass has exactly one
    call site here, so it is compiled in once."""
    for item in range(lo_item, hi_item):
        _run_item(item, KIND, T, src, prm, eps0, geo, wts, pot, wrk, scr, si, sf, dims, tv)


@njit(**_INL)
def _run_item(item, KIND, T, src, prm, eps0, geo, wts, pot, wrk, scr, si, sf, dims, tv):
    xa, yp, ya, xp, nx2, ny2, Cm, K = geo
    aw, bw, law, lbw = wts
    f, g, fh, gh = pot
    TS, H, HK, LBV, WM, GN, HT = wrk
    Z, Z2, ACC, LANE, WACC, SMALL = scr
    MODE = si[0]
    ITEMD, ITEME = sf[3], sf[4]
    N, M, Nw, Mw, nc, batched = dims[0], dims[1], dims[2], dims[3], dims[5], dims[7]
    b = item // nc
    c = item - b * nc
    k = KIND[b]
    while k >= 0:
        eps, inv, damp = TS[b, 0], TS[b, 1], TS[b, 2]
        if k == BUILD:
            lo, hi = _chunk(c, nc, N)
            build_kernel_rows(src, xa[b], yp[b], nx2[b], ny2[b], Cm[b], N, M, Mw, HK[b], f[b], bw[b], inv,
                              lo, hi, K[b], fh[b], Z[item], ACC[item], tv[0], tv[1], tv[2], tv[3])
        elif k == ROW and MODE[b] == SCALE:
            lo, hi = _chunk(c, nc, N)
            dmax, nref = scale_row_pass(K[b], N, M, H[b], LBV[b], f[b], fh[b], aw[b], eps, inv, damp, tv[6],
                                        lo, hi, WACC[item], Mw, src, xa[b], yp[b], nx2[b], ny2[b], Cm[b],
                                        HK[b], bw[b], Z[item], ACC[item], LANE[item], SMALL[item, 0],
                                        SMALL[item, 1], SMALL[item, 2], tv[0], tv[1], tv[2], tv[3], tv[4], tv[5])
            ITEMD[item] = dmax
        else:
            if k == ROW:
                A, Bp, nrow, ncol, n_rows, width = xa[b], yp[b], nx2[b], ny2[b], N, Mw
                h, p, w, transposed, accumulate, write_mode = H[b], f[b], aw[b], False, True, 0
            else:
                A, Bp, nrow, ncol, n_rows, width = ya[b], xp[b], ny2[b], nx2[b], M, Nw
                h, p, w, transposed, accumulate = HT[b], g[b], bw[b], True, False
                write_mode = 1 if k == FIX else 0
            lo, hi = _chunk(c, nc, n_rows)
            dmax, err = log_row_pass(src, A, Bp, nrow, ncol, Cm[b], transposed, n_rows, width, h, p, w, eps,
                                     inv, damp, lo, hi, Z[item], Z2[item], ACC[item], LANE[item], SMALL[item, 0],
                                     SMALL[item, 1], SMALL[item, 2], WACC[item], accumulate, write_mode,
                                     tv[0], tv[1], tv[2], tv[4], tv[5])
            ITEMD[item] = dmax
            ITEME[item] = err
        if batched == 0:
            break
        k = _advance(b, k, T, prm, eps0, wts, pot, wrk, scr, si, sf, dims, tv)
    if batched == 1:
        KIND[b] = -1


@njit(**_JIT)
def _start(B, prm, eps0, wts, pot, wrk, si, dims, tv):
    for b in range(B):
        _prepare(b, 0, prm, eps0, wts, pot, wrk, si, dims, tv)


@njit(**_JIT)
def _advance_all(KIND, T, prm, eps0, wts, pot, wrk, scr, si, sf, dims, tv):
    """Between two rounds (split mode): each unfinished problem's column update and bookkeeping."""
    busy = False
    for b in range(KIND.shape[0]):
        if KIND[b] >= 0:
            KIND[b] = _advance(b, KIND[b], T, prm, eps0, wts, pot, wrk, scr, si, sf, dims, tv)
            busy = busy or KIND[b] >= 0
    return busy


@njit(cache=True, fastmath={"contract"}, nogil=True)
def _envelope_items(lo_item, hi_item, A, Bp, nrow, ncol, Ym, H, P, iv, n_rows, width, nc, Z, Z2, ACC, LANE, SMALL,
                    TACC, RHO, T, tv):
    """Envelope-gradient reductions ``sum_j q_ij`` and ``sum_j q_ij y_j`` for the rows of the given items."""
    for item in range(lo_item, hi_item):
        b = item // nc
        lo, hi = _chunk(item - b * nc, nc, n_rows)
        envelope_rows(A[b], Bp[b], nrow[b], ncol[b], Ym[b], n_rows, width, H[b], P[b], iv[0], lo, hi, Z[item],
                      Z2[item], ACC[item], LANE[item], SMALL[item, 0], SMALL[item, 1], TACC[item], RHO[b], T[b],
                      tv[0], tv[1], tv[2], tv[4], tv[5])


@njit(cache=True, fastmath={"contract"}, nogil=True)
def _plan_items(lo_item, hi_item, Cm, aw, bw, f, g, iv, gr, nc, gC, RHO, COLS, tv):
    """``grad * P`` and the row / column sums of ``q`` for a cost matrix (the plan is N x M anyway)."""
    N = aw.shape[1]
    for item in range(lo_item, hi_item):
        b = item // nc
        c = item - b * nc
        for j in range(COLS.shape[1]):
            COLS[item, j] = tv[0]
        plan_rows(Cm[b], aw[b], bw[b], f[b], g[b], iv[0], gr[b], c * N // nc, (c + 1) * N // nc, gC[b], RHO[b],
                  COLS[item], tv[0])


# --------------------------------------------------------------------------------------------------
# launchers
# --------------------------------------------------------------------------------------------------


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


def _round(n: int, m: int) -> int:
    return -(-max(n, 1) // m) * m


def _centre(x: torch.Tensor, y: torch.Tensor):
    mu = (x.sum(1) + y.sum(1)) / (x.shape[1] + y.shape[1])
    return x - mu[:, None], y - mu[:, None]


def _pad_vec(v: torch.Tensor, n: int, fill: float) -> torch.Tensor:
    out = v.new_full((v.shape[0], n), fill)
    out[:, :v.shape[1]] = v
    return out


def _layout(x: torch.Tensor, y: torch.Tensor):
    """Centred, padded, packed copies of both clouds (each side is the row operand of one pass)."""
    xc, yc = _centre(x, y)
    xa = pad_rows(xc, W)
    ya = pad_rows(yc, W)
    return xa, ya, pack_panels(xc), pack_panels(yc), (xa * xa).sum(-1), (ya * ya).sum(-1)


def _threads() -> int:
    return numba.get_num_threads()


_POOL: list = []


def parallel_items(fn, n_items: int, args: tuple) -> None:
    """Run ``fn(lo, hi, *args)`` over contiguous shares of ``range(n_items)``, one per thread.

    ``fn`` is a ``nogil`` Numba function, so the shares run truly in parallel on Python threads (the
    calling thread takes the first share). Threads instead of ``prange``: a ``parallel=True`` kernel
    links and re-optimises every pass twice more (the gufunc and its caller), which tripled the cold
    compile time of this module; the hand-off costs ~10-50 us per round, once per iteration at most.
    """
    nt = min(_threads(), n_items)
    if nt <= 1:
        fn(0, n_items, *args)
        return
    if not _POOL or _POOL[0][0] < nt:
        from concurrent.futures import ThreadPoolExecutor

        _POOL[:] = [(nt, ThreadPoolExecutor(max_workers=nt, thread_name_prefix="multialign-sinkhorn"))]
    pool = _POOL[0][1]
    bounds = [n_items * k // nt for k in range(nt + 1)]
    futures = [pool.submit(fn, bounds[k], bounds[k + 1], *args) for k in range(1, nt)]
    fn(bounds[0], bounds[1], *args)
    for fut in futures:
        fut.result()


def _solve(src, x, y, C, a, b, eps, rho, max_iter, tol, eps0, eps_scaling, path):
    dt = a.dtype
    npdt = np.float64 if dt == torch.float64 else np.float32
    B, N = a.shape
    M = b.shape[1]
    Nw, Mw = _round(N, W), _round(M, W)
    L = max(Nw, Mw) + 48  # row stride off a multiple of 4 KiB: streams at equal page offsets stall (4K aliasing)
    if src == 0:
        xa, ya, xp, yp, nx2, ny2 = (_np(t) for t in _layout(x, y))
        Cm = np.zeros((B, 1, 1), npdt)
    else:
        xa = np.zeros((B, R, 1), npdt)
        ya = xa
        xp = np.zeros((B, 1, 1, W), npdt)
        yp = xp
        nx2 = np.zeros((B, L), npdt)
        ny2 = nx2
        Cm = _np(C)
    use_scaling = path == "scaling"
    K = np.empty((B, N, M), npdt) if use_scaling else np.zeros((B, 1, 1), npdt)
    aw = _np(_pad_vec(a, Nw, 0.0))
    bw = _np(_pad_vec(b, Mw, 0.0))
    with np.errstate(divide="ignore"):
        law = np.log(aw)
        lbw = np.log(bw)
    f = np.zeros((B, Nw), npdt)
    g = np.zeros((B, Mw), npdt)
    fh = np.zeros((B, Nw), npdt)
    gh = np.zeros((B, Mw), npdt)
    nthreads = _threads()
    batched = B >= nthreads or N * M <= SMALL_PROBLEM
    nc = 1 if batched else max(1, min(-(-nthreads // B), -(-N // R)))
    n_items = B * nc
    prm = np.array([eps, eps_scaling, rho, tol], np.float64)
    dims = np.array([N, M, Nw, Mw, max_iter, nc, int(use_scaling), int(batched)], np.int64)
    tv = np.array(_CONST[npdt], npdt)
    wrk = (np.zeros((B, 4), npdt),) + tuple(np.zeros((B, Mw), npdt) for _ in range(5)) + (np.zeros((B, Nw), npdt),)
    scr = (np.empty((n_items, R, L), npdt), np.empty((n_items, R, L), npdt), np.empty((n_items, R, W), npdt),
           np.empty((n_items, W), npdt), np.empty((n_items, L), npdt), np.empty((n_items, 3, R), npdt))
    n_iter = np.zeros(B, np.int64)
    err = np.full(B, np.inf, np.float64)
    stats = np.zeros((B, 3), np.int64)
    hasz = (bw[:, :M] == 0).any(1).astype(np.int64)
    si = (np.zeros(B, np.int64), np.ones(B, np.int64), np.zeros(B, np.int64), np.zeros(B, np.int64), n_iter, hasz,
          stats)
    sf = tuple(np.zeros(B) for _ in range(3)) + (np.zeros(n_items), np.zeros(n_items), err)
    e0 = _np(eps0.to(torch.float64))
    geo, wts, pot = (xa, yp, ya, xp, nx2, ny2, Cm, K), (aw, bw, law, lbw), (f, g, fh, gh)
    KIND = np.zeros(B, np.int64)
    T = np.zeros(B, np.int64)
    _start(B, prm, e0, wts, pot, wrk, si, dims, tv)
    args = (KIND, T, src, prm, e0, geo, wts, pot, wrk, scr, si, sf, dims, tv)
    while True:
        parallel_items(_run_items, n_items, args)
        if batched or not _advance_all(KIND, T, prm, e0, wts, pot, wrk, scr, si, sf, dims, tv):
            break
    f_out = _alloc.empty((B, N), dtype=dt, device=a.device)
    g_out = _alloc.empty((B, M), dtype=dt, device=a.device)
    f_out.copy_(torch.from_numpy(f[:, :N]))
    g_out.copy_(torch.from_numpy(g[:, :M]))
    n_out = _alloc.empty((B,), dtype=torch.int64, device=a.device)
    n_out.copy_(torch.from_numpy(n_iter))
    e_out = _alloc.empty((B,), dtype=dt, device=a.device)
    e_out.copy_(torch.from_numpy(err))
    s_out = _alloc.empty((B, 3), dtype=torch.int64, device=a.device)
    s_out.copy_(torch.from_numpy(stats))
    return f_out, g_out, n_out, e_out, s_out


def sinkhorn_forward(x, y, a, b, eps: float, rho: float, max_iter: int, tol: float, eps0, eps_scaling: float,
                     path: str):
    """Potentials for point clouds ``x (B,N,D)``, ``y (B,M,D)``: ``(f, g, n_iter, error, stats)``.

    ``path``: ``"online"`` (cost tiles from the points), ``"matrix"`` (C computed once and read every
    iteration) or ``"scaling"`` (stabilised scaling on a stored kernel, cost tiles from the points).
    ``stats[b] = [log-domain iterations, scaling iterations, kernel rebuilds]``.
    """
    if path == "matrix":
        xc, yc = _centre(x, y)
        C = torch.baddbmm((xc * xc).sum(-1)[:, :, None] + (yc * yc).sum(-1)[:, None, :], xc, yc.transpose(1, 2),
                          alpha=-2.0).clamp_min_(0)
        return _solve(1, None, None, C, a, b, eps, rho, max_iter, tol, eps0, eps_scaling, "matrix")
    return _solve(0, x, y, None, a, b, eps, rho, max_iter, tol, eps0, eps_scaling, path)


def sinkhorn_matrix_forward(C, a, b, eps: float, rho: float, max_iter: int, tol: float, eps0, eps_scaling: float,
                            path: str):
    """Potentials for a cost matrix ``C (B,N,M)``; ``path`` is ``"matrix"`` or ``"scaling"``."""
    return _solve(1, None, None, C, a, b, eps, rho, max_iter, tol, eps0, eps_scaling, path)


def _items(B: int, n_rows: int) -> int:
    nthreads = _threads()
    return 1 if B >= nthreads else max(1, min(-(-nthreads // B), -(-n_rows // R)))


def _envelope_side(xc, yc, w_other, g_other, f_self, eps):
    """``rho_i = sum_j q_ij`` and ``t_i = sum_j q_ij y_j`` with ``q_ij = w_j exp((f_i + g_j - C_ij) / eps)``."""
    dt = xc.dtype
    npdt = np.float64 if dt == torch.float64 else np.float32
    B, N, D = xc.shape
    M = yc.shape[1]
    Nw, Mw, Dp = _round(N, W), _round(M, W), _round(D, W)
    A = pad_rows(xc, W)
    ya = pad_rows(yc, W)
    Ym = xc.new_zeros(B, Mw, Dp)
    Ym[:, :M, :D] = yc
    with np.errstate(divide="ignore"):
        lw = torch.from_numpy(np.log(_np(w_other)))
    H = _pad_vec(lw + g_other / eps, Mw, -math.inf)
    P = _pad_vec(f_self, Nw, 0.0)
    nc = _items(B, N)
    n = B * nc
    L = Mw + 48
    tv = np.array(_CONST[npdt], npdt)
    RHO = np.zeros((B, Nw), npdt)
    T = np.zeros((B, Nw, Dp), npdt)
    parallel_items(_envelope_items, n, (_np(A), _np(pack_panels(yc)), _np((A * A).sum(-1)), _np((ya * ya).sum(-1)), _np(Ym), _np(H), _np(P),
                     np.array([1.0 / eps], npdt), N, Mw, nc, np.empty((n, R, L), npdt), np.empty((n, R, L), npdt),
                     np.empty((n, R, W), npdt), np.empty((n, W), npdt), np.empty((n, 3, R), npdt),
                     np.empty((n, R, Dp), npdt), RHO, T, tv))
    return torch.from_numpy(RHO[:, :N]), torch.from_numpy(T[:, :N, :D])


def _weight_grad(gr, w, pot, rho_sum, other_mass, eps, rho):
    """d D / d w_i = f_i - eps (rho_i - sum(other))  (balanced) or -rho (e^{-f_i/rho} - 1) - eps (...)."""
    base = pot if math.isinf(rho) else -rho * torch.expm1(-pot / rho)
    return gr[:, None] * (base - eps * (rho_sum - other_mass[:, None]))


def _out(t: torch.Tensor) -> torch.Tensor:
    o = _alloc.empty(t.shape, dtype=t.dtype, device=t.device)
    o.copy_(t)
    return o


def sinkhorn_backward(grad, x, y, a, b, f, g, eps: float, rho: float, needs=(True, True, True, True)):
    """Envelope gradients ``(grad_x, grad_y, grad_a, grad_b)`` of ``sum(grad * cost)``, f and g held fixed:
    ``grad_x_i = 2 grad a_i (rho_i x_i - t_i)`` with ``rho_i = (P 1)_i / a_i``, ``t_i = (P y)_i / a_i`` --
    two fused reductions (rows, then columns), never the plan. None where not needed."""
    gr = grad.to(a.dtype)
    xc, yc = _centre(x, y)
    gx = gy = ga = gb = None
    if needs[0] or needs[2]:
        rs, t = _envelope_side(xc, yc, b, g, f, eps)
        if needs[0]:
            gx = _out(2.0 * gr[:, None, None] * a[:, :, None] * (rs[:, :, None] * xc - t))
        if needs[2]:
            ga = _out(_weight_grad(gr, a, f, rs, b.sum(1), eps, rho))
    if needs[1] or needs[3]:
        cs, t = _envelope_side(yc, xc, a, f, g, eps)
        if needs[1]:
            gy = _out(2.0 * gr[:, None, None] * b[:, :, None] * (cs[:, :, None] * yc - t))
        if needs[3]:
            gb = _out(_weight_grad(gr, b, g, cs, a.sum(1), eps, rho))
    return gx, gy, ga, gb


def sinkhorn_matrix_backward(grad, C, a, b, f, g, eps: float, rho: float, needs=(True, True, True)):
    """Envelope gradients ``(grad_C, grad_a, grad_b)``: ``grad_C = grad * P`` (one pass that also gives the
    row and column sums of the plan for the weight gradients)."""
    dt = a.dtype
    npdt = np.float64 if dt == torch.float64 else np.float32
    B, N = a.shape
    M = b.shape[1]
    nc = _items(B, N)
    gC = _alloc.empty((B, N, M), dtype=dt, device=a.device)
    RHO = np.zeros((B, N), npdt)
    COLS = np.zeros((B * nc, M), npdt)
    parallel_items(_plan_items, B * nc, (_np(C), _np(a), _np(b), _np(f), _np(g), np.array([1.0 / eps], npdt),
                                         _np(grad.to(dt)), nc, gC.numpy(), RHO, COLS, np.array(_CONST[npdt], npdt)))
    gr = grad.to(dt)
    ga = _out(_weight_grad(gr, a, f, torch.from_numpy(RHO), b.sum(1), eps, rho)) if needs[1] else None
    cs = torch.from_numpy(COLS.reshape(B, nc, M).sum(1))
    gb = _out(_weight_grad(gr, b, g, cs, a.sum(1), eps, rho)) if needs[2] else None
    return (gC if needs[0] else None), ga, gb
