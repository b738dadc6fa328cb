"""The vectorisable elementary functions of the Numba kernels (kernels/numba/_math.py) against float64 numpy."""
import numpy as np
import pytest
from numba import njit

from multialign.kernels.numba._math import exp_flush, fast_exp, one_like


def _elementwise(f):
    @njit(cache=False)
    def apply(a):
        out = np.empty_like(a)
        for i in range(a.shape[0]):
            out[i] = f(a[i])
        return out
    return apply


_apply_fast = _elementwise(fast_exp)
_apply_flush = _elementwise(exp_flush)


@njit(cache=False)
def _one(a):
    return one_like(a[0]) + a[0]


def _ulps(got, v, dtype):
    ref = np.exp(v.astype(np.float64))
    normal = ref > np.finfo(dtype).tiny
    err = np.abs(got.astype(np.float64) - ref)
    ulp = np.spacing(ref.astype(dtype)).astype(np.float64)
    return (err[normal] / ulp[normal]).max(), err[~normal].max(initial=0.0)


@pytest.mark.parametrize("dtype, lo, hi, flush", [(np.float32, -100.0, 88.0, -87.0), (np.float64, -745.0, 709.0, -708.0)])
def test_exp_flush_accuracy_and_special_values(dtype, lo, hi, flush):
    rng = np.random.default_rng(0)
    v = np.concatenate([np.linspace(lo, hi, 300_007), -rng.exponential(2.0, 100_000), [0.0, -0.0]]).astype(dtype)
    got = _apply_flush(v)
    ok = v >= flush
    ulp, _ = _ulps(got[ok], v[ok], dtype)
    assert ulp <= 3.0
    assert np.all(got[~ok] == 0.0)                   # flushed: the true value is below ~1.7e-38 / 3e-308
    special = _apply_flush(np.array([-np.inf, np.inf, np.nan, 1000.0], dtype))
    assert special[0] == 0.0 and special[1] == np.inf and np.isnan(special[2]) and special[3] == np.inf


@pytest.mark.parametrize("dtype, hi, max_ulp", [(np.float32, 88.0, 3.0), (np.float64, 709.0, 3.0)])
def test_fast_exp_accuracy_and_special_values(dtype, hi, max_ulp):
    v = np.linspace(-hi - 15.0, hi, 300_007).astype(dtype)
    ulp, tiny_err = _ulps(_apply_fast(v), v, dtype)
    assert ulp <= max_ulp
    assert tiny_err <= 2 * np.finfo(dtype).smallest_subnormal
    special = _apply_fast(np.array([-np.inf, np.inf, np.nan, 1000.0], dtype))
    assert special[0] == 0.0 and special[1] == np.inf and np.isnan(special[2]) and special[3] == np.inf


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_like_keeps_precision(dtype):
    assert _one(np.array([2.0], dtype)) == 3.0
    assert _one.nopython_signatures[-1].return_type.bitwidth == np.dtype(dtype).itemsize * 8
