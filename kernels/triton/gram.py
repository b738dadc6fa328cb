"""Kernel Gram matrices and fused Gram reductions on the GPU (Triton).

Same functions and signatures as ``kernels/reference/gram.py``. Three kernels serve every op:

``_gram_fwd_kernel``      one program per (BN x BM) output tile:   K = phi(s)
``_gram_matvec_kernel``   one program per (BN rows x BC channels): out = sum_j phi(s_ij) v_j, K never stored
``_gram_bwd_rows_kernel`` one program per (BN rows x BDO features): grad_i = sum_j w_ij * (row statistic)
                          -- the backward of both ops for x; with the roles of x and y swapped (strides
                          of the upstream matrix transposed) it is also the backward for y

where s is the tile statistic: ``<x_i, y_j>`` by ``tl.dot`` (rbf, linear, polynomial) or the L1
distance (laplacian, one feature at a time -- it has no GEMM form).

Precision, chosen deliberately:

* float32 inputs: every ``tl.dot`` runs with ``input_precision="tf32x3"`` (three TF32 tensor-core
  products, ~float32 accuracy) by default; ``"ieee"`` (plain FMA, slower) can be selected with the
  ``MULTIALIGN_TRITON_F32_DOT`` environment variable. Plain ``"tf32"`` (10-bit mantissa) is never
  used: it would cost the rbf distances ~1e-3 relative accuracy.
* float16/bfloat16 inputs: native tensor-core dots with float32 accumulation; outputs in the input dtype.
* float64 inputs: float64 dots and accumulation throughout.
* rbf distances: ``||x||^2 + ||y||^2 - 2<x, y>`` on points centred on their common mean; a tile in
  which any squared distance falls below ``TAU * (||x||^2 + ||y||^2)`` recomputes those entries from
  explicit differences (rare; costs one pass over the features on CUDA cores).

The interpreter (TRITON_INTERPRET=1, used by CI) computes in numpy and ignores input_precision, so
it cannot see TF32 error: the choice above is what guards the GPU results.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .. import _alloc
from ._common import autotune

KIND = {"rbf": 0, "laplacian": 1, "linear": 2, "polynomial": 3}
TAU = {torch.float16: 1.0 / 8.0, torch.bfloat16: 1.0 / 8.0, torch.float32: 1.0 / 8.0, torch.float64: 1.0 / 4096.0}

_F32_DOT = os.environ.get("MULTIALIGN_TRITON_F32_DOT", "tf32x3")
if _F32_DOT not in ("tf32x3", "ieee"):
    raise ValueError(f"MULTIALIGN_TRITON_F32_DOT must be 'tf32x3' or 'ieee', got {_F32_DOT!r}")

# ---------------------------------------------------------------------------------------------------
# autotune configurations (data); the interpreter runs the small fixed config so tests cross tiles
# ---------------------------------------------------------------------------------------------------
# Every config below compiles without register spills (stack 0) for sm_80 and sm_90 at D = 64 in float32
# (`multialign bench --gpu-static --op gram`): with float32 inputs, tf32x3 splits each operand into hi/lo
# parts, so BD = 16 and 8 warps for the 128-row tiles keep the live state inside 255 registers
# (128x64 tile, 4 warps: 24 B of stack on sm_90; BD = 32: 216 B on sm_80; 128x128: ~590 B).
_FWD_CONFIGS = [
    triton.Config({"BN": 128, "BM": 64, "BD": 16}, num_warps=8, num_stages=3),
    triton.Config({"BN": 64, "BM": 64, "BD": 16}, num_warps=4, num_stages=3),
]
# the matvec holds the K tile and the (BN x BC) accumulator: 32-column tiles for 128 rows (64 columns
# with 4 warps spill 248 B on sm_80), a single stage for 64x64
_MATVEC_CONFIGS = [
    triton.Config({"BN": 128, "BM": 32, "BD": 16}, num_warps=8, num_stages=2),
    triton.Config({"BN": 64, "BM": 64, "BD": 16}, num_warps=8, num_stages=1),
    triton.Config({"BN": 64, "BM": 32, "BD": 16}, num_warps=4, num_stages=2),
]
# the backward holds u, w and a (BN x BDO) accumulator (BDO up to 64) besides the tf32x3 operand splits:
# 32-column tiles, and one stage with 8 warps (64x64 tiles spill 768 B on sm_80 with the saved K, 2 stages
# of 64x32 spill 104 B there)
_BWD_CONFIGS = [
    triton.Config({"BN": 64, "BM": 32, "BD": 16}, num_warps=8, num_stages=1),
    triton.Config({"BN": 32, "BM": 32, "BD": 16}, num_warps=4, num_stages=2),
]
_INTERPRET_CONFIG = triton.Config({"BN": 16, "BM": 16, "BD": 16})


# ---------------------------------------------------------------------------------------------------
# device helpers
# ---------------------------------------------------------------------------------------------------
@triton.jit
def _stat_tile(x_ptr, sxn, sxd, y_ptr, syn, syd, xo_ptr, yo_ptr, nx_ptr, ny_ptr, rn, rm, N, M, D, g, TAU,
               KIND: tl.constexpr, BN: tl.constexpr, BM: tl.constexpr, BD: tl.constexpr,
               ACC: tl.constexpr, IN_PREC: tl.constexpr):
    """The tile statistic: squared distance (rbf), L1 distance (laplacian) or dot product.

    x/y hold the (centred) points; xo/yo the original points with the same strides, read only to
    recompute close pairs exactly (centring rounds each coordinate by ~u |x - c|)."""
    mn = rn < N
    mm = rm < M
    if KIND == 1:
        s = tl.zeros((BN, BM), ACC)
        for d in range(0, D):
            xc = tl.load(x_ptr + rn * sxn + d * sxd, mask=mn, other=0.0).to(ACC)
            yc = tl.load(y_ptr + rm * syn + d * syd, mask=mm, other=0.0).to(ACC)
            s += tl.abs(xc[:, None] - yc[None, :])
    else:
        s = tl.zeros((BN, BM), ACC)
        for d0 in range(0, D, BD):
            rd = d0 + tl.arange(0, BD)
            md = rd < D
            xt = tl.load(x_ptr + rn[:, None] * sxn + rd[None, :] * sxd, mask=mn[:, None] & md[None, :], other=0.0)
            yt = tl.load(y_ptr + rm[:, None] * syn + rd[None, :] * syd, mask=mm[:, None] & md[None, :], other=0.0)
            s += tl.dot(xt, tl.trans(yt), input_precision=IN_PREC, out_dtype=ACC)
        if KIND == 0:
            nx = tl.load(nx_ptr + rn, mask=mn, other=0.0)
            ny = tl.load(ny_ptr + rm, mask=mm, other=0.0)
            nn = nx[:, None] + ny[None, :]
            d2 = nn - 2.0 * s
            need = (d2 < TAU * nn) & mn[:, None] & mm[None, :]
            if tl.sum(need.to(tl.int32)) > 0:
                # close pairs lost their distance to cancellation: recompute from differences
                ex = tl.zeros((BN, BM), ACC)
                for d in range(0, D):
                    xc = tl.load(xo_ptr + rn * sxn + d * sxd, mask=mn, other=0.0).to(ACC)
                    yc = tl.load(yo_ptr + rm * syn + d * syd, mask=mm, other=0.0).to(ACC)
                    t = xc[:, None] - yc[None, :]
                    ex += t * t
                d2 = tl.where(need, ex, d2)
            s = tl.maximum(d2, 0.0)
    return s


@triton.jit
def _phi(s, g, coef0, DEGREE, KIND: tl.constexpr):
    """Kernel value from the tile statistic."""
    if KIND == 0:
        k = tl.exp(-g * s)
    elif KIND == 1:
        k = tl.exp(-g * s)
    elif KIND == 2:
        k = s
    else:
        base = g * s + coef0
        k = tl.full(s.shape, 1.0, s.dtype)
        for _ in range(0, DEGREE):
            k = k * base
    return k


# ---------------------------------------------------------------------------------------------------
# forward: K
# ---------------------------------------------------------------------------------------------------
@autotune(_FWD_CONFIGS, key=["N", "M", "D", "KIND"], interpret_config=_INTERPRET_CONFIG)
@triton.jit
def _gram_fwd_kernel(x_ptr, sxb, sxn, sxd, y_ptr, syb, syn, syd, xo_ptr, yo_ptr, nx_ptr, ny_ptr, g_ptr, out_ptr, sob, son, som,
                     N, M, D, coef0, DEGREE, TAU,
                     KIND: tl.constexpr, ACC: tl.constexpr, IN_PREC: tl.constexpr,
                     BN: tl.constexpr, BM: tl.constexpr, BD: tl.constexpr):
    # K[b, i, j] = phi(s(x_i, y_j)); one program per BN x BM tile of one problem b
    pid_n = tl.program_id(0).to(tl.int64)
    pid_m = tl.program_id(1).to(tl.int64)
    b = tl.program_id(2).to(tl.int64)
    rn = pid_n * BN + tl.arange(0, BN)
    rm = pid_m * BM + tl.arange(0, BM)
    g = tl.load(g_ptr + b).to(ACC)
    s = _stat_tile(x_ptr + b * sxb, sxn, sxd, y_ptr + b * syb, syn, syd, xo_ptr + b * sxb, yo_ptr + b * syb,
                   nx_ptr + b * N, ny_ptr + b * M,
                   rn, rm, N, M, D, g, TAU, KIND, BN, BM, BD, ACC, IN_PREC)
    k = _phi(s, g, coef0, DEGREE, KIND)
    mask = (rn[:, None] < N) & (rm[None, :] < M)
    tl.store(out_ptr + b * sob + rn[:, None] * son + rm[None, :] * som, k.to(out_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------------
# forward: K @ v
# ---------------------------------------------------------------------------------------------------
@autotune(_MATVEC_CONFIGS, key=["N", "M", "D", "C", "KIND"], interpret_config=_INTERPRET_CONFIG)
@triton.jit
def _gram_matvec_kernel(x_ptr, sxb, sxn, sxd, y_ptr, syb, syn, syd, xo_ptr, yo_ptr, nx_ptr, ny_ptr, g_ptr,
                        v_ptr, svb, svm, svc, out_ptr, sob, son, soc,
                        N, M, D, C, coef0, DEGREE, TAU,
                        KIND: tl.constexpr, ACC: tl.constexpr, IN_PREC: tl.constexpr, BC: tl.constexpr,
                        BN: tl.constexpr, BM: tl.constexpr, BD: tl.constexpr):
    # out[b, i, c] = sum_j phi(s(x_i, y_j)) v[b, j, c]: the K tile goes straight into a second tl.dot
    pid_n = tl.program_id(0).to(tl.int64)
    pid_c = tl.program_id(1).to(tl.int64)
    b = tl.program_id(2).to(tl.int64)
    rn = pid_n * BN + tl.arange(0, BN)
    rc = pid_c * BC + tl.arange(0, BC)
    g = tl.load(g_ptr + b).to(ACC)
    acc = tl.zeros((BN, BC), ACC)
    for m0 in range(0, M, BM):
        rm = m0 + tl.arange(0, BM)
        s = _stat_tile(x_ptr + b * sxb, sxn, sxd, y_ptr + b * syb, syn, syd, xo_ptr + b * sxb, yo_ptr + b * syb,
                   nx_ptr + b * N, ny_ptr + b * M,
                       rn, rm, N, M, D, g, TAU, KIND, BN, BM, BD, ACC, IN_PREC)
        k = _phi(s, g, coef0, DEGREE, KIND)
        k = tl.where(rm[None, :] < M, k, 0.0)
        vt = tl.load(v_ptr + b * svb + rm[:, None] * svm + rc[None, :] * svc,
                     mask=(rm[:, None] < M) & (rc[None, :] < C), other=0.0).to(ACC)
        acc += tl.dot(k, vt, input_precision=IN_PREC, out_dtype=ACC)
    tl.store(out_ptr + b * sob + rn[:, None] * son + rc[None, :] * soc, acc.to(out_ptr.dtype.element_ty),
             mask=(rn[:, None] < N) & (rc[None, :] < C))


# ---------------------------------------------------------------------------------------------------
# backward: rows pass (grad of sum_ij u_ij k(x_i, y_j) with respect to x)
# ---------------------------------------------------------------------------------------------------
@autotune(_BWD_CONFIGS, key=["N", "M", "D", "KIND", "UMODE", "SAVED_K"], interpret_config=_INTERPRET_CONFIG)
@triton.jit
def _gram_bwd_rows_kernel(x_ptr, sxb, sxn, sxd, y_ptr, syb, syn, syd, xo_ptr, yo_ptr, nx_ptr, ny_ptr, g_ptr,
                          u_ptr, sub, su0, su1, k_ptr, skb, sk0, sk1,
                          gb_ptr, sgb, sgn, sgc, v_ptr, svb, svm, svc,
                          gx_ptr, sgxb, sgxn, sgxd, ggr_ptr,
                          N, M, D, C, coef0, DEGREE, TAU,
                          KIND: tl.constexpr, UMODE: tl.constexpr, SAVED_K: tl.constexpr,
                          ACC: tl.constexpr, IN_PREC: tl.constexpr, BC: tl.constexpr, BDO: tl.constexpr,
                          BN: tl.constexpr, BM: tl.constexpr, BD: tl.constexpr):
    # u_ij: UMODE 0 -> u[b, i*su0 + j*su1] (a matrix, possibly read transposed via its strides)
    #       UMODE 2 -> <gb[b, i, :], v[b, j, :]> (the matvec backward)
    # rbf:        grad_i = -2 g (x_i sum_j w_ij - sum_j w_ij y_j),  w = u k          (k loaded when SAVED_K)
    # laplacian:  grad_i = sum_j w_ij sign(x_i - y_j),               w = -g u k
    # linear/poly: grad_i = sum_j w_ij y_j,                           w = u dk/ds
    # ggr[b, i] = sum_j u_ij dk/dgamma (written by the first feature-chunk program only)
    pid_n = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1).to(tl.int64)
    b = tl.program_id(2).to(tl.int64)
    rn = pid_n * BN + tl.arange(0, BN)
    ro = pid_d * BDO + tl.arange(0, BDO)
    mn = rn < N
    mo = ro < D
    g = tl.load(g_ptr + b).to(ACC)
    acc = tl.zeros((BN, BDO), ACC)
    rs = tl.zeros((BN,), ACC)
    ggr = tl.zeros((BN,), ACC)
    if UMODE == 2:
        rc = tl.arange(0, BC)
        gbt = tl.load(gb_ptr + b * sgb + rn[:, None] * sgn + rc[None, :] * sgc,
                      mask=mn[:, None] & (rc[None, :] < C), other=0.0).to(ACC)
    for m0 in range(0, M, BM):
        rm = m0 + tl.arange(0, BM)
        mm = rm < M
        mask = mn[:, None] & mm[None, :]
        if UMODE == 2:
            vt = tl.load(v_ptr + b * svb + rm[:, None] * svm + rc[None, :] * svc,
                         mask=mm[:, None] & (rc[None, :] < C), other=0.0).to(ACC)
            u = tl.dot(gbt, tl.trans(vt), input_precision=IN_PREC, out_dtype=ACC)
        else:
            u = tl.load(u_ptr + b * sub + rn[:, None] * su0 + rm[None, :] * su1, mask=mask, other=0.0).to(ACC)
        u = tl.where(mask, u, 0.0)
        if SAVED_K:
            k = tl.load(k_ptr + b * skb + rn[:, None] * sk0 + rm[None, :] * sk1, mask=mask, other=0.0).to(ACC)
            w = u * k
        else:
            s = _stat_tile(x_ptr + b * sxb, sxn, sxd, y_ptr + b * syb, syn, syd, xo_ptr + b * sxb, yo_ptr + b * syb,
                   nx_ptr + b * N, ny_ptr + b * M,
                           rn, rm, N, M, D, g, TAU, KIND, BN, BM, BD, ACC, IN_PREC)
            if KIND == 0:
                t = u * tl.exp(-g * s)
                w = t
                ggr += tl.sum(-t * s, 1)
            elif KIND == 1:
                t = u * tl.exp(-g * s)
                w = -g * t
                ggr += tl.sum(-t * s, 1)
            elif KIND == 2:
                w = u
            else:
                base = g * s + coef0
                pw = tl.full(s.shape, 1.0, ACC)
                for _ in range(0, DEGREE - 1):
                    pw = pw * base
                t = u * DEGREE * pw
                w = g * t
                ggr += tl.sum(t * s, 1)
        w = tl.where(mask, w, 0.0)
        if KIND == 1:
            # sum_j w_ij sign(x_id - y_jd): no GEMM form; one feature at a time, read-modify-write of the
            # program's own rows (no other program touches them)
            for dd in range(0, BDO):
                d = pid_d * BDO + dd
                if d < D:
                    xc = tl.load(x_ptr + b * sxb + rn * sxn + d * sxd, mask=mn, other=0.0).to(ACC)
                    yc = tl.load(y_ptr + b * syb + rm * syn + d * syd, mask=mm, other=0.0).to(ACC)
                    diff = xc[:, None] - yc[None, :]
                    sg = tl.where(diff > 0, 1.0, tl.where(diff < 0, -1.0, 0.0))
                    col = tl.sum(w * sg, 1)
                    gptr = gx_ptr + b * sgxb + rn * sgxn + d * sgxd
                    prev = tl.load(gptr, mask=mn, other=0.0).to(ACC)
                    tl.store(gptr, (prev + col).to(gx_ptr.dtype.element_ty), mask=mn)
        else:
            rs += tl.sum(w, 1)
            yt = tl.load(y_ptr + b * syb + rm[:, None] * syn + ro[None, :] * syd,
                         mask=mm[:, None] & mo[None, :], other=0.0).to(ACC)
            acc += tl.dot(w, yt, input_precision=IN_PREC, out_dtype=ACC)
    if KIND != 1:
        if KIND == 0:
            xt = tl.load(x_ptr + b * sxb + rn[:, None] * sxn + ro[None, :] * sxd,
                         mask=mn[:, None] & mo[None, :], other=0.0).to(ACC)
            res = -2.0 * g * (xt * rs[:, None] - acc)
        else:
            res = acc
        tl.store(gx_ptr + b * sgxb + rn[:, None] * sgxn + ro[None, :] * sgxd, res.to(gx_ptr.dtype.element_ty),
                 mask=mn[:, None] & mo[None, :])
    if pid_d == 0:
        tl.store(ggr_ptr + b * N + rn, ggr.to(ggr_ptr.dtype.element_ty), mask=mn)


# ---------------------------------------------------------------------------------------------------
# launchers (the backend contract)
# ---------------------------------------------------------------------------------------------------
def _acc_torch(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _acc_tl(dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _in_prec(dtype):
    # float32 dots (also the second dots of half-precision inputs, which run on float32 tiles)
    return "ieee" if dtype == torch.float64 else _F32_DOT


def _next_pow2(n, lo=16):
    return max(lo, triton.next_power_of_2(int(n)))


class _Prepared:
    """Points centred on their common mean (rbf), contiguous, and their squared norms in the accumulation dtype."""

    def __init__(self, x, y, kind):
        sym = y is None
        acc = _acc_torch(x.dtype)
        self.xo = x.contiguous()
        self.yo = self.xo if sym else y.contiguous()
        if kind == 0:
            xa = x.to(acc)
            ya = xa if sym else y.to(acc)
            n = xa.shape[1] + (0 if sym else ya.shape[1])
            centre = (xa.sum(1, keepdim=True) + (0 if sym else ya.sum(1, keepdim=True))) / max(n, 1)
            xs = (xa - centre).to(x.dtype)
            ys = xs if sym else (ya - centre).to(x.dtype)
        else:
            xs = x
            ys = x if sym else y
        self.x = xs.contiguous()
        self.y = ys.contiguous()
        self.nx = self.x.to(acc).pow(2).sum(-1).contiguous()
        self.ny = self.y.to(acc).pow(2).sum(-1).contiguous()
        self.N, self.M, self.D = self.x.shape[1], self.y.shape[1], self.x.shape[2]

    def swapped(self):
        other = object.__new__(_Prepared)
        other.x, other.y, other.nx, other.ny = self.y, self.x, self.ny, self.nx
        other.xo, other.yo = self.yo, self.xo
        other.N, other.M, other.D = self.M, self.N, self.D
        return other


def _gamma(gamma, dtype):
    return gamma.to(_acc_torch(dtype)).contiguous()


def gram_forward(x, y, gamma, kernel: str, degree: int, coef0: float) -> torch.Tensor:
    kind = KIND[kernel]
    P = _Prepared(x, y, kind)
    B = x.shape[0]
    out = _alloc.empty((B, P.N, P.M), dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    grid = lambda meta: (triton.cdiv(P.N, meta["BN"]), triton.cdiv(P.M, meta["BM"]), B)
    _gram_fwd_kernel[grid](P.x, *P.x.stride(), P.y, *P.y.stride(), P.xo, P.yo, P.nx, P.ny, _gamma(gamma, x.dtype),
                           out, *out.stride(), P.N, P.M, P.D, float(coef0), int(degree), TAU[x.dtype],
                           KIND=kind, ACC=_acc_tl(x.dtype), IN_PREC=_in_prec(x.dtype))
    return out


def _matvec(P, v, gamma, kind, degree, coef0, dtype):
    B, C = v.shape[0], v.shape[2]
    out = _alloc.empty((B, P.N, C), dtype=dtype, device=v.device)
    if out.numel() == 0:
        return out
    if P.M == 0:
        return out.zero_()
    BC = min(_next_pow2(C), 64)
    grid = lambda meta: (triton.cdiv(P.N, meta["BN"]), triton.cdiv(C, BC), B)
    _gram_matvec_kernel[grid](P.x, *P.x.stride(), P.y, *P.y.stride(), P.xo, P.yo, P.nx, P.ny, _gamma(gamma, dtype),
                              v, *v.stride(), out, *out.stride(), P.N, P.M, P.D, C, float(coef0), int(degree),
                              TAU[dtype], KIND=kind, ACC=_acc_tl(dtype), IN_PREC=_in_prec(dtype), BC=BC)
    return out


def gram_matvec_forward(x, y, v, gamma, kernel: str, degree: int, coef0: float) -> torch.Tensor:
    kind = KIND[kernel]
    return _matvec(_Prepared(x, y, kind), v.to(x.dtype), gamma, kind, degree, coef0, x.dtype)


def _rows(P, gamma, kind, degree, coef0, dtype, *, U=None, transpose_u=False, K=None, Gb=None, V=None):
    """grad with respect to P.x of sum_ij u_ij k(P.x_i, P.y_j), and the rows' grad_gamma shares."""
    B = P.x.shape[0]
    acc = _acc_torch(dtype)
    dev = P.x.device
    gx = _alloc.empty((B, P.N, P.D), dtype=acc, device=dev)
    ggr = _alloc.empty((B, P.N), dtype=acc, device=dev)
    if P.N == 0:
        return gx, ggr
    if kind == 1 or P.M == 0:
        gx.zero_()  # laplacian accumulates into gx in place
        if P.M == 0:
            ggr.zero_()
            return gx, ggr
    dummy = torch.zeros(1, 1, 1, dtype=acc, device=dev)
    if U is not None:
        umode = 0
        sub, su0, su1 = U.stride()
        if transpose_u:
            su0, su1 = su1, su0
        gb = v = dummy
        C, BC = 1, 16
    else:
        umode = 2
        U = dummy
        sub = su0 = su1 = 0
        gb, v = Gb, V
        C = Gb.shape[2]
        BC = _next_pow2(C)
    if K is not None:
        skb, sk0, sk1 = K.stride()
        if transpose_u:
            sk0, sk1 = sk1, sk0
    else:
        K = dummy
        skb = sk0 = sk1 = 0
    BDO = min(_next_pow2(P.D), 64)
    grid = lambda meta: (triton.cdiv(P.N, meta["BN"]), triton.cdiv(P.D, BDO), B)
    _gram_bwd_rows_kernel[grid](P.x, *P.x.stride(), P.y, *P.y.stride(), P.xo, P.yo, P.nx, P.ny, _gamma(gamma, dtype),
                                U, sub, su0, su1, K, skb, sk0, sk1, gb, *gb.stride(), v, *v.stride(),
                                gx, *gx.stride(), ggr, P.N, P.M, P.D, C, float(coef0), int(degree), TAU[dtype],
                                KIND=kind, UMODE=umode, SAVED_K=K is not dummy, ACC=_acc_tl(dtype),
                                IN_PREC=_in_prec(dtype), BC=BC, BDO=BDO)
    return gx, ggr


def gram_backward(grad, x, y, gamma, K, kernel: str, degree: int, coef0: float, needs=(True, True, True)):
    """(grad_x, grad_y, grad_gamma) of <grad, K>; grad_y is None when y is None (its share is in grad_x)."""
    kind = KIND[kernel]
    sym = y is None
    dtype = x.dtype
    P = _Prepared(x, y, kind)
    G = grad.to(_acc_torch(dtype))
    saved = K if (kind == 0 and not needs[2]) else None  # rbf: w = G * K, no recomputation
    gx = gy = gg = None
    if needs[0] or needs[2]:
        gx, ggr = _rows(P, gamma, kind, degree, coef0, dtype, U=G, K=saved)
        gg = ggr.sum(1)
    if sym and needs[0]:
        gx2, _ = _rows(P, gamma, kind, degree, coef0, dtype, U=G, transpose_u=True, K=saved)
        gx = gx + gx2
    elif needs[1] and not sym:
        gy, _ = _rows(P.swapped(), gamma, kind, degree, coef0, dtype, U=G, transpose_u=True, K=saved)
    return (gx.to(dtype) if needs[0] else None, gy.to(dtype) if gy is not None else None,
            gg.to(gamma.dtype) if needs[2] else None)


def gram_matvec_backward(grad, x, y, v, gamma, kernel: str, degree: int, coef0: float,
                         needs=(True, True, True, True)):
    """(grad_x, grad_y, grad_v, grad_gamma) of <grad, K(x, y) v>; every term a fused reduction."""
    kind = KIND[kernel]
    sym = y is None
    dtype = x.dtype
    P = _Prepared(x, y, kind)
    acc = _acc_torch(dtype)
    Gb = grad.to(acc).contiguous()
    V = v.to(acc).contiguous()
    gx = gy = gv = gg = None
    if needs[0] or needs[3]:
        gx, ggr = _rows(P, gamma, kind, degree, coef0, dtype, Gb=Gb, V=V)
        gg = ggr.sum(1)
    if needs[1] or (sym and needs[0]):
        gyt, _ = _rows(P.swapped(), gamma, kind, degree, coef0, dtype, Gb=V, V=Gb)
        if sym:
            gx = gx + gyt
        else:
            gy = gyt
    if needs[2]:
        gv = _matvec(P.swapped(), Gb, gamma, kind, degree, coef0, acc)
    return (gx.to(dtype) if needs[0] else None, gy.to(dtype) if gy is not None else None,
            gv.to(v.dtype) if needs[2] else None, gg.to(gamma.dtype) if needs[3] else None)


# ---------------------------------------------------------------------------------------------------
# ahead-of-time compilation specs for tools/triton_aot.py (float32, rbf, one autotune config each)
# ---------------------------------------------------------------------------------------------------
def _aot_specs():
    def raw(k):  # the JITFunction under an Autotuner
        return k.fn if hasattr(k, "configs") else k

    common = {"KIND": 0, "ACC": tl.float32, "IN_PREC": "tf32x3"}
    f, i = "*fp32", "i32"
    fwd_sig = {"x_ptr": f, "sxb": i, "sxn": i, "sxd": i, "y_ptr": f, "syb": i, "syn": i, "syd": i, "xo_ptr": f,
               "yo_ptr": f, "nx_ptr": f,
               "ny_ptr": f, "g_ptr": f, "out_ptr": f, "sob": i, "son": i, "som": i, "N": i, "M": i, "D": i,
               "coef0": "fp32", "DEGREE": i, "TAU": "fp32", "KIND": "constexpr", "ACC": "constexpr",
               "IN_PREC": "constexpr", "BN": "constexpr", "BM": "constexpr", "BD": "constexpr"}
    mv_sig = {k: v for k, v in fwd_sig.items() if k not in ("out_ptr", "sob", "son", "som")}
    mv_sig = {**{k: mv_sig[k] for k in list(mv_sig)[:13]}, "v_ptr": f, "svb": i, "svm": i, "svc": i,
              "out_ptr": f, "sob": i, "son": i, "soc": i, "N": i, "M": i, "D": i, "C": i, "coef0": "fp32",
              "DEGREE": i, "TAU": "fp32", "KIND": "constexpr", "ACC": "constexpr", "IN_PREC": "constexpr",
              "BC": "constexpr", "BN": "constexpr", "BM": "constexpr", "BD": "constexpr"}
    bwd_sig = {**{k: fwd_sig[k] for k in list(fwd_sig)[:13]}, "u_ptr": f, "sub": i, "su0": i, "su1": i,
               "k_ptr": f, "skb": i, "sk0": i, "sk1": i, "gb_ptr": f, "sgb": i, "sgn": i, "sgc": i,
               "v_ptr": f, "svb": i, "svm": i, "svc": i, "gx_ptr": f, "sgxb": i, "sgxn": i, "sgxd": i,
               "ggr_ptr": f, "N": i, "M": i, "D": i, "C": i, "coef0": "fp32", "DEGREE": i, "TAU": "fp32",
               "KIND": "constexpr", "UMODE": "constexpr", "SAVED_K": "constexpr", "ACC": "constexpr",
               "IN_PREC": "constexpr", "BC": "constexpr", "BDO": "constexpr", "BN": "constexpr",
               "BM": "constexpr", "BD": "constexpr"}
    specs = []
    for cfg in _FWD_CONFIGS[:2]:
        specs.append(dict(name=f"gram_fwd_rbf_{cfg.kwargs['BN']}x{cfg.kwargs['BM']}", fn=raw(_gram_fwd_kernel),
                          signature=fwd_sig, constexprs={**common, **cfg.kwargs}, num_warps=cfg.num_warps,
                          num_stages=cfg.num_stages))
    for cfg in _MATVEC_CONFIGS[:2]:
        specs.append(dict(name=f"gram_matvec_rbf_{cfg.kwargs['BN']}x{cfg.kwargs['BM']}",
                          fn=raw(_gram_matvec_kernel), signature=mv_sig,
                          constexprs={**common, "BC": 16, **cfg.kwargs}, num_warps=cfg.num_warps,
                          num_stages=cfg.num_stages))
    for saved, umode in ((True, 0), (False, 2)):
        cfg = _BWD_CONFIGS[0]
        specs.append(dict(name=f"gram_bwd_rows_rbf_{'savedK' if saved else 'matvec'}",
                          fn=raw(_gram_bwd_rows_kernel), signature=bwd_sig,
                          constexprs={**common, "UMODE": umode, "SAVED_K": saved, "BC": 16, "BDO": 64,
                                      **cfg.kwargs}, num_warps=cfg.num_warps, num_stages=cfg.num_stages))
    return specs


AOT_SPECS = _aot_specs()
