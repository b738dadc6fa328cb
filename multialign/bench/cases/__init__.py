"""Benchmark cases, one module per kernel family.

A family module defines ``CASES``: a list of :class:`multialign.bench.harness.Case`. Each case names
an op, a size (a dict of parameters) and a set of providers (multialign backends and peers such as
POT, GeomLoss, KeOps, scikit-learn, SciPy, pyRiemann and plain PyTorch). A provider is a factory
``make(params) -> fn``: it builds the inputs (not timed) and returns the zero-argument callable to
time, whose return value is the op's value (compared with ``reference(params)``, the float64 value on
the same inputs, for the "max error" column). ``floor(params)`` returns the work the op must do
(``flops``, ``exps``, ``bytes``) so the report can say how far from the machine's ceilings each
provider is. See :mod:`multialign.bench.harness` for the full contract (devices, ``Unavailable``).

Every public op is benchmarked: an op of a family that has no case in its family's ``CASES`` gets
op-only cases here (:func:`op_only_cases`) -- each multialign backend against the PyTorch reference,
forward and forward+backward, at the small size and the first larger size of its workload in
:mod:`multialign.bench.workloads` (asv and pytest-benchmark cover all of its sizes).
"""
from __future__ import annotations

FAMILIES = ("gram", "sinkhorn", "stress", "spd")


def _provider(w, backend: str, label: str, dtype: str, backward: bool):
    from ..harness import runs_on
    from ..workloads import Prepared

    def make(p):
        prep = Prepared(w, backend, label, dtype, backward=backward, device=p.get("device", "cpu"))
        if backward:
            return prep.forward_backward
        return lambda: w.value(prep.forward())

    devices = {"numba": ("cpu",), "triton": ("cuda",)}
    be = w.backends()[backend].get("backend", "torch")
    return runs_on(*devices.get(be, ("cpu", "cuda")))(make)


def _reference(w, label: str, dtype: str, backward: bool):
    from ..workloads import Prepared

    def ref(p):
        backend = "torch" if w.has_backend_arg else "default"
        prep = Prepared(w, backend, label, dtype, backward=backward, device="cpu")
        args, kw = prep._reference_inputs()
        if not backward:
            return w.value(prep.w.fn(*args, **kw))
        import torch

        from ..workloads import _to_list

        for i in w.grad_args:
            args[i].requires_grad_(True)
        outs = _to_list(w.value(prep.w.fn(*args, **kw)))
        torch.autograd.backward(outs, [u.double() for u in prep.upstream])
        return tuple(args[i].grad for i in w.grad_args)
    return ref


def op_only_cases(family: str, dtype: str = "float32") -> list:
    """Cases for the family's public ops that its ``CASES`` does not cover (ours only, no peers)."""
    from ..harness import Case, load_cases
    from ..workloads import available

    covered = {c.op.removesuffix("_fwd_bwd") for c in load_cases(family)}
    out = []
    for w in available(family):
        if w.op in covered:
            continue
        headline = next((s for s in w.sizes if s.tier != "small"), None)
        for s in [s for s in w.sizes if s.tier == "small" or s is headline]:   # small, and the first issue size
            size = ",".join(f"{k}={v}" for k, v in s.params.items())
            for backward in (False, True):
                if backward and not w.grad_args:
                    continue
                provs = {}
                for label in w.backends():
                    if label.startswith("torch") and s.tier in w.dense_torch:
                        continue
                    name = "multialign-torch (reference)" if label == "torch" else f"multialign-{label}"
                    provs[name] = _provider(w, label, s.label, dtype, backward)
                work = None if backward else w.work     # no floor is claimed for a backward we have not counted
                ref = _reference(w, s.label, dtype, backward) if s.tier in w.reference_tiers else None
                out.append(Case(w.op + ("_fwd_bwd" if backward else ""), size, dict(s.params), provs, work,
                                note="(op only: no peer case yet)", reference=ref, tier=s.tier, tuned_malloc=False))
    return out


def case_params(family: str, tiers: tuple[str, ...] | None = None, device: str = "cpu") -> list[tuple[str, str]]:
    """(case key, provider) pairs of the family's peer cases, for the pytest-benchmark files."""
    from ..harness import load_cases, provider_devices
    from ..workloads import selected_tiers

    tiers = tiers or selected_tiers("small,medium")
    return [(c.key, p) for c in load_cases(family) if c.tier in tiers
            for p, f in c.providers.items() if device in provider_devices(f)]
