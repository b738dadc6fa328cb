"""Numba CPU kernels: ``@njit(parallel=True, cache=True)`` forward and backward passes.

Shared building blocks live in ``_tiles`` (register-blocked inner-product tiles that LLVM vectorises)
and ``_math`` (a vectorisable exp). No blanket ``fastmath``: infinities and NaN must survive.
"""
