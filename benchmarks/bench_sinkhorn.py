"""pytest-benchmark: Sinkhorn on the CPU side by side with POT (group = problem).

    pytest benchmarks/bench_sinkhorn.py --benchmark-only --benchmark-group-by=group

Providers and inputs are those of ``multialign.bench.cases.sinkhorn`` (unit-scale data, eps = 0.05,
a fixed number of iterations). The full peer comparison (GeomLoss, KeOps, torch, peak memory, tuned
malloc, floors, float64 error) is ``python -m multialign.bench.compare sinkhorn``.
"""
import pytest

from multialign.bench.cases import sinkhorn as cases

PROBLEM = {"N": 1024, "D": 2, "iters": 100}
BATCH = {"B": 32, "N": 256, "D": 16, "iters": 100}


@pytest.mark.parametrize("provider", ["multialign-numba", "multialign-numba-online", "multialign-numba-logmatrix",
                                      "pot-sinkhorn_log-numpy", "pot-sinkhorn-plain"])
def test_sinkhorn_1024x2(measure, provider):
    make = {**cases._OURS, **cases._MATRIX_PEERS}[provider]
    measure(make(dict(PROBLEM, device="cpu")), "sinkhorn 1024x2, 100 iterations")


@pytest.mark.parametrize("provider", ["multialign-numba", "pot-sinkhorn_log-loop"])
def test_sinkhorn_batched(measure, provider):
    make = {"multialign-numba": cases._ma(), "pot-sinkhorn_log-loop": cases._pot_loop}[provider]
    measure(make(dict(BATCH, device="cpu")), "sinkhorn 32 x 256x256x16, 100 iterations")
