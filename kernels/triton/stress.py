"""Kruskal stress-1 and its gradient accumulators on the GPU (Triton), in O(N) memory.

Same functions and signatures as ``kernels/reference/stress.py``. Two kernels over one program body: one
program per (BLOCK x BLOCK) tile ``(I, J)`` of the upper triangle of the N x N distance matrix
(programs with I > J exit at once), for every problem of the batch. ``_stress_kernel`` (the forward) does
steps 1-2 below; ``_stress_grad_kernel`` does steps 1-3 for ONE gradient side (y or x): when both gradients
are wanted the launcher runs it twice, the second time recomputing the distances (~1/3 more work than one
fused pass, which held both sides' tiles and spilled registers at every tile size):

1. for x, then for y (one space at a time: only its distance tile outlives it, which keeps the register
   footprint down): the Gram tile ``v_I v_J^T`` with ``tl.dot`` and the squared row norms, then
   ``||a||^2 + ||b||^2 - 2<a, b>``; a tile in which some valid pair has its squared distance below
   ``THETA * (||a||^2 + ||b||^2)`` (where that form loses relative accuracy) recomputes those entries from
   explicit differences, one feature at a time (rare). Pairs outside ``i < j < N`` get distance 0;
2. the pair sums ``R = sum (delta - d)^2``, ``T = sum delta^2``, ``Q = sum d^2``, ``E = sum (delta - d) d`` of
   the tile, added with float64 atomics to one of ``SLOTS`` partial copies of the problem's four scalars
   (summed by the launcher; a single address would serialise every program);
3. when a gradient is wanted, the weight tile ``w = delta/d`` (y side) / ``d/delta`` (x side) -- 0 for
   coincident points (the minimum-norm subgradient) and for close pairs -- and the two products
   ``G_I += rowsum(w) v_I - w v_J`` and ``G_J += colsum(w) v_J - w^T v_I`` with ``tl.dot`` (the second formed
   transposed, ``v_I^T w``, so that w is never transposed), added to G with atomics; close pairs add
   ``w (v_i - v_j)`` from explicit differences (the Gram form would cancel). The weights do not depend on
   the stress value, so the whole backward is this one pass.

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
# gradient products. The first config of each list is spill-free on sm_80 and sm_90 (AOT report,
# `multialign bench --gpu-static --op stress`): the forward at 64-tiles with 16-wide chunks (178 registers
# on sm_80; 32-wide chunks spilled there), the gradient kernel -- which holds both distance tiles, the
# weights and the products of one side -- at 32-tiles, 16-wide gradient chunks and no software pipelining
# (every 64-tile gradient config spilled on sm_80; both sides in one program spilled at every size, hence
# one side per launch). The 64-tile gradient config spills on sm_80 only: it is there for sm_90, where it
# does not (the autotuner picks it only when it measures faster).
_CONFIGS = [            # the forward (no gradient)
    triton.Config({"BLOCK": 64, "BK": 16, "BD": 16}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK": 32, "BK": 32, "BD": 32}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK": 64, "BK": 32, "BD": 32}, num_warps=8, num_stages=3),
]
_GRAD_CONFIGS = [       # the pair sums and one gradient side
    triton.Config({"BLOCK": 32, "BK": 32, "BD": 16}, num_warps=4, num_stages=1),
    triton.Config({"BLOCK": 64, "BK": 32, "BD": 16}, num_warps=8, num_stages=1),
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
    """G[rows] += rowsum(w) V[rows] - w V[cols];  G[cols] += colsum(w) V[cols] - w^T V[rows]  (atomics).

    The second product is formed transposed, ``(V[rows]^T w)`` from a transposed load of V[rows], so that w is
    never transposed (no second BLOCK x BLOCK copy of it in registers)."""
    rs = tl.sum(w, axis=1)
    cs = tl.sum(w, axis=0)
    vb = v + b * svb
    gb = g + b * sgb
    rmask = rows < N
    cmask = cols < N
    for d0 in range(0, D, BD):
        dd = d0 + tl.arange(0, BD)
        dmask = dd < D
        m_r = rmask[:, None] & dmask[None, :]
        m_c = dmask[:, None] & cmask[None, :]
        v_c = tl.load(vb + cols[:, None] * svn + dd[None, :] * svd, mask=cmask[:, None] & dmask[None, :],
                      other=0.0).to(ACC)
        v_r = tl.load(vb + rows[:, None] * svn + dd[None, :] * svd, mask=m_r, other=0.0).to(ACC)
        g_r = rs[:, None] * v_r - tl.dot(w, v_c, input_precision=IN_PREC)
        tl.atomic_add(gb + rows[:, None] * sgn + dd[None, :] * sgd, g_r, mask=m_r, sem="relaxed")
        vt_r = tl.load(vb + rows[None, :] * svn + dd[:, None] * svd, mask=dmask[:, None] & rmask[None, :],
                       other=0.0).to(ACC)
        vt_c = tl.load(vb + cols[None, :] * svn + dd[:, None] * svd, mask=m_c, other=0.0).to(ACC)
        gt_c = cs[None, :] * vt_c - tl.dot(vt_r, w, input_precision=IN_PREC)          # (BD, BLOCK)
        tl.atomic_add(gb + cols[None, :] * sgn + dd[:, None] * sgd, gt_c, mask=m_c, sem="relaxed")


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


@triton.jit
def _sq_norms(p, sb, sn, sd, b, idx, N, D, BLOCK: tl.constexpr, BK: tl.constexpr, ACC: tl.constexpr):
    """||v_i||^2 for i in idx (a BLOCK vector)."""
    out = tl.zeros((BLOCK,), dtype=ACC)
    base = p + b * sb
    for k0 in range(0, D, BK):
        kk = k0 + tl.arange(0, BK)
        a = tl.load(base + idx[:, None] * sn + kk[None, :] * sd, mask=(idx[:, None] < N) & (kk[None, :] < D),
                    other=0.0).to(ACC)
        out += tl.sum(a * a, axis=1)
    return out


@triton.jit
def _distances(p, sb, sn, sd, b, rows, cols, valid, N, D, theta, BLOCK: tl.constexpr, BK: tl.constexpr,
               ACC: tl.constexpr, IN_PREC: tl.constexpr):
    """Distances ||v_i - v_j|| of the tile (0 where not ``valid``): the Gram form, and explicit differences
    where it cannot resolve the pair (squared distance below THETA (||v_i||^2 + ||v_j||^2))."""
    gram, ni, nj = _gram_tile(p, sb, sn, sd, b, rows, cols, N, D, BLOCK, BK, ACC, IN_PREC)
    s = ni[:, None] + nj[None, :]
    d2 = s - 2.0 * gram
    close = valid & (d2 < theta * s)
    if tl.max(close.to(tl.int32)) > 0:      # rare: close pairs, from explicit differences
        d2 = tl.where(close, _sqdist_exact(p, sb, sn, sd, b, rows, cols, N, D, BLOCK, ACC), d2)
    return tl.where(valid, tl.sqrt(tl.maximum(d2, 0.0)), 0.0)


@triton.jit
def _grad_side(num, den, v, svb, svn, svd, g, sgb, sgn, sgd, b, rows, cols, N, D, theta, d_tiny,
               BLOCK: tl.constexpr, BD: tl.constexpr, ACC: tl.constexpr, IN_PREC: tl.constexpr):
    """G += the weighted differences of one space, w = num / den (0 where den <= d_tiny: coincident points,
    and invalid pairs, whose den is 0). Close pairs (den^2 < THETA (||v_i||^2 + ||v_j||^2)) take the
    explicit-difference path, the others the tile products. Which path a pair takes only moves accuracy;
    the test is recomputed here from the norms instead of being kept from the distance pass (registers)."""
    ok = den > d_tiny
    w = tl.where(ok, num / tl.where(ok, den, 1.0), 0.0)
    ni = _sq_norms(v, svb, svn, svd, b, rows, N, D, BLOCK, BD, ACC)
    nj = _sq_norms(v, svb, svn, svd, b, cols, N, D, BLOCK, BD, ACC)
    close = ok & (den * den < theta * (ni[:, None] + nj[None, :]))
    _grad_products(tl.where(close, 0.0, w), v, svb, svn, svd, g, sgb, sgn, sgd, b, rows, cols, N, D, BLOCK, BD,
                   ACC, IN_PREC)
    if tl.max(close.to(tl.int32)) > 0:
        _grad_exact(tl.where(close, w, 0.0), v, svb, svn, svd, g, sgb, sgn, sgd, b, rows, cols, N, D, ACC)


# ---------------------------------------------------------------------------------------------------
# the kernel
# ---------------------------------------------------------------------------------------------------
@triton.jit
def _stress_program(x, sxb, sxn, sxd, y, syb, syn, syd, sums, gx, sgxb, sgxn, sgxd, gy, sgyb, sgyn, sgyd,
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

    # one space at a time, so that only its distances outlive it (register pressure); invalid pairs get 0
    dl = _distances(x, sxb, sxn, sxd, b, rows, cols, valid, N, D1, theta, BLOCK, BK, ACC, IN_PREC)
    dd = _distances(y, syb, syn, syd, b, rows, cols, valid, N, D2, theta, BLOCK, BK, ACC, IN_PREC)
    e = dl - dd
    sb = sums + (b * SLOTS + ti % SLOTS) * 4      # SLOTS partial sums per problem: no single hot address
    tl.atomic_add(sb + 0, tl.sum(tl.sum(e * e, axis=1), axis=0).to(tl.float64), sem="relaxed")
    tl.atomic_add(sb + 1, tl.sum(tl.sum(dl * dl, axis=1), axis=0).to(tl.float64), sem="relaxed")
    tl.atomic_add(sb + 2, tl.sum(tl.sum(dd * dd, axis=1), axis=0).to(tl.float64), sem="relaxed")
    tl.atomic_add(sb + 3, tl.sum(tl.sum(e * dd, axis=1), axis=0).to(tl.float64), sem="relaxed")

    if NEED_GY:
        _grad_side(dl, dd, y, syb, syn, syd, gy, sgyb, sgyn, sgyd, b, rows, cols, N, D2, theta, d_tiny,
                   BLOCK, BD, ACC, IN_PREC)
    if NEED_GX:
        _grad_side(dd, dl, x, sxb, sxn, sxd, gx, sgxb, sgxn, sgxd, b, rows, cols, N, D1, theta, d_tiny,
                   BLOCK, BD, ACC, IN_PREC)


@triton.jit
def _stress_kernel(x, sxb, sxn, sxd, y, syb, syn, syd, sums, gx, sgxb, sgxn, sgxd, gy, sgyb, sgyn, sgyd,
                   N, D1, D2, theta, d_tiny,
                   NEED_GX: tl.constexpr, NEED_GY: tl.constexpr, ACC: tl.constexpr, IN_PREC: tl.constexpr,
                   SLOTS: tl.constexpr, BLOCK: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr):
    """The forward: the four pair sums only (the launcher passes NEED_GX = NEED_GY = False)."""
    _stress_program(x, sxb, sxn, sxd, y, syb, syn, syd, sums, gx, sgxb, sgxn, sgxd, gy, sgyb, sgyn, sgyd,
                    N, D1, D2, theta, d_tiny, NEED_GX, NEED_GY, ACC, IN_PREC, SLOTS, BLOCK, BK, BD)


@triton.jit
def _stress_grad_kernel(x, sxb, sxn, sxd, y, syb, syn, syd, sums, gx, sgxb, sgxn, sgxd, gy, sgyb, sgyn, sgyd,
                        N, D1, D2, theta, d_tiny,
                        NEED_GX: tl.constexpr, NEED_GY: tl.constexpr, ACC: tl.constexpr, IN_PREC: tl.constexpr,
                        SLOTS: tl.constexpr, BLOCK: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr):
    """The pair sums and ONE gradient side (the launcher sets exactly one of NEED_GX / NEED_GY; both sides in
    one program need ~2x the registers and spilled at every tile size)."""
    _stress_program(x, sxb, sxn, sxd, y, syb, syn, syd, sums, gx, sgxb, sgxn, sgxd, gy, sgyb, sgyn, sgyd,
                    N, D1, D2, theta, d_tiny, NEED_GX, NEED_GY, ACC, IN_PREC, SLOTS, BLOCK, BK, BD)


_TUNE_KEY = ["N", "D1", "D2", "NEED_GX", "NEED_GY"]
_stress_tuned = autotune(_CONFIGS, key=_TUNE_KEY, interpret_config=_INTERPRET_CONFIG,
                         reset_to_zero=["sums"])(_stress_kernel)
_stress_grad_tuned = autotune(_GRAD_CONFIGS, key=_TUNE_KEY, interpret_config=_INTERPRET_CONFIG,
                              reset_to_zero=["sums", "gx", "gy"])(_stress_grad_kernel)


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

    common = dict(ACC=_TL[dt], IN_PREC=prec, SLOTS=SLOTS)
    scal = (N, D1, D2, THETA[dt], D_TINY[dt])
    if not (need_gx or need_gy):
        _stress_tuned[grid](x, *x.stride(), y, *y.stride(), sums, gx, *gx.stride(), gy, *gy.stride(), *scal,
                            NEED_GX=False, NEED_GY=False, **common)
    else:
        # one gradient side per launch (registers); the second launch recomputes the distances and adds its
        # pair sums to a scratch buffer, and gets a 1-element stand-in for the other side's accumulator (the
        # autotuner zeroes its launch's outputs while it benchmarks)
        first = True
        for side_x in ((True,) if not need_gy else (False, True) if need_gx else (False,)):
            s_ = sums if first else torch.zeros_like(sums)
            gx_ = gx if side_x else gx.new_zeros((1, 1, 1))
            gy_ = gy if not side_x else gy.new_zeros((1, 1, 1))
            _stress_grad_tuned[grid](x, *x.stride(), y, *y.stride(), s_, gx_, *gx_.stride(), gy_, *gy_.stride(),
                                     *scal, NEED_GX=side_x, NEED_GY=not side_x, **common)
            first = False
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
    f32 = {"ACC": tl.float32, "IN_PREC": "tf32x3", "SLOTS": SLOTS}
    specs = [dict(name="stress_fwd", fn=_stress_tuned, signature=sig, constexprs={"NEED_GX": False, "NEED_GY": False, **f32})]
    for gx_, tag in ((False, "grad_y"), (True, "grad_x")):
        specs.append(dict(name=f"stress_{tag}", fn=_stress_grad_tuned, signature=sig,
                          constexprs={"NEED_GX": gx_, "NEED_GY": not gx_, **f32}))
    sig64 = {k: (v.replace("fp32", "fp64") if v.startswith("*") else v) for k, v in sig.items()}
    sig64.update(theta="fp64", d_tiny="fp64")
    specs.append(dict(name="stress_grad_y_f64", fn=_stress_grad_tuned, signature=sig64,
                      constexprs={"NEED_GX": False, "NEED_GY": True, "ACC": tl.float64, "IN_PREC": "ieee", "SLOTS": SLOTS}))
    return specs


AOT_SPECS = _aot_specs()
