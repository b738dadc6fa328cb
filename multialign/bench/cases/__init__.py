"""Benchmark cases, one module per kernel family.

A family module defines ``CASES``: a list of :class:`multialign.bench.harness.Case`. Each case names
an op, a size (a dict of parameters) and a set of providers (multialign backends and peers such as
POT, GeomLoss, KeOps, scikit-learn, SciPy and plain PyTorch). A provider is a factory
``make(params) -> fn``: it builds the inputs (not timed) and returns the zero-argument callable to
time. ``floor(params)`` returns the work the op must do (``flops``, ``exps``, ``bytes``) so the report
can say how far from the machine's ceilings each provider is.
"""
FAMILIES = ("gram", "sinkhorn", "stress", "spd")
