"""Stress family: ops.stress (Kruskal stress-1 and the scale-normalised variant) on every backend against
SciPy's pdist in float64, closed-form gradients (METHODS.md C.3.2), gradcheck, the zero-distance
convention (C.3.3), a brute-force scale search (C.3.5), close points in float32, bad input and torch.compile.

Triton runs under its interpreter (16 x 16 tiles): its problems are small but still cross tiles and ragged
edges. Numba's row blocks are 256 points against ~4 MB column chunks: its larger problems cross row blocks with a
partial last block, and the tests with ``small_numba_blocks`` shrink both (32-row blocks, 24-48-column chunks) so
that off-diagonal chunks, ragged chunks, close and coincident pairs in every kind of chunk are exercised.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar
from scipy.spatial.distance import pdist, squareform

import multialign as ma
from multialign import ops
from multialign.testing import assert_close, check_gradients, device_for, make_tensor

# (batch, N, D1, D2): the smallest problem, primes, tile edges +- 1, one feature, batches
SHAPES = [((), 2, 3, 1), ((), 7, 5, 2), ((2,), 17, 4, 3), ((3,), 33, 17, 2), ((2, 2), 5, 1, 16)]
SHAPES_FAST = SHAPES + [((), 131, 37, 5), ((2,), 300, 64, 17), ((), 641, 3, 2)]   # 2, 3 (bye), 6 blocks of 128


def _shapes(backend):
    return SHAPES if backend == "triton" else SHAPES_FAST


def _np(t):
    return t.detach().cpu().double().numpy()


def _scipy_stress(X, Y, normalized=False):
    """Kruskal stress-1 of one problem from scipy's pdist (float64); normalized: the closed-form scale."""
    dl, dd = pdist(X), pdist(Y)
    if normalized and dd @ dd > 0:
        dd = (dl @ dd) / (dd @ dd) * dd
    return np.sqrt(((dl - dd) ** 2).sum() / (dl @ dl))


def _scipy_batch(x, y, normalized=False):
    X, Y = _np(x), _np(y)
    batch = np.broadcast_shapes(X.shape[:-2], Y.shape[:-2])
    X = np.broadcast_to(X, batch + X.shape[-2:])
    Y = np.broadcast_to(Y, batch + Y.shape[-2:])
    out = np.empty(batch)
    for idx in np.ndindex(*batch):
        out[idx] = _scipy_stress(X[idx], Y[idx], normalized)
    return torch.from_numpy(out)


def _closed_form_grads(X, Y):
    """dStress/dX and dStress/dY of one problem (METHODS.md C.3.2, with the delta-terms on the x side);
    a zero distance contributes the minimum-norm subgradient (ratio 0)."""
    dl, dd = squareform(pdist(X)), squareform(pdist(Y))
    iu = np.triu_indices(len(X), 1)
    T = (dl[iu] ** 2).sum()
    S = np.sqrt(((dl[iu] - dd[iu]) ** 2).sum() / T)
    with np.errstate(divide="ignore", invalid="ignore"):
        ry = np.where(dd > 0, dl / dd, 0.0)
        rx = np.where(dl > 0, dd / dl, 0.0)
    wy = 1.0 - ry
    wx = (1.0 - S * S) - rx
    np.fill_diagonal(wy, 0.0)
    np.fill_diagonal(wx, 0.0)
    gy = (wy.sum(1)[:, None] * Y - wy @ Y) / (S * T)
    gx = (wx.sum(1)[:, None] * X - wx @ X) / (S * T)
    return gx, gy


def _fast(backend):
    """gradcheck's fast mode (a random projection of the Jacobian) under the slow interpreter."""
    return backend == "triton"


# ------------------------------------------------------------------------------------------ forward


def test_stress_matches_scipy_float64(backend):
    dev = device_for(backend)
    for k, (batch, N, D1, D2) in enumerate(_shapes(backend)):
        x = make_tensor(*batch, N, D1, device=dev, seed=k, noncontiguous=k % 2 == 1)
        y = make_tensor(*batch, N, D2, device=dev, seed=100 + k, noncontiguous=k % 3 == 0)
        for normalized in (False, True):
            got = ops.stress(x, y, normalized=normalized, backend=backend)
            assert got.shape == batch and got.dtype == torch.float64
            # normalized: R - E^2 / Q cancels where the scaled fit is exact (N = 2): error ~ sqrt(u) there
            assert_close(got.cpu(), _scipy_batch(x, y, normalized), rtol=1e-10, atol=1e-7 if normalized else 1e-12,
                         name=f"stress normalized={normalized} {batch} N={N} D1={D1} D2={D2}")


def test_batch_broadcast(backend):
    dev = device_for(backend)
    x = make_tensor(3, 1, 9, 4, device=dev, seed=1)
    y = make_tensor(2, 9, 3, device=dev, seed=2)        # broadcasts against x's batch (3, 1)
    got = ops.stress(x, y, backend=backend)
    assert got.shape == (3, 2)
    assert_close(got.cpu(), _scipy_batch(x, y), rtol=1e-10, atol=1e-12)


def test_normalized_matches_brute_force_scale_search(backend):
    dev = device_for(backend)
    x = make_tensor(19, 6, device=dev, seed=3)
    y = 0.37 * make_tensor(19, 2, device=dev, seed=4)
    dl, dd = pdist(_np(x)), pdist(_np(y))
    res = minimize_scalar(lambda s: np.sqrt(((dl - s * dd) ** 2).sum() / (dl @ dl)), bounds=(0.0, 100.0),
                          method="bounded", options={"xatol": 1e-12})
    got = float(ops.stress(x, y, normalized=True, backend=backend))
    assert abs(got - res.fun) < 1e-9
    assert got <= float(ops.stress(x, y, backend=backend)) + 1e-15
    # scale-free in y, and the plain stress at the optimal scale
    assert abs(float(ops.stress(x, 5.5 * y, normalized=True, backend=backend)) - got) < 1e-12
    assert abs(float(ops.stress(x, res.x * y, backend=backend)) - got) < 1e-9


def test_stress_of_identical_configurations_is_zero(backend):
    dev = device_for(backend)
    x = make_tensor(2, 21, 5, device=dev, seed=5, requires_grad=True)
    s = ops.stress(x, x * 1.0, backend=backend)
    assert float(s.detach().abs().max()) < 1e-7
    (g,) = torch.autograd.grad(s.sum(), x)
    assert torch.isfinite(g).all()


def test_degenerate_configurations(backend):
    dev = device_for(backend)
    x = make_tensor(7, 3, device=dev, seed=6)
    y0 = torch.zeros(7, 2, dtype=torch.float64, device=dev, requires_grad=True)
    # every projected point coincides: d = 0, stress = 1, gradient 0 (each pair's subgradient is 0)
    s = ops.stress(x, y0, backend=backend)
    assert abs(float(s.detach()) - 1.0) < 1e-12
    (g,) = torch.autograd.grad(s, y0)
    assert torch.equal(g, torch.zeros_like(g))
    assert abs(float(ops.stress(x, y0.detach(), normalized=True, backend=backend)) - 1.0) < 1e-12
    # every original point coincides: T = 0, the formula's inf (NaN when R = 0 too)
    x0 = torch.ones(7, 3, dtype=torch.float64, device=dev)
    assert float(ops.stress(x0, make_tensor(7, 2, device=dev, seed=7), backend=backend)) == float("inf")
    assert torch.isnan(ops.stress(x0, y0.detach(), backend=backend))


def test_close_points_in_float32(backend):
    """Points 1e-3 apart at norm 100: ||a||^2 + ||b||^2 - 2<a, b> alone loses every digit in float32."""
    dev = device_for(backend)
    g = torch.Generator().manual_seed(3)
    n = 20
    bx = torch.randn(1, 16, generator=g, dtype=torch.float64)
    by = torch.randn(1, 3, generator=g, dtype=torch.float64)
    x = 100 * bx / bx.norm() + 1e-3 * torch.randn(n, 16, generator=g, dtype=torch.float64)
    y = 100 * by / by.norm() + 1e-3 * torch.randn(n, 3, generator=g, dtype=torch.float64)
    # a second, far cluster: centring alone cannot fix it
    x = torch.cat([x, -x[:5]]).float()
    y = torch.cat([y, -y[:5]]).float()
    x32, y32 = x.to(dev).requires_grad_(), y.to(dev).requires_grad_()
    x64, y64 = x.double().requires_grad_(), y.double().requires_grad_()
    s32 = ops.stress(x32, y32, backend=backend)
    s64 = ops.stress(x64, y64, backend="torch")
    assert s32.dtype == torch.float32
    # the far pairs (distances ~200, float32-rounded) make the stress small (~2e-5): 1e-3 relative
    assert abs(float(s32.detach()) - _scipy_stress(_np(x), _np(y))) < 1e-3 * float(s64.detach())
    # the close pairs alone: the far cluster would otherwise dominate both sums
    sc = ops.stress(x32[:n], y32[:n], backend=backend)
    want = _scipy_stress(_np(x[:n]), _np(y[:n]))
    assert abs(float(sc.detach()) - want) < 1e-4 * want
    g32 = torch.autograd.grad(sc, (x32, y32))
    g64 = torch.autograd.grad(ops.stress(x64[:n], y64[:n], backend="torch"), (x64, y64))
    for a, b, name in zip(g32, g64, "xy"):
        scale = float(b.abs().max())
        err = float((a.cpu().double() - b).abs().max())
        assert err < 1e-3 * scale, f"close-point gradient {name}: {err:.3e} vs max {scale:.3e}"


def test_low_precision_inputs(backend):
    dev = device_for(backend)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        if backend == "torch" and dtype != torch.float32:
            continue    # the reference computes in float32 too; checked through the float32 row
        x = make_tensor(2, 23, 8, device=dev, dtype=dtype, seed=8)
        y = make_tensor(2, 23, 3, device=dev, dtype=dtype, seed=9)
        got = ops.stress(x, y, backend=backend)
        assert got.dtype == dtype
        want = _scipy_batch(x, y)        # the same (rounded) inputs in float64
        assert_close(got.float().cpu(), want, dtype=dtype if dtype != torch.float32 else torch.float32,
                     rtol=1e-5 if dtype == torch.float32 else None)


def test_numba_larger_float32_against_float64():
    x = make_tensor(2, 389, 64, dtype=torch.float32, seed=10, requires_grad=True)
    y = make_tensor(2, 389, 16, dtype=torch.float32, seed=11, requires_grad=True)
    s = ops.stress(x, y, backend="numba")
    assert_close(s, _scipy_batch(x, y), dtype=torch.float32, rtol=1e-5)
    g = torch.autograd.grad(s.sum(), (x, y))
    for b in range(2):
        gx, gy = _closed_form_grads(_np(x[b]), _np(y[b]))
        for a, want in ((g[0][b], gx), (g[1][b], gy)):
            err = float((a.double() - torch.from_numpy(want)).abs().max())
            assert err < 2e-5 * float(np.abs(want).max()), err


def test_numba_aligned_y_is_read_in_place():
    """y whose row count is a multiple of the block (128) and feature count of the panel width (16) is read and
    its gradient accumulated in place (no padded copies): same values and gradients as a strided y, y intact."""
    x = make_tensor(2, 256, 7, dtype=torch.float64, seed=12, requires_grad=True)
    y = make_tensor(2, 256, 16, dtype=torch.float64, seed=13, requires_grad=True)
    y0 = y.detach().clone()
    s = ops.stress(x, y, backend="numba")
    assert_close(s, _scipy_batch(x, y), dtype=torch.float64)
    g = torch.autograd.grad(s.sum(), (x, y))
    assert torch.equal(y.detach(), y0)
    for b in range(2):
        gx, gy = _closed_form_grads(_np(x[b]), _np(y[b]))
        assert_close(g[0][b], torch.from_numpy(gx), rtol=1e-9, atol=1e-12, name="grad x")
        assert_close(g[1][b], torch.from_numpy(gy), rtol=1e-9, atol=1e-12, name="grad y")
    ys = make_tensor(2, 256, 16, dtype=torch.float64, seed=13, noncontiguous=True).requires_grad_()
    assert torch.equal(ys.detach(), y0)
    (gys,) = torch.autograd.grad(ops.stress(x.detach(), ys, backend="numba").sum(), (ys,))
    assert_close(gys, g[1], rtol=1e-12, atol=1e-14)


@pytest.fixture(params=["diag-whole", "diag-split"])
def small_numba_blocks(monkeypatch, request):
    """Numba stress with 32-row blocks and ~48-column chunks (instead of 1024 x ~1024), I-side gradient products
    in 8-row pieces; "diag-split": the diagonal 32-squares of a single problem split into 16- and
    8-rectangles and 8-squares (DIAG_MIN = 8)."""
    from multialign.kernels.numba import _stress_blas

    monkeypatch.setattr(_stress_blas, "ELEMS", 32 * 48)
    monkeypatch.setattr(_stress_blas, "BI_MAX", 32)
    monkeypatch.setattr(_stress_blas, "BI_BATCH", 32)
    monkeypatch.setattr(_stress_blas, "GI_ROWS", 8)    # I-side gradient products in 8-row pieces where they divide
    if request.param == "diag-split":
        monkeypatch.setattr(_stress_blas, "DIAG_MIN", 8)
        assert _stress_blas._diag_sizes(1, 101, 32) == [16, 8]
        assert _stress_blas.block_sizes(1, 27) == (16, 96)      # N < BI_MAX: a halved block whose square splits
        assert _stress_blas._diag_sizes(1, 27, 16) == [8]
    else:
        assert _stress_blas._diag_sizes(1, 101, 32) == []
        assert _stress_blas.block_sizes(1, 27) == (27, 56)
    assert _stress_blas._diag_sizes(2, 101, 27) == []
    assert _stress_blas.block_sizes(1, 101) == (32, 48)
    assert _stress_blas.block_sizes(2, 101) == (27, 28)


@pytest.mark.parametrize("batch", [(), (2,)])
def test_numba_small_blocks_cross_chunks(small_numba_blocks, batch):
    """Odd N over many row blocks and column chunks (diagonal, off-diagonal and ragged ones), strided inputs:
    value, both gradients and the y-only gradient against SciPy and the closed form (float64)."""
    x = make_tensor(*batch, 101, 7, seed=60, noncontiguous=True, requires_grad=True)
    y = make_tensor(*batch, 101, 5, seed=61, noncontiguous=True, requires_grad=True)
    s = ops.stress(x, y, backend="numba")
    assert_close(s, _scipy_batch(x, y), dtype=torch.float64)
    gx, gy = torch.autograd.grad(s.sum(), (x, y))
    (gy1,) = torch.autograd.grad(ops.stress(x.detach(), y, backend="numba").sum(), (y,))
    X, Y = _np(x).reshape(-1, 101, 7), _np(y).reshape(-1, 101, 5)
    for b in range(X.shape[0]):
        wx, wy = _closed_form_grads(X[b], Y[b])
        assert_close(gx.reshape(-1, 101, 7)[b], torch.from_numpy(wx), rtol=1e-9, atol=1e-12, name="grad x")
        assert_close(gy.reshape(-1, 101, 5)[b], torch.from_numpy(wy), rtol=1e-9, atol=1e-12, name="grad y")
    assert_close(gy1, gy, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("n, d1, d2, seed", [(230, 6, 3, 62), (27, 5, 4, 64)])
def test_numba_small_blocks_value_and_gradients(small_numba_blocks, n, d1, d2, seed):
    """Against SciPy and the closed-form gradients (float64), with small blocks:

    * N = 230 over 32-row blocks: 7 diagonal squares, more 16-rectangles than one workspace holds (several
      batches per size when split), a ragged last row block;
    * N = 27 < BI_MAX = 32: one 27-point block ("diag-whole"), or a halved 16-point block whose diagonal
      square is split plus a ragged 11-point one ("diag-split")."""
    x = make_tensor(n, d1, dtype=torch.float64, seed=seed, requires_grad=True)
    y = make_tensor(n, d2, dtype=torch.float64, seed=seed + 1, requires_grad=True)
    s = ops.stress(x, y, backend="numba")
    assert_close(s, torch.tensor(_scipy_stress(_np(x), _np(y)), dtype=torch.float64), dtype=torch.float64)
    gx, gy = torch.autograd.grad(s, (x, y))
    wx, wy = _closed_form_grads(_np(x), _np(y))
    assert_close(gx, torch.from_numpy(wx), rtol=1e-9, atol=1e-12, name="grad x")
    assert_close(gy, torch.from_numpy(wy), rtol=1e-9, atol=1e-12, name="grad y")


def test_numba_small_blocks_close_and_coincident_pairs_float32(small_numba_blocks):
    """Close pairs (1e-3 apart at norm 100) and coincident pairs spread over many chunks in float32: the exact
    recompute and explicit-difference gradient terms on both sides of off-diagonal chunks; gradients
    with and without the x side."""
    g = torch.Generator().manual_seed(7)
    n = 90
    bx = torch.randn(1, 16, generator=g, dtype=torch.float64)
    by = torch.randn(1, 3, generator=g, dtype=torch.float64)
    x = 100 * bx / bx.norm() + 1e-3 * torch.randn(n, 16, generator=g, dtype=torch.float64)
    y = 100 * by / by.norm() + 1e-3 * torch.randn(n, 3, generator=g, dtype=torch.float64)
    y[70] = y[3]                # coincident pairs in a far chunk and inside one block
    y[41] = y[40]
    x[88] = x[5]
    x, y = x.float(), y.float()
    x32, y32 = x.clone().requires_grad_(), y.clone().requires_grad_()
    x64, y64 = x.double().requires_grad_(), y.double().requires_grad_()
    s32 = ops.stress(x32, y32, backend="numba")
    want = _scipy_stress(_np(x), _np(y))
    assert abs(float(s32.detach()) - want) < 1e-4 * want
    g32 = torch.autograd.grad(s32, (x32, y32))
    g64 = torch.autograd.grad(ops.stress(x64, y64, backend="torch"), (x64, y64))
    (gy_only,) = torch.autograd.grad(ops.stress(x32.detach(), y32, backend="numba"), (y32,))
    for a, b, name in zip((*g32, gy_only), (*g64, g64[1]), ("x", "y", "y only")):
        assert torch.isfinite(a).all()
        scale = float(b.abs().max())
        err = float((a.double() - b).abs().max())
        assert err < 1e-3 * scale, f"close-point gradient {name}: {err:.3e} vs max {scale:.3e}"


def test_numba_passive_pool_leaves_the_environment_alone():
    """The Numba path starts Numba's OpenMP pool passive (see kernels/numba/_pool.passive_numba_pool)
    without leaving OMP_WAIT_POLICY set for the process or its children."""
    import os

    had = os.environ.get("OMP_WAIT_POLICY")
    ops.stress(make_tensor(9, 3, seed=70), make_tensor(9, 2, seed=71), backend="numba")
    assert os.environ.get("OMP_WAIT_POLICY") == had


# ------------------------------------------------------------------------------------------ gradients


def test_gradients_match_closed_form(backend):
    dev = device_for(backend)
    sizes = [(2, 3, 1), (13, 4, 3), (37, 5, 2)] if backend == "triton" else [(2, 3, 1), (13, 4, 3), (131, 9, 2),
                                                                             (300, 33, 17)]
    for k, (N, D1, D2) in enumerate(sizes):
        x = make_tensor(N, D1, device=dev, seed=20 + k, requires_grad=True)
        y = make_tensor(N, D2, device=dev, seed=40 + k, requires_grad=True)
        gx, gy = torch.autograd.grad(ops.stress(x, y, backend=backend), (x, y))
        wx, wy = _closed_form_grads(_np(x), _np(y))
        assert_close(gx.cpu(), torch.from_numpy(wx), rtol=1e-9, atol=1e-12, name=f"grad x N={N}")
        assert_close(gy.cpu(), torch.from_numpy(wy), rtol=1e-9, atol=1e-12, name=f"grad y N={N}")
        # only y differentiated (the x accumulators are not computed): the same gradient
        (gy1,) = torch.autograd.grad(ops.stress(x.detach(), y, backend=backend), (y,))
        assert_close(gy1, gy)


def test_coincident_points_give_the_minimum_norm_subgradient(backend):
    dev = device_for(backend)
    X = _np(make_tensor(9, 4, seed=12))
    Y = _np(make_tensor(9, 2, seed=13))
    Y[1] = Y[0]                 # a coincident pair in the projection
    Y[4] = Y[5] = Y[6]          # three coincident points
    X[8] = X[7]                 # and a coincident pair in the original space
    x = torch.from_numpy(X).to(dev).requires_grad_()
    y = torch.from_numpy(Y).to(dev).requires_grad_()
    s = ops.stress(x, y, backend=backend)
    assert abs(float(s.detach()) - _scipy_stress(X, Y)) < 1e-12
    gx, gy = torch.autograd.grad(s, (x, y))
    assert torch.isfinite(gx).all() and torch.isfinite(gy).all()
    wx, wy = _closed_form_grads(X, Y)
    assert_close(gx.cpu(), torch.from_numpy(wx), rtol=1e-9, atol=1e-12, name="grad x")
    assert_close(gy.cpu(), torch.from_numpy(wy), rtol=1e-9, atol=1e-12, name="grad y")


def test_gradcheck(backend):
    """The full Jacobian on the smallest batched problem; gradcheck's fast mode (a random projection) elsewhere
    -- the closed-form test above checks every entry at larger sizes."""
    dev = device_for(backend)
    shapes = [((2,), 5, 3, 2)] if backend == "triton" else [((2,), 5, 3, 2), ((), 17, 4, 3)]
    for k, (batch, N, D1, D2) in enumerate(shapes):
        x = make_tensor(*batch, N, D1, device=dev, seed=14, requires_grad=True)
        y = make_tensor(*batch, N, D2, device=dev, seed=15, requires_grad=True)
        for normalized in (False, True):
            check_gradients(lambda a, b: ops.stress(a, b, normalized=normalized, backend=backend), [x, y],
                            fast_mode=_fast(backend) or normalized or k > 0)
    if backend == "numba":      # several blocks of 128, the bye, a ragged last block: fast mode
        x = make_tensor(261, 3, seed=16, requires_grad=True)
        y = make_tensor(261, 2, seed=17, requires_grad=True)
        check_gradients(lambda a, b: ops.stress(a, b, backend=backend), [x, y], fast_mode=True)


def test_backward_with_upstream_from_later_layers(backend):
    """Gradients flowing in from further ops, through a broadcast batch, agree with the reference."""
    dev = device_for(backend)
    x = make_tensor(3, 1, 11, 4, device=dev, seed=18, requires_grad=True)
    y = make_tensor(2, 11, 3, device=dev, seed=19, requires_grad=True)
    W = make_tensor(3, 2, device=dev, seed=20)

    def loss(be):
        s = ops.stress(x, y, backend=be)
        return (torch.tanh(s * W) ** 2).sum() + ops.stress(x, y, normalized=True, backend=be).pow(3).sum()

    g1 = torch.autograd.grad(loss(backend), (x, y))
    g2 = torch.autograd.grad(loss("torch"), (x, y))
    for a, b in zip(g1, g2):
        assert_close(a, b)


# ------------------------------------------------------------------------------------------ torch.compile


def test_torch_compile_fullgraph():
    def f(x, y):
        return ops.stress(x, y) + ops.stress(x, y, normalized=True) ** 2

    x = make_tensor(2, 9, 3, seed=21, requires_grad=True)
    y = make_tensor(2, 9, 2, seed=22, requires_grad=True)
    cf = torch.compile(f, fullgraph=True, backend="aot_eager")
    out_c = cf(x, y)
    g_c = torch.autograd.grad(out_c.sum(), (x, y))
    out_e = f(x, y)
    g_e = torch.autograd.grad(out_e.sum(), (x, y))
    assert_close(out_c, out_e)
    for a, b in zip(g_c, g_e):
        assert_close(a, b)


def test_custom_op_passes_opcheck():
    x, y = make_tensor(2, 5, 3, seed=23), make_tensor(2, 5, 2, seed=24)
    torch.library.opcheck(torch.ops.multialign.stress_terms.default, (x, y, False, False, "numba"))
    torch.library.opcheck(torch.ops.multialign.stress_terms.default,
                          (x.requires_grad_(), y.requires_grad_(), True, True, "numba"))


# ------------------------------------------------------------------------------------------ bad input


def test_bad_inputs_have_clear_errors():
    x, y = make_tensor(5, 3), make_tensor(5, 2)
    with pytest.raises(ValueError, match=r"same number of points N.*N=5.*N=4"):
        ops.stress(x, make_tensor(4, 2))
    with pytest.raises(ValueError, match=r"at least 2 points \(N >= 2\).*N=1"):
        ops.stress(make_tensor(1, 3), make_tensor(1, 2))
    with pytest.raises(ValueError, match=r"x must have at least 2 dimensions.*shape \(5,\)"):
        ops.stress(make_tensor(5), y)
    with pytest.raises(ValueError, match=r"y must have at least 2 dimensions"):
        ops.stress(x, make_tensor(5))
    with pytest.raises(ValueError, match=r"at least one feature"):
        ops.stress(x, torch.empty(5, 0, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"y has dtype float32 but x has float64"):
        ops.stress(x, y.float())
    with pytest.raises(ValueError, match=r"y is on meta but x is on cpu"):
        ops.stress(x, torch.empty(5, 2, dtype=torch.float64, device="meta"))
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor"):
        ops.stress(np.zeros((5, 3)), y)
    with pytest.raises(TypeError, match=r"floating dtype"):
        ops.stress(torch.zeros(5, 3, dtype=torch.int64), y)
    with pytest.raises(ValueError, match=r"batch dimensions do not broadcast"):
        ops.stress(make_tensor(2, 5, 3), make_tensor(3, 5, 2))
    with pytest.raises(TypeError, match=r"normalized must be a bool"):
        ops.stress(x, y, normalized="yes")
    with pytest.raises(ValueError, match=r"backend must be one of"):
        ops.stress(x, y, backend="cuda")
    with ma.validation(True):
        bad = y.clone()
        bad[2, 1] = float("nan")
        with pytest.raises(ValueError, match=r"y has 1 non-finite entries"):
            ops.stress(x, bad)
