"""Per-thread scratch buffers of the GEMM-block paths (gram, stress).

A buffer only grows and is reused across blocks and calls: freshly mapped pages cost 1-3 GB/s to touch on
the development VMs, so re-touching the same block every call is several times cheaper than allocating it.
Each caller names its slot; slots of one thread must not be in use by two live views at once.
"""
from __future__ import annotations

import threading

import torch

_WS = threading.local()


def workspace(slot: str, numel: int, dtype: torch.dtype) -> torch.Tensor:
    """A 1-D view of ``numel`` elements of this thread's buffer ``slot`` (grown when too small)."""
    key = f"{slot}_{dtype}"
    buf = getattr(_WS, key, None)
    if buf is None or buf.numel() < numel:
        buf = torch.empty(numel, dtype=dtype)
        setattr(_WS, key, buf)
    return buf[:numel]
