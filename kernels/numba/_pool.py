"""Numba's OpenMP thread pool next to torch's.

torch ships its own libgomp and Numba's ``omp`` threading layer loads the system one: two OpenMP runtimes,
two thread teams. The GEMM-block paths (gram, stress) alternate them block by block -- a torch (MKL) GEMM,
then a Numba epilogue. On an idle machine that costs nothing measurable, but libgomp's workers spin for a
while after each parallel region, and on an oversubscribed machine (other busy processes, a data loader)
Numba's spinning workers take the cores MKL's threads need: with two busy processes on the 2-core VM one
stress forward+backward at N = 4096 took 0.7-1.9 s instead of 0.12-0.15 s.
"""
from __future__ import annotations

import os

_POOL = {"checked": False}


def passive_numba_pool() -> None:
    """Start Numba's OpenMP pool with ``OMP_WAIT_POLICY=PASSIVE`` unless it runs already or the user chose a
    policy (the variable is set only while the pool starts, then removed again; why: the module docstring).
    Only Numba's runtime reads the variable here (torch's was initialised at import); it applies to every
    Numba kernel of the process started after this call. Idle, the passive pool costs nothing measurable."""
    if _POOL["checked"]:
        return
    _POOL["checked"] = True
    try:
        from numba.np.ufunc import parallel
    except ImportError:  # pragma: no cover
        return
    if parallel._is_initialized or "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        parallel._launch_threads()
    finally:
        del os.environ["OMP_WAIT_POLICY"]
