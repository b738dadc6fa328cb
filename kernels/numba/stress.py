"""Kruskal stress-1 and its gradient accumulators on the CPU (Numba + the BLAS torch links), in O(N) memory.

Same functions and signatures as ``kernels/reference/stress.py``: ``stress_forward(x, y, need_gx, need_gy)``
returns the four pair sums ``(R, T, Q, E)`` of every problem and, when asked, the raw gradient
accumulators ``Gx_p = sum_q (d_pq / delta_pq) (x_p - x_q)`` and ``Gy_p = sum_q (delta_pq / d_pq) (y_p - y_q)``
from which the ops layer builds every gradient in O(N D) (METHODS.md C.3.4).

The work is in ``_stress_blas.py`` (its docstring has the details). In short:

* **Upper triangle, BLAS Gram blocks.** Rows are cut into blocks ``I`` of up to 1024 points (one problem;
  512 in a batch) and the columns past ``I``'s diagonal square into chunks ``J`` of ~4 MB tiles (the diagonal
  squares of one problem are split into batched above-diagonal rectangles down to 128 x 128: their lower
  halves are not computed); ``x_I x_J^T`` (K = D1) and ``y_I y_J^T`` (K = D2) come from
  ``torch.bmm(..., out=workspace)`` (MKL sgemm, AVX-512 on the development VM: ~2-3x the Numba
  register-tile product ``_tiles.panel_dot`` that the previous version of this kernel used).
* **One fused epilogue pass** (Numba ``prange`` over the rows of the block, in place): distances, the four
  pair sums per row (float32 within a row chunk, float64 across chunks: results do not depend on the thread
  count), and the weight tiles ``delta / d`` (y side) and ``d / delta`` (x side) written over the Gram tiles
  with their row sums; a fixed-chunk column pass adds the column sums.
* **Gradient products as GEMMs**: ``V_I += w v_J`` and ``V_J += w^T v_I`` (``baddbmm_`` into the output,
  split into pieces that MKL runs one per thread),
  then ``G = S v - V`` (the pair sums are bitwise independent of the thread counts; the gradient
  accumulators only to rounding: MKL may split the K = BJ reduction of ``w v_J`` by thread count). Half the pairs of a full sweep, no N x N buffer: the workspaces (2 to 4 tiles of
  ~4 MB, reused across blocks and calls) and O(N) vectors are all the memory besides x, y and the outputs.
  x is never copied (the big input: 128 MB at N = 65536, D1 = 512).
* **Close points keep their distance.** A pair whose squared distance is below ``THETA * (||a||^2 + ||b||^2)``
  (where the Gram form would have lost more than ~u / THETA of it) is recomputed from explicit differences,
  kept out of the Gram-form products and its gradient term added from the explicit difference.
* **Coincident points**: a pair with ``d <= d_tiny`` (or ``delta <= d_tiny`` on the x side) gets the weight
  0 (the minimum-norm subgradient, METHODS.md C.3.3), never NaN.
* **Compiler notes** (each measured: the epilogue ran scalar when any was missed): ``error_model="numpy"``
  (Numba's default Python error model guards every division with a ZeroDivisionError branch), float
  reductions with ``reassoc`` (no ``nnan``/``ninf``), a float (not integer) close-pair counter (mixing int64
  counter lanes with float32 data stopped the vectoriser), unsigned lane indices for the rows of the
  diagonal block that start past the diagonal, and constants of the working dtype only.
* **The two OpenMP pools.** torch (its bundled libgomp) and Numba's ``omp`` layer (the system libgomp) are
  two different OpenMP runtimes in this environment (not one shared pool). Alternating them per block costs
  nothing measurable on an idle machine, but on an oversubscribed one (other busy processes) the spinning
  workers of Numba's runtime take the cores MKL needs: with two busy processes on the 2-core VM one
  forward+backward at N = 4096 took 0.7-1.9 s instead of 0.12-0.15 s. ``_pool.passive_numba_pool``
  therefore starts Numba's pool with ``OMP_WAIT_POLICY=PASSIVE`` (unless it already runs or the user set a
  policy); idle, that costs nothing measurable here.

Measured after the 1024-row blocks and the split gradient products (same VM; ``ops.stress(x, y).backward()``
on the bench's data, interleaved in one process, medians of 50 calls): N = 4096 47.2 -> 44.8 ms, forward
alone 30.5 -> 29.4 ms; the bench (``--case "stress_fwd_bwd[4096x512x64]" --compare --bars --procs 2``)
43.9 ms = 1.44x its floor (30.4 ms) against torch eager 172 ms (3.92x); N = 65536 10.3 s, peak 48 MB above
the inputs (the bench's figure, as before).
Earlier, after the diagonal split (same VM, same process, ``ops.stress(x, y).backward()`` on the bench's
data, medians of 12 rounds): N = 4096 46.5 -> 44.7 ms; the bench (``--case "stress_fwd_bwd[4096x512x64]"``)
1.51x and 1.55x its floor in two runs (45.8 ms at a GEMM ceiling of 391 GFLOP/s; 47.9 ms at 383);
N = 65536 10.4-10.7 s, peak 48 MiB above the inputs with glibc's default malloc (the bench's figure; with
tuned malloc, which keeps freed memory, RSS peaks at 63.8 MiB), as before the split.
Earlier figures:
Measured (2-core Sapphire Rapids VM, float32, D1 = 512, D2 = 64, N = 4096, forward + gradient in y, through
``multialign bench --op stress --bars --compare``): 50.5 ms against torch eager 185 ms (3.7x) at 1.67x the
floor (GEMM 391 GFLOP/s in that run); the kernel alone 45-47 ms on a quiet machine: MKL's Gram blocks
~30 ms (84 % of the 2048 x 512 x 2048 rate), the gradient GEMMs ~9.4 ms (66-70 %: skinny 64-column
outputs), the epilogue ~3.4 ms. The previous register-tile version: 87-90 ms. N = 65536 forward+backward
(ops.stress, y.grad): 60 MB above the inputs, workspaces included.

float16/bfloat16 are computed in float32 (the ops layer upcasts); pair sums are accumulated per row in
the working precision and across chunks in float64.
"""
from __future__ import annotations

import torch

from .. import _alloc
from ._stress_blas import stress_blas

THETA = {torch.float32: 1.0 / 16.0, torch.float64: 1.0 / 4096.0}
D_TINY = {torch.float32: 1e-18, torch.float64: 1e-30}


def _cdtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def stress_forward(x: torch.Tensor, y: torch.Tensor, need_gx: bool = False, need_gy: bool = False):
    """Pair sums and (optionally) raw gradient accumulators; see ``kernels/reference/stress.py``.

    x (B, N, D1), y (B, N, D2) -> sums (B, 4) float64 [R, T, Q, E], Gx (B, N, D1) or None, Gy (B, N, D2) or None.
    """
    dt = _cdtype(x)
    x = x.to(dt).contiguous()
    y = y.to(dt).contiguous()
    B, N, D1 = x.shape
    D2 = y.shape[2]
    gx = _alloc.empty((B, N, D1), dtype=dt, device=x.device) if need_gx else None
    gy = _alloc.empty((B, N, D2), dtype=dt, device=x.device) if need_gy else None
    for g in (gx, gy):
        if g is not None:
            g.zero_()
    out = _alloc.empty((B, 4), dtype=torch.float64, device=x.device)
    if B * N == 0:
        out.zero_()
        return out, gx, gy
    out.copy_(stress_blas(x, y, need_gx, need_gy, THETA[dt], D_TINY[dt], gx, gy))
    return out, gx, gy
