"""Compile the Triton kernels ahead of time for sm_80 / sm_90 (no GPU needed) and report resources.

    python tools/triton_aot.py [family ...] [--cc 80,90]

Each ``kernels/triton/<family>.py`` lists ``AOT_SPECS``: dicts with ``fn`` (the @triton.jit kernel,
not an autotuner), ``signature`` (argument name -> Triton type, e.g. ``"*fp32"``, ``"i32"``,
``"constexpr"``), ``constexprs`` (name -> value) and optionally ``num_warps``, ``num_stages``, ``name``.
For every spec and target the report gives registers per thread, spills (local memory), shared memory,
and whether tensor-core instructions (``mma``/``wgmma``) were emitted -- read from ptxas's output via
the ``cuobjdump`` that ships in Triton's wheel.
"""
from __future__ import annotations

import argparse
import importlib
import os
import re
import subprocess
import sys
import tempfile

os.environ.pop("TRITON_INTERPRET", None)  # compile for real, not for the interpreter
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

FAMILIES = ("gram", "sinkhorn", "stress", "spd")


def _cuobjdump() -> str:
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


def report(spec: dict, cc: int) -> dict:
    fn = spec["fn"]
    if hasattr(fn, "configs"):  # an Autotuner slipped in: compile the JITFunction it wraps
        fn = fn.fn
    src = ASTSource(fn=fn, signature=spec["signature"], constexprs=spec.get("constexprs", {}))
    opts = {"num_warps": spec.get("num_warps", 4), "num_stages": spec.get("num_stages", 3)}
    k = triton.compile(src, target=GPUTarget("cuda", cc, 32), options=opts)
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(k.asm["cubin"])
        path = f.name
    try:
        res = subprocess.run([_cuobjdump(), "-res-usage", path], capture_output=True, text=True).stdout
    finally:
        os.unlink(path)
    regs = re.search(r"REG:(\d+)", res)
    stack = re.search(r"STACK:(\d+)", res)
    local = re.search(r"LOCAL:(\d+)", res)
    ptx = k.asm["ptx"]
    return {"name": spec.get("name", fn.__name__), "cc": cc, "regs": int(regs.group(1)) if regs else None,
            "stack": int(stack.group(1)) if stack else None, "local": int(local.group(1)) if local else None,
            "shared": k.metadata.shared, "mma": ptx.count("mma.sync"), "wgmma": ptx.count("wgmma.mma_async"),
            "num_warps": opts["num_warps"], "num_stages": opts["num_stages"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("families", nargs="*", default=list(FAMILIES))
    ap.add_argument("--cc", default="80,90")
    a = ap.parse_args(argv)
    ccs = [int(c) for c in a.cc.split(",")]
    print("| kernel | target | warps/stages | regs | spill (stack/local B) | shared B | mma.sync | wgmma |")
    print("|---|---|---|---|---|---|---|---|")
    for fam in a.families:
        try:
            mod = importlib.import_module(f"multialign.kernels.triton.{fam}")
        except ModuleNotFoundError:
            continue
        for spec in getattr(mod, "AOT_SPECS", []):
            for cc in ccs:
                try:
                    r = report(spec, cc)
                except Exception as exc:  # report, keep going
                    print(f"| {fam}.{spec.get('name', '?')} | sm_{cc} | – | compile failed: {type(exc).__name__}: {str(exc)[:200]} |", file=sys.stdout)
                    continue
                print(f"| {fam}.{r['name']} | sm_{cc} | {r['num_warps']}/{r['num_stages']} | {r['regs']} | "
                      f"{r['stack']}/{r['local']} | {r['shared']} | {r['mma']} | {r['wgmma']} |")


if __name__ == "__main__":
    main()
