"""pytest-benchmark: the Gram family side by side with its eager peers (group = op and size).

    pytest benchmarks/bench_gram.py --benchmark-only --benchmark-group-by=group

The full peer comparison (KeOps, GeomLoss, peak memory, tuned malloc, floors) is
``python -m multialign.bench.compare gram``.
"""
import pytest
import torch

from multialign import ops
from multialign.bench.cases.gram import _rbf_autograd, _rbf_inplace


def _pts(n, d=64, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g).requires_grad_(grad)


@pytest.mark.benchmark(group="gram rbf 4096x64 fwd")
@pytest.mark.parametrize("provider", ["multialign-numba", "torch-inplace", "torch-cdist"])
def test_gram_forward(benchmark, provider):
    x, y, g = _pts(4096), _pts(4096, seed=1), 1 / 64
    fn = {"multialign-numba": lambda: ops.gram(x, y, gamma=g, backend="numba"),
          "torch-inplace": lambda: _rbf_inplace(x, y, g),
          "torch-cdist": lambda: torch.exp(-g * torch.cdist(x, y) ** 2)}[provider]
    fn()
    benchmark(fn)


@pytest.mark.benchmark(group="gram rbf 4096x64 fwd+bwd")
@pytest.mark.parametrize("provider", ["multialign-numba", "torch-autograd"])
def test_gram_forward_backward(benchmark, provider):
    x, y, g = _pts(4096, grad=True), _pts(4096, seed=1, grad=True), 1 / 64
    W = _pts(4096, 4096, seed=2)
    f = (lambda: ops.gram(x, y, gamma=g, backend="numba")) if provider == "multialign-numba" else (lambda: _rbf_autograd(x, y, g))

    def run():
        x.grad = y.grad = None
        (f() * W).sum().backward()
    run()
    benchmark(run)


@pytest.mark.benchmark(group="mmd2 rbf 4096x64")
@pytest.mark.parametrize("provider", ["multialign-numba", "torch-dense"])
def test_mmd2(benchmark, provider):
    x, y, g = _pts(4096), _pts(4096, seed=1), 1 / 64
    if provider == "multialign-numba":
        fn = lambda: ops.mmd2(x, y, gamma=g, backend="numba")  # noqa: E731
    else:
        fn = lambda: (_rbf_inplace(x, x, g).mean() + _rbf_inplace(y, y, g).mean()  # noqa: E731
                      - 2 * _rbf_inplace(x, y, g).mean())
    fn()
    benchmark(fn)
