"""Shared fixtures: every test runs with NaN-poisoned kernel outputs; ``backend`` parametrises a test
over every backend this machine can run (Triton under TRITON_INTERPRET=1 on CPU)."""
from __future__ import annotations

import os

import pytest
import torch

from multialign.testing import available_backends, poisoned_outputs

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))

ALL_BACKENDS = ("torch", "numba", "triton")


@pytest.fixture(autouse=True)
def _poison_kernel_outputs():
    with poisoned_outputs():
        yield


def pytest_generate_tests(metafunc):
    if "backend" in metafunc.fixturenames:
        have = available_backends()
        params = [pytest.param(b, id=b, marks=() if b in have else pytest.mark.skip(reason=f"{b} unavailable here"))
                  for b in ALL_BACKENDS]
        metafunc.parametrize("backend", params)


def pytest_sessionstart(session):
    # The suite is meant to exercise all three backends; a run that silently loses Triton would hide
    # every Triton kernel, so CI (TRITON_INTERPRET=1) insists on it.
    if os.environ.get("TRITON_INTERPRET") == "1":
        have = available_backends()
        missing = [b for b in ALL_BACKENDS if b not in have]
        if missing:
            raise pytest.UsageError(f"TRITON_INTERPRET=1 but backends {missing} cannot run here")
