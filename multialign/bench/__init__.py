"""Peer-comparison harness behind ``multialign bench`` (installed so the command line can run it).

Cases live in ``multialign.bench.cases.<family>``; see :mod:`multialign.bench.harness` for the
interface and for how time, peak memory and floors are measured.
"""
