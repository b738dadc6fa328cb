"""pytest-benchmark: the spd family -- every op per backend, forward and forward+backward, and the peer cases.

    pytest benchmarks/test_spd.py --benchmark-only --benchmark-group-by=group

Inputs come from ``multialign.bench.workloads`` (ops) and ``multialign.bench.cases.spd`` (peers), the
same generators as asv and ``multialign bench``; the full comparison (subprocess per provider, peak memory,
tuned malloc, floors, float64 error) is ``multialign bench --op spd --compare``.
"""
import pytest

from multialign.bench.cases import case_params
from multialign.bench.workloads import op_params

FAMILY = "spd"


@pytest.mark.parametrize("op,backend,size", op_params(FAMILY))
def test_forward(op_runner, op, backend, size):
    op_runner(op, backend, size)


@pytest.mark.parametrize("op,backend,size", op_params(FAMILY, backward=True))
def test_forward_backward(op_runner, op, backend, size):
    op_runner(op, backend, size, backward=True)


@pytest.mark.parametrize("case,provider", case_params(FAMILY))
def test_vs_peers(case_runner, case, provider):
    case_runner(FAMILY, case, provider)
