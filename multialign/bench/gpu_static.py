"""The GPU without a GPU: compile every Triton kernel for sm_80 / sm_90 and read what ptxas made of it.

    multialign bench --gpu-static [--op gram] [--cc 80,90] [--default-configs-only] [--out DIR]
    python -m multialign.bench.gpu_static [family ...]           # the same report, markdown on stdout

Triton compiles ahead of time for a GPU it does not see (``triton.compile(ASTSource(...),
target=GPUTarget("cuda", cc, 32))``); the ``cuobjdump`` that ships in Triton's wheel reads the cubin.
For every kernel, at every config of its autotune list, for each target, the report gives:

* registers per thread, stack and local memory (bytes; non-zero = ptxas spilled registers), shared memory
  (Triton's dynamic allocation + static), and the resulting occupancy: resident blocks per SM and active
  warps / 64, with the resource that limits it (registers, shared memory or warps);
* every ``tt.dot`` of the kernel with its operand type and input precision (from the Triton IR), and the
  tensor-core instructions in the SASS (``HMMA`` on sm_80, ``HGMMA`` -- wgmma -- or ``HMMA`` on sm_90,
  ``DMMA`` for float64) and PTX (``mma.sync``, ``wgmma.mma_async``).

The bar (``bar`` in the result; ``--strict`` turns a miss into exit status 3): every kernel compiles for
both targets; no default config spills (the first config of an autotune list, or the only config of a kernel
that is not autotuned); every half-precision or TF32 dot (``tf32``, ``tf32x3``) lowers to tensor-core
instructions. An IEEE float32 dot legitimately runs on FMA units, and float64 dots are not held to it (the
report says what they became). Spills of the other autotune configs are listed as warnings: the autotuner
may pick one of them, but only when it measures faster despite the spill.

Kernel modules opt in with ``AOT_SPECS`` (``kernels/triton/<family>.py``): a list of dicts with ``fn``
(the ``@triton.jit`` kernel or the autotuner wrapping it), ``signature`` (argument -> Triton type, e.g.
``"*fp32"``, ``"i32"``, ``"constexpr"``), ``constexprs`` (name -> value), optionally ``num_warps``,
``num_stages`` and ``name``. When ``fn`` is wrapped by ``triton.autotune`` in that module, the spec is
compiled once per config of the autotune list (the config's meta-parameters, warps and stages override the
spec's); otherwise once, as given.

Compilation runs in a subprocess with ``TRITON_INTERPRET`` unset (under the interpreter ``@triton.jit``
yields functions that cannot be compiled); a family whose module fails to import is reported, the others go on.
"""
from __future__ import annotations

import importlib
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter

FAMILIES = ("gram", "sinkhorn", "stress", "spd")

# per-SM limits (CUDA occupancy calculator): 64 K registers, allocated per warp in units of 256; shared
# memory per SM / per block (opt-in maximum), 1 KB reserved per block; 64 warps and 32 blocks per SM.
SM_LIMITS = {
    80: {"regs": 65536, "smem_sm": 167936, "smem_block": 166912, "warps": 64, "blocks": 32},
    90: {"regs": 65536, "smem_sm": 233472, "smem_block": 232448, "warps": 64, "blocks": 32},
}
TC_SASS = ("HMMA", "HGMMA", "DMMA", "IMMA", "QMMA")
HALF = {"f16", "bf16", "f8E4M3FN", "f8E5M2", "f8E4M3FNUZ", "f8E5M2FNUZ"}


# --------------------------------------------------------------------------------------------- occupancy
def occupancy(cc: int, regs: int, warps: int, shared: int) -> dict:
    """Resident blocks per SM, active-warp occupancy and the limiting resource."""
    lim = SM_LIMITS.get(cc, SM_LIMITS[90])
    per_warp = math.ceil(max(regs, 1) * 32 / 256) * 256
    by = {"warps": lim["warps"] // warps, "blocks": lim["blocks"],
          "registers": (lim["regs"] // per_warp) // warps}
    if shared > lim["smem_block"]:
        by["shared"] = 0
    elif shared:
        by["shared"] = lim["smem_sm"] // (math.ceil((shared + 1024) / 128) * 128)
    blocks = min(by.values())
    limiter = "+".join(k for k in ("registers", "shared", "warps", "blocks") if by.get(k) == blocks)
    return {"blocks_per_sm": blocks, "occupancy": blocks * warps / lim["warps"], "limiter": limiter}


# --------------------------------------------------------------------------------------------- specs
def _jit_of(fn):
    """The JITFunction under autotuner / heuristics wrappers."""
    from triton.runtime.jit import JITFunction

    for _ in range(8):
        if isinstance(fn, JITFunction) or not hasattr(fn, "fn"):
            break
        fn = fn.fn
    return fn


def expand_specs(mod, all_configs: bool = True) -> list[dict]:
    """The module's AOT_SPECS, one entry per autotune config (deduplicated)."""
    from triton.runtime.autotuner import Autotuner

    tuners = {}
    for v in vars(mod).values():
        if isinstance(v, Autotuner):
            tuners[id(_jit_of(v))] = v
    raw = list(getattr(mod, "AOT_SPECS", []))
    fixed_by_fn: dict[int, list[dict]] = {}
    for s in raw:
        fixed_by_fn.setdefault(id(_jit_of(s["fn"])), []).append(s)
    out, seen = [], set()
    for spec in raw:
        fn = _jit_of(spec["fn"])
        tuner = tuners.get(id(fn))
        cfg_keys: set = set()
        if tuner is not None:
            configs = list(tuner.configs) if all_configs else list(tuner.configs)[:1]
            cfg_keys = set().union(*(c.kwargs for c in tuner.configs))
            variants = [(i, dict(c.kwargs), c.num_warps, c.num_stages) for i, c in enumerate(configs)]
        else:
            variants = [(0, {}, spec.get("num_warps", 4), spec.get("num_stages", 3))]
        # what distinguishes this spec from the module's other specs of the same kernel (e.g. a mode flag)
        siblings = fixed_by_fn[id(fn)]
        differing = sorted(k for k in spec.get("constexprs", {}) if k not in cfg_keys and
                           len({repr(s.get("constexprs", {}).get(k)) for s in siblings}) > 1)
        variant = ",".join(f"{k}={spec['constexprs'][k]}" for k in differing)
        for idx, kw, warps, stages in variants:
            constexprs = {**spec.get("constexprs", {}), **kw}
            key = (id(fn), tuple(sorted((k, repr(v)) for k, v in constexprs.items())), warps, stages)
            if key in seen:
                continue
            seen.add(key)
            shown = {k: constexprs[k] for k in sorted(cfg_keys)} if cfg_keys else {}
            out.append({"fn": fn, "kernel": fn.__name__, "variant": variant, "signature": spec["signature"],
                        "constexprs": constexprs, "num_warps": warps, "num_stages": stages,
                        "config": ",".join(f"{k}={v}" for k, v in shown.items()) + f" w{warps}/s{stages}",
                        "autotuned": tuner is not None, "config_index": idx})
    return out


def kernels_without_spec(mod) -> list[str]:
    """Launchable kernels of the module (autotuned, or ``@triton.jit`` named ``*_kernel``) with no AOT spec."""
    from triton.runtime.autotuner import Autotuner
    from triton.runtime.jit import JITFunction

    have = {id(_jit_of(s["fn"])) for s in getattr(mod, "AOT_SPECS", [])}
    names = set()
    for name, v in vars(mod).items():
        if isinstance(v, Autotuner) or (isinstance(v, JITFunction) and name.endswith("_kernel")):
            if id(_jit_of(v)) not in have:
                names.add(_jit_of(v).__name__)
    return sorted(names)


# --------------------------------------------------------------------------------------------- compile
def _bindir() -> str:
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")


_DOT = re.compile(r"tt\.dot\s[^:]*:\s*tensor<([0-9x]+)x(\w+)>\s*\*\s*tensor<([0-9x]+)x(\w+)>\s*->\s*"
                  r"tensor<[0-9x]+x(\w+)>")
_PREC = re.compile(r"inputPrecision\s*=\s*(\w+)")


def dots_of(ttir: str) -> list[dict]:
    """Each ``tt.dot`` of the Triton IR: operand type, input precision, shape, and whether it should run
    on tensor cores (half-precision operands, or float32 with a TF32 precision)."""
    out = []
    for line in ttir.splitlines():
        if "tt.dot " not in line:
            continue
        m = _DOT.search(line)
        if not m:
            continue
        ashape, aty, bshape, bty, cty = m.groups()
        pm = _PREC.search(line)
        prec = pm.group(1) if pm else None
        if aty in HALF:
            p, tc = aty, True
        elif aty == "f32":
            p = prec or "ieee"
            tc = p != "ieee"
        elif aty == "f64":
            p, tc = "f64", False
        elif aty.startswith("i8"):
            p, tc = "i8", True
        else:
            p, tc = aty, False
        m_, k_ = (int(v) for v in ashape.split("x")[-2:])
        n_ = int(bshape.split("x")[-1])
        out.append({"operand": aty, "precision": p, "acc": cty, "shape": f"{m_}x{n_}x{k_}", "tensor_cores": tc})
    return out


def compile_one(spec: dict, cc: int) -> dict:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    src = ASTSource(fn=spec["fn"], signature=spec["signature"], constexprs=spec["constexprs"])
    k = triton.compile(src, target=GPUTarget("cuda", cc, 32),
                       options={"num_warps": spec["num_warps"], "num_stages": spec["num_stages"]})
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(k.asm["cubin"])
        path = f.name
    try:
        res = subprocess.run([os.path.join(_bindir(), "cuobjdump"), "-res-usage", path], capture_output=True,
                             text=True, timeout=120).stdout
        sass = subprocess.run([os.path.join(_bindir(), "cuobjdump"), "-sass", path], capture_output=True,
                              text=True, timeout=300).stdout
    finally:
        os.unlink(path)

    def field(name):
        m = re.search(rf"\b{name}:(\d+)", res)
        return int(m.group(1)) if m else None

    ops = Counter()
    for line in sass.splitlines():
        m = re.match(r"\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9]*)", line)
        if m:
            ops[m.group(1)] += 1
    ptx = k.asm["ptx"]
    shared = int(k.metadata.shared) + (field("SHARED") or 0)
    regs = field("REG") or 0
    rec = {"regs": regs, "stack": field("STACK") or 0, "local": field("LOCAL") or 0,
           "shared_dynamic": int(k.metadata.shared), "shared_static": field("SHARED") or 0, "shared": shared,
           "sass": {op: ops[op] for op in TC_SASS + ("FFMA", "MUFU", "STL", "LDL") if ops[op]},
           "sass_instructions": sum(ops.values()),
           "ptx_mma": ptx.count("mma.sync"), "ptx_wgmma": ptx.count("wgmma.mma_async"),
           "dots": dots_of(k.asm["ttir"])}
    rec.update(occupancy(cc, regs, spec["num_warps"], shared))
    tc_sass = sum(ops[o] for o in ("HMMA", "HGMMA", "IMMA", "QMMA"))
    needs_tc = any(d["tensor_cores"] for d in rec["dots"])
    rec["tensor_core_ok"] = (not needs_tc) or tc_sass > 0
    rec["spills"] = rec["stack"] > 0 or rec["local"] > 0
    return rec


def _worker(family: str, ccs: list[int], all_configs: bool, kernels: list[str] | None = None,
            list_only: bool = False) -> None:
    """Compile one family's kernels; one JSON line per result on stdout (run with TRITON_INTERPRET unset)."""
    try:
        mod = importlib.import_module(f"multialign.kernels.triton.{family}")
        specs = [s for s in expand_specs(mod, all_configs) if not kernels or s["kernel"] in kernels]
    except ModuleNotFoundError as exc:
        if exc.name == f"multialign.kernels.triton.{family}":
            print(json.dumps({"family": family, "absent": True}), flush=True)
            return
        print(json.dumps({"family": family, "load_error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return
    except Exception as exc:  # a module that does not import is reported, the other families go on
        print(json.dumps({"family": family, "load_error": f"{type(exc).__name__}: {str(exc)[:600]}"}), flush=True)
        return
    print(json.dumps({"family": family, "total": len(specs) * len(ccs), "missing_specs": kernels_without_spec(mod)}),
          flush=True)
    for spec in specs:
        for cc in ccs:
            head = {"family": family, "kernel": spec["kernel"], "variant": spec["variant"], "config": spec["config"],
                    "config_index": spec["config_index"], "autotuned": spec["autotuned"], "cc": cc,
                    "num_warps": spec["num_warps"], "num_stages": spec["num_stages"]}
            if list_only:
                print(json.dumps({**head, "listed": True}), flush=True)
                continue
            try:
                head.update(compile_one(spec, cc), compiled=True)
            except Exception as exc:  # a compile failure is a result
                head.update(compiled=False, error=f"{type(exc).__name__}: {str(exc)[:400]}")
            print(json.dumps(head), flush=True)


# --------------------------------------------------------------------------------------------- driver
def run(families=FAMILIES, ccs=(80, 90), all_configs: bool = True, progress: bool = True,
        timeout_s: float = 3600.0, kernels: list[str] | None = None, list_only: bool = False,
        jobs: int | None = None) -> dict:
    """Compile (or with ``list_only``, just enumerate) the kernels of ``families``; ``kernels`` filters by name.

    One worker subprocess per family (one import of torch and Triton each; ``jobs`` of them at a time, default
    two -- compilation is single-threaded) streams one JSON line per result, so that the progress bar moves and
    a crash loses nothing already compiled. Triton's on-disk cache makes a rerun of unchanged kernels quick."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    jobs = max(1, jobs or min(2, os.cpu_count() or 1))
    results: dict[str, list] = {f: [] for f in families}
    absent, missing, failures = [], {}, []
    lock = threading.Lock()
    bar = _bar(0, "gpu-static") if progress and not list_only else None

    def on_line(rec):
        with lock:
            if rec.get("absent"):
                absent.append(rec["family"])
            elif "load_error" in rec:
                failures.append({"family": rec["family"], "error": rec["load_error"]})
            elif "total" in rec:
                missing[rec["family"]] = rec["missing_specs"]
                if bar is not None:
                    bar.total += rec["total"]
                    bar.refresh()
            else:
                results[rec["family"]].append(rec)
                if bar is not None:
                    bar.update(1)

    def worker(fam):
        cmd = [sys.executable, "-m", "multialign.bench.gpu_static", "--worker", fam, "--cc", ",".join(map(str, ccs))]
        if not all_configs:
            cmd.append("--default-configs-only")
        for k in kernels or []:
            cmd += ["--kernel", k]
        if list_only:
            cmd.append("--list")
        with tempfile.TemporaryFile(mode="w+") as err:
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
            try:
                for line in proc.stdout:
                    if line.startswith("{"):
                        on_line(json.loads(line))
                proc.wait(timeout=timeout_s)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            if proc.returncode:
                err.seek(0)
                with lock:
                    failures.append({"family": fam, "error": f"worker exit {proc.returncode}: {err.read()[-800:]}"})

    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(worker, families))
    finally:
        if bar is not None:
            bar.close()
    flat = [r for f in families for r in results[f]]
    out = {"ccs": list(ccs), "all_configs": all_configs, "families": list(families),
           "absent": [f for f in families if f in absent], "missing_specs": missing, "worker_failures": failures,
           "kernels": flat}
    if not list_only:
        out["bar"] = evaluate(flat, missing, failures, ccs)
    return out


def _bar(total: int, desc: str):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="kernel", file=sys.stderr)


def is_default(r: dict) -> bool:
    """The config a launch uses without autotuning: the first of an autotune list, or the kernel's only one."""
    return not r.get("autotuned") or r.get("config_index", 0) == 0


def evaluate(results: list[dict], missing: dict, failures: list, ccs) -> dict:
    compile_fail = [r for r in results if not r.get("compiled")]
    spilled = [r for r in results if r.get("compiled") and r["spills"]]
    spills = [r for r in spilled if is_default(r)]
    other_spills = [r for r in spilled if not is_default(r)]
    no_tc = [r for r in results if r.get("compiled") and not r["tensor_core_ok"]]
    gaps = {f: m for f, m in missing.items() if m}

    def ident(r):
        return f"{r['family']}.{r['kernel']}{'[' + r['variant'] + ']' if r['variant'] else ''} {r['config']} sm_{r['cc']}"
    return {"passed": not (compile_fail or spills or no_tc or gaps or failures),
            "compile_failures": [ident(r) + ": " + r.get("error", "")[:200] for r in compile_fail],
            "spills": [f"{ident(r)}: stack {r['stack']} B, local {r['local']} B" for r in spills],
            "spills_other_configs": [f"{ident(r)}: stack {r['stack']} B, local {r['local']} B" for r in other_spills],
            "no_tensor_cores": [ident(r) for r in no_tc],
            "kernels_without_spec": gaps, "worker_failures": [f["family"] + ": " + f["error"][-300:] for f in failures]}


def markdown(res: dict, heading: str = "##") -> str:
    ks = res["kernels"]
    ccs = res["ccs"]
    lines = [f"Targets: {', '.join(f'sm_{c}' for c in ccs)}; "
             f"{'every config of every autotune list' if res['all_configs'] else 'first autotune config only'}; "
             f"{len(ks)} compilations. Occupancy = resident blocks per SM × warps / 64 (limiter in brackets); "
             "stack/local > 0 means ptxas spilled registers; TC = tensor-core instructions in the SASS.", ""]
    b = res["bar"]
    verdict = "**met**" if b["passed"] else "**not met**"
    lines += [f"{heading} Bar: {verdict}", ""]
    for title, items in (("compile failures", b["compile_failures"]), ("default configs that spill", b["spills"]),
                         ("TF32/half dots without tensor-core instructions", b["no_tensor_cores"]),
                         ("kernels without an AOT spec", [f"{f}: {', '.join(m)}" for f, m in b["kernels_without_spec"].items()]),
                         ("families that failed to load", b["worker_failures"])):
        lines.append(f"- {title}: " + ("none" if not items else f"{len(items)}"))
        lines += [f"  - {i}" for i in items]
    other = b.get("spills_other_configs", [])
    lines.append("- warning, other autotune configs that spill (not the bar: the autotuner picks them only when "
                 "they measure faster): " + ("none" if not other else f"{len(other)}"))
    lines += [f"  - {i}" for i in other]
    if res["absent"]:
        lines.append(f"- families without Triton kernels yet: {', '.join(res['absent'])}")
    lines.append("")
    for fam in dict.fromkeys(r["family"] for r in ks):
        lines += [f"{heading} {fam}", "",
                  "| kernel | config | target | regs | stack / local B | shared B | blocks/SM (occupancy, limiter) "
                  "| dots: operand, precision, tile | TC (SASS) | PTX mma / wgmma | FFMA | bar |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in (r for r in ks if r["family"] == fam):
            name = r["kernel"] + (f" [{r['variant']}]" if r["variant"] else "")
            cfg = r["config"] + (" (default)" if r.get("autotuned") and r.get("config_index") == 0 else "")
            if not r.get("compiled"):
                lines.append(f"| {name} | {cfg} | sm_{r['cc']} | – | – | – | – | – | – | – | – | "
                             f"compile failed: {r.get('error', '')[:120]} |")
                continue
            dots = "; ".join(f"{d['operand']} {d['precision']} {d['shape']}" for d in r["dots"]) or "–"
            tc = ", ".join(f"{op} {r['sass'][op]}" for op in TC_SASS if r["sass"].get(op)) or "none"
            spill = ("**spills**" if is_default(r) else "spills (not default)") if r["spills"] else ""
            ok = "ok" if (not r["spills"] and r["tensor_core_ok"]) else \
                " ".join(x for x in (spill, "" if r["tensor_core_ok"] else "**no TC**") if x)
            lines.append(f"| {name} | {cfg} | sm_{r['cc']} | {r['regs']} | {r['stack']} / {r['local']} | {r['shared']} | "
                         f"{r['blocks_per_sm']} ({r['occupancy']:.0%}, {r['limiter']}) | {dots} | {tc} | "
                         f"{r['ptx_mma']} / {r['ptx_wgmma']} | {r['sass'].get('FFMA', 0)} | {ok} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("families", nargs="*", default=list(FAMILIES))
    ap.add_argument("--cc", default="80,90")
    ap.add_argument("--default-configs-only", action="store_true")
    ap.add_argument("--kernel", action="append", help="only this kernel (function name; repeatable)")
    ap.add_argument("--list", action="store_true", help="list the kernels and configs without compiling")
    ap.add_argument("--worker", metavar="FAMILY", help=argparse.SUPPRESS)
    ap.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    ap.add_argument("--strict", action="store_true", help="exit with status 3 when the bar is not met")
    ap.add_argument("--jobs", type=int, help="families compiled at a time (default 2)")
    a = ap.parse_args(argv)
    ccs = [int(c) for c in a.cc.split(",")]
    if a.worker:
        os.environ.pop("TRITON_INTERPRET", None)
        for fam in a.worker.split(","):
            _worker(fam, ccs, not a.default_configs_only, a.kernel, a.list)
        return 0
    res = run(a.families, ccs, all_configs=not a.default_configs_only, kernels=a.kernel, list_only=a.list, jobs=a.jobs)
    if a.list:
        for r in res["kernels"]:
            print(f"{r['family']}.{r['kernel']} {r['variant']} {r['config']} sm_{r['cc']}")
        for fam, names in res["missing_specs"].items():
            if names:
                print(f"{fam}: kernels without an AOT spec: {', '.join(names)}")
        for f in res["worker_failures"]:
            print(f"{f['family']}: failed to load: {f['error'][-300:]}")
        return 3 if any(res["missing_specs"].values()) or res["worker_failures"] else 0
    print(markdown(res))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 3 if (a.strict and not res["bar"]["passed"]) else 0


if __name__ == "__main__":
    sys.exit(main())
