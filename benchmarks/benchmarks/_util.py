"""Shared set-up for the asv suites: thread count and deterministic data."""
import os

import torch

THREADS = int(os.environ.get("OMP_NUM_THREADS", "2"))
torch.set_num_threads(THREADS)


def points(n, d, dtype="float32", seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(n, d, generator=g, dtype=torch.float64).to(getattr(torch, dtype))
    return t.requires_grad_(requires_grad)
