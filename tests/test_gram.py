"""Gram family: ops.gram, ops.gram_matvec, ops.mmd2 on every backend against the reference,
scikit-learn, closed forms and gradcheck."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import pairwise as skp

import multialign as ma
from multialign import ops
from multialign.kernels.reference import gram as ref
from multialign.testing import assert_close, check_gradients, device_for, make_tensor

KERNELS = ["rbf", "laplacian", "linear", "polynomial", "cosine"]
# (batch, N, M, D): 1, primes, non-powers of two, tile edges +- 1 (Numba tiles: 4 x 16; interpreter: 16 x 16)
SHAPES = [((), 1, 1, 1), ((), 7, 13, 5), ((2,), 17, 16, 3), ((3,), 33, 31, 17), ((2, 2), 5, 37, 2)]
SHAPES_FAST = SHAPES + [((), 65, 100, 64), ((1,), 129, 47, 33)]  # more tiles, not for the interpreter


def _shapes(backend):
    return SHAPES if backend == "triton" else SHAPES_FAST


def _ref_gram(x, y, kernel, gamma=None, degree=3, coef0=1.0):
    return ops.gram(x, y, kernel=kernel, gamma=gamma, degree=degree, coef0=coef0, backend="torch")


# ------------------------------------------------------------------------------------------ forward


@pytest.mark.parametrize("kernel", KERNELS)
def test_gram_matches_reference_float64(backend, kernel):
    dev = device_for(backend)
    for k, (batch, N, M, D) in enumerate(_shapes(backend)):
        x = make_tensor(*batch, N, D, device=dev, noncontiguous=k % 2 == 1)
        y = make_tensor(*batch, M, D, device=dev, noncontiguous=k % 2 == 0)
        got = ops.gram(x, y, kernel=kernel, backend=backend)
        assert got.shape == (*batch, N, M) and got.is_contiguous()
        assert_close(got, _ref_gram(x, y, kernel), name=f"gram {kernel} {batch} {N}x{M}x{D}")
        sym = ops.gram(x, kernel=kernel, backend=backend)
        assert_close(sym, _ref_gram(x, None, kernel), name=f"gram(x) {kernel} {batch} {N}x{D}")
        if backend == "numba":  # upper-triangle tiles stored twice: exactly symmetric
            assert torch.equal(sym, sym.transpose(-1, -2))


@pytest.mark.parametrize("kernel", ["rbf", "laplacian", "polynomial"])
def test_gram_parameters_and_batch_broadcast(backend, kernel):
    dev = device_for(backend)
    x = make_tensor(3, 1, 9, 4, device=dev)
    y = make_tensor(2, 11, 4, device=dev)          # broadcasts against x's batch (3, 1)
    gamma = torch.tensor([0.3, 1.7], dtype=torch.float64, device=dev)  # one per problem of the last batch dim
    got = ops.gram(x, y, kernel=kernel, gamma=gamma, degree=2, coef0=0.5, backend=backend)
    assert got.shape == (3, 2, 9, 11)
    for i in range(3):
        for j in range(2):
            want = _ref_gram(x[i, 0], y[j], kernel, gamma=float(gamma[j]), degree=2, coef0=0.5)
            assert_close(got[i, j], want, name=f"problem {i},{j}")


@pytest.mark.parametrize("kernel", KERNELS)
def test_gram_matches_sklearn(kernel):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(23, 6))
    Y = rng.normal(size=(19, 6))
    X[3] = 0.0  # a zero row: cosine gives 0 there, as in scikit-learn
    funcs = {"rbf": skp.rbf_kernel, "laplacian": skp.laplacian_kernel, "linear": skp.linear_kernel,
             "polynomial": skp.polynomial_kernel, "cosine": skp.cosine_similarity}
    for gamma in (None, 0.37):
        kw = {} if kernel in ("linear", "cosine") else {"gamma": gamma}
        if kernel == "polynomial":
            kw.update(degree=2, coef0=0.3)
        want = funcs[kernel](X, Y, **kw)
        for backend in ma.testing.available_backends():
            got = ops.gram(torch.from_numpy(X), torch.from_numpy(Y), kernel=kernel, backend=backend,
                           **({} if kernel in ("linear", "cosine") else {"gamma": gamma}),
                           **({"degree": 2, "coef0": 0.3} if kernel == "polynomial" else {}))
            assert_close(got, torch.from_numpy(want), rtol=1e-10, atol=1e-12, name=f"{kernel} {backend} gamma={gamma}")


def test_median_heuristic():
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(30, 3)), rng.normal(size=(20, 3)) + 1.0
    P = np.vstack([X, Y])
    d = np.sqrt(((P[:, None] - P[None]) ** 2).sum(-1))[np.triu_indices(50, 1)]
    gamma = 1.0 / (2.0 * np.median(d) ** 2)
    got = ops.gram(torch.from_numpy(X), torch.from_numpy(Y), gamma="median", backend="torch")
    assert_close(got, torch.from_numpy(skp.rbf_kernel(X, Y, gamma=gamma)), rtol=1e-12, atol=1e-14)
    # per problem of a batch, and detached
    xb = torch.from_numpy(np.stack([X, 3 * X])).requires_grad_()
    K = ops.gram(xb, gamma="median", backend="numba")
    assert_close(K[0], K[1], rtol=1e-10, atol=1e-12)   # scale-free: gamma follows the data's scale
    K.sum().backward()
    assert torch.isfinite(xb.grad).all()


def test_close_points_keep_their_distance_in_float32(backend):
    """Points 1e-3 apart at norm 100: ||x||^2 + ||y||^2 - 2<x, y> alone would lose every digit in float32."""
    _check_close_points(backend)


def test_numba_close_points_across_forward_blocks(monkeypatch):
    """The same with the Numba forward's GEMM scratch cut to 3-row blocks (the last one ragged): the exact
    recompute of a close pair must find its own rows in every block."""
    from multialign.kernels.numba import gram as ng

    monkeypatch.setattr(ng, "FWD_SCRATCH_ELEMS", 3 * 29)
    _check_close_points("numba")


def _check_close_points(backend):
    dev = device_for(backend)
    g = torch.Generator().manual_seed(3)
    D = 16
    base = torch.randn(1, D, generator=g, dtype=torch.float64)
    base = 100 * base / base.norm()
    x64 = base + 1e-3 * torch.randn(20, D, generator=g, dtype=torch.float64)
    y64 = base + 1e-3 * torch.randn(24, D, generator=g, dtype=torch.float64)
    # a second cluster far away, so that centring alone cannot fix it
    x64 = torch.cat([x64, -x64[:5]])
    y64 = torch.cat([y64, -y64[:5]])
    x32, y32 = x64.float(), y64.float()
    gamma = 1.0 / 4e-6  # gamma * d2 ~ 1 for the close pairs: K is sensitive to their distances
    want = _ref_gram(x32.double(), y32.double(), "rbf", gamma=gamma)
    got = ops.gram(x32.to(dev), y32.to(dev), kernel="rbf", gamma=gamma, backend=backend)
    assert_close(got.cpu(), want, dtype=torch.float32, atol=2e-6, rtol=1e-5, name="close-point rbf")
    mv = ops.gram_matvec(x32.to(dev), y32.to(dev), torch.ones(len(y32), device=dev), gamma=gamma, backend=backend)
    assert_close(mv.cpu(), want.sum(1), dtype=torch.float32, rtol=1e-5, atol=1e-5, name="close-point matvec")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_low_precision_inputs(backend, dtype):
    if backend == "torch" and dtype != torch.float32:
        pytest.skip("the reference computes in the input dtype; only float32 is compared for it")
    dev = device_for(backend)
    x = make_tensor(2, 19, 8, device=dev, dtype=dtype, scale=0.5)
    y = make_tensor(2, 21, 8, device=dev, dtype=dtype, scale=0.5)
    got = ops.gram(x, y, backend=backend)
    assert got.dtype == dtype
    want = _ref_gram(x.double(), y.double(), "rbf")  # the same (rounded) inputs in float64
    assert_close(got, want, dtype=dtype)
    v = make_tensor(2, 21, 3, device=dev, dtype=dtype)
    mv = ops.gram_matvec(x, y, v, backend=backend)
    assert mv.dtype == dtype
    assert_close(mv, want @ v.double(), dtype=dtype, rtol=3e-2 if dtype != torch.float32 else 2e-5,
                 atol=5e-2 if dtype != torch.float32 else 2e-5)


def test_numba_larger_float32_against_float64_reference():
    x = make_tensor(2, 301, 64, dtype=torch.float32, scale=0.2)
    y = make_tensor(2, 257, 64, dtype=torch.float32, scale=0.2)
    want = _ref_gram(x.double(), y.double(), "rbf")
    assert_close(ops.gram(x, y, backend="numba"), want, dtype=torch.float32)
    v = make_tensor(2, 257, 5, dtype=torch.float32)
    assert_close(ops.gram_matvec(x, y, v, backend="numba"), want @ v.double(), dtype=torch.float32, rtol=1e-5,
                 atol=1e-4)


@pytest.mark.parametrize("kernel", ["rbf", "linear", "polynomial"])
def test_numba_gemm_blocks_with_ragged_edges(monkeypatch, kernel):
    """The GEMM-block paths of the Numba backend with blocks far smaller than the inputs: ragged row and
    column blocks, the diagonal blocks of K(x, x), float64 against the reference, forward and backward."""
    from multialign.kernels.numba import gram as ng

    monkeypatch.setattr(ng, "MATVEC_BLOCK_COLS", 7)
    monkeypatch.setattr(ng, "FWD_BLOCK_ELEMS", 2 * 5 * 7)    # 5-row blocks at B = 2
    monkeypatch.setattr(ng, "BWD_BLOCK_ELEMS", 2 * 16 * 19)
    monkeypatch.setattr(ng, "GRAM_BWD_BLOCK_ELEMS", 2 * 6 * 19)   # 6-row blocks of the gram backward
    monkeypatch.setattr(ng, "FWD_SCRATCH_ELEMS", 2 * 4 * 19)      # 4-row scratch blocks of the gram forward
    x = make_tensor(2, 37, 6, noncontiguous=True)
    y = make_tensor(2, 19, 6)
    v = make_tensor(2, 19, 3)
    vs = make_tensor(2, 37, 2)
    K = _ref_gram(x, y, kernel)
    assert_close(ops.gram(x, y, kernel=kernel, backend="numba"), K, name="gram blocks")
    assert_close(ops.gram_matvec(x, y, v, kernel=kernel, backend="numba"), K @ v, name="K@V blocks")
    assert_close(ops.gram_matvec(x, None, vs, kernel=kernel, backend="numba"), _ref_gram(x, None, kernel) @ vs,
                 name="K(x,x)@V blocks")
    assert_close(ops.mmd2(x, y, kernel=kernel, backend="numba"), ops.mmd2(x, y, kernel=kernel, backend="torch"),
                 name="mmd2 blocks")
    xr, yr, vr = (t.clone().requires_grad_() for t in (x, y, v))
    got = torch.autograd.grad((ops.gram_matvec(xr, yr, vr, kernel=kernel, backend="numba") ** 2).sum(), (xr, yr, vr))
    want = torch.autograd.grad((ops.gram_matvec(xr, yr, vr, kernel=kernel, backend="torch") ** 2).sum(), (xr, yr, vr))
    for g, w, n in zip(got, want, "xyv"):
        assert_close(g, w, name=f"grad {n} blocks")
    W = make_tensor(2, 37, 19)
    got = torch.autograd.grad((ops.gram(xr, yr, kernel=kernel, backend="numba") * W).sum(), (xr, yr))
    want = torch.autograd.grad((ops.gram(xr, yr, kernel=kernel, backend="torch") * W).sum(), (xr, yr))
    for g, w, n in zip(got, want, "xy"):
        assert_close(g, w, name=f"gram grad {n} blocks")
    Ws = make_tensor(2, 37, 37)
    got = torch.autograd.grad((ops.gram(xr, kernel=kernel, backend="numba") * Ws).sum(), xr)[0]
    want = torch.autograd.grad((ops.gram(xr, kernel=kernel, backend="torch") * Ws).sum(), xr)[0]
    assert_close(got, want, name="gram(x) grad blocks")


# ------------------------------------------------------------------------------------------ matvec, mmd


@pytest.mark.parametrize("kernel", KERNELS)
def test_gram_matvec_matches_dense(backend, kernel):
    dev = device_for(backend)
    for k, (batch, N, M, D) in enumerate(_shapes(backend)):
        x = make_tensor(*batch, N, D, device=dev, noncontiguous=k % 2 == 0)
        y = make_tensor(*batch, M, D, device=dev)
        v1 = make_tensor(*batch, M, device=dev)
        vC = make_tensor(*batch, M, 3, device=dev, noncontiguous=True)
        K = _ref_gram(x, y, kernel)
        assert_close(ops.gram_matvec(x, y, v1, kernel=kernel, backend=backend), (K @ v1.unsqueeze(-1)).squeeze(-1),
                     name=f"K@v {kernel} {N}x{M}x{D}")
        assert_close(ops.gram_matvec(x, y, vC, kernel=kernel, backend=backend), K @ vC,
                     name=f"K@V {kernel} {N}x{M}x{D}")
        vs = make_tensor(*batch, N, 2, device=dev)
        assert_close(ops.gram_matvec(x, None, vs, kernel=kernel, backend=backend), _ref_gram(x, None, kernel) @ vs,
                     name=f"K(x,x)@V {kernel}")


def _mmd_numpy(X, Y, kernel, gamma, unbiased):
    f = {"rbf": skp.rbf_kernel, "laplacian": skp.laplacian_kernel}[kernel]
    Kxx, Kyy, Kxy = f(X, X, gamma=gamma), f(Y, Y, gamma=gamma), f(X, Y, gamma=gamma)
    n, m = len(X), len(Y)
    if unbiased:
        return ((Kxx.sum() - np.trace(Kxx)) / (n * (n - 1)) + (Kyy.sum() - np.trace(Kyy)) / (m * (m - 1))
                - 2 * Kxy.mean())
    return Kxx.mean() + Kyy.mean() - 2 * Kxy.mean()


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("kernel", ["rbf", "laplacian"])
def test_mmd2_closed_form(backend, kernel, unbiased):
    dev = device_for(backend)
    rng = np.random.default_rng(5)
    X, Y = rng.normal(size=(2, 13, 3)), rng.normal(size=(2, 17, 3)) + 0.5
    got = ops.mmd2(torch.from_numpy(X).to(dev), torch.from_numpy(Y).to(dev), kernel=kernel, gamma=0.4,
                   unbiased=unbiased, backend=backend)
    assert got.shape == (2,)
    for b in range(2):
        assert abs(float(got[b]) - _mmd_numpy(X[b], Y[b], kernel, 0.4, unbiased)) < 1e-12


@pytest.mark.parametrize("kernel", ["linear", "polynomial", "cosine"])
def test_mmd2_dot_kernels_against_dense(backend, kernel):
    dev = device_for(backend)
    x, y = make_tensor(11, 4, device=dev), make_tensor(8, 4, device=dev)
    for unbiased in (False, True):
        Kxx, Kyy, Kxy = _ref_gram(x, x, kernel), _ref_gram(y, y, kernel), _ref_gram(x, y, kernel)
        if unbiased:
            want = ((Kxx.sum() - Kxx.trace()) / (11 * 10) + (Kyy.sum() - Kyy.trace()) / (8 * 7) - 2 * Kxy.mean())
        else:
            want = Kxx.mean() + Kyy.mean() - 2 * Kxy.mean()
        got = ops.mmd2(x, y, kernel=kernel, unbiased=unbiased, backend=backend)
        assert abs(float(got) - float(want)) < 1e-10 * max(1.0, abs(float(want)))


def test_mmd2_zero_for_identical_samples_and_positive_otherwise():
    x = make_tensor(40, 3)
    assert abs(float(ops.mmd2(x, x.clone()))) < 1e-12
    assert float(ops.mmd2(x, x + 0.5)) > 1e-3


# ------------------------------------------------------------------------------------------ gradients


def _grad_shapes(backend):
    # the interpreter evaluates every numerical-Jacobian column through Triton: one small batched shape
    # Numba also gets a shape with ragged 4 x 16 tiles in both directions
    return {"triton": [((2,), 5, 4, 3)], "torch": [((2,), 7, 5, 3)]}.get(backend, [((2,), 7, 5, 3), ((), 17, 19, 5)])


def _fast(backend):
    """gradcheck's fast mode (a random projection of the Jacobian) under the slow interpreter."""
    return backend == "triton"


@pytest.mark.parametrize("kernel", KERNELS)
def test_gram_gradcheck(backend, kernel):
    dev = device_for(backend)
    for batch, N, M, D in _grad_shapes(backend):
        x = make_tensor(*batch, N, D, device=dev, requires_grad=True)
        y = make_tensor(*batch, M, D, device=dev, requires_grad=True)
        gam = torch.tensor(0.7, dtype=torch.float64, device=dev, requires_grad=kernel not in ("linear", "cosine"))
        inputs = [x, y] + ([gam] if gam.requires_grad else [])
        check_gradients(lambda a, b, *g: ops.gram(a, b, kernel=kernel, gamma=g[0] if g else 0.7, degree=2,
                                                  backend=backend), inputs, fast_mode=_fast(backend))
        check_gradients(lambda a: ops.gram(a, kernel=kernel, gamma=0.7, degree=2, backend=backend), [x],
                        fast_mode=_fast(backend))


@pytest.mark.parametrize("kernel", KERNELS)
def test_gram_matvec_gradcheck(backend, kernel):
    dev = device_for(backend)
    for batch, N, M, D in _grad_shapes(backend):
        x = make_tensor(*batch, N, D, device=dev, requires_grad=True)
        y = make_tensor(*batch, M, D, device=dev, requires_grad=True)
        v = make_tensor(*batch, M, 2, device=dev, requires_grad=True)
        vs = make_tensor(*batch, N, device=dev, requires_grad=True)
        gam = torch.tensor(0.6, dtype=torch.float64, device=dev, requires_grad=kernel not in ("linear", "cosine"))
        extra = [gam] if gam.requires_grad else []
        check_gradients(lambda a, b, w, *g: ops.gram_matvec(a, b, w, kernel=kernel, gamma=g[0] if g else 0.6,
                                                            degree=2, backend=backend), [x, y, v] + extra,
                        fast_mode=_fast(backend))
        check_gradients(lambda a, w: ops.gram_matvec(a, None, w, kernel=kernel, gamma=0.6, degree=2,
                                                     backend=backend), [x, vs], fast_mode=_fast(backend))


def test_mmd2_gradcheck_and_closed_form(backend):
    dev = device_for(backend)
    x = make_tensor(6, 3, device=dev, requires_grad=True)
    y = make_tensor(5, 3, device=dev, requires_grad=True)
    for unbiased in (False, True):
        check_gradients(lambda a, b: ops.mmd2(a, b, gamma=0.5, unbiased=unbiased, backend=backend), [x, y],
                        fast_mode=_fast(backend))
    # METHODS.md C.1.4: grad_x MMD2_u = 2/(N(N-1)) sum_{j!=i} d1k(x_i,x_j) - 2/(NM) sum_j d1k(x_i,y_j),
    # d1k(a, b) = -2 gamma k(a, b) (a - b)
    g = 0.5
    (gx,) = torch.autograd.grad(ops.mmd2(x, y, gamma=g, unbiased=True, backend=backend), x)
    xd, yd = x.detach(), y.detach()
    kxx = torch.exp(-g * torch.cdist(xd, xd) ** 2)
    kxy = torch.exp(-g * torch.cdist(xd, yd) ** 2)
    dxx = -2 * g * (kxx[..., None] * (xd[:, None] - xd[None]))
    dxy = -2 * g * (kxy[..., None] * (xd[:, None] - yd[None]))
    want = 2 / (6 * 5) * dxx.sum(1) - 2 / (6 * 5) * dxy.sum(1)
    assert_close(gx, want, rtol=1e-8, atol=1e-10)


def test_gamma_tensor_gradient_broadcast(backend):
    dev = device_for(backend)
    x = make_tensor(2, 4, 3, device=dev)
    y = make_tensor(2, 5, 3, device=dev)
    gam = torch.tensor([0.4, 0.9], dtype=torch.float64, device=dev, requires_grad=True)
    check_gradients(lambda g: ops.gram(x, y, gamma=g, backend=backend), [gam], fast_mode=_fast(backend))
    check_gradients(lambda g: ops.mmd2(x, y, gamma=g, backend=backend), [gam], fast_mode=_fast(backend))


def test_backward_with_upstream_from_later_layers(backend):
    """Gradients flowing in from further ops (not the last layer) agree with the reference."""
    dev = device_for(backend)
    x = make_tensor(2, 9, 4, device=dev, requires_grad=True)
    y = make_tensor(2, 7, 4, device=dev, requires_grad=True)
    W = make_tensor(2, 9, 7, device=dev)

    def loss(be):
        K = ops.gram(x, y, backend=be)
        return (torch.tanh(K * W) ** 2).sum() + ops.gram_matvec(x, y, K.sum(-2), backend=be).pow(2).sum()

    g1 = torch.autograd.grad(loss(backend), (x, y))
    g2 = torch.autograd.grad(loss("torch"), (x, y))
    for a, b in zip(g1, g2):
        assert_close(a, b)


def test_rbf_gradient_at_coincident_points_is_zero_and_finite(backend):
    dev = device_for(backend)
    x = torch.zeros(1, 4, 3, dtype=torch.float64, device=dev, requires_grad=True)
    K = ops.gram(x, backend=backend)
    (g,) = torch.autograd.grad(K.sum(), x)
    assert torch.all(g == 0)


# ------------------------------------------------------------------------------------------ torch.compile


def test_torch_compile_fullgraph():
    def f(x, y, v):
        K = ops.gram(x, y, kernel="rbf", gamma=0.5)
        kv = ops.gram_matvec(x, y, v, kernel="rbf", gamma=0.5)
        return (K * K).sum() + kv.square().sum() + ops.mmd2(x, y, gamma=0.5)

    x = make_tensor(9, 3, requires_grad=True)
    y = make_tensor(7, 3, requires_grad=True)
    v = make_tensor(7, 2, requires_grad=True)
    cf = torch.compile(f, fullgraph=True, backend="aot_eager")
    out_c = cf(x, y, v)
    g_c = torch.autograd.grad(out_c, (x, y, v))
    out_e = f(x, y, v)
    g_e = torch.autograd.grad(out_e, (x, y, v))
    assert_close(out_c, out_e)
    for a, b in zip(g_c, g_e):
        assert_close(a, b)


@pytest.mark.slow
def test_torch_compile_inductor():
    def f(x, y):
        return ops.mmd2(x, y, gamma=0.5) + ops.gram(x, y).mean()

    x = make_tensor(9, 3, requires_grad=True)
    y = make_tensor(7, 3)
    cf = torch.compile(f, fullgraph=True)
    assert_close(cf(x, y), f(x, y))
    assert_close(torch.autograd.grad(cf(x, y), x)[0], torch.autograd.grad(f(x, y), x)[0])


def test_custom_ops_pass_opcheck():
    x, y = make_tensor(2, 5, 3), make_tensor(2, 4, 3)
    g = torch.tensor([0.5, 0.25], dtype=torch.float64)
    v = make_tensor(2, 4, 2)
    torch.library.opcheck(torch.ops.multialign.gram.default, (x, y, g, "rbf", 3, 1.0, "numba"))
    torch.library.opcheck(torch.ops.multialign.gram.default, (x, None, g, "polynomial", 2, 1.0, "numba"))
    torch.library.opcheck(torch.ops.multialign.gram_matvec.default, (x, y, v, g, "rbf", 3, 1.0, "numba"))


# ------------------------------------------------------------------------------------------ bad input


def test_bad_inputs_have_clear_errors():
    x, y = make_tensor(5, 3), make_tensor(4, 3)
    with pytest.raises(ValueError, match=r"same number of features.*D=3.*D=2"):
        ops.gram(x, make_tensor(4, 2))
    with pytest.raises(ValueError, match=r"x must have at least 2 dimensions.*shape \(5,\)"):
        ops.gram(make_tensor(5), y)
    with pytest.raises(ValueError, match=r"kernel must be one of .*'gauss'"):
        ops.gram(x, y, kernel="gauss")
    with pytest.raises(ValueError, match=r"gamma must be a finite number >= 0, got -1"):
        ops.gram(x, y, gamma=-1.0)
    with pytest.raises(ValueError, match=r"gamma must be None, a positive float, a tensor or 'median'"):
        ops.gram(x, y, gamma="mean")
    with pytest.raises(TypeError, match=r"y has dtype float32 but x has float64"):
        ops.gram(x, y.float())
    with pytest.raises(ValueError, match=r"y is on meta but x is on cpu"):
        ops.gram(x, torch.empty(4, 3, dtype=torch.float64, device="meta"))
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor"):
        ops.gram(np.zeros((3, 2)), y)
    with pytest.raises(TypeError, match=r"floating dtype"):
        ops.gram(torch.zeros(3, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"batch dimensions do not broadcast"):
        ops.gram(make_tensor(2, 5, 3), make_tensor(3, 4, 3))
    with pytest.raises(ValueError, match=r"do not broadcast.*gamma batch shape \(3,\)"):
        ops.gram(make_tensor(2, 5, 3), make_tensor(2, 4, 3), gamma=torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"degree must be an integer >= 0, got -2"):
        ops.gram(x, y, kernel="polynomial", degree=-2)
    with pytest.raises(ValueError, match=r"v must have shape \(\.\.\., M\) or \(\.\.\., M, C\) with M=4"):
        ops.gram_matvec(x, y, make_tensor(5, 2))
    with pytest.raises(ValueError, match=r"unbiased estimate needs at least 2 points.*N=1"):
        ops.mmd2(make_tensor(1, 3), y, unbiased=True)
    with pytest.raises(ValueError, match=r"backend must be one of"):
        ops.gram(x, y, backend="cuda")
    with ma.validation(True):
        with pytest.raises(ValueError, match=r"x has 1 non-finite entries"):
            bad = x.clone()
            bad[0, 0] = float("nan")
            ops.gram(bad, y)
        with pytest.raises(ValueError, match=r"gamma must be >= 0"):
            ops.gram(x, y, gamma=torch.tensor(-0.5, dtype=torch.float64))
