"""Output allocation for every backend.

Kernels allocate their outputs through :func:`empty` so that the test suite can poison them: with
``POISON`` on, floating outputs start as NaN and integer outputs as the most negative integer, and any
element a kernel forgets to write fails the comparison against the reference loudly.
"""
from __future__ import annotations

import torch

POISON = False


def empty(shape, *, dtype: torch.dtype, device) -> torch.Tensor:
    if not POISON:
        return torch.empty(shape, dtype=dtype, device=device)
    if dtype.is_floating_point:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    if dtype == torch.bool:
        return torch.zeros(shape, dtype=dtype, device=device)
    return torch.full(shape, torch.iinfo(dtype).min, dtype=dtype, device=device)


def empty_like(t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    return empty(t.shape, dtype=dtype or t.dtype, device=t.device)
