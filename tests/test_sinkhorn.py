"""Sinkhorn family: ops.sinkhorn, ops.sinkhorn_matrix, ops.sinkhorn_divergence on every backend against
POT (ot.bregman.sinkhorn_log, ot.unbalanced.sinkhorn_unbalanced), the PyTorch reference, closed forms
(METHODS.md Appendix A) and finite differences.

Triton runs under its interpreter here (slow): its problems are small and its iterations few -- it is
compared with the reference at a fixed number of iterations, which pins the same iterates, and against
POT at a large eps, where a few iterations converge.
"""
from __future__ import annotations

import math

import numpy as np
import ot
import pytest
import torch

import multialign as ma
from multialign import ops
from multialign.testing import assert_close, available_backends, check_gradients, device_for, make_tensor


def _weights(n, *batch, seed=0, dtype=torch.float64, device="cpu", zeros=0):
    w = make_tensor(*batch, n, seed=seed, low=0.2, scale=1.0, dtype=torch.float64)
    if zeros:
        w[..., :zeros] = 0
    return (w / w.sum(-1, keepdim=True)).to(dtype).to(device)


def _cloud(*shape, seed, dtype=torch.float64, device="cpu", noncontiguous=False):
    return make_tensor(*shape, seed=seed, low=0.0, scale=1.0, dtype=dtype, device=device, noncontiguous=noncontiguous)


def _pot_log(a, b, C, eps):
    """POT's log-domain Sinkhorn run to its floor: (plan, dual value <a, f> + <b, g>)."""
    a, b, C = (t.detach().cpu().double().numpy() for t in (a, b, C))
    P, log = ot.bregman.sinkhorn_log(a, b, C, eps, numItermax=100000, stopThr=1e-14, log=True)
    with np.errstate(divide="ignore"):
        f = eps * (log["log_u"] - np.log(a))
        g = eps * (log["log_v"] - np.log(b))
    value = float(np.sum(np.where(a > 0, a * f, 0)) + np.sum(np.where(b > 0, b * g, 0)))
    return torch.from_numpy(P), value


def _sqdist(x, y):
    return ((x[..., :, None, :] - y[..., None, :, :]) ** 2).sum(-1)


# (N, M, D): 1, primes, non-powers of two, Numba tile edges (R = 4, W = 16) +- 1
SHAPES = [(1, 1, 1), (1, 5, 2), (13, 17, 3), (17, 16, 5), (33, 31, 2)]
TRITON_SHAPES = [(1, 5, 2), (13, 17, 3), (17, 16, 5)]


def _shapes(backend):
    return TRITON_SHAPES if backend == "triton" else SHAPES


# ----------------------------------------------------------------------------------------- vs POT


def test_balanced_matches_pot_float64(backend):
    dev = device_for(backend)
    eps = 0.5 if backend == "triton" else 0.1  # the interpreter needs a problem that converges in a few steps
    for k, (N, M, D) in enumerate(_shapes(backend)):
        x = _cloud(N, D, seed=k, device=dev, noncontiguous=k % 2 == 1)
        y = _cloud(M, D, seed=10 + k, device=dev)
        a, b = _weights(N, seed=20 + k, device=dev), _weights(M, seed=30 + k, device=dev)
        r = ops.sinkhorn(x, y, a, b, eps=eps, tol=1e-11, max_iter=5000, backend=backend)
        assert bool(r.converged), (N, M, D, float(r.error))
        P, value = _pot_log(a, b, _sqdist(x, y), eps)
        assert_close(r.plan().cpu(), P, rtol=1e-6, atol=1e-9, name=f"plan {N}x{M}x{D}")
        assert_close(r.cost.cpu(), torch.tensor(value, dtype=torch.float64), rtol=1e-6, atol=1e-9,
                     name=f"value {N}x{M}x{D}")
        assert r.f.shape == (N,) and r.g.shape == (M,) and r.cost.shape == ()


def test_matrix_matches_pot_float64(backend):
    dev = device_for(backend)
    eps = 0.5 if backend == "triton" else 0.05
    for k, (N, M) in enumerate([(1, 4), (7, 11), (16, 17)]):
        C = make_tensor(N, M, seed=k, low=0.0, scale=1.0, device=dev)  # any cost, not a distance
        a, b = _weights(N, seed=k, device=dev), _weights(M, seed=5 + k, device=dev)
        r = ops.sinkhorn_matrix(C, a, b, eps=eps, tol=1e-12, max_iter=5000, backend=backend)
        P, value = _pot_log(a, b, C, eps)
        assert_close(r.plan().cpu(), P, rtol=1e-6, atol=1e-9, name=f"plan {N}x{M}")
        assert_close(r.cost.cpu(), torch.tensor(value, dtype=torch.float64), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("reach", [0.3, 2.0])
def test_unbalanced_matches_pot(backend, reach):
    dev = device_for(backend)
    eps = 0.5 if backend == "triton" else 0.1
    N, M, D = 13, 11, 2
    x, y = _cloud(N, D, seed=1, device=dev), _cloud(M, D, seed=2, device=dev)
    a, b = _weights(N, seed=3, device=dev), 0.7 * _weights(M, seed=4, device=dev)  # different masses
    r = ops.sinkhorn(x, y, a, b, eps=eps, reach=reach, tol=1e-12, max_iter=5000, backend=backend)
    assert bool(r.converged)
    C = (_sqdist(x, y)).cpu().numpy()
    an, bn = a.cpu().numpy(), b.cpu().numpy()
    P = ot.unbalanced.sinkhorn_unbalanced(an, bn, C, eps, reach, numItermax=200000, stopThr=1e-15)
    assert_close(r.plan().cpu(), torch.from_numpy(P), rtol=1e-6, atol=1e-10, name="unbalanced plan")

    def kl(p, q):
        return float(np.sum(p * np.log(p / q)) - p.sum() + q.sum())

    primal = float((P * C).sum()) + eps * kl(P, np.outer(an, bn)) + reach * kl(P.sum(1), an) + reach * kl(P.sum(0), bn)
    assert_close(r.cost.cpu(), torch.tensor(primal, dtype=torch.float64), rtol=1e-6, atol=1e-10, name="primal")


# ----------------------------------------------------------------------------------------- vs reference


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fixed_iterations_match_reference(backend, dtype):
    """tol=0 pins the iteration count, so every backend must produce the reference's iterates."""
    dev = device_for(backend)
    tols = {torch.float64: (1e-10, 1e-12), torch.float32: (2e-5, 2e-6)}[dtype]
    cases = [dict(eps=0.05), dict(eps=0.02, eps_scaling=0.5), dict(eps=0.1, reach=0.5)]
    for k, (N, M, D) in enumerate(_shapes(backend)[1:4 if backend != "triton" else 3]):
        x = _cloud(N, D, seed=k, dtype=dtype, device=dev, noncontiguous=k == 1)
        y = _cloud(M, D, seed=7 + k, dtype=dtype, device=dev)
        a, b = _weights(N, seed=k, dtype=dtype, device=dev), _weights(M, seed=3 + k, dtype=dtype, device=dev, zeros=1)
        for kw in cases:
            want = ops.sinkhorn(x, y, a, b, max_iter=6, tol=0.0, backend="torch", **kw)
            got = ops.sinkhorn(x, y, a, b, max_iter=6, tol=0.0, backend=backend, **kw)
            what = f"{N}x{M}x{D} {kw}"
            assert int(got.n_iter) == 6
            assert_close(got.f, want.f, rtol=tols[0], atol=tols[1] * 10, name=f"f {what}")
            assert_close(got.g, want.g, rtol=tols[0], atol=tols[1] * 10, name=f"g {what}")
            assert_close(got.cost, want.cost, rtol=tols[0], atol=tols[1], name=f"cost {what}")
            C = _sqdist(x.double(), y.double()).to(dtype)
            gm = ops.sinkhorn_matrix(C, a, b, max_iter=6, tol=0.0, backend=backend, **kw)
            wm = ops.sinkhorn_matrix(C, a, b, max_iter=6, tol=0.0, backend="torch", **kw)
            assert_close(gm.f, wm.f, rtol=tols[0], atol=tols[1] * 10, name=f"matrix f {what}")
            assert_close(gm.g, wm.g, rtol=tols[0], atol=tols[1] * 10, name=f"matrix g {what}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_numba_paths_match_reference(dtype):
    """Every Numba path (online, matrix, stabilised scaling), in both threading modes (whole problems per
    thread, and one problem split across threads: N * M > 65536), converged, zero weights included."""
    tol, ftol = (1e-9, 1e-8) if dtype == torch.float64 else (1e-5, 2e-6)
    for N, M, D in [(37, 41, 3), (301, 263, 5)]:
        x, y = _cloud(N, D, seed=N, dtype=dtype), _cloud(M, D, seed=M, dtype=dtype)
        a, b = _weights(N, seed=1, dtype=dtype, zeros=2), _weights(M, seed=2, dtype=dtype, zeros=3)
        for kw in ((dict(eps=0.05), dict(eps=0.01, reach=0.1)) if N < 100 else (dict(eps=0.1),)):
            want = ops.sinkhorn(x, y, a, b, tol=tol, max_iter=3000, backend="torch", **kw)
            for path in ("online", "matrix", "scaling"):
                got = ops.sinkhorn(x, y, a, b, tol=tol, max_iter=3000, backend="numba", path=path, **kw)
                assert got.path == path and bool(got.converged)
                assert abs(int(got.n_iter) - int(want.n_iter)) <= 2 + int(want.n_iter) // 100, (path, kw)
                assert_close(got.f, want.f, rtol=ftol, atol=ftol, name=f"f {path} {N}x{M} {kw}")
                assert_close(got.g, want.g, rtol=ftol, atol=ftol, name=f"g {path} {N}x{M} {kw}")
                assert_close(got.cost, want.cost, rtol=ftol, atol=ftol, name=f"cost {path} {N}x{M} {kw}")


def test_batched_matches_loop(backend):
    dev = device_for(backend)
    x = _cloud(3, 2, 13, 3, seed=1, device=dev)          # batch (3, 2)
    y = _cloud(2, 11, 3, seed=2, device=dev)             # broadcasts over the leading 3
    a = _weights(13, 3, 2, seed=3, device=dev)
    b = _weights(11, seed=4, device=dev)                 # one b for every problem
    eps = 0.5 if backend == "triton" else 0.1
    kw = dict(eps=eps, tol=1e-8, max_iter=2000)
    r = ops.sinkhorn(x, y, a, b, backend=backend, **kw)
    assert r.cost.shape == (3, 2) and r.f.shape == (3, 2, 13) and r.g.shape == (3, 2, 11)
    assert r.n_iter.shape == (3, 2) and r.converged.all()
    for i in range(3):
        for j in range(2):
            one = ops.sinkhorn(x[i, j], y[j], a[i, j], b, backend=backend, **kw)
            assert int(r.n_iter[i, j]) == int(one.n_iter), "each problem stops on its own tolerance"
            assert_close(r.cost[i, j], one.cost, name=f"cost {i},{j}")
            assert_close(r.f[i, j], one.f, rtol=1e-9, atol=1e-10, name=f"f {i},{j}")


# ----------------------------------------------------------------------------------------- gradients


def test_envelope_gradient_closed_form(backend):
    """d cost / d x_i = 2 (a_i x_i - sum_j P_ij y_j) with POT's plan; d cost / d a = f up to a constant."""
    dev = device_for(backend)
    eps = 0.5 if backend == "triton" else 0.05
    N, M, D = 13, 17, 3
    x = _cloud(N, D, seed=1, device=dev).requires_grad_()
    y = _cloud(M, D, seed=2, device=dev).requires_grad_()
    a, b = _weights(N, seed=3, device=dev).requires_grad_(), _weights(M, seed=4, device=dev).requires_grad_()
    r = ops.sinkhorn(x, y, a, b, eps=eps, tol=1e-12, max_iter=5000, backend=backend)
    gx, gy, ga, gb = torch.autograd.grad(r.cost, (x, y, a, b))
    P, _ = _pot_log(a, b, _sqdist(x, y), eps)
    P = P.to(dev)
    xd, yd, ad, bd = x.detach(), y.detach(), a.detach(), b.detach()
    assert_close(gx, 2 * (ad[:, None] * xd - P @ yd), rtol=1e-6, atol=1e-9, name="grad x")
    assert_close(gy, 2 * (bd[:, None] * yd - P.T @ xd), rtol=1e-6, atol=1e-9, name="grad y")
    assert_close(ga - ga.mean(), r.f - r.f.mean(), rtol=1e-6, atol=1e-9, name="grad a")
    assert_close(gb - gb.mean(), r.g - r.g.mean(), rtol=1e-6, atol=1e-9, name="grad b")
    C = (_sqdist(xd, yd)).requires_grad_()
    rm = ops.sinkhorn_matrix(C, ad, bd, eps=eps, tol=1e-12, max_iter=5000, backend=backend)
    assert_close(torch.autograd.grad(3.0 * rm.cost, C)[0], 3.0 * P, rtol=1e-6, atol=1e-10, name="grad C")


@pytest.mark.parametrize("be", ["torch", "numba"])
@pytest.mark.parametrize("reach", [None, 0.5])
def test_envelope_gradient_finite_differences(be, reach):
    """gradcheck of the converged value (float64, tol 1e-13): x, y and the weights through a softmax
    (the weights live on the simplex; a softmax keeps finite differences on it)."""
    x, y = _cloud(5, 2, seed=1), _cloud(6, 2, seed=2)
    ta, tb = make_tensor(5, seed=3), make_tensor(6, seed=4)
    kw = dict(eps=0.2, tol=1e-13, max_iter=20000, reach=reach, backend=be)

    def f(x_, y_, ta_, tb_):
        return ops.sinkhorn(x_, y_, ta_.softmax(-1), tb_.softmax(-1), **kw).cost

    check_gradients(f, [t.requires_grad_() for t in (x, y, ta, tb)], eps=1e-6, atol=1e-7, rtol=1e-5)

    def fm(C_):
        return ops.sinkhorn_matrix(C_, ta.detach().softmax(-1), tb.detach().softmax(-1), **kw).cost

    check_gradients(fm, [make_tensor(5, 6, seed=5, low=0.0, scale=1.0).requires_grad_()], eps=1e-6, atol=1e-7,
                    rtol=1e-5)


@pytest.mark.parametrize("be", ["torch", "numba"])
def test_envelope_matches_unrolled_at_convergence(be):
    x = _cloud(9, 2, seed=1).requires_grad_()
    y = _cloud(7, 2, seed=2).requires_grad_()
    kw = dict(eps=0.1, tol=1e-12, max_iter=3000)
    ge = torch.autograd.grad(ops.sinkhorn(x, y, backend=be, **kw).cost, (x, y))
    ru = ops.sinkhorn(x, y, grad="unrolled", **kw)
    assert ru.f.requires_grad and ru.plan().requires_grad
    gu = torch.autograd.grad(ru.cost, (x, y))
    for e, u in zip(ge, gu):
        assert_close(e, u, rtol=1e-7, atol=1e-9, name="envelope vs unrolled")


def test_envelope_outputs_are_detached():
    x = _cloud(5, 2, seed=1).requires_grad_()
    r = ops.sinkhorn(x, _cloud(4, 2, seed=2), eps=0.1)
    assert r.cost.requires_grad and not r.f.requires_grad and not r.g.requires_grad
    assert not r.plan().requires_grad


# ----------------------------------------------------------------------------------------- divergence


def test_divergence_zero_at_equality_and_positive(backend):
    dev = device_for(backend)
    eps = 0.5 if backend == "triton" else 0.2
    kw = dict(eps=eps, tol=1e-9, max_iter=5000, backend=backend)
    x = _cloud(11, 2, seed=1, device=dev).requires_grad_()
    a = _weights(11, seed=2, device=dev)
    s0 = ops.sinkhorn_divergence(x, x.detach().clone(), a, a, **kw)
    assert abs(float(s0.detach())) < 1e-9
    assert float(torch.autograd.grad(s0, x)[0].abs().max()) < 1e-7  # the minimum: zero gradient
    for seed in range(1 if backend == "triton" else 2):
        y = _cloud(9, 2, seed=10 + seed, device=dev) + 0.1 * seed
        s = ops.sinkhorn_divergence(x, y, a, None, **kw).detach()
        assert float(s) > 0
        dense = ops.sinkhorn(x, y, a, None, **kw).cost - 0.5 * (ops.sinkhorn(x, x, a, a, **kw).cost
                                                               + ops.sinkhorn(y, y, None, None, **kw).cost)
        dense = dense.detach()
        assert_close(s, dense)


def test_divergence_gradient_closed_form():
    """Appendix A #6: grad_x S = 2 (sum_j P^aa_ij x_j - sum_j P^ab_ij y_j) (our cost has no 1/2)."""
    eps = 0.1
    x = _cloud(8, 2, seed=1).requires_grad_()
    y = _cloud(6, 2, seed=2)
    kw = dict(eps=eps, tol=1e-13, max_iter=10000)
    g = torch.autograd.grad(ops.sinkhorn_divergence(x, y, **kw), x)[0]
    Pab = ops.sinkhorn(x, y, **kw).plan()
    Paa = ops.sinkhorn(x, x, **kw).plan()
    want = 2 * (Paa @ x.detach() - Pab @ y)
    assert_close(g, want, rtol=1e-7, atol=1e-10)


# ----------------------------------------------------------------------------------------- closed forms, numerics


def test_closed_form_oracles():
    # one point each: every coupling is the product, f + g = C, value = C (no entropy left)
    x, y = torch.tensor([[0.3, -1.0]], dtype=torch.float64), torch.tensor([[1.3, 0.5]], dtype=torch.float64)
    r = ops.sinkhorn(x, y, eps=0.01)
    assert_close(r.cost, torch.tensor(1.0 + 2.25, dtype=torch.float64))
    # 1-D, eps -> 0 with annealing: the sorted matching's W2^2
    gen = torch.Generator().manual_seed(0)
    u = torch.rand(40, 1, generator=gen, dtype=torch.float64)
    v = torch.rand(40, 1, generator=gen, dtype=torch.float64) + 0.3
    w2 = float(((u.sort(0).values - v.sort(0).values) ** 2).mean())
    r = ops.sinkhorn(u, v, eps=1e-5, eps_scaling=0.7, tol=1e-9, max_iter=20000)
    plan = r.plan()
    lin = float((plan * _sqdist(u, v)).sum())
    assert abs(lin - w2) < 2e-3 * w2
    # primal = dual (Appendix A #5), with the KL(P | a b^T) regulariser
    a, b = _weights(40, seed=1), _weights(40, seed=2)
    r = ops.sinkhorn(u, v, a, b, eps=0.05, tol=1e-13, max_iter=10000)
    P = r.plan()
    primal = (P * _sqdist(u, v)).sum() + 0.05 * (P * torch.log(P / (a[:, None] * b[None, :]))).sum()
    assert_close(r.cost, primal, rtol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tiny_eps_is_finite(backend, dtype):
    dev = device_for(backend)
    N, M = (13, 11) if backend == "triton" else (40, 37)
    x, y = _cloud(N, 2, seed=1, dtype=dtype, device=dev), _cloud(M, 2, seed=2, dtype=dtype, device=dev)
    a = _weights(N, seed=3, dtype=dtype, device=dev, zeros=1)
    iters = 4 if backend == "triton" else 60
    paths = ["auto"] if backend != "numba" else ["online", "matrix", "scaling"]
    for path in paths:
        for kw in (dict(), dict(eps_scaling=0.5), dict(reach=0.1)):
            r = ops.sinkhorn(x, y, a, None, eps=1e-4, max_iter=iters, tol=0.0, path=path, backend=backend, **kw)
            for name in ("cost", "f", "g"):
                t = getattr(r, name)
                assert torch.isfinite(t).all(), (path, kw, name)
            if math.isfinite(float(r.error)):  # annealing reached eps: the plan is a coupling
                P = r.plan().double()
                assert torch.isfinite(P).all(), (path, kw)
                if "reach" not in kw:
                    assert abs(float(P.sum()) - 1.0) < 1e-3, (path, kw)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scaling_path_at_tiny_eps_runs_and_matches_log_domain(dtype):
    """The stabilised-scaling path at eps = 1e-4 (after annealing): most iterations run in the linear domain
    (path_stats), everything stays finite, and the iterates are the log-domain ones."""
    x, y = _cloud(40, 2, seed=1, dtype=dtype), _cloud(37, 2, seed=2, dtype=dtype)
    kw = dict(eps=1e-4, eps_scaling=0.5, max_iter=300, tol=0.0, backend="numba")
    s = ops.sinkhorn(x, y, path="scaling", **kw)
    m = ops.sinkhorn(x, y, path="matrix", **kw)
    assert s.path == "scaling" and int(s.path_stats[1]) > 200, s.path_stats
    for t in (s.cost, s.f, s.g):
        assert torch.isfinite(t).all()
    tol = 1e-5 if dtype == torch.float32 else 1e-11
    assert_close(s.f, m.f, rtol=tol, atol=tol, name="f scaling vs log domain")
    assert_close(s.g, m.g, rtol=tol, atol=tol, name="g scaling vs log domain")


def test_eps_scaling_converges_faster():
    x, y = _cloud(60, 2, seed=1), _cloud(50, 2, seed=2)
    plain = ops.sinkhorn(x, y, eps=2e-3, tol=1e-6, max_iter=20000)
    annealed = ops.sinkhorn(x, y, eps=2e-3, tol=1e-6, max_iter=20000, eps_scaling=0.7)
    assert bool(plain.converged) and bool(annealed.converged)
    assert int(annealed.n_iter) < int(plain.n_iter)
    assert_close(annealed.cost, plain.cost, rtol=1e-5)


def test_zero_weight_points_are_inert(backend):
    dev = device_for(backend)
    eps = 0.5 if backend == "triton" else 0.05
    x, y = _cloud(9, 2, seed=1, device=dev), _cloud(8, 2, seed=2, device=dev)
    a, b = _weights(9, seed=3, device=dev, zeros=3), _weights(8, seed=4, device=dev, zeros=2)
    kw = dict(eps=eps, tol=1e-12, max_iter=5000, backend=backend)
    full = ops.sinkhorn(x, y, a, b, **kw)
    part = ops.sinkhorn(x[3:], y[2:], a[3:], b[2:], **kw)
    assert_close(full.cost, part.cost, rtol=1e-9)
    assert_close(full.plan()[3:, 2:], part.plan(), rtol=1e-8, atol=1e-12)
    # the potentials of zero-weight points are the c-transforms of the other side's
    C = _sqdist(x, y)
    g_ct = -eps * torch.logsumexp(torch.log(a)[:, None] + (full.f[:, None] - C) / eps, 0)
    assert_close(full.g[:2], g_ct[:2], rtol=1e-8, atol=1e-10)


def test_half_precision_and_noncontiguous_inputs():
    x = _cloud(2, 13, 3, seed=1, noncontiguous=True)
    y = _cloud(2, 11, 3, seed=2)
    want = ops.sinkhorn(x, y, eps=0.05, tol=1e-10)
    for dt in (torch.bfloat16, torch.float16):
        r = ops.sinkhorn(x.to(dt), y.to(dt), eps=0.05, tol=1e-5)
        assert r.cost.dtype == dt and r.f.dtype == dt
        ref32 = ops.sinkhorn(x.to(dt).float(), y.to(dt).float(), eps=0.05, tol=1e-5)
        assert_close(r.cost.float(), ref32.cost, rtol=1e-2, atol=1e-3)
    assert_close(ops.sinkhorn(x.contiguous(), y, eps=0.05, tol=1e-10).cost, want.cost)


def test_path_choice_is_reported(monkeypatch):
    x, y = _cloud(20, 2, seed=1), _cloud(30, 2, seed=2)
    r = ops.sinkhorn(x, y, backend="numba")
    assert r.path == "scaling"
    # [log-domain iterations, scaling iterations, kernel builds]: every iteration counted once, the
    # scaling iterations did run (the first ones are log-domain while the potentials move fast)
    st = r.path_stats
    assert st.shape == (3,) and int(st[0] + st[1]) == int(r.n_iter)
    assert int(st[1]) > 0 and int(st[2]) >= 1
    rb = ops.sinkhorn(_cloud(3, 20, 2, seed=3), y, backend="numba")
    assert rb.path_stats.shape == (3, 3) and bool((rb.path_stats[:, :2].sum(-1) == rb.n_iter).all())
    rt = ops.sinkhorn(x, y, backend="torch")
    assert rt.path == "matrix" and int(rt.path_stats[0]) == int(rt.n_iter) and int(rt.path_stats[1]) == 0
    monkeypatch.setenv("MULTIALIGN_SINKHORN_MEMORY", "1000")
    assert ops.sinkhorn(x, y, backend="numba").path == "online"
    C = _sqdist(x, y)
    assert ops.sinkhorn_matrix(C, backend="numba").path == "matrix"


# ----------------------------------------------------------------------------------------- torch.compile


@pytest.mark.parametrize("be", ["torch", "numba"])
def test_torch_compile_fullgraph(be):
    def f(x, y, C):
        r = ops.sinkhorn(x, y, eps=0.1, tol=1e-10, backend=be)
        m = ops.sinkhorn_matrix(C, eps=0.1, tol=1e-10, backend=be)
        return r.cost + m.cost + ops.sinkhorn_divergence(x, y, eps=0.1, tol=1e-10, backend=be)

    x = _cloud(9, 2, seed=1).requires_grad_()
    y = _cloud(7, 2, seed=2).requires_grad_()
    C = make_tensor(9, 7, seed=3, low=0.0, scale=1.0, requires_grad=True)
    cf = torch.compile(f, fullgraph=True, backend="aot_eager")
    out_c = cf(x, y, C)
    g_c = torch.autograd.grad(out_c, (x, y, C))
    out_e = f(x, y, C)
    g_e = torch.autograd.grad(out_e, (x, y, C))
    assert_close(out_c, out_e)
    for p, q in zip(g_c, g_e):
        assert_close(p, q)


def test_custom_ops_pass_opcheck():
    x, y = _cloud(2, 5, 3, seed=1), _cloud(2, 4, 3, seed=2)
    a, b = _weights(5, 2, seed=3), _weights(4, 2, seed=4)
    e0 = torch.full((2,), 0.1, dtype=torch.float64)
    torch.library.opcheck(torch.ops.multialign.sinkhorn_solve.default,
                          (x, y, a, b, e0, 0.1, math.inf, 50, 1e-9, 0.0, "online", "numba"))
    f, g = (t.contiguous() for t in ops.sinkhorn(x, y, a, b, eps=0.1, tol=1e-10)[1:3])
    torch.library.opcheck(torch.ops.multialign.sinkhorn_value.default,
                          (x.requires_grad_(), y, a, b, f, g, 0.1, math.inf, "numba"))


# ----------------------------------------------------------------------------------------- bad input


def test_bad_inputs_have_clear_errors():
    x, y = _cloud(5, 3, seed=1), _cloud(4, 3, seed=2)
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        ops.sinkhorn(x, y, eps=0.0)
    with pytest.raises(ValueError, match="eps must be"):
        ops.sinkhorn_matrix(torch.ones(2, 2), eps=-1.0)
    with pytest.raises(ValueError, match=r"a must have shape \(\.\.\., N\) with N=5"):
        ops.sinkhorn(x, y, torch.full((4,), 0.25, dtype=torch.float64))
    with pytest.raises(ValueError, match="same number of features"):
        ops.sinkhorn(x, _cloud(4, 2, seed=3))
    with pytest.raises(ValueError, match="max_iter must be an integer >= 1"):
        ops.sinkhorn(x, y, max_iter=0)
    with pytest.raises(ValueError, match="reach must be None"):
        ops.sinkhorn(x, y, reach=-1.0)
    with pytest.raises(ValueError, match="eps_scaling must be None or a number in"):
        ops.sinkhorn(x, y, eps_scaling=1.5)
    with pytest.raises(ValueError, match="grad must be one of"):
        ops.sinkhorn(x, y, grad="implicit")
    with pytest.raises(ValueError, match="path must be one of"):
        ops.sinkhorn(x, y, path="fast")
    with pytest.raises(ValueError, match="path='online' needs point clouds"):
        ops.sinkhorn_matrix(torch.ones(3, 3), path="online")
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        ops.sinkhorn(x.numpy(), y)
    with pytest.raises(ValueError, match="at least one point"):
        ops.sinkhorn(x[:0], y)
    with ma.validation():
        with pytest.raises(ValueError, match="b must be >= 0"):
            ops.sinkhorn(x, y, None, torch.tensor([0.5, 0.6, -0.2, 0.1], dtype=torch.float64))
        with pytest.raises(ValueError, match="a must sum to one"):
            ops.sinkhorn(x, y, torch.full((5,), 0.3, dtype=torch.float64))
        with pytest.raises(ValueError, match="x has 1 non-finite"):
            bad = x.clone()
            bad[0, 0] = float("nan")
            ops.sinkhorn(bad, y)
        ops.sinkhorn(x, y, torch.full((5,), 0.3, dtype=torch.float64), reach=1.0)  # unbalanced: any mass


def test_triton_refuses_scaling_path():
    if "triton" not in available_backends():
        pytest.skip("triton unavailable")
    with pytest.raises(ValueError, match="path='scaling' runs on the Numba"):
        ops.sinkhorn(_cloud(3, 2, seed=1, device=device_for("triton")), _cloud(3, 2, seed=2, device=device_for("triton")),
                     path="scaling", backend="triton")
