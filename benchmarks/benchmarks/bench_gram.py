"""asv suite for the gram family: time, peak memory and accuracy of every op, backend, size and dtype.

The classes (``Forward``, ``ForwardBackward``, ``Accuracy``) are built by ``_util.make_suites`` from
``multialign.bench.workloads`` (see there for the sizes and inputs); an op added to the family is
picked up without touching this file.
"""
from ._util import make_suites

globals().update(make_suites("gram"))
