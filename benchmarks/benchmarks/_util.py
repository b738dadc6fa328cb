"""Shared machinery of the asv suites: one set of benchmark classes per kernel family.

Every public op of a family is benchmarked on every backend this machine can time (torch, numba; triton
on a CUDA machine), at every size of its workload (``multialign.bench.workloads``: ``small`` plus the
sizes of the kernel issues) and in float32 and float64:

* ``Forward.time_forward`` / ``Forward.peakmem_forward``
* ``ForwardBackward.time_forward_backward`` / ``ForwardBackward.peakmem_forward_backward``
  (``backward`` of the outputs against fixed random upstream weights)
* ``Accuracy.track_max_rel_err`` (forward: max |out - ref| / max |ref|) and ``track_grad_max_rel_err``
  (input gradients) against the float64 PyTorch reference on the same inputs, so a faster-but-wrong
  change shows up.

Combinations that do not apply (a torch reference needing N x M memory at the large size, an op without a
backward, a reference too large to compute) are skipped by raising NotImplementedError in ``setup``.
``MULTIALIGN_BENCH_SIZES=small`` restricts every suite to the small tier, ``MULTIALIGN_BENCH_DTYPES=float32``
to one dtype and ``MULTIALIGN_BENCH_BACKENDS=numba,default`` to the listed backends (``.ci/run`` uses all
three, so that its quick pass runs every benchmark of every op once in a couple of minutes).
JIT compilation and autotuning happen in ``setup``, never in the timed call.

Start-up: asv's ``--launch-method forkserver`` imports these modules once and forks a fresh process for every
(benchmark, parameters). Whatever a benchmark's first call would import (the family's kernel modules,
``torch._dynamo`` behind the custom ops, Numba's LLVM code generator) is therefore loaded here, at import,
by ``_preload``: once in the server instead of in every fork (~0.5 s in each of the ~110 forks of the
quick pass that run an op). Nothing runs an op here, so no thread pool (OpenMP, Numba) is started before
the fork. The float64 reference of the ``Accuracy`` suites runs with one torch thread: it is not timed, and
its many small multi-threaded PyTorch ops were slowed down up to tenfold (sinkhorn: 0.3 s -> 2-27 s) when
other processes shared the two cores (OpenMP barriers waiting for a descheduled thread).
"""
import importlib
import os

import torch

from multialign import _backend
from multialign.bench import workloads as W

THREADS = int(os.environ.get("OMP_NUM_THREADS", "2"))
torch.set_num_threads(THREADS)
DTYPES = [d.strip() for d in os.environ.get("MULTIALIGN_BENCH_DTYPES", "float32,float64").split(",") if d.strip()]


def family_params(family):
    """(ops, backends, size labels, dtypes) of a family's asv suites, or None when it has no op yet."""
    ws = W.available(family)
    if not ws:
        return None
    tiers = W.selected_tiers()
    ops = [w.op for w in ws]
    backends = list(dict.fromkeys(b for w in ws for b in w.backends()))
    only = [b.strip() for b in os.environ.get("MULTIALIGN_BENCH_BACKENDS", "").split(",") if b.strip()]
    if only:   # e.g. "numba,default": the compiled backend of each op (ops without a backend argument: default)
        backends = [b for b in backends if b in only]
    sizes = list(dict.fromkeys(s.label for w in ws for s in w.sizes if s.tier in tiers))
    return ops, backends, sizes, DTYPES


_PRELOADED = set()


def _preload(family, backends):
    """Import what the first call of a ``family`` benchmark on ``backends`` would import (see the module
    docstring); a failure here is left to the benchmark itself to report."""
    concrete = {"torch"} | {b for b in ("numba", "triton") if b in backends}
    if "default" in backends and "numba" in W.machine_backends():   # backend="auto" on CPU tensors
        concrete.add("numba")
    for b in sorted(concrete):
        if (family, b) in _PRELOADED:
            continue
        _PRELOADED.add((family, b))
        try:
            _backend.kernel_module(b, family)
        except Exception:   # noqa: BLE001 - the benchmark reports it
            pass
    if "torch._dynamo" not in _PRELOADED:   # imported by the first custom-op call otherwise
        _PRELOADED.add("torch._dynamo")
        try:
            importlib.import_module("torch._dynamo")
        except Exception:   # noqa: BLE001
            pass
    if "numba" in concrete and "numba" not in _PRELOADED:
        _PRELOADED.add("numba")
        import numba

        numba.njit(cache=False)(lambda x: x + 1)(1)   # initialises Numba's code generator (LLVM)


def _prepare(op, backend, size, dtype, backward=False):
    w = W.workload(op)
    if size not in [s.label for s in w.sizes]:
        raise NotImplementedError(f"{op} has no size {size}")
    return W.Prepared(w, backend, size, dtype, backward=backward)   # NotApplicable is a NotImplementedError


def make_suites(family):
    """The Forward, ForwardBackward and Accuracy classes of ``family`` (an empty dict before it lands)."""
    params = family_params(family)
    if params is None:
        return {}
    names = ["op", "backend", "size", "dtype"]
    _preload(family, params[1])

    class Forward:
        timeout = 900

        def setup(self, op, backend, size, dtype):
            self.p = _prepare(op, backend, size, dtype)
            self.p.forward()                       # JIT compilation / autotuning outside the timing

        def time_forward(self, op, backend, size, dtype):
            self.p.forward()

        def peakmem_forward(self, op, backend, size, dtype):
            self.p.forward()

    class ForwardBackward:
        timeout = 900

        def setup(self, op, backend, size, dtype):
            self.p = _prepare(op, backend, size, dtype, backward=True)
            self.p.forward_backward()

        def time_forward_backward(self, op, backend, size, dtype):
            self.p.forward_backward()

        def peakmem_forward_backward(self, op, backend, size, dtype):
            self.p.forward_backward()

    class Accuracy:
        timeout = 900

        def setup(self, op, backend, size, dtype):
            self.p = _prepare(op, backend, size, dtype, backward=bool(W.workload(op).grad_args))
            if self.p.size.tier not in self.p.w.reference_tiers:
                raise NotImplementedError("no float64 reference at this size")
            self.threads = torch.get_num_threads()
            torch.set_num_threads(1)   # not timed; see the module docstring

        def teardown(self, op, backend, size, dtype):   # asv calls it after a skipping setup too
            if getattr(self, "threads", None):
                torch.set_num_threads(self.threads)

        def track_max_rel_err(self, op, backend, size, dtype):
            return self.p.error()[1]

        def track_grad_max_rel_err(self, op, backend, size, dtype):
            if not self.p.w.grad_args:
                return 0.0
            return self.p.grad_error()[1]

    Accuracy.track_max_rel_err.unit = "rel error"
    Accuracy.track_grad_max_rel_err.unit = "rel error"
    out = {}
    for cls in (Forward, ForwardBackward, Accuracy):
        cls.params = params
        cls.param_names = names
        cls.__qualname__ = cls.__name__
        out[cls.__name__] = cls
    return out
