"""pytest-benchmark suites (``benchmarks/test_<family>.py``); not part of the default test run.

    pytest benchmarks --benchmark-only --benchmark-group-by=group                 # run
    pytest benchmarks --benchmark-only --benchmark-autosave                      # save under .benchmarks/
    pytest benchmarks --benchmark-only --benchmark-compare --benchmark-compare-fail=median:10%

Every measurement goes through the ``measure`` fixture: an untimed warm-up call (Numba compilation,
Triton autotuning, KeOps builds stay out of the timed region), then ``benchmark.pedantic`` with a round
count calibrated to ~1 s per test (3 to 50 rounds). Sizes: ``MULTIALIGN_BENCH_SIZES`` (default
``small,medium``; ``large`` too if asked).
"""
import os
import time

import pytest
import torch

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))


@pytest.fixture
def measure(benchmark):
    def run(fn, group, target_s=1.0):
        benchmark.group = group
        fn()                                   # warm-up: compilation / autotuning, untimed
        t0 = time.perf_counter()
        fn()
        once = time.perf_counter() - t0
        rounds = max(3, min(50, int(target_s / max(once, 1e-6))))
        benchmark.extra_info["calibration_s"] = once
        return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)
    return run


@pytest.fixture
def op_runner(measure):
    """Time one op of ``multialign.bench.workloads`` (forward, or forward+backward)."""
    from multialign.bench.workloads import NotApplicable, prepare

    def run(op, backend, size, dtype="float32", backward=False):
        try:
            p = prepare(op, backend, size, dtype, backward=backward)
        except NotApplicable as exc:
            pytest.skip(str(exc))
        fn = p.forward_backward if backward else p.forward
        return measure(fn, f"{op} {size} {dtype} {'fwd+bwd' if backward else 'fwd'}")
    return run


@pytest.fixture
def case_runner(measure):
    """Time one provider of a peer-comparison case (``multialign.bench.cases.<family>``), in process."""
    from multialign.bench.harness import Unavailable, find_case

    def run(family, case_key, provider):
        case = find_case(family, case_key)
        try:
            fn = case.providers[provider](dict(case.params, device="cpu"))
        except ImportError as exc:
            pytest.skip(f"{provider}: {exc.name or exc} is not installed")
        except Unavailable as exc:
            pytest.skip(f"{provider}: {exc}")
        return measure(fn, f"{case.key} vs peers")
    return run
