"""Batched symmetric eigendecomposition and matrix functions on the CPU (Numba), forward and backward.

Algorithm by size d:

* ``d <= LANE_MAX_D`` (64): groups of ``LANES = 32`` matrices are solved together, one matrix per SIMD
  lane (``_spd_lanes``), by the cyclic Jacobi method for ``d <= JACOBI_MAX_D`` (5; ``_spd_jacobi``) and
  by Householder tridiagonalisation + implicitly shifted QL above (``_spd_tridiag``). The matrix function
  and the reconstruction ``V f(lam) V^T`` run on the same lane-interleaved scratch, so each matrix is
  read once and ``f(S)`` written once. Groups run in parallel on a thread pool (``_parallel``).
* ``d > LANE_MAX_D``: LAPACK. The eigendecomposition is ``torch.linalg.eigh`` (LAPACK ``syevd``), called
  on chunks of the batch from the thread pool (PyTorch runs a batch of eigenproblems on one thread), and
  the rest is the PyTorch reference. Per-lane scratch of 3 d^2 L numbers no longer fits the caches there,
  and calling scipy's LAPACK per matrix from ``prange`` measured 4x slower than PyTorch's bundled LAPACK.
* float32 input with ``d <= JACOBI_MAX_D`` is solved in float64 and rounded once (as ``numpy.linalg``
  does for every size): free at these sizes, and the float32 solve's backward error ``eps ||S||`` cost
  ~1.6e-5 relative in ``log S`` on the benchmark matrices (condition ~1e3).

Backward (Daleckii-Krein, METHODS.md C.4.2): ``V [(V^T sym(G) V) o L] V^T``. The cancellation-free
Loewner matrix ``L`` of the reference is computed in float64 for every dtype (lane-vectorised). Up to
``DK_LANES_MAX_D`` (float32 32, float64 48) it is formed per lane group inside the kernel that runs the
four products (register-blocked lane loops, ``_spd_lanes.abt_group``; no (B, d, d) float64 intermediate);
above, it is materialised and the products run as batched BLAS GEMMs (``torch.matmul``). Measured
(backward, medians of 3 alternating rounds, 2 threads), lanes / GEMMs: float32 12.9 / 15.7 ms at
(4000, 24), 13.0 / 13.9 at (2000, 32), 16.7 / 16.0 at (1000, 48); float64 14.1 / 24.4 at (4000, 24),
22.8 / 27.8 at (1000, 48), 56.2 / 54.7 at (1000, 64). ``eigh_backward`` (eigenvector gradients of
``spd_eigh``) is a few batched matrix products and runs in PyTorch.

Accuracy: eigenvalues to ``eps * ||S||`` like LAPACK (Jacobi's relative stopping rule does better on
graded matrices). float32 matrix functions for 5 < d <= 64 solve in float32 and then correct f(S) and the
eigenvalues once in float64 against the input (``_spd_refine``: ``V^T S V`` in float64, first-order
Daleckii-Krein correction): max error 3-6e-7 relative to max |f(S)| against the float64 result of the
same input, at condition 1e3-1e4, where the float32 solve alone is off by ~eps32 * cond (1.3-4e-5); it
adds ~35 % to the float32 forward at d = 16 (``REFINE_F32 = False`` turns it off). ``spd_eigh`` in
float32 is not refined.
"""
from __future__ import annotations

import concurrent.futures
import threading

import numba
import numpy as np
import torch
from numba import njit

from .. import _alloc
from ..reference import spd as _ref
from ._spd_jacobi import jacobi_group
from ._spd_lanes import (FUNC_CODES, LANES, dk_group, eigvals_group, load_group, loewner_group, matfun_values,
                         mirror_upper, reconstruct_group)
from ._spd_refine import reconstruct_full, refine_products, refined_middle, refined_values
from ._spd_tridiag import tql2_async_group, tql2_group, transpose_group, tred2_group

JACOBI_MAX_D = 5
DK_LANES_MAX_D = {torch.float32: 32, torch.float64: 48}   # backward products: lane groups up to here,
                                                          # batched BLAS GEMMs above
LANE_MAX_D = 64
MAX_SWEEPS = 30       # Jacobi: 4-9 sweeps in practice
QL_ITERS_PER_D = 30   # QL: 1-3 iterations per eigenvalue in practice
QL_ASYNC_MIN_D = 32   # from here on every lane of the QL works on its own eigenvalue (_spd_tridiag.tql2_async_group)
REFINE_F32 = True     # float32 matrix functions for JACOBI_MAX_D < d <= LANE_MAX_D: float64 refinement

_JIT = dict(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")


@njit(**_JIT)
def _forward_groups(g0, g1, S, use_jacobi, want_f, refine, func, p, abs_floor, rel_floor, tol, F, w, V):
    """Lane groups g0 .. g1-1: eigendecomposition of sym(S[b]). ``want_f``: also ``F[b] = f(S[b])`` with
    (w, V) unsorted (for the backward); otherwise (w, V) sorted ascending, eigenvectors sign-normalised.
    ``refine`` (with ``want_f``): one float64 first-order correction of f(S) and w against S
    (``_spd_refine``)."""
    B, n = S.shape[0], S.shape[1]
    L = LANES
    dt = S.dtype
    A = np.empty((n, n, L), dt)
    Vt = np.empty((n, n, L), dt)
    Fs = np.empty((n, n, L), dt)
    X = np.empty((n, L), dt)
    Y = np.empty((n, L), dt)
    lam = np.empty((n, L), dt)
    fw = np.empty((n, L), dt)
    scale = np.empty(L, dt)
    ls = np.empty((6, L), dt)        # per-lane scalars of Householder and Jacobi
    order = np.empty(n, np.int64)
    nr = n if refine else 0
    P = np.empty((nr, nr, L), np.float64)
    M = np.empty((nr, nr, L), np.float64)
    lam64 = np.empty((nr, L), np.float64)
    X64 = np.empty((nr, L), np.float64)
    h = np.empty((nr, L), np.float64)
    fh = np.empty((nr, L), np.float64)
    for g in range(g0, g1):
        b0 = g * L
        nb = min(L, B - b0)
        if refine and want_f:      # keep the loaded S (Fs) for the refinement; tred2 overwrites A
            load_group(S, b0, Fs, scale)
            for i in range(n):
                for j in range(n):
                    for l in range(L):
                        A[i, j, l] = Fs[i, j, l]
        else:
            load_group(S, b0, A, scale)
        if use_jacobi:
            jacobi_group(A, Vt, X, Y, ls[0], ls[1], ls[2], ls[3], ls[4], tol, MAX_SWEEPS)
            eigvals_group(A, scale, lam)
        else:
            tred2_group(A, lam, Y, X, ls[0], ls[1], ls[2], ls[3], ls[4], ls[5])
            transpose_group(A, Vt)
            if n >= QL_ASYNC_MIN_D:
                tql2_async_group(Vt, lam, Y, QL_ITERS_PER_D * n)
            else:
                tql2_group(Vt, lam, Y, QL_ITERS_PER_D * n)
            for k in range(n):
                for l in range(L):
                    lam[k, l] /= scale[l]
        if want_f and refine:
            refine_products(Fs, scale, Vt, P, M, X64)
            refined_values(M, X64, func, p, abs_floor, rel_floor, lam64, h, fh)
            refined_middle(M, X64, lam64, h, fh, func, p, Fs)
            reconstruct_full(Vt, Fs, A, Fs)
            for k in range(n):
                for l in range(L):
                    lam[k, l] = lam64[k, l]
        elif want_f:
            matfun_values(lam, func, p, abs_floor, rel_floor, fw)
            reconstruct_group(Vt, fw, X, Fs)
        if want_f:
            # the scatters with each matrix's rows innermost (contiguous writes of F and V; measured 2-3x
            # faster than lanes innermost, whose writes are strided): first the lower triangle of Fs and
            # V itself (A <- Vt transposed) in the lanes, vectorised
            mirror_upper(Fs)
            for k in range(n):
                for i in range(n):
                    for l in range(L):
                        A[i, k, l] = Vt[k, i, l]
            for l in range(nb):
                b = b0 + l
                for i in range(n):
                    for j in range(n):
                        F[b, i, j] = Fs[i, j, l]
                for k in range(n):
                    w[b, k] = lam[k, l]
                for i in range(n):
                    for k in range(n):
                        V[b, i, k] = A[i, k, l]
        else:
            for l in range(nb):
                b = b0 + l
                for k in range(n):      # ascending order: stable insertion sort
                    order[k] = k
                for k in range(1, n):
                    key = order[k]
                    m = k - 1
                    while m >= 0 and lam[order[m], l] > lam[key, l]:
                        order[m + 1] = order[m]
                        m -= 1
                    order[m + 1] = key
                for k in range(n):
                    src = order[k]
                    w[b, k] = lam[src, l]
                    big = 0             # the entry of largest magnitude (first on ties) is made positive
                    for i in range(1, n):
                        if abs(Vt[src, i, l]) > abs(Vt[src, big, l]):
                            big = i
                    sgn = dt.type(-1) if Vt[src, big, l] < 0 else dt.type(1)
                    for i in range(n):
                        V[b, i, k] = sgn * Vt[src, i, l]


@njit(inline="always")
def _group_loewner(w, b0, nb, func, p, abs_floor, rel_floor, lam, Lout, h, fh, ih):
    """Lout (n, n, LANES) <- the Loewner matrices of the lane group starting at matrix b0 (nb real lanes; the
    padding lanes get eigenvalues 1, which every function accepts)."""
    for l in range(lam.shape[1]):
        for k in range(lam.shape[0]):
            lam[k, l] = w[b0 + l, k] if l < nb else 1.0
    loewner_group(lam, func, p, abs_floor, rel_floor, Lout, h, fh, ih)


@njit(**_JIT)
def _loewner_groups(g0, g1, w, func, p, abs_floor, rel_floor, Lw):
    """Lane groups g0 .. g1-1: ``Lw[b]`` = Loewner matrix of ``f(max(., floor))`` at ``w[b]`` (float64 only)."""
    B, n = w.shape
    L = LANES
    lam = np.empty((n, L), np.float64)
    h = np.empty((n, L), np.float64)
    fh = np.empty((n, L), np.float64)
    ih = np.empty((n, L), np.float64)
    Ll = np.empty((n, n, L), np.float64)
    for g in range(g0, g1):
        b0 = g * L
        nb = min(L, B - b0)
        _group_loewner(w, b0, nb, func, p, abs_floor, rel_floor, lam, Ll, h, fh, ih)
        for l in range(nb):
            for i in range(n):
                for j in range(n):
                    Lw[b0 + l, i, j] = Ll[i, j, l]


@njit(**_JIT)
def _dk_groups(g0, g1, G, V, w, func, p, abs_floor, rel_floor, out):
    """Lane groups g0 .. g1-1: ``out[b] = V [(V^T sym(G[b]) V) o Lw[b]] V^T`` (Daleckii-Krein), the Loewner
    matrix ``Lw[b]`` of ``f(max(., floor))`` at ``w[b]`` (float64) computed per group in the lanes (not
    materialised for the batch: the fresh (B, n, n) float64 array cost more than the kernel here)."""
    B, n = G.shape[0], G.shape[1]
    L = LANES
    dt = G.dtype
    Vt = np.empty((n, n, L), dt)
    Gs = np.empty((n, n, L), dt)
    T = np.empty((n, n, L), dt)
    X = np.empty((n, n, L), dt)
    Ll = np.empty((n, n, L), dt)
    lam = np.empty((n, L), np.float64)
    h = np.empty((n, L), np.float64)
    fh = np.empty((n, L), np.float64)
    ih = np.empty((n, L), np.float64)
    L64 = np.empty((n, n, L), np.float64)
    Vn = np.empty((n, n, L), dt)
    acc = np.empty(8 * L, dt)
    for g in range(g0, g1):
        b0 = g * L
        nb = min(L, B - b0)
        _group_loewner(w, b0, nb, func, p, abs_floor, rel_floor, lam, L64, h, fh, ih)
        for k in range(n):
            for i in range(n):
                for l in range(L):
                    Ll[k, i, l] = L64[k, i, l]
        for k in range(n):      # gathers and scatters with the lanes innermost (see load_group)
            for i in range(n):
                for l in range(nb):
                    Vt[k, i, l] = V[b0 + l, i, k]
                for l in range(nb, L):      # padding lanes: zero problems
                    Vt[k, i, l] = 1.0 if k == i else 0.0
                    Ll[k, i, l] = 0.0
        for i in range(n):
            for j in range(n):
                for l in range(nb):
                    Gs[i, j, l] = dt.type(0.5) * (G[b0 + l, i, j] + G[b0 + l, j, i])
                for l in range(nb, L):
                    Gs[i, j, l] = 0.0
        dk_group(Vt, Gs, Ll, T, X, Vn, acc)
        mirror_upper(Gs)
        for l in range(nb):     # the scatter with the matrix rows innermost: contiguous writes to out
            for i in range(n):
                for j in range(n):
                    out[b0 + l, i, j] = Gs[i, j, l]


# ---------------------------------------------------------------------------------------------------
# parallel driver
# ---------------------------------------------------------------------------------------------------

_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()
_warm: set = set()     # (kernel, argument types) already compiled


def _get_pool(nth: int) -> concurrent.futures.ThreadPoolExecutor:
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size != nth:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = concurrent.futures.ThreadPoolExecutor(max_workers=nth, thread_name_prefix="multialign-spd")
            _pool_size = nth
        return _pool


def _parallel(fn, nitems: int, *args) -> None:
    """``fn(lo, hi, *args)`` over chunks of ``range(nitems)`` on ``numba.get_num_threads()`` threads.

    The kernels release the GIL (``nogil=True``). This replaces ``prange``: Numba's parfor lowering
    re-optimised every linked eigensolver helper inside the gufunc a second time, which more than
    doubled the cold compile time (measured 120 s -> 50 s per dtype on the 2-core machine); chunks
    of whole lane groups make the thread hand-off cost (~20 us) negligible. ``fn`` may also be a plain
    Python function that releases the GIL (LAPACK calls through PyTorch).
    """
    nth = max(1, numba.get_num_threads())
    nch = min(nitems, 4 * nth) if nth > 1 else 1
    if nch <= 1:
        fn(0, nitems, *args)
        return
    pool = _get_pool(nth)
    bounds = [(k * nitems // nch, (k + 1) * nitems // nch) for k in range(nch)]
    if hasattr(fn, "overloads"):  # a Numba dispatcher: compile on this thread before the others start
        key = (fn, tuple(numba.typeof(a) for a in args))
        if key not in _warm:
            fn(*bounds[0], *args)
            _warm.add(key)
            bounds = bounds[1:]
    futures = [pool.submit(fn, lo, hi, *args) for lo, hi in bounds]
    for f in futures:
        f.result()


# ---------------------------------------------------------------------------------------------------
# launchers (the backend contract of kernels/reference/spd.py)
# ---------------------------------------------------------------------------------------------------


def _prep(S: torch.Tensor) -> torch.Tensor:
    if S.dtype not in (torch.float32, torch.float64):
        S = S.to(torch.float32)
    return S.contiguous()


def _tol(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).eps)


def _ngroups(B: int) -> int:
    return -(-B // LANES)


def _lapack_eigh(S: torch.Tensor):
    """(w, V) of sym(S) by LAPACK (``torch.linalg.eigh``), chunks of the batch on the thread pool
    (PyTorch runs a batch of eigenproblems one after the other on one thread)."""
    S = _ref.sym(S)
    B, n = S.shape[0], S.shape[-1]
    w = _alloc.empty((B, n), dtype=S.dtype, device=S.device)
    V = _alloc.empty((B, n, n), dtype=S.dtype, device=S.device)

    def part(lo, hi):
        w[lo:hi], V[lo:hi] = torch.linalg.eigh(S[lo:hi])
    if B:
        _parallel(part, B)
    return w, V


def eigh_forward(S: torch.Tensor):
    S = _prep(S)
    B, n = S.shape[0], S.shape[-1]
    if n <= JACOBI_MAX_D and S.dtype == torch.float32:  # see matfun_forward
        return tuple(t.float() for t in eigh_forward(S.double()))
    if n > LANE_MAX_D:
        w, V = _lapack_eigh(S)
        return w, _ref.sign_normalise(V)
    w = _alloc.empty((B, n), dtype=S.dtype, device=S.device)
    V = _alloc.empty((B, n, n), dtype=S.dtype, device=S.device)
    if B:
        dummy = np.empty((1, 1, 1), dtype=S.numpy().dtype)
        _parallel(_forward_groups, _ngroups(B), S.numpy(), n <= JACOBI_MAX_D, False, False, 0, 0.0, 0.0, 0.0,
                  _tol(S.dtype), dummy, w.numpy(), V.numpy())
    return w, V


def eigh_backward(gw, gV, w, V):
    return _ref.eigh_backward(gw, gV, w, V)


def matfun_forward(S: torch.Tensor, func: str, p: float, abs_floor: float, rel_floor: float):
    S = _prep(S)
    B, n = S.shape[0], S.shape[-1]
    if n <= JACOBI_MAX_D and S.dtype == torch.float32:
        # float32 input, d <= 5: computed in float64 (as numpy.linalg does), rounded once at the end. The
        # float32 solve's backward error eps32 ||S|| costs ~1e-5 relative in log(S) at condition 1e3;
        # this size is bound by memory traffic and call overhead, so the float64 solve costs no time.
        return tuple(t.float() for t in matfun_forward(S.double(), func, p, abs_floor, rel_floor))
    if n > LANE_MAX_D:
        w, V = _lapack_eigh(S)
        lam = torch.maximum(w, _ref.eig_floor(w, abs_floor, rel_floor))
        F = (V * _ref.apply_func(lam, func, p)[..., None, :]) @ V.mT
        return _ref.sym(F), w, V
    F = _alloc.empty((B, n, n), dtype=S.dtype, device=S.device)
    w = _alloc.empty((B, n), dtype=S.dtype, device=S.device)
    V = _alloc.empty((B, n, n), dtype=S.dtype, device=S.device)
    if B:
        refine = REFINE_F32 and S.dtype == torch.float32 and n > JACOBI_MAX_D
        _parallel(_forward_groups, _ngroups(B), S.numpy(), n <= JACOBI_MAX_D, True, refine, FUNC_CODES[func], float(p),
                  float(abs_floor), float(rel_floor), _tol(S.dtype), F.numpy(), w.numpy(), V.numpy())
    return F, w, V


def matfun_backward(grad: torch.Tensor, w: torch.Tensor, V: torch.Tensor, func: str, p: float,
                    abs_floor: float, rel_floor: float) -> torch.Tensor:
    B, n = V.shape[0], V.shape[-1]
    grad = grad.to(V.dtype).contiguous()
    if n > LANE_MAX_D:
        return _ref.matfun_backward(grad, w, V, func, p, abs_floor, rel_floor)
    if B == 0:
        return _alloc.empty((0, n, n), dtype=V.dtype, device=V.device)
    V = V.contiguous()
    w64 = w.to(torch.float64).contiguous().numpy()
    if n > DK_LANES_MAX_D[V.dtype]:  # the four products as batched GEMMs
        Lw = torch.empty((B, n, n), dtype=torch.float64)
        _parallel(_loewner_groups, _ngroups(B), w64, FUNC_CODES[func], float(p), float(abs_floor),
                  float(rel_floor), Lw.numpy())
        Vt = V.mT
        X = Vt @ (0.5 * (grad + grad.mT)) @ V
        out = V @ (X * Lw.to(V.dtype)) @ Vt
        return 0.5 * (out + out.mT)
    out = _alloc.empty((B, n, n), dtype=V.dtype, device=V.device)
    _parallel(_dk_groups, _ngroups(B), grad.numpy(), V.numpy(), w64, FUNC_CODES[func], float(p), float(abs_floor),
              float(rel_floor), out.numpy())
    return out
