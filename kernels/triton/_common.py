"""Helpers shared by the Triton launchers."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import INTERPRET


class _FixedConfig:
    """Stand-in for ``triton.autotune`` under the interpreter, which has no GPU to time configs on.

    It launches the kernel with one given config, so the kernel body is identical in both modes.
    """

    def __init__(self, fn, config: triton.Config):
        self.fn = fn
        self.config = config

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            meta = dict(self.config.kwargs)
            meta.update(kwargs)
            g = grid(meta) if callable(grid) else grid
            return self.fn[g](*args, **meta)

        return launch


def autotune(configs, key, interpret_config: triton.Config | None = None, **kwargs):
    """``triton.autotune`` on a GPU; under the interpreter, a fixed ``interpret_config``.

    The interpreter config uses small tiles so that the tests, on small inputs, still cross several
    tiles and ragged edges.
    """
    if INTERPRET:
        cfg = interpret_config or configs[0]
        return lambda fn: _FixedConfig(fn, cfg)
    return triton.autotune(configs=configs, key=key, **kwargs)


TL_DTYPE = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32, torch.float64: tl.float64}


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation / output precision: float64 stays float64, everything else accumulates in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32
