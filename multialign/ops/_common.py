"""Plumbing shared by the op wrappers: batch flattening and parameter tensors."""
from __future__ import annotations

import torch


def flatten_batch(t: torch.Tensor, batch: torch.Size, tail: int) -> torch.Tensor:
    """Broadcast ``t`` to ``batch + t.shape[-tail:]`` and view it as ``(B, *t.shape[-tail:])``.

    A copy happens only when broadcasting or strides make a view impossible.
    """
    core = t.shape[t.dim() - tail:]
    return t.expand(*batch, *core).reshape(-1, *core)


def param_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype of scalar parameters handed to kernels: float64 stays float64, the rest run in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32
