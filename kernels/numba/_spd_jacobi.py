"""Cyclic Jacobi eigensolver vectorised across a group of matrices (SIMD lanes) for ``numba/spd.py``.

A small symmetric eigenproblem is a chain of dependent scalar steps; vectorising *inside* one matrix
gives little (a 3x3 rotation touches 3 numbers). So a group of ``L`` matrices is solved at once, one per
SIMD lane (``_spd_lanes``): every step of the cyclic Jacobi method (Golub & Van Loan 8.5; METHODS.md
C.4.3) is an elementwise operation over the lanes, rotation parameters included (two square roots and a
division per rotation). Lanes that have converged rotate by the identity (t = 0); a rotation is skipped
only when no lane needs it. Used for d <= 5, where its few cheap sweeps beat tridiagonalisation + QL
(``_spd_tridiag``); each sweep costs O(d^3), so it loses beyond that.

Memory layout: rows p and q of ``A[p, r, l]`` are disjoint contiguous blocks, rotated in place; columns
p and q interleave with the rows, so the new rows also go to scratch ``X``, ``Y`` and are copied into the
columns by separate loops (the aliasing rule of ``_spd_lanes``).

Stopping rule (Demmel & Veselic 1992): rotate (p, q) only while ``a_pq^2 > tol^2 |a_pp a_qq|``, tol the
machine epsilon; a sweep without any rotation ends the iteration. For graded (scaled diagonally
dominant) SPD matrices this keeps small eigenvalues accurate relative to themselves, beyond LAPACK's
``eps * ||A||``. A second, absolute test ``a_pq^2 > eps^4`` (on the matrix scaled to max |a_ij| in
[1/2, 1)) ends the iteration for singular and indefinite input, where the relative test may not be
attainable. Each matrix is scaled by a power of two before the sweeps (exact), so squares cannot
overflow.

The rotation (overflow-free form of G&VL's ``sym.schur2``)::

    t = sign(a_qq - a_pp) 2 a_pq / (|a_qq - a_pp| + sqrt((a_qq - a_pp)^2 + 4 a_pq^2)),  c = 1/sqrt(1+t^2), s = t c
    a_pp -= t a_pq,  a_qq += t a_pq,  a_pq = 0,  rows/columns p, q rotated by [[c, s], [-s, c]].
"""
from __future__ import annotations

import numpy as np
from numba import njit



_JIT = dict(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")

@njit(**_JIT)
def jacobi_group(A, Vt, X, Y, C, Sn, NPP, NQQ, NPQ, tol, max_sweeps):
    """Diagonalise the L symmetric matrices in A (n, n, L) in place; ``Vt[k, :, l]`` = eigenvector k.

    Returns the number of sweeps run (including the final one that found nothing to rotate).
    """
    n, L = A.shape[0], A.shape[2]
    dt = A.dtype.type
    tol2 = dt(tol * tol)
    abstol2 = dt((tol * tol) ** 2)
    one, two, four, zero = dt(1), dt(2), dt(4), dt(0)
    for k in range(n):
        for r in range(n):
            for l in range(L):
                Vt[k, r, l] = one if k == r else zero
    sweeps = 0
    for _ in range(max_sweeps):
        sweeps += 1
        rotated = 0
        for p in range(n - 1):
            for q in range(p + 1, n):
                nrot = 0
                for l in range(L):
                    apq = A[p, q, l]
                    app = A[p, p, l]
                    aqq = A[q, q, l]
                    apq2 = apq * apq
                    big = apq2 > tol2 * abs(app * aqq)
                    big = big and apq2 > abstol2
                    D = aqq - app
                    h = np.sqrt(D * D + four * apq2)
                    t = two * apq / (abs(D) + h)
                    t = t if D >= zero else -t
                    t = t if big else zero
                    c = one / np.sqrt(one + t * t)
                    C[l] = c
                    Sn[l] = t * c
                    NPP[l] = app - t * apq
                    NQQ[l] = aqq + t * apq
                    NPQ[l] = zero if big else apq
                    nrot += 1 if big else 0
                if nrot == 0:
                    continue
                rotated += 1
                # rows p, q of A rotated in place (two disjoint contiguous blocks), the new rows kept in
                # X, Y and copied into columns p, q by separate loops (see the module note on aliasing)
                for r in range(n):
                    for l in range(L):
                        x = A[p, r, l]
                        y = A[q, r, l]
                        xn = C[l] * x - Sn[l] * y
                        yn = Sn[l] * x + C[l] * y
                        A[p, r, l] = xn
                        A[q, r, l] = yn
                        X[r, l] = xn
                        Y[r, l] = yn
                for l in range(L):
                    X[p, l] = NPP[l]
                    X[q, l] = NPQ[l]
                    Y[p, l] = NPQ[l]
                    Y[q, l] = NQQ[l]
                for r in range(n):
                    for l in range(L):
                        A[r, p, l] = X[r, l]
                for r in range(n):
                    for l in range(L):
                        A[r, q, l] = Y[r, l]
                # eigenvectors: V <- V J, i.e. rows p, q of Vt, in place
                for r in range(n):
                    for l in range(L):
                        x = Vt[p, r, l]
                        y = Vt[q, r, l]
                        Vt[p, r, l] = C[l] * x - Sn[l] * y
                        Vt[q, r, l] = Sn[l] * x + C[l] * y
        if rotated == 0:
            break
    return sweeps
