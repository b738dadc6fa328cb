"""The vectorisable elementary functions of the Numba kernels (kernels/numba/_math.py) against float64 numpy."""
import numpy as np
import pytest
from numba import njit

from multialign.kernels.numba._math import exp_nonpos, fast_exp, one_like


@njit(cache=False)
def _apply_fast(a):
    out = np.empty_like(a)
    for i in range(a.shape[0]):
        out[i] = fast_exp(a[i])
    return out


@njit(cache=False)
def _apply_nonpos(a):
    out = np.empty_like(a)
    for i in range(a.shape[0]):
        out[i] = exp_nonpos(a[i])
    return out


@njit(cache=False)
def _one(a):
    return one_like(a[0]) + a[0]


def _ulps(got, v, dtype):
    ref = np.exp(v.astype(np.float64))
    normal = ref > np.finfo(dtype).tiny
    err = np.abs(got.astype(np.float64) - ref)
    ulp = np.spacing(ref.astype(dtype)).astype(np.float64)
    return (err[normal] / ulp[normal]).max(), err[~normal].max(initial=0.0)


@pytest.mark.parametrize("dtype, lo, max_ulp", [(np.float32, -100.0, 3.0), (np.float64, -745.0, 2.0)])
def test_exp_nonpos_accuracy(dtype, lo, max_ulp):
    rng = np.random.default_rng(0)
    v = np.concatenate([np.linspace(lo, 0.0, 200_003), -rng.exponential(2.0, 100_000), [0.0, -0.0]]).astype(dtype)
    ulp, tiny_err = _ulps(_apply_nonpos(v), v, dtype)
    assert ulp <= max_ulp
    assert tiny_err <= np.finfo(dtype).tiny        # results below the normal range are 0 or subnormal
    assert _apply_nonpos(np.array([np.nan], dtype))[0] != _apply_nonpos(np.array([np.nan], dtype))[0]
    assert _apply_nonpos(np.array([-np.inf], dtype))[0] == 0.0


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
