"""Elementary functions that LLVM can vectorise inside Numba loops.

Numba lowers ``math.exp`` to a scalar libm call (no SVML here), which caps a fused kernel at a few
hundred million exp/s. :func:`fast_exp` is a branch-free Cody-Waite range reduction plus a Taylor
polynomial, with the power of two built by bit manipulation; LLVM turns loops over it into AVX2 code.

Accuracy (measured against float64 ``np.exp``, tests/test_numba_math.py): about 2 ulp in float32
and 2 ulp in float64, across the whole range including subnormal results.
Special values are exact: ``exp(-inf) = 0``, ``exp(+inf) = inf``, ``exp(nan) = nan``, overflow gives
``inf`` and underflow ``0``. :func:`exp_flush` is the cheaper variant on the normal range only (results
below it are 0); the log-domain Sinkhorn kernels rely on its ``exp(-inf) = 0``.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload


@intrinsic
def _bits_f32(typingctx, x):
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(32))
    return types.int32(types.float32), codegen


@intrinsic
def _float_i32(typingctx, x):
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


@intrinsic
def _bits_f64(typingctx, x):
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(64))
    return types.int64(types.float64), codegen


@intrinsic
def _float_i64(typingctx, x):
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.int64), codegen


_F = np.float32


@njit(inline="always")
def _exp32(v):
    # clamp without losing NaN
    a = max(v, _F(-160.0)) if v == v else v
    a = min(a, _F(160.0))
    # k = round(a / ln 2) by the 1.5 * 2^23 trick; its low mantissa bits are k itself
    t = a * _F(1.4426950408889634) + _F(12582912.0)
    k = t - _F(12582912.0)
    ki = _bits_f32(t) - np.int32(0x4B400000)
    r = a - k * _F(0.693145751953125)          # ln2 split hi/lo: k * hi is exact
    r = r - k * _F(1.4286068203094172e-06)
    p = _F(1.0 / 5040.0)
    p = p * r + _F(1.0 / 720.0)
    p = p * r + _F(1.0 / 120.0)
    p = p * r + _F(1.0 / 24.0)
    p = p * r + _F(1.0 / 6.0)
    p = p * r + _F(0.5)
    p = p * r + _F(1.0)
    p = p * r + _F(1.0)
    # 2^k as two factors so that subnormal results and k up to +-254 stay exact
    k1 = ki >> np.int32(1)
    k2 = ki - k1
    s1 = _float_i32((k1 + np.int32(127)) << np.int32(23))
    s2 = _float_i32((k2 + np.int32(127)) << np.int32(23))
    return (p * s1) * s2


@njit(inline="always")
def _exp64(v):
    # |k| <= 2020 keeps both halves of 2^k inside the exponent range
    a = max(v, -1400.0) if v == v else v
    a = min(a, 1400.0)
    t = a * 1.4426950408889634 + 6755399441055744.0
    k = t - 6755399441055744.0
    ki = _bits_f64(t) - np.int64(0x4338000000000000)
    r = a - k * 0.6931471803691238                   # ln2 hi (exact product for |k| < 2^21)
    r = r - k * 1.9082149292705877e-10               # ln2 lo
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    k1 = ki >> np.int64(1)
    k2 = ki - k1
    s1 = _float_i64((k1 + np.int64(1023)) << np.int64(52))
    s2 = _float_i64((k2 + np.int64(1023)) << np.int64(52))
    return (p * s1) * s2


def fast_exp(v):  # pragma: no cover - replaced by the overload inside jitted code
    """exp(v) for a float32 or float64 scalar inside Numba code (vectorisable)."""
    return np.exp(v)


@overload(fast_exp, inline="always")
def _fast_exp_overload(v):
    if v == types.float32:
        return lambda v: _exp32(v)
    if v == types.float64:
        return lambda v: _exp64(v)
    return None


def one_like(v):  # pragma: no cover - replaced by the overload inside jitted code
    """1 in the precision of ``v`` inside Numba code (an int literal would promote float32 to float64)."""
    return type(v)(1)


@overload(one_like, inline="always")
def _one_like_overload(v):
    if v == types.float32:
        return lambda v: np.float32(1.0)
    if isinstance(v, types.Float):
        return lambda v: 1.0
    return None


@njit(inline="always")
def _exp_flush32(v):
    # exp on the normal range only: 0 below -87 (exact at -inf), inf above 88, NaN stays NaN. Without
    # subnormal results one power-of-two factor suffices, which saves the two-factor scaling of fast_exp.
    u = _F(-87.0) if v < _F(-87.0) else v
    u = _F(88.0) if u > _F(88.0) else u
    t = u * _F(1.4426950408889634) + _F(12582912.0)
    k = t - _F(12582912.0)
    ki = _bits_f32(t) - np.int32(0x4B400000)
    r = u - k * _F(0.693145751953125)
    r = r - k * _F(1.4286068203094172e-06)
    p = _F(1.0 / 5040.0)
    p = p * r + _F(1.0 / 720.0)
    p = p * r + _F(1.0 / 120.0)
    p = p * r + _F(1.0 / 24.0)
    p = p * r + _F(1.0 / 6.0)
    p = p * r + _F(0.5)
    p = p * r + _F(1.0)
    p = p * r + _F(1.0)
    res = _float_i32(_bits_f32(p) + (ki << np.int32(23)))
    res = _F(0.0) if v < _F(-87.0) else res
    return _F(np.inf) if v > _F(88.0) else res


@njit(inline="always")
def _exp_flush64(v):
    u = -708.0 if v < -708.0 else v
    u = 709.0 if u > 709.0 else u
    t = u * 1.4426950408889634 + 6755399441055744.0
    k = t - 6755399441055744.0
    ki = _bits_f64(t) - np.int64(0x4338000000000000)
    r = u - k * 0.6931471803691238
    r = r - k * 1.9082149292705877e-10
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    res = _float_i64(_bits_f64(p) + (ki << np.int64(52)))  # logical shift: vectorises on AVX2
    res = 0.0 if v < -708.0 else res
    return np.inf if v > 709.0 else res


def exp_flush(v):  # pragma: no cover - replaced by the overload inside jitted code
    """exp(v) inside Numba code on the normal range only, about 3x cheaper than :func:`fast_exp` (one
    power-of-two factor, no subnormal results): v < -87 (float32) / -708 (float64) gives 0, exactly 0 at
    -inf; v > 88 / 709 gives inf; NaN propagates. The log-domain Sinkhorn passes and the kernel values of
    the Gram tiles use it."""
    return np.exp(v)


@overload(exp_flush, inline="always")
def _exp_flush_overload(v):
    if v == types.float32:
        return lambda v: _exp_flush32(v)
    if v == types.float64:
        return lambda v: _exp_flush64(v)
    return None
