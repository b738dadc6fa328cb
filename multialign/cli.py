"""The ``multialign`` command line.

    multialign bench [--op gram|mmd|sinkhorn|stress|spd|all] [--sizes ...] [--compare] [--out DIR] [--gpu-static]

Each subcommand is a small ``register_<name>(subparsers)`` function that adds its parser and sets
``func`` to the callable that runs it (importing its machinery only then). New subcommands
(``demo``, ``fit``, ``eval``, ``encode``) are added to ``COMMANDS``.
"""
from __future__ import annotations

import argparse
import sys


def _bench(args) -> int:
    from multialign.bench.runner import main_bench

    return main_bench(args)


def register_bench(sub) -> None:
    from multialign.bench.runner import add_arguments

    p = sub.add_parser(
        "bench", help="time every op against its peers; static GPU report of the Triton kernels",
        description="Time each op against every installed peer (each configuration in its own subprocess: "
                    "median/min/max, peak memory, floor, ratio to the best peer, max error against float64), "
                    "write JSON, CSV, Markdown and log-log plots; or (--gpu-static) compile every Triton kernel for "
                    "sm_80/sm_90 and report registers, spills, shared memory, occupancy and tensor-core use.",
        epilog="examples:\n"
               "  multialign bench --op mmd --sizes small --compare\n"
               "  multialign bench --op all --compare --out docs/bench-results --doc docs/benchmarks.md\n"
               "  multialign bench --gpu-static --out docs/bench-results --doc docs/benchmarks.md",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=_bench)


COMMANDS = [register_bench]   # the product issue adds register_demo, register_fit, register_eval, register_encode


def build_parser() -> argparse.ArgumentParser:
    from multialign import __version__

    parser = argparse.ArgumentParser(prog="multialign", description="Fast, differentiable multimodal-alignment "
                                     "losses: fused Triton (GPU) and Numba (CPU) kernels.")
    parser.add_argument("--version", action="version", version=f"multialign {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for register in COMMANDS:
        register(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
