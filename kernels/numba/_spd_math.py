"""A vectorisable natural logarithm for the Numba SPD kernels (float64).

Numba lowers ``math.log``/``math.log1p``/``math.expm1`` to scalar libm calls, which stop LLVM from
vectorising the loops of the Daleckii-Krein backward (the Loewner matrix needs one logarithm or
exponential per matrix entry). :func:`log64` is fdlibm's ``__ieee754_log`` algorithm made branch-free:
the exponent and mantissa are split with bit operations, the mantissa is moved to
[sqrt(2)/2, sqrt(2)), and ``log(1 + f)`` is the fdlibm minimax polynomial in ``s = f / (2 + f)``
(error below 1 ulp). Special values are exact: ``log(0) = -inf``, ``log(inf) = inf``, negative
numbers and NaN give NaN; subnormals are rescaled first.

``log1p`` and ``expm1`` are then built from ``log`` and ``exp`` with the classic compensations
(Goldberg: ``log1p(u) = log(w) u / (w - 1)``, ``w = fl(1 + u)``; Kahan: ``expm1(y) = (e - 1) y / log(e)``,
``e = fl(exp(y))``), accurate to a few ulp without a cancellation.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from ._math import _exp64


@intrinsic
def _f64_bits(typingctx, x):
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(64))
    return types.int64(types.float64), codegen


@intrinsic
def _bits_f64(typingctx, x):
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.int64), codegen


_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_LG1 = 6.666666666666735130e-01
_LG2 = 3.999999999940941908e-01
_LG3 = 2.857142874366239149e-01
_LG4 = 2.222219843214978396e-01
_LG5 = 1.818357216161805012e-01
_LG6 = 1.531383769920937332e-01
_LG7 = 1.479819860511658591e-01


@njit(inline="always")
def log64(x):
    """Natural logarithm of a float64, branch-free (vectorisable), < 1 ulp."""
    sub = x < 2.2250738585072014e-308
    xs = x * 18014398509481984.0 if sub else x          # 2^54 lifts subnormals
    bits = _f64_bits(xs)
    k = ((bits >> np.int64(52)) & np.int64(0x7FF)) - np.int64(1023)
    k = k - np.int64(54) if sub else k
    mbits = (bits & np.int64(0x000FFFFFFFFFFFFF)) | np.int64(0x3FF0000000000000)
    m = _bits_f64(mbits)                                  # [1, 2)
    big = m > 1.4142135623730951
    m = m * 0.5 if big else m
    k = k + np.int64(1) if big else k
    f = m - 1.0
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    t1 = w * (_LG2 + w * (_LG4 + w * _LG6))
    t2 = z * (_LG1 + w * (_LG3 + w * (_LG5 + w * _LG7)))
    R = t2 + t1
    hfsq = 0.5 * f * f
    dk = float(k)
    r = dk * _LN2_HI - ((hfsq - (s * (hfsq + R) + dk * _LN2_LO)) - f)
    r = -np.inf if x == 0.0 else r
    r = np.inf if x == np.inf else r
    r = np.nan if not (x >= 0.0) else r
    return r


@njit(inline="always")
def exp64(x):
    """exp of a float64, vectorisable (the house ``fast_exp`` kernel, called directly)."""
    return _exp64(x)


@njit(inline="always")
def log1p64(u):
    """log(1 + u) for u > -1 (Goldberg's compensation), vectorisable."""
    w = 1.0 + u
    dw = w - 1.0
    return u if dw == 0.0 else log64(w) * (u / dw)


@njit(inline="always")
def expm1_over64(y):
    """expm1(y) / y (1 at y = 0), vectorisable (Kahan's compensation)."""
    e = _exp64(y)
    le = log64(e)
    r = (e - 1.0) / le
    r = 1.0 if e == 1.0 else r
    r = e / y if e == np.inf else r
    r = -1.0 / y if e == 0.0 else r
    return r
