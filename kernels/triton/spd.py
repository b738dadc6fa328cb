"""Batched symmetric eigendecomposition and matrix functions on the GPU (Triton), forward and backward.

Same functions and signatures as ``kernels/reference/spd.py``. One program per matrix; the matrix lives
in registers as a ``BLOCK x BLOCK`` tile (``BLOCK`` = the next power of two >= d, d <= 64; dense products
by ``tl.dot`` from BLOCK = 16, by a broadcast-reduce below):

``_spd_eig_kernel``  parallel (round-robin) cyclic Jacobi (METHODS.md C.4.3, Brent & Luk 1985): each
                     round rotates BLOCK/2 disjoint pairs at once; the round is the sparse orthogonal
                     matrix ``J`` (c on the diagonal, +-s at (p, q) and (q, p): two non-zeros per column),
                     so ``A <- J^T (A J)`` and ``V <- V J`` are scalings plus ``tl.gather`` of the partner
                     columns/rows, O(BLOCK^2) per round. Then either the matrix function
                     and the reconstruction ``F = (V f(lam)) V^T`` (one more ``tl.dot``) in the same
                     program, or the sorted, sign-normalised eigendecomposition (``spd_eigh``).
``_spd_dk_kernel``   the Daleckii-Krein backward ``V [(V^T sym(G) V) o L] V^T``: four ``tl.dot`` and the
                     cancellation-free Loewner matrix ``L`` (reference ``loewner``), one program per matrix,
                     for d <= 32; for 32 < d <= 64 the four products run as batched GEMMs around the
                     kernel's Loewner step (held in registers they spill), which then runs on
                     BLOCK x 8 column tiles, one program each (the whole 64 x 64 tile spilled in float64).

Round k pairs index i with ``(k - i) mod (BLOCK - 1)`` (the circle method; the fixed player is
BLOCK - 1), so every pair meets once per sweep of BLOCK - 1 rounds. Padding rows/columns (d < BLOCK) are
zero, are never rotated and are masked out of every result. Each matrix is scaled to max |a_ij| = 1
first, so ``sqrt(D^2 + 4 a_pq^2)`` cannot overflow. A sweep ends the iteration when every off-diagonal
entry satisfies ``a_ij^2 <= (d eps)^2 max(|a_ii a_jj|, 1)`` (relative for large diagonal entries,
absolute at the rounding level of the scaled matrix), or after MAX_SWEEPS.

Precision: float32 tiles use ``tl.dot(..., input_precision="ieee")`` -- the rotation products must be
float32-exact (TF32 would cost ~1e-3 relative accuracy in the eigenvectors); float64 tiles use float64
dots (sm_80+, tensor-core DMMA). float16/bfloat16 inputs are upcast by the ops layer. Registers: see
``AOT_SPECS``, ``tools/triton_aot.py`` and ``_WARPS_EIG`` (no spills at any BLOCK). ``eigh_backward`` runs as batched matrix products
in PyTorch (the reference).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import _alloc
from ..reference import spd as _ref

MAX_D = 64
FUNC_CODES = {"log": 0, "sqrt": 1, "invsqrt": 2, "exp": 3, "pow": 4}
MAX_SWEEPS = {torch.float32: 20, torch.float64: 30}

# launch configuration per tile size (data), from tools/triton_aot.py (sm_80/sm_90, ptxas): the Jacobi
# kernel (gather rounds, one dense product at the end) has no spills at any BLOCK with these warp counts
# (with 4 warps at BLOCK 16/32 sm_90 kept an 8-24 B stack). The backward's four dense 64 x 64 x 64 products
# spilled at BLOCK = 64 with every warp count (0.4-1.4 KB of stack), so there they leave the kernel
# (MAX_FUSED_DK). The Loewner step alone on the whole 64 x 64 tile (one program per matrix, 8 warps: 16
# float64 elements a thread) still spilled in float64: log 255 registers and 16 B of stack on sm_90 (0 B on
# sm_80), exp 272/488 B and pow 872/1336 B (sm_80/sm_90); 16 warps cap registers at 128 and spill more. So
# at BLOCK = 64 the kernel runs on BLOCK x _DK_BLOCK_N column tiles, program (matrix, tile), cdiv(d, 8) tiles:
# 64 x 8 with 4 warps is 4 elements a thread, float64 log 92/94 registers (sm_80/sm_90), sqrt/invsqrt
# 78-82, exp 100/106, pow 138/142, float32 32-68, stack 0 for every function and both targets, and 3-6
# blocks (12-24 warps) per SM instead of 1 (8 warps). (64 x 32 with 8 warps: no stack either, but float64
# 130-230 registers, 1 block per SM; 64 x 16 with 4 warps: exp kept 8 B on sm_90.) The row eigenvalues and
# f(h) (64 values) are recomputed by each tile's program: O(BLOCK) against O(BLOCK x 8) divided differences.
# The fused backward at BLOCK = 16 with 4 warps kept 8 B of stack in float64 sqrt on sm_90 (96 registers);
# with 2 warps every function and dtype is at stack 0 on both targets (fp64: 94-146 registers, fp32: 56-72).
_WARPS_EIG = {2: 1, 4: 1, 8: 1, 16: 2, 32: 2, 64: 16}
_WARPS_DK = {2: 1, 4: 1, 8: 1, 16: 2, 32: 8, 64: 4}
_DK_BLOCK_N = 8   # column tile of the Loewner-only kernel (BLOCK > MAX_FUSED_DK)
# the backward is fused (all four products in the kernel) up to this BLOCK; at BLOCK = 64 its products
# spilled 0.4-1.4 KB with every warp count, so there they run as batched GEMMs around the Loewner kernel
MAX_FUSED_DK = 32


def _block(d: int) -> int:
    return max(2, triton.next_power_of_2(d))


@triton.jit
def _mm(a, b, USE_DOT: tl.constexpr):
    """a @ b: ``tl.dot`` (float32-exact "ieee" for float32 tiles) from 16 x 16 up, a broadcast-reduce below
    (tl.dot needs 16 x 16 tiles; BLOCK <= 8 products are 512 multiply-adds)."""
    if USE_DOT:
        return tl.dot(a, b, input_precision="ieee")
    else:
        return tl.sum(a[:, :, None] * b[None, :, :], axis=1)


@triton.jit
def _matfun_scalar(x, p, FUNC: tl.constexpr):
    if FUNC == 0:
        y = tl.log(x)
    elif FUNC == 1:
        y = tl.sqrt(x)
    elif FUNC == 2:
        y = 1.0 / tl.sqrt(x)
    elif FUNC == 3:
        y = tl.exp(x)
    else:
        y = tl.exp(p * tl.log(tl.where(x == 0, 1.0, x)))
        y = tl.where(x == 0, tl.where(p > 0, 0.0, float("inf")), y)
        y = tl.where(p == 0, 1.0, y)
    return y


@triton.jit
def _eig_floor(lam, valid, abs_floor, rel_floor):
    top = tl.max(tl.where(valid, lam, float("-inf")), axis=0)
    fl = abs_floor + 0.0 * top
    fl = tl.where(rel_floor > 0, tl.maximum(fl, rel_floor * tl.maximum(top, 0.0)), fl)
    return fl


@triton.jit
def _spd_eig_kernel(S_ptr, ssb, ssr, ssc, F_ptr, w_ptr, V_ptr, d, p, abs_floor, rel_floor, tol2, max_sweeps,
                    FUNC: tl.constexpr, WANT_F: tl.constexpr, BLOCK: tl.constexpr, DT: tl.constexpr):
    USE_DOT: tl.constexpr = BLOCK >= 16
    b = tl.program_id(0).to(tl.int64)
    r = tl.arange(0, BLOCK)
    rows = r[:, None]
    cols = r[None, :]
    mask = (rows < d) & (cols < d)
    eye = rows == cols
    base = S_ptr + b * ssb
    A = tl.load(base + rows * ssr + cols * ssc, mask=mask, other=0.0).to(DT)
    At = tl.load(base + cols * ssr + rows * ssc, mask=mask, other=0.0).to(DT)
    A = 0.5 * (A + At)
    amax = tl.max(tl.max(tl.abs(A), axis=1), axis=0)
    scale = 1.0 / tl.where((amax > 0) & (amax < float("inf")), amax, 1.0)
    A = A * scale
    V = tl.where(eye, 1.0, 0.0).to(DT)
    m = BLOCK - 1
    sweep = 0
    go = 1
    while (go > 0) & (sweep < max_sweeps):
        for k in range(0, BLOCK - 1):
            j = (k + 2 * m - r) % m
            partner = tl.where(r == m, (k * ((m + 1) // 2)) % m, tl.where(j == r, m, j))
            sel = cols == partner[:, None]
            diag = tl.sum(tl.where(eye, A, 0.0), axis=1)
            apq = tl.sum(tl.where(sel, A, 0.0), axis=1)
            dpart = tl.sum(tl.where(sel, diag[None, :], 0.0), axis=1)
            is_p = r < partner
            app = tl.where(is_p, diag, dpart)
            aqq = tl.where(is_p, dpart, diag)
            dd = aqq - app
            h = tl.sqrt(dd * dd + 4.0 * apq * apq)
            den = tl.abs(dd) + h
            t = 2.0 * apq / tl.where(apq != 0, den, 1.0)   # apq = 0: t = 0, no rotation
            t = tl.where(dd >= 0, t, -t)
            c = 1.0 / tl.sqrt(1.0 + t * t)
            s = t * c
            sigma = tl.where(is_p, -s, s)
            # The round is J (c[col] on the diagonal, sigma[col] at row = partner[col]), two non-zeros per
            # column, so A J, J^T (A J) and V J are a scale plus a scaled gather of the partner column/row:
            # O(BLOCK^2) per round instead of a dense O(BLOCK^3) product.
            pc = tl.broadcast_to(partner[None, :], (BLOCK, BLOCK))
            pr = tl.broadcast_to(partner[:, None], (BLOCK, BLOCK))
            A = A * c[None, :] + tl.gather(A, pc, axis=1) * sigma[None, :]
            A = A * c[:, None] + tl.gather(A, pr, axis=0) * sigma[:, None]
            V = V * c[None, :] + tl.gather(V, pc, axis=1) * sigma[None, :]
            newd = tl.where(is_p, app - t * apq, aqq + t * apq)
            A = tl.where(eye, newd[:, None], tl.where(sel, 0.0, A))
            A = 0.5 * (A + tl.trans(A))
        diag = tl.sum(tl.where(eye, A, 0.0), axis=1)
        prod = tl.abs(diag[:, None] * diag[None, :])
        big = (A * A > tol2 * tl.maximum(prod, 1.0)) & (rows != cols)
        go = tl.max(tl.max(tl.where(big, 1, 0), axis=1), axis=0)
        sweep += 1
    lam = tl.sum(tl.where(eye, A, 0.0), axis=1) / scale
    valid = r < d
    if WANT_F:
        fl = _eig_floor(lam, valid, abs_floor, rel_floor)
        fx = _matfun_scalar(tl.maximum(lam, fl), p, FUNC)
        fx = tl.where(valid, fx, 0.0).to(DT)
        F = _mm(V * fx[None, :], tl.trans(V), USE_DOT)
        F = 0.5 * (F + tl.trans(F))
        out = b * d * d + rows * d + cols
        tl.store(F_ptr + out, F, mask=mask)
        tl.store(w_ptr + b * d + r, lam, mask=valid)
        tl.store(V_ptr + out, V, mask=mask)
    else:
        # ascending ranks (stable), then each column signed so that its largest entry is positive
        li = lam[:, None]
        lj = lam[None, :]
        before = ((lj < li) | ((lj == li) & (cols < rows))) & (cols < d)
        rank = tl.sum(tl.where(before, 1, 0), axis=1)
        absV = tl.where(rows < d, tl.abs(V), -1.0)
        colmax = tl.max(absV, axis=0)
        first = tl.min(tl.where(absV == colmax[None, :], rows, BLOCK), axis=0)
        lead = tl.sum(tl.where(rows == first[None, :], V, 0.0), axis=0)
        V = V * tl.where(lead < 0, -1.0, 1.0)[None, :]
        tl.store(w_ptr + b * d + rank, lam, mask=valid)
        tl.store(V_ptr + b * d * d + rows * d + rank[None, :], V, mask=mask)


@triton.jit
def _expm1_over(y):
    """expm1(y) / y for |y| < 1/2 by its Taylor series (16 terms: float64-accurate)."""
    acc = 1.0 / 17.0 + 0.0 * y
    for k in tl.static_range(15, 0, -1):
        acc = 1.0 + y * acc / (k + 1.0)
    return acc


@triton.jit
def _divided_difference(a, b, fa, fb, p, FUNC: tl.constexpr):
    """(f(b) - f(a)) / (b - a) for a <= b, f'(a) at a = b, without cancellation (reference ``loewner``)."""
    dd = b - a
    dds = tl.where(dd == 0, 1.0, dd)          # safe denominators: the other branch is selected there
    a1 = tl.where(a == 0, 1.0, a)
    if FUNC == 0:  # log1p(d / a) / d = log(w) / ((w - 1) a), w = fl(1 + d / a)
        w = 1.0 + dd / a1
        wm1 = w - 1.0
        v = tl.log(w) / (tl.where(wm1 == 0, 1.0, wm1) * a1)
        v = tl.where(wm1 == 0, 1.0 / a1, v)
        v = tl.where(a == 0, float("inf"), v)
    elif FUNC == 1:  # fa = sqrt(a)
        ssum = fa + fb
        v = tl.where(ssum == 0, 0.0, 1.0 / tl.where(ssum == 0, 1.0, ssum))
    elif FUNC == 2:  # fa = a^-1/2
        sa = tl.sqrt(a)
        sb = tl.sqrt(b)
        v = -1.0 / (sa * sb * (sa + sb))
    elif FUNC == 3:  # fa = e^a
        v = tl.where(dd < 0.5, fa * _expm1_over(tl.minimum(dd, 0.5)), (fb - fa) / dds)
    else:  # fa = a^p
        u = dd / a1
        w = 1.0 + u
        wm1 = w - 1.0
        l1p = tl.where(wm1 == 0, u, tl.log(w) * (u / tl.where(wm1 == 0, 1.0, wm1)))
        y = p * l1p
        small = tl.abs(y) < 0.5
        v = tl.where(small, fa * (y / dds) * _expm1_over(tl.where(small, y, 0.0)), (fb - fa) / dds)
        v = tl.where(a == 0, fb / tl.where(b == 0, 1.0, b), v)
        diag = tl.where(p == 1.0, 1.0, tl.where(a == 0, 0.0, p * fa / a1))
        v = tl.where(dd == 0, diag, v)
    return v


@triton.jit
def _spd_dk_kernel(G_ptr, sgb, sgr, sgc, w_ptr, V_ptr, out_ptr, d, p, abs_floor, rel_floor,
                   FUNC: tl.constexpr, FUSED: tl.constexpr, BLOCK: tl.constexpr, BLOCK_N: tl.constexpr,
                   DT: tl.constexpr):
    # FUSED: G is the upstream gradient, out = V [(V^T sym(G) V) o L] V^T (four products in registers);
    # one program per matrix (BLOCK_N = BLOCK).
    # not FUSED: G already holds V^T G V (batched GEMM outside), out = sym(G) o L (the Loewner step only,
    # elementwise): program (b, j) does the BLOCK x BLOCK_N column tile j of matrix b.
    USE_DOT: tl.constexpr = BLOCK >= 16
    b = tl.program_id(0).to(tl.int64)
    r = tl.arange(0, BLOCK)
    if FUSED:
        c = r
    else:
        c = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    rows = r[:, None]
    cols = c[None, :]
    mask = (rows < d) & (cols < d)
    valid = r < d
    base = G_ptr + b * sgb
    G = tl.load(base + rows * sgr + cols * sgc, mask=mask, other=0.0).to(DT)
    Gt = tl.load(base + cols * sgr + rows * sgc, mask=mask, other=0.0).to(DT)
    G = 0.5 * (G + Gt)
    w = tl.load(w_ptr + b * d + r, mask=valid, other=1.0).to(DT)
    fl = _eig_floor(w, valid, abs_floor, rel_floor)
    if FUSED:
        wc = w
    else:
        wc = tl.load(w_ptr + b * d + c, mask=c < d, other=1.0).to(DT)
    h = tl.maximum(w, fl)
    hc = tl.maximum(wc, fl)
    fh = _matfun_scalar(h, p, FUNC)
    fhc = _matfun_scalar(hc, p, FUNC)
    hi = h[:, None]
    hj = hc[None, :]
    lo = hi <= hj
    a = tl.where(lo, hi, hj)
    bb = tl.where(lo, hj, hi)
    fa = tl.where(lo, fh[:, None], fhc[None, :])
    fb = tl.where(lo, fhc[None, :], fh[:, None])
    L = _divided_difference(a, bb, fa, fb, p, FUNC)
    # a clamped eigenvalue: divided difference of f(max(., floor)) = L * (hi - hj) / (wi - wj)
    wi = w[:, None]
    wj = wc[None, :]
    dw = wi - wj
    clamped = (hi != wi) | (hj != wj)
    ratio = tl.where(dw == 0, 0.0, (hi - hj) / tl.where(dw == 0, 1.0, dw))
    L = tl.where(clamped, L * ratio, L)
    L = tl.where(mask, L, 0.0).to(DT)
    if FUSED:
        V = tl.load(V_ptr + b * d * d + rows * d + cols, mask=mask, other=0.0).to(DT)
        X = _mm(tl.trans(V), _mm(G, V, USE_DOT), USE_DOT)
        Z = X * L
        Y = _mm(V, _mm(Z, tl.trans(V), USE_DOT), USE_DOT)
        Y = 0.5 * (Y + tl.trans(Y))
        tl.store(out_ptr + b * d * d + rows * d + cols, Y, mask=mask)
    else:
        tl.store(out_ptr + b * d * d + rows * d + cols, G * L, mask=mask)


# ---------------------------------------------------------------------------------------------------
# launchers (the backend contract of kernels/reference/spd.py)
# ---------------------------------------------------------------------------------------------------


def _dt(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_d(d: int) -> None:
    if d > MAX_D:
        raise ValueError(f"spd (triton): the one-program-per-matrix Jacobi kernel supports d <= {MAX_D}, got "
                         f"d={d}; use backend='torch' for larger matrices")


def _launch_eig(S: torch.Tensor, want_f: bool, func: str, p: float, abs_floor: float, rel_floor: float):
    B, d = S.shape[0], S.shape[-1]
    _check_d(d)
    dtype = _acc(S.dtype)
    eps = torch.finfo(dtype).eps
    w = _alloc.empty((B, d), dtype=dtype, device=S.device)
    V = _alloc.empty((B, d, d), dtype=dtype, device=S.device)
    F = _alloc.empty((B, d, d), dtype=dtype, device=S.device) if want_f else V
    if B:
        BLOCK = _block(d)
        _spd_eig_kernel[(B,)](S, S.stride(0), S.stride(1), S.stride(2), F, w, V, d, float(p), float(abs_floor),
                              float(rel_floor), float((d * eps) ** 2), MAX_SWEEPS[dtype],
                              FUNC=FUNC_CODES[func], WANT_F=want_f, BLOCK=BLOCK, DT=_dt(dtype),
                              num_warps=_WARPS_EIG[BLOCK])
    return F, w, V


def eigh_forward(S: torch.Tensor):
    _, w, V = _launch_eig(S, False, "log", 0.0, 0.0, 0.0)
    return w, V


def eigh_backward(gw, gV, w, V):
    return _ref.eigh_backward(gw, gV, w, V)


def matfun_forward(S: torch.Tensor, func: str, p: float, abs_floor: float, rel_floor: float):
    return _launch_eig(S, True, func, p, abs_floor, rel_floor)


def _dk_block_n(BLOCK: int) -> int:
    return BLOCK if BLOCK <= MAX_FUSED_DK else min(BLOCK, _DK_BLOCK_N)


def matfun_backward(grad: torch.Tensor, w: torch.Tensor, V: torch.Tensor, func: str, p: float,
                    abs_floor: float, rel_floor: float) -> torch.Tensor:
    B, d = V.shape[0], V.shape[-1]
    _check_d(d)
    out = _alloc.empty((B, d, d), dtype=V.dtype, device=V.device)
    if B:
        BLOCK = _block(d)
        w = w.contiguous()
        V = V.contiguous()
        fused = BLOCK <= MAX_FUSED_DK
        if fused:
            G = grad
        else:
            # the four 64 x 64 x 64 products of one matrix do not fit one program's registers: the two on
            # each side of the Loewner step run as batched GEMMs, the kernel does the Hadamard step
            G = V.mT @ grad.to(V.dtype) @ V
            target, out = out, _alloc.empty((B, d, d), dtype=V.dtype, device=V.device)
        BLOCK_N = _dk_block_n(BLOCK)
        _spd_dk_kernel[(B, triton.cdiv(d, BLOCK_N))](G, G.stride(0), G.stride(1), G.stride(2), w, V, out, d,
                                                     float(p), float(abs_floor), float(rel_floor),
                                                     FUNC=FUNC_CODES[func], FUSED=fused, BLOCK=BLOCK,
                                                     BLOCK_N=BLOCK_N, DT=_dt(V.dtype),
                                                     num_warps=_WARPS_DK[BLOCK])
        if not fused:
            Y = V @ out @ V.mT
            out = target
            torch.add(Y, Y.mT, alpha=1.0, out=out)
            out.mul_(0.5)
    return out


def _aot_specs():
    specs = []
    for dtype, ptr, fp in ((torch.float32, "*fp32", "fp32"), (torch.float64, "*fp64", "fp64")):
        eig_sig = {"S_ptr": ptr, "ssb": "i32", "ssr": "i32", "ssc": "i32", "F_ptr": ptr, "w_ptr": ptr, "V_ptr": ptr,
                   "d": "i32", "p": "fp32", "abs_floor": "fp32", "rel_floor": "fp32", "tol2": "fp32",
                   "max_sweeps": "i32", "FUNC": "constexpr", "WANT_F": "constexpr", "BLOCK": "constexpr",
                   "DT": "constexpr"}
        dk_sig = {"G_ptr": ptr, "sgb": "i32", "sgr": "i32", "sgc": "i32", "w_ptr": ptr, "V_ptr": ptr, "out_ptr": ptr,
                  "d": "i32", "p": "fp32", "abs_floor": "fp32", "rel_floor": "fp32", "FUNC": "constexpr",
                  "FUSED": "constexpr", "BLOCK": "constexpr", "BLOCK_N": "constexpr", "DT": "constexpr"}
        for BLOCK in (8, 16, 32, 64):
            specs.append(dict(name=f"spd_eig_log_{fp}_{BLOCK}", fn=_spd_eig_kernel, signature=eig_sig,
                              constexprs={"FUNC": 0, "WANT_F": True, "BLOCK": BLOCK, "DT": _dt(dtype)},
                              num_warps=_WARPS_EIG[BLOCK], num_stages=1))
            specs.append(dict(name=f"spd_dk_log_{fp}_{BLOCK}", fn=_spd_dk_kernel, signature=dk_sig,
                              constexprs={"FUNC": 0, "FUSED": BLOCK <= MAX_FUSED_DK, "BLOCK": BLOCK,
                                          "BLOCK_N": _dk_block_n(BLOCK), "DT": _dt(dtype)},
                              num_warps=_WARPS_DK[BLOCK], num_stages=1))
        # the fused backward's sqrt, the one function that spilled at BLOCK = 16 (float64, sm_90, 4 warps)
        specs.append(dict(name=f"spd_dk_sqrt_{fp}_16", fn=_spd_dk_kernel, signature=dk_sig,
                          constexprs={"FUNC": FUNC_CODES["sqrt"], "FUSED": True, "BLOCK": 16,
                                      "BLOCK_N": _dk_block_n(16), "DT": _dt(dtype)},
                          num_warps=_WARPS_DK[16], num_stages=1))
        # the Loewner-only kernel's largest divided difference (pow: 1.3 KB of stack on the whole 64 x 64 tile)
        specs.append(dict(name=f"spd_dk_pow_{fp}_64", fn=_spd_dk_kernel, signature=dk_sig,
                          constexprs={"FUNC": FUNC_CODES["pow"], "FUSED": False, "BLOCK": 64,
                                      "BLOCK_N": _dk_block_n(64), "DT": _dt(dtype)},
                          num_warps=_WARPS_DK[64], num_stages=1))
    return specs


AOT_SPECS = _aot_specs()
