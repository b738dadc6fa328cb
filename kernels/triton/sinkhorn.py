"""Log-domain Sinkhorn on the GPU (Triton): a flash-attention-style fused softmin.

Same functions and signatures as ``kernels/reference/sinkhorn.py``. Two kernels serve every op:

``_sinkhorn_softmin_kernel``   one program per (BN rows, problem): for its rows i,
                               ``p_i <- damp * (-eps_t * LSE_j(log w_j + q_j / eps_t - C_ij / eps_t))``
                               with C either recomputed tile by tile from the points (``tl.dot`` of
                               x and y tiles, ``C = |x|^2 + |y|^2 - 2 x.y``, memory O(N + M)) or read
                               from a cost matrix; online log-sum-exp (running max and rescaled sum,
                               fp32/fp64 accumulators). The row pass (f from g) and the column pass
                               (g from f) are the same kernel with the roles of x and y swapped (for a
                               matrix: its strides swapped). One launch per half-iteration covers every
                               problem of the batch; a problem whose ``active`` flag is 0 returns at once.
``_sinkhorn_envelope_kernel``  one program per (BN rows, BDO features, problem): the envelope-gradient
                               reductions ``rho_i = sum_j w_j exp((f_i + g_j - C_ij) / eps)`` and
                               ``t_i = sum_j (...) y_j`` -- the flash-attention forward with V = y.

Convergence stays on the device: each pass writes its per-row error terms to a buffer, torch reductions
turn them into per-problem errors and ``active`` flags, and the host looks at the flags only every
``CHECK_EVERY`` iterations (one synchronisation per check, none per iteration).

Precision, chosen deliberately: float32 dots use ``input_precision="tf32x3"`` (three TF32 products,
~float32 accuracy; ``"ieee"`` via ``MULTIALIGN_TRITON_F32_DOT``) -- plain TF32 would put ~1e-3 relative
error on ``x.y`` and through ``C / eps`` ruin small-eps problems (the OTT-JAX-on-A100 failure). Points
are centred on their joint mean first, so the cancellation error of the norm formula is relative to
the spread of the data, not its offset. float64 inputs use float64 dots and accumulators. The
interpreter (TRITON_INTERPRET=1, CI) computes in numpy and ignores input_precision.
"""
from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

from .. import _alloc
from ._common import autotune

CHECK_EVERY = 10  # iterations between host checks of the convergence flags

_F32_DOT = os.environ.get("MULTIALIGN_TRITON_F32_DOT", "tf32x3")
if _F32_DOT not in ("tf32x3", "ieee"):
    raise ValueError(f"MULTIALIGN_TRITON_F32_DOT must be 'tf32x3' or 'ieee', got {_F32_DOT!r}")

# ---------------------------------------------------------------------------------------------------
# autotune configurations (data). BD = 16: the tf32x3 operand splits of a wider feature chunk spill.
# Register counts from tools/triton_aot.py (float32, sm_80 / sm_90): softmin 64x64 with 4 warps used
# 244 / 228 registers (253 for the matrix variant), with 8 warps 177 / 178 (164 matrix), no spills; the
# envelope kernel (a BN x 64 value accumulator besides the tiles) spills at 64 rows on sm_80 (568 B), so
# its tiles are 32 rows. The interpreter runs one small config so that tests cross tile edges.
# ---------------------------------------------------------------------------------------------------
_SOFTMIN_CONFIGS = [
    triton.Config({"BN": 64, "BM": 64, "BD": 16}, num_warps=8, num_stages=3),
    triton.Config({"BN": 128, "BM": 64, "BD": 16}, num_warps=8, num_stages=2),
    triton.Config({"BN": 32, "BM": 128, "BD": 16}, num_warps=4, num_stages=2),
]
_ENVELOPE_CONFIGS = [
    triton.Config({"BN": 32, "BM": 64, "BD": 16}, num_warps=4, num_stages=2),
    triton.Config({"BN": 32, "BM": 32, "BD": 16}, num_warps=4, num_stages=2),
]
_INTERPRET_CONFIG = triton.Config({"BN": 16, "BM": 16, "BD": 16})


# ---------------------------------------------------------------------------------------------------
# device helpers
# ---------------------------------------------------------------------------------------------------
@triton.jit
def _cost_tile(x_ptr, sxn, sxd, y_ptr, syn, syd, nx_ptr, ny_ptr, rn, rm, N, M, D,
               BN: tl.constexpr, BM: tl.constexpr, BD: tl.constexpr, ACC: tl.constexpr, IN_PREC: tl.constexpr):
    """``C_ij = max(|x_i|^2 + |y_j|^2 - 2 <x_i, y_j>, 0)`` for a BN x BM tile (points already centred)."""
    mn = rn < N
    mm = rm < M
    s = tl.zeros((BN, BM), ACC)
    for d0 in range(0, D, BD):
        rd = d0 + tl.arange(0, BD)
        md = rd < D
        xt = tl.load(x_ptr + rn[:, None] * sxn + rd[None, :] * sxd, mask=mn[:, None] & md[None, :], other=0.0)
        yt = tl.load(y_ptr + rm[:, None] * syn + rd[None, :] * syd, mask=mm[:, None] & md[None, :], other=0.0)
        s += tl.dot(xt, tl.trans(yt), input_precision=IN_PREC, out_dtype=ACC)
    nx = tl.load(nx_ptr + rn, mask=mn, other=0.0)
    ny = tl.load(ny_ptr + rm, mask=mm, other=0.0)
    return tl.maximum(nx[:, None] + ny[None, :] - 2.0 * s, 0.0)


@triton.jit
def _exponents(x_ptr, sxn, sxd, y_ptr, syn, syd, nx_ptr, ny_ptr, c_ptr, scn, scm, lw_ptr, q_ptr, rn, rm, N, M, D,
               inv, FROM_MATRIX: tl.constexpr, BN: tl.constexpr, BM: tl.constexpr, BD: tl.constexpr,
               ACC: tl.constexpr, IN_PREC: tl.constexpr):
    """``z_ij = log w_j + (q_j - C_ij) / eps`` for a tile, ``-inf`` outside the columns."""
    mm = rm < M
    if FROM_MATRIX:
        c = tl.load(c_ptr + rn[:, None] * scn + rm[None, :] * scm, mask=(rn[:, None] < N) & mm[None, :],
                    other=0.0).to(ACC)
    else:
        c = _cost_tile(x_ptr, sxn, sxd, y_ptr, syn, syd, nx_ptr, ny_ptr, rn, rm, N, M, D, BN, BM, BD, ACC, IN_PREC)
    h = tl.load(lw_ptr + rm, mask=mm, other=-float("inf")).to(ACC) + tl.load(q_ptr + rm, mask=mm, other=0.0) * inv
    z = h[None, :] - c * inv
    return tl.where(mm[None, :], z, -float("inf"))


# ---------------------------------------------------------------------------------------------------
# the half-iteration: fused softmin over one side
# ---------------------------------------------------------------------------------------------------
@autotune(_SOFTMIN_CONFIGS, key=["N", "M", "D", "FROM_MATRIX", "ERR_MODE"], interpret_config=_INTERPRET_CONFIG,
          restore_value=["p_ptr", "e_ptr"])
@triton.jit
def _sinkhorn_softmin_kernel(x_ptr, sxb, sxn, sxd, y_ptr, syb, syn, syd, nx_ptr, ny_ptr, c_ptr, scb, scn, scm,
                             lw_ptr, q_ptr, p_ptr, w_ptr, eps0_ptr, act_ptr, e_ptr,
                             N, M, D, eps, scale_t, rho,
                             FROM_MATRIX: tl.constexpr, UNBALANCED: tl.constexpr, ERR_MODE: tl.constexpr,
                             ACC: tl.constexpr, IN_PREC: tl.constexpr,
                             BN: tl.constexpr, BM: tl.constexpr, BD: tl.constexpr):
    # p[b, i] <- damp * softmin_eps_t(C[i, :], log w_other + q / eps_t)  for the BN rows of this program;
    # e[b, i] <- the row's error term: ERR_MODE 1 w_i |exp((p_old - p_new) / eps) - 1|, 2 |p_new - p_old| / eps
    pid = tl.program_id(0).to(tl.int64)
    b = tl.program_id(1).to(tl.int64)
    if tl.load(act_ptr + b) == 0:
        return
    eps_t = tl.maximum(tl.load(eps0_ptr + b).to(ACC) * scale_t, eps)
    inv = 1.0 / eps_t
    rn = pid * BN + tl.arange(0, BN)
    mn = rn < N
    m_i = tl.full((BN,), -float("inf"), ACC)
    s_i = tl.zeros((BN,), ACC)
    for m0 in range(0, M, BM):
        rm = m0 + tl.arange(0, BM)
        z = _exponents(x_ptr + b * sxb, sxn, sxd, y_ptr + b * syb, syn, syd, nx_ptr + b * N, ny_ptr + b * M,
                       c_ptr + b * scb, scn, scm, lw_ptr + b * M, q_ptr + b * M, rn, rm, N, M, D, inv,
                       FROM_MATRIX, BN, BM, BD, ACC, IN_PREC)
        m_new = tl.maximum(m_i, tl.max(z, 1))
        m_safe = tl.where(m_new == -float("inf"), 0.0, m_new)  # a tile of padding only: keep exp(-inf) = 0
        s_i = s_i * tl.exp(m_i - m_safe) + tl.sum(tl.exp(z - m_safe[:, None]), 1)
        m_i = m_new
    new = -eps_t * (m_i + tl.log(s_i))
    if UNBALANCED:
        new = new * (rho / (rho + eps_t))
    old = tl.load(p_ptr + b * N + rn, mask=mn, other=0.0)
    tl.store(p_ptr + b * N + rn, new.to(p_ptr.dtype.element_ty), mask=mn)
    if ERR_MODE == 1:
        w = tl.load(w_ptr + b * N + rn, mask=mn, other=0.0).to(ACC)
        e = tl.where(w > 0, w * tl.abs(tl.exp((old - new) * inv) - 1.0), 0.0)
        tl.store(e_ptr + b * N + rn, e.to(e_ptr.dtype.element_ty), mask=mn)
    elif ERR_MODE == 2:
        tl.store(e_ptr + b * N + rn, (tl.abs(new - old) * inv).to(e_ptr.dtype.element_ty), mask=mn)


# ---------------------------------------------------------------------------------------------------
# envelope gradient reductions
# ---------------------------------------------------------------------------------------------------
@autotune(_ENVELOPE_CONFIGS, key=["N", "M", "D"], interpret_config=_INTERPRET_CONFIG)
@triton.jit
def _sinkhorn_envelope_kernel(x_ptr, sxb, sxn, sxd, y_ptr, syb, syn, syd, nx_ptr, ny_ptr, lw_ptr, q_ptr, p_ptr,
                              rho_ptr, t_ptr, stb, stn, std, N, M, D, inv,
                              ACC: tl.constexpr, IN_PREC: tl.constexpr, BDO: tl.constexpr,
                              BN: tl.constexpr, BM: tl.constexpr, BD: tl.constexpr):
    # with z_ij = log w_j + (p_i + q_j - C_ij) / eps:  rho[b, i] = sum_j e^z_ij,  t[b, i, :] = sum_j e^z_ij y_j
    pid_n = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1).to(tl.int64)
    b = tl.program_id(2).to(tl.int64)
    rn = pid_n * BN + tl.arange(0, BN)
    ro = pid_d * BDO + tl.arange(0, BDO)
    mn = rn < N
    mo = ro < D
    pf = tl.load(p_ptr + b * N + rn, mask=mn, other=0.0).to(ACC) * inv
    m_i = tl.full((BN,), -float("inf"), ACC)
    s_i = tl.zeros((BN,), ACC)
    acc = tl.zeros((BN, BDO), ACC)
    for m0 in range(0, M, BM):
        rm = m0 + tl.arange(0, BM)
        z = _exponents(x_ptr + b * sxb, sxn, sxd, y_ptr + b * syb, syn, syd, nx_ptr + b * N, ny_ptr + b * M,
                       x_ptr, 0, 0, lw_ptr + b * M, q_ptr + b * M, rn, rm, N, M, D, inv,
                       False, BN, BM, BD, ACC, IN_PREC) + pf[:, None]
        m_new = tl.maximum(m_i, tl.max(z, 1))
        m_safe = tl.where(m_new == -float("inf"), 0.0, m_new)
        alpha = tl.exp(m_i - m_safe)
        pe = tl.exp(z - m_safe[:, None])
        s_i = s_i * alpha + tl.sum(pe, 1)
        yv = tl.load(y_ptr + b * syb + rm[:, None] * syn + ro[None, :] * syd, mask=(rm[:, None] < M) & mo[None, :],
                     other=0.0).to(ACC)
        acc = acc * alpha[:, None] + tl.dot(pe, yv, input_precision=IN_PREC, out_dtype=ACC)
        m_i = m_new
    scale = tl.exp(m_i)
    if pid_d == 0:
        tl.store(rho_ptr + b * N + rn, (s_i * scale).to(rho_ptr.dtype.element_ty), mask=mn)
    tl.store(t_ptr + b * stb + rn[:, None] * stn + ro[None, :] * std, (acc * scale[:, None]).to(t_ptr.dtype.element_ty),
             mask=mn[:, None] & mo[None, :])


# ---------------------------------------------------------------------------------------------------
# launchers (the backend contract)
# ---------------------------------------------------------------------------------------------------
def _acc_tl(dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _in_prec(dtype):
    return "ieee" if dtype == torch.float64 else _F32_DOT


def _next_pow2(n, lo=16):
    return max(lo, triton.next_power_of_2(int(n)))


def _centre(x, y):
    mu = (x.sum(1, keepdim=True) + y.sum(1, keepdim=True)) / (x.shape[1] + y.shape[1])
    xc, yc = (x - mu).contiguous(), (y - mu).contiguous()
    return xc, yc, (xc * xc).sum(-1).contiguous(), (yc * yc).sum(-1).contiguous()


def _log(w):
    return torch.log(w).contiguous()  # -inf for zero weights: those points drop out of every sum


def _solve(x, y, C, a, b, eps, rho, max_iter, tol, eps0, eps_scaling):
    dt = a.dtype
    B, N = a.shape
    M = b.shape[1]
    dev = a.device
    a, b = a.contiguous(), b.contiguous()  # weights broadcast over a batch arrive with stride 0
    from_matrix = C is not None
    if from_matrix:
        xc = yc = torch.zeros(B, 1, 1, dtype=dt, device=dev)
        nx = torch.zeros(B, N, dtype=dt, device=dev)
        ny = torch.zeros(B, M, dtype=dt, device=dev)
        D = 1
        C = C.contiguous()
        cs = C.stride()
    else:
        xc, yc, nx, ny = _centre(x, y)
        D = x.shape[2]
        C = torch.zeros(1, dtype=dt, device=dev)
        cs = (0, 0, 0)
    la, lb = _log(a), _log(b)
    f = torch.zeros(B, N, dtype=dt, device=dev)
    g = torch.zeros(B, M, dtype=dt, device=dev)
    ef = torch.zeros(B, N, dtype=dt, device=dev)
    eg = torch.zeros(B, M, dtype=dt, device=dev)
    e0 = eps0.to(dt).contiguous()
    active = torch.ones(B, dtype=torch.bool, device=dev)
    act = torch.ones(B, dtype=torch.int32, device=dev)
    n_iter = torch.zeros(B, dtype=torch.int64, device=dev)
    error = torch.full((B,), math.inf, dtype=dt, device=dev)
    unbalanced = not math.isinf(rho)
    err_mode = 2 if unbalanced else 1
    common = dict(FROM_MATRIX=from_matrix, UNBALANCED=unbalanced, ACC=_acc_tl(dt), IN_PREC=_in_prec(dt))
    rho_arg = float(rho) if unbalanced else 1.0
    for t in range(max_iter):
        scale_t = float(eps_scaling) ** t if eps_scaling else 0.0
        grid_f = lambda meta: (triton.cdiv(N, meta["BN"]), B)  # noqa: E731
        _sinkhorn_softmin_kernel[grid_f](xc, *xc.stride(), yc, *yc.stride(), nx, ny, C, cs[0], cs[1], cs[2],
                                         lb, g, f, a, e0, act, ef, N, M, D, float(eps), scale_t, rho_arg,
                                         ERR_MODE=2 if unbalanced else 0, **common)
        grid_g = lambda meta: (triton.cdiv(M, meta["BN"]), B)  # noqa: E731
        _sinkhorn_softmin_kernel[grid_g](yc, *yc.stride(), xc, *xc.stride(), ny, nx, C, cs[0], cs[2], cs[1],
                                         la, f, g, b, e0, act, eg, M, N, D, float(eps), scale_t, rho_arg,
                                         ERR_MODE=err_mode, **common)
        eps_t = torch.clamp(e0 * scale_t, min=eps) if eps_scaling else torch.full_like(e0, eps)
        err = torch.maximum(ef.amax(1), eg.amax(1)) if unbalanced else eg.sum(1)
        err = torch.where(eps_t <= eps, err, torch.full_like(err, math.inf))
        n_iter += active
        error = torch.where(active, err, error)
        active &= ~(err < tol)
        act.copy_(active)
        if (t + 1) % CHECK_EVERY == 0 and not bool(active.any()):
            break
    stats = torch.zeros(B, 3, dtype=torch.int64, device=dev)
    stats[:, 0] = n_iter
    return _outs(f, g, n_iter, error, stats)


def _outs(*ts):
    out = []
    for t in ts:
        o = _alloc.empty(t.shape, dtype=t.dtype, device=t.device)
        o.copy_(t)
        out.append(o)
    return tuple(out)


def sinkhorn_forward(x, y, a, b, eps: float, rho: float, max_iter: int, tol: float, eps0, eps_scaling: float,
                     path: str):
    """Potentials for point clouds: ``(f, g, n_iter, error, stats)``; ``path`` ``"online"`` (costs from the
    points in every tile) or ``"matrix"`` (C computed once, then read)."""
    if path == "matrix":
        xc, yc, nx, ny = _centre(x, y)
        C = torch.baddbmm(nx[:, :, None] + ny[:, None, :], xc, yc.transpose(1, 2), alpha=-2.0).clamp_min_(0)
        return _solve(None, None, C, a, b, eps, rho, max_iter, tol, eps0, eps_scaling)
    return _solve(x, y, None, a, b, eps, rho, max_iter, tol, eps0, eps_scaling)


def sinkhorn_matrix_forward(C, a, b, eps: float, rho: float, max_iter: int, tol: float, eps0, eps_scaling: float,
                            path: str):
    """Potentials for a cost matrix ``C (B, N, M)``."""
    del path
    return _solve(None, None, C, a, b, eps, rho, max_iter, tol, eps0, eps_scaling)


def _envelope_side(xc, yc, nx, ny, w_other, q_other, p_self, eps):
    dt = xc.dtype
    B, N, D = xc.shape
    M = yc.shape[1]
    rho_out = torch.empty(B, N, dtype=dt, device=xc.device)
    t_out = torch.empty(B, N, D, dtype=dt, device=xc.device)
    BDO = min(_next_pow2(D), 64)
    grid = lambda meta: (triton.cdiv(N, meta["BN"]), triton.cdiv(D, BDO), B)  # noqa: E731
    _sinkhorn_envelope_kernel[grid](xc, *xc.stride(), yc, *yc.stride(), nx, ny, _log(w_other), q_other.contiguous(),
                                    p_self.contiguous(), rho_out, t_out, *t_out.stride(), N, M, D, 1.0 / eps,
                                    ACC=_acc_tl(dt), IN_PREC=_in_prec(dt), BDO=BDO)
    return rho_out, t_out


def _weight_grad(gr, pot, rho_sum, other_mass, eps, rho):
    base = pot if math.isinf(rho) else -rho * torch.expm1(-pot / rho)
    return gr[:, None] * (base - eps * (rho_sum - other_mass[:, None]))


def sinkhorn_backward(grad, x, y, a, b, f, g, eps: float, rho: float, needs=(True, True, True, True)):
    """Envelope gradients ``(grad_x, grad_y, grad_a, grad_b)``: two fused reductions, never the plan."""
    gr = grad.to(a.dtype)
    xc, yc, nx, ny = _centre(x, y)
    gx = gy = ga = gb = None
    if needs[0] or needs[2]:
        rs, t = _envelope_side(xc, yc, nx, ny, b, g, f, eps)
        if needs[0]:
            gx = _outs(2.0 * gr[:, None, None] * a[:, :, None] * (rs[:, :, None] * xc - t))[0]
        if needs[2]:
            ga = _outs(_weight_grad(gr, f, rs, b.sum(1), eps, rho))[0]
    if needs[1] or needs[3]:
        cs, t = _envelope_side(yc, xc, ny, nx, a, f, g, eps)
        if needs[1]:
            gy = _outs(2.0 * gr[:, None, None] * b[:, :, None] * (cs[:, :, None] * yc - t))[0]
        if needs[3]:
            gb = _outs(_weight_grad(gr, g, cs, a.sum(1), eps, rho))[0]
    return gx, gy, ga, gb


def sinkhorn_matrix_backward(grad, C, a, b, f, g, eps: float, rho: float, needs=(True, True, True)):
    """Envelope gradients ``(grad_C, grad_a, grad_b)``; ``grad_C = grad * P`` is N x M like C, so the plan is
    formed by torch elementwise ops (bandwidth-bound; a custom kernel would add nothing)."""
    gr = grad.to(a.dtype)
    q = torch.exp((f[:, :, None] + g[:, None, :] - C) / eps)
    wq = torch.where((a[:, :, None] > 0) & (b[:, None, :] > 0), a[:, :, None] * b[:, None, :] * q,
                     torch.zeros_like(q))
    gC = _outs(gr[:, None, None] * wq)[0] if needs[0] else None
    bq = torch.where(b[:, None, :] > 0, b[:, None, :] * q, torch.zeros_like(q))
    aq = torch.where(a[:, :, None] > 0, a[:, :, None] * q, torch.zeros_like(q))
    ga = _outs(_weight_grad(gr, f, bq.sum(2), b.sum(1), eps, rho))[0] if needs[1] else None
    gb = _outs(_weight_grad(gr, g, aq.sum(1), a.sum(1), eps, rho))[0] if needs[2] else None
    return gC, ga, gb


# ---------------------------------------------------------------------------------------------------
# ahead-of-time compilation specs for tools/triton_aot.py (float32, one autotune config each)
# ---------------------------------------------------------------------------------------------------
def _aot_specs():
    def raw(k):
        return k.fn if hasattr(k, "configs") else k

    f, i = "*fp32", "i32"
    sm_sig = {"x_ptr": f, "sxb": i, "sxn": i, "sxd": i, "y_ptr": f, "syb": i, "syn": i, "syd": i, "nx_ptr": f,
              "ny_ptr": f, "c_ptr": f, "scb": i, "scn": i, "scm": i, "lw_ptr": f, "q_ptr": f, "p_ptr": f,
              "w_ptr": f, "eps0_ptr": f, "act_ptr": "*i32", "e_ptr": f, "N": i, "M": i, "D": i, "eps": "fp32",
              "scale_t": "fp32", "rho": "fp32", "FROM_MATRIX": "constexpr", "UNBALANCED": "constexpr",
              "ERR_MODE": "constexpr", "ACC": "constexpr", "IN_PREC": "constexpr", "BN": "constexpr",
              "BM": "constexpr", "BD": "constexpr"}
    env_sig = {"x_ptr": f, "sxb": i, "sxn": i, "sxd": i, "y_ptr": f, "syb": i, "syn": i, "syd": i, "nx_ptr": f,
               "ny_ptr": f, "lw_ptr": f, "q_ptr": f, "p_ptr": f, "rho_ptr": f, "t_ptr": f, "stb": i, "stn": i,
               "std": i, "N": i, "M": i, "D": i, "inv": "fp32", "ACC": "constexpr", "IN_PREC": "constexpr",
               "BDO": "constexpr", "BN": "constexpr", "BM": "constexpr", "BD": "constexpr"}
    base = {"UNBALANCED": False, "ERR_MODE": 1, "ACC": tl.float32, "IN_PREC": "tf32x3"}
    specs = []
    for cfg in _SOFTMIN_CONFIGS[:2]:
        kw = cfg.kwargs
        specs.append(dict(name=f"softmin_online_{kw['BN']}x{kw['BM']}", fn=raw(_sinkhorn_softmin_kernel),
                          signature=sm_sig, constexprs={**base, "FROM_MATRIX": False, **kw},
                          num_warps=cfg.num_warps, num_stages=cfg.num_stages))
    cfg = _SOFTMIN_CONFIGS[0]
    specs.append(dict(name="softmin_matrix_64x64", fn=raw(_sinkhorn_softmin_kernel), signature=sm_sig,
                      constexprs={**base, "FROM_MATRIX": True, **cfg.kwargs}, num_warps=cfg.num_warps,
                      num_stages=cfg.num_stages))
    for cfg in _ENVELOPE_CONFIGS:
        kw = cfg.kwargs
        specs.append(dict(name=f"envelope_{kw['BN']}x{kw['BM']}_BDO64", fn=raw(_sinkhorn_envelope_kernel),
                          signature=env_sig, constexprs={"ACC": tl.float32, "IN_PREC": "tf32x3", "BDO": 64, **kw},
                          num_warps=cfg.num_warps, num_stages=cfg.num_stages))
    return specs


AOT_SPECS = _aot_specs()
