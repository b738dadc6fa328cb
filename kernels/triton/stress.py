"""Kruskal stress-1 and its gradient accumulators on the GPU (Triton), in O(N) memory.

Same functions and signatures as ``kernels/reference/stress.py``. One kernel, ``_stress_kernel``: one
program per (BLOCK x BLOCK) tile ``(I, J)`` of the upper triangle of the N x N distance matrix
(programs with I > J exit at once), for every problem of the batch:

1. both Gram tiles ``x_I x_J^T`` (over D1) and ``y_I y_J^T`` (over D2) with ``tl.dot``, the squared row
   norms accumulated from the same loads;
2. squared distances ``||a||^2 + ||b||^2 - 2<a, b>``; a tile in which some valid pair has its squared
   distance below ``THETA * (||a||^2 + ||b||^2)`` (where that form loses relative accuracy) recomputes
   those entries from explicit differences, one feature at a time (rare);
3. the pair sums ``R = sum (delta - d)^2``, ``T = sum delta^2``, ``Q = sum d^2``, ``E = sum (delta - d) d`` of
   the tile's pairs ``i < j``, added with float64 atomics to one of ``SLOTS`` partial copies of the
   problem's four scalars (summed by the launcher; a single address would serialise every program);
4. when a gradient is wanted, the weight tile ``w = delta/d`` (y side) / ``d/delta`` (x side) -- 0 for
   coincident points (the minimum-norm subgradient) and for the close pairs of step 2 -- and the two
   products ``G_I += rowsum(w) v_I - w v_J``, ``G_J += colsum(w) v_J - w^T v_I`` with ``tl.dot``, added to
   G with atomics; the close pairs add ``w (v_i - v_j)`` from explicit differences (the Gram form would
   cancel). The weights do not depend on the stress value, so the whole backward is this one pass.

Memory: O(N (D1 + D2)); the N x N matrices exist only as registers of one tile.

Precision, chosen deliberately:

* float32: every ``tl.dot`` uses ``input_precision="tf32x3"`` (three TF32 tensor-core products, ~float32
  accuracy). Plain ``"tf32"`` (10-bit mantissa) would wreck the Gram form of the distances, where
  the error is amplified by (||a||^2 + ||b||^2) / d^2. ``MULTIALIGN_TRITON_F32_DOT=ieee`` selects FMA dots.
* float64: float64 dots and accumulation (``"ieee"``).
* float16/bfloat16 are upcast to float32 by the ops layer (the Gram form needs the mantissa).
* Accumulators are float32 (float64 for float64 inputs); the four sums are float64.

The interpreter (TRITON_INTERPRET=1, used by CI) computes in numpy and ignores input_precision.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .. import _alloc
from ._common import acc_dtype, autotune

THETA = {torch.float32: 1.0 / 16.0, torch.float64: 1.0 / 4096.0}
D_TINY = {torch.float32: 1e-18, torch.float64: 1e-30}   # Triton passes Python floats as float32: keep them normal
SLOTS = 64      # the four pair sums of a problem are accumulated into SLOTS partial copies (row tile mod SLOTS)

_F32_DOT = os.environ.get("MULTIALIGN_TRITON_F32_DOT", "tf32x3")
if _F32_DOT not in ("tf32x3", "ieee"):
    raise ValueError(f"MULTIALIGN_TRITON_F32_DOT must be 'tf32x3' or 'ieee', got {_F32_DOT!r}")

# ---------------------------------------------------------------------------------------------------
# autotune configurations (data); the interpreter runs a small fixed config so tests cross tiles
# ---------------------------------------------------------------------------------------------------
# BLOCK: the tile of pairs; BK: the feature chunk of the Gram products; BD: the feature chunk of the
# gradient products. The gradient products keep w (BLOCK x BLOCK) live next to their operands, so the
# 128-tiles use 8 warps.
_CONFIGS = [
    triton.Config({"BLOCK": 64, "BK": 32, "BD": 32}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK": 64, "BK": 64, "BD": 64}, num_warps=8, num_stages=2),
    triton.Config({"BLOCK": 128, "BK": 32, "BD": 32}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK": 32, "BK": 32, "BD": 32}, num_warps=4, num_stages=3),
]
_INTERPRET_CONFIG = triton.Config({"BLOCK": 16, "BK": 16, "BD": 16})


# ---------------------------------------------------------------------------------------------------
# device helpers
# ---------------------------------------------------------------------------------------------------
@triton.jit
def _gram_tile(p, sb, sn, sd, b, rows, cols, N, D, BLOCK: tl.constexpr, BK: tl.constexpr,
               ACC: tl.constexpr, IN_PREC: tl.constexpr):
    """<v_i, v_j> for i in rows, j in cols (BLOCK x BLOCK), and the squared norms of both row sets."""
    acc = tl.zeros((BLOCK, BLOCK), dtype=ACC)
    ni = tl.zeros((BLOCK,), dtype=ACC)
    nj = tl.zeros((BLOCK,), dtype=ACC)
    base = p + b * sb
    rmask = rows < N
    cmask = cols < N
    for k0 in range(0, D, BK):
        kk = k0 + tl.arange(0, BK)
        kmask = kk < D
        a = tl.load(base + rows[:, None] * sn + kk[None, :] * sd, mask=rmask[:, None] & kmask[None, :], other=0.0)
        c = tl.load(base + cols[:, None] * sn + kk[None, :] * sd, mask=cmask[:, None] & kmask[None, :], other=0.0)
        a = a.to(ACC)
        c = c.to(ACC)
        acc = tl.dot(a, tl.trans(c), acc, input_precision=IN_PREC)
        ni += tl.sum(a * a, axis=1)
        nj += tl.sum(c * c, axis=1)
    return acc, ni, nj


@triton.jit
def _sqdist_exact(p, sb, sn, sd, b, rows, cols, N, D, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """||v_i - v_j||^2 from explicit differences, one feature at a time (the rare close-pair path)."""
    out = tl.zeros((BLOCK, BLOCK), dtype=ACC)
    base = p + b * sb
    rmask = rows < N
    cmask = cols < N
    for k in range(0, D):
        a = tl.load(base + rows * sn + k * sd, mask=rmask, other=0.0).to(ACC)
        c = tl.load(base + cols * sn + k * sd, mask=cmask, other=0.0).to(ACC)
        diff = a[:, None] - c[None, :]
        out += diff * diff
    return out


@triton.jit
def _grad_products(w, v, svb, svn, svd, g, sgb, sgn, sgd, b, rows, cols, N, D, BLOCK: tl.constexpr,
                   BD: tl.constexpr, ACC: tl.constexpr, IN_PREC: tl.constexpr):
    """G[rows] += rowsum(w) V[rows] - w V[cols];  G[cols] += colsum(w) V[cols] - w^T V[rows]  (atomics)."""
    rs = tl.sum(w, axis=1)
    cs = tl.sum(w, axis=0)
    wt = tl.trans(w)
    vb = v + b * svb
    gb = g + b * sgb
    rmask = rows < N
    cmask = cols < N
    for d0 in range(0, D, BD):
        dd = d0 + tl.arange(0, BD)
        dmask = dd < D
        m_r = rmask[:, None] & dmask[None, :]
        m_c = cmask[:, None] & dmask[None, :]
        v_r = tl.load(vb + rows[:, None] * svn + dd[None, :] * svd, mask=m_r, other=0.0).to(ACC)
        v_c = tl.load(vb + cols[:, None] * svn + dd[None, :] * svd, mask=m_c, other=0.0).to(ACC)
        g_r = rs[:, None] * v_r - tl.dot(w, v_c, input_precision=IN_PREC)
        g_c = cs[:, None] * v_c - tl.dot(wt, v_r, input_precision=IN_PREC)
        tl.atomic_add(gb + rows[:, None] * sgn + dd[None, :] * sgd, g_r, mask=m_r, sem="relaxed")
        tl.atomic_add(gb + cols[:, None] * sgn + dd[None, :] * sgd, g_c, mask=m_c, sem="relaxed")


@triton.jit
def _grad_exact(w, v, svb, svn, svd, g, sgb, sgn, sgd, b, rows, cols, N, D, ACC: tl.constexpr):
    """G[i] += sum_j w_ij (V[i] - V[j]);  G[j] -= sum_i w_ij (V[i] - V[j])  from explicit differences."""
    vb = v + b * svb
    gb = g + b * sgb
    rmask = rows < N
    cmask = cols < N
    for k in range(0, D):
        a = tl.load(vb + rows * svn + k * svd, mask=rmask, other=0.0).to(ACC)
        c = tl.load(vb + cols * svn + k * svd, mask=cmask, other=0.0).to(ACC)
        t = w * (a[:, None] - c[None, :])
        tl.atomic_add(gb + rows * sgn + k * sgd, tl.sum(t, axis=1), mask=rmask, sem="relaxed")
        tl.atomic_add(gb + cols * sgn + k * sgd, -tl.sum(t, axis=0), mask=cmask, sem="relaxed")


# ---------------------------------------------------------------------------------------------------
# the kernel
# ---------------------------------------------------------------------------------------------------
@triton.jit
def _stress_kernel(x, sxb, sxn, sxd, y, syb, syn, syd, sums, gx, sgxb, sgxn, sgxd, gy, sgyb, sgyn, sgyd,
                   N, D1, D2, theta, d_tiny,
                   NEED_GX: tl.constexpr, NEED_GY: tl.constexpr, ACC: tl.constexpr, IN_PREC: tl.constexpr,
                   SLOTS: tl.constexpr, BLOCK: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr):
    ti = tl.program_id(0)
    tj = tl.program_id(1)
    if ti > tj:          # upper triangle of tiles only
        return
    b = tl.program_id(2).to(tl.int64)
    rows = ti.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    cols = tj.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = (rows[:, None] < cols[None, :]) & (cols[None, :] < N)      # pairs i < j < N

    gxx, nxi, nxj = _gram_tile(x, sxb, sxn, sxd, b, rows, cols, N, D1, BLOCK, BK, ACC, IN_PREC)
    gyy, nyi, nyj = _gram_tile(y, syb, syn, syd, b, rows, cols, N, D2, BLOCK, BK, ACC, IN_PREC)
    sx = nxi[:, None] + nxj[None, :]
    sy = nyi[:, None] + nyj[None, :]
    d2x = sx - 2.0 * gxx
    d2y = sy - 2.0 * gyy
    fx = valid & (d2x < theta * sx)
    fy = valid & (d2y < theta * sy)
    if tl.max((fx | fy).to(tl.int32)) > 0:      # rare: close pairs, from explicit differences
        if tl.max(fx.to(tl.int32)) > 0:
            d2x = tl.where(fx, _sqdist_exact(x, sxb, sxn, sxd, b, rows, cols, N, D1, BLOCK, ACC), d2x)
        if tl.max(fy.to(tl.int32)) > 0:
            d2y = tl.where(fy, _sqdist_exact(y, syb, syn, syd, b, rows, cols, N, D2, BLOCK, ACC), d2y)
    dl = tl.sqrt(tl.maximum(d2x, 0.0))
    dd = tl.sqrt(tl.maximum(d2y, 0.0))
    e = dl - dd
    zero = tl.zeros((BLOCK, BLOCK), dtype=ACC)
    sb = sums + (b * SLOTS + ti % SLOTS) * 4      # SLOTS partial sums per problem: no single hot address
    tl.atomic_add(sb + 0, tl.sum(tl.sum(tl.where(valid, e * e, zero), axis=1), axis=0).to(tl.float64), sem="relaxed")
    tl.atomic_add(sb + 1, tl.sum(tl.sum(tl.where(valid, dl * dl, zero), axis=1), axis=0).to(tl.float64), sem="relaxed")
    tl.atomic_add(sb + 2, tl.sum(tl.sum(tl.where(valid, dd * dd, zero), axis=1), axis=0).to(tl.float64), sem="relaxed")
    tl.atomic_add(sb + 3, tl.sum(tl.sum(tl.where(valid, e * dd, zero), axis=1), axis=0).to(tl.float64), sem="relaxed")

    if NEED_GY:
        ok = valid & (dd > d_tiny)
        r = tl.where(ok, dl / tl.where(ok, dd, 1.0), zero)
        _grad_products(tl.where(fy, zero, r), y, syb, syn, syd, gy, sgyb, sgyn, sgyd, b, rows, cols, N, D2,
                       BLOCK, BD, ACC, IN_PREC)
        if tl.max((fy & ok).to(tl.int32)) > 0:
            _grad_exact(tl.where(fy, r, zero), y, syb, syn, syd, gy, sgyb, sgyn, sgyd, b, rows, cols, N, D2, ACC)
    if NEED_GX:
        ok = valid & (dl > d_tiny)
        r = tl.where(ok, dd / tl.where(ok, dl, 1.0), zero)
        _grad_products(tl.where(fx, zero, r), x, sxb, sxn, sxd, gx, sgxb, sgxn, sgxd, b, rows, cols, N, D1,
                       BLOCK, BD, ACC, IN_PREC)
        if tl.max((fx & ok).to(tl.int32)) > 0:
            _grad_exact(tl.where(fx, r, zero), x, sxb, sxn, sxd, gx, sgxb, sgxn, sgxd, b, rows, cols, N, D1, ACC)


_stress_tuned = autotune(_CONFIGS, key=["N", "D1", "D2", "NEED_GX", "NEED_GY"],
                         interpret_config=_INTERPRET_CONFIG, reset_to_zero=["sums", "gx", "gy"])(_stress_kernel)


# ---------------------------------------------------------------------------------------------------
# launcher (the backend contract)
# ---------------------------------------------------------------------------------------------------
_TL = {torch.float32: tl.float32, torch.float64: tl.float64}


def stress_forward(x: torch.Tensor, y: torch.Tensor, need_gx: bool = False, need_gy: bool = False):
    """Pair sums and (optionally) raw gradient accumulators; see ``kernels/reference/stress.py``.

    x (B, N, D1), y (B, N, D2) -> sums (B, 4) float64 [R, T, Q, E], Gx (B, N, D1) or None, Gy (B, N, D2) or None.
    Inputs may be strided (no copies: x is the big input); outputs are accumulated with atomics.
    """
    dt = acc_dtype(x.dtype)
    x = x.to(dt)
    y = y.to(dt)
    B, N, D1 = x.shape
    D2 = y.shape[2]
    dev = x.device
    sums = torch.zeros((B, SLOTS, 4), dtype=torch.float64, device=dev)      # partial sums, atomics
    gx = _alloc.empty((B, N, D1) if need_gx else (1, 1, 1), dtype=dt, device=dev)
    gy = _alloc.empty((B, N, D2) if need_gy else (1, 1, 1), dtype=dt, device=dev)
    gx.zero_()
    gy.zero_()
    out = _alloc.empty((B, 4), dtype=torch.float64, device=dev)
    if B == 0 or N < 2:
        out.zero_()
        return out, (gx if need_gx else None), (gy if need_gy else None)
    prec = "ieee" if dt == torch.float64 else _F32_DOT

    def grid(meta):
        nt = triton.cdiv(N, meta["BLOCK"])
        return (nt, nt, B)

    _stress_tuned[grid](x, *x.stride(), y, *y.stride(), sums, gx, *gx.stride(), gy, *gy.stride(),
                        N, D1, D2, THETA[dt], D_TINY[dt],
                        NEED_GX=need_gx, NEED_GY=need_gy, ACC=_TL[dt], IN_PREC=prec, SLOTS=SLOTS)
    out.copy_(sums.sum(1))
    return out, (gx if need_gx else None), (gy if need_gy else None)


# ---------------------------------------------------------------------------------------------------
# ahead-of-time compilation specs (multialign bench --gpu-static)
# ---------------------------------------------------------------------------------------------------
def _aot_specs():
    sig = {"x": "*fp32", "sxb": "i64", "sxn": "i64", "sxd": "i64", "y": "*fp32", "syb": "i64", "syn": "i64",
           "syd": "i64", "sums": "*fp64", "gx": "*fp32", "sgxb": "i64", "sgxn": "i64", "sgxd": "i64",
           "gy": "*fp32", "sgyb": "i64", "sgyn": "i64", "sgyd": "i64", "N": "i32", "D1": "i32", "D2": "i32",
           "theta": "fp32", "d_tiny": "fp32", "NEED_GX": "constexpr", "NEED_GY": "constexpr",
           "ACC": "constexpr", "IN_PREC": "constexpr", "SLOTS": "constexpr", "BLOCK": "constexpr", "BK": "constexpr", "BD": "constexpr"}
    specs = []
    for gx_, gy_, tag in ((False, False, "fwd"), (False, True, "fwd_grad_y"), (True, True, "fwd_grad_xy")):
        specs.append(dict(name=f"stress_{tag}", fn=_stress_tuned, signature=sig,
                          constexprs={"NEED_GX": gx_, "NEED_GY": gy_, "ACC": tl.float32, "IN_PREC": "tf32x3", "SLOTS": SLOTS,
                                      **_CONFIGS[0].kwargs},
                          num_warps=_CONFIGS[0].num_warps, num_stages=_CONFIGS[0].num_stages))
    sig64 = {k: (v.replace("fp32", "fp64") if v.startswith("*") else v) for k, v in sig.items()}
    sig64.update(theta="fp64", d_tiny="fp64")
    specs.append(dict(name="stress_fwd_grad_y_f64", fn=_stress_kernel, signature=sig64,
                      constexprs={"NEED_GX": False, "NEED_GY": True, "ACC": tl.float64, "IN_PREC": "ieee", "SLOTS": SLOTS,
                                  **_CONFIGS[0].kwargs},
                      num_warps=_CONFIGS[0].num_warps, num_stages=_CONFIGS[0].num_stages))
    return specs


AOT_SPECS = _aot_specs()
