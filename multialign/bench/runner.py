"""``multialign bench``: select cases, run every (case, provider) in its own subprocess, write the results.

    multialign bench --op mmd --sizes small --compare --out bench-results
    multialign bench --op all --compare --out docs/bench-results --doc docs/benchmarks.md
    multialign bench --gpu-static --out docs/bench-results

Writes, under ``--out``: ``results.json`` (machine, ceilings, cases, one record per measurement),
``results.csv`` and ``results.md`` (one row per case and provider), and ``plots/*.png`` (log-log time
and peak memory against N, one line per implementation). ``--render DIR`` rebuilds the tables, plots
and ``--doc`` page from an existing ``results.json`` without measuring anything.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile

from . import report
from .cases import FAMILIES, op_only_cases
from .harness import (Case, floor_seconds, is_ours, load_cases, machine_ceilings, provider_devices,
                      run_subprocess)

# --op choices -> (family, predicate on the case's op name)
OP_CHOICES = {
    "gram": ("gram", lambda op: not op.startswith("mmd")),
    "mmd": ("gram", lambda op: op.startswith("mmd")),
    "sinkhorn": ("sinkhorn", lambda op: True),
    "stress": ("stress", lambda op: True),
    "spd": ("spd", lambda op: True),
}
TIER_NAMES = ("small", "medium", "large")


def all_cases(family: str) -> list[Case]:
    return load_cases(family) + op_only_cases(family)


def select(ops: list[str], sizes: list[str] | None = None, case_filter: list[str] | None = None) -> list[tuple[str, Case]]:
    """(family, case) pairs for the --op choices, filtered by --sizes (tiers, size labels or values of N)."""
    chosen = list(OP_CHOICES) if "all" in ops else ops
    out = []
    for name in chosen:
        if name not in OP_CHOICES:
            raise SystemExit(f"multialign bench: --op must be one of {sorted(OP_CHOICES) + ['all']}, got {name!r}")
        fam, pred = OP_CHOICES[name]
        for case in all_cases(fam):
            if not pred(case.op):
                continue
            if sizes and not _size_matches(case, sizes):
                continue
            if case_filter and case.key not in case_filter and case.op not in case_filter:
                continue
            out.append((fam, case))
    return out


def _size_matches(case: Case, sizes: list[str]) -> bool:
    for tok in sizes:
        if tok == case.tier or tok == case.size or tok == str(case.params.get("N")):
            return True
    return False


def machine_info() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "cores": os.cpu_count(),
            "threads": int(os.environ.get("OMP_NUM_THREADS", "2"))}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            info["memory_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    versions = {}
    import importlib.metadata as md

    for dist in ("multialign", "torch", "numpy", "numba", "triton", "scipy", "scikit-learn", "POT", "geomloss",
                 "pykeops", "pyriemann"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = None
    info["versions"] = versions
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        info["commit"] = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"], capture_output=True,
                                        text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["commit"] = None
    return info


def _progress(total: int):
    try:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="run", file=sys.stderr, dynamic_ncols=True)
        return bar.update, bar.set_description, bar.write, bar.close
    except ImportError:  # a plain counter when tqdm is not installed
        state = {"n": 0, "desc": ""}

        def update(k=1):
            state["n"] += k
            print(f"[{state['n']}/{total}] {state['desc']}", file=sys.stderr, flush=True)

        def desc(d):
            state["desc"] = d
        return update, desc, lambda s: print(s, file=sys.stderr, flush=True), lambda: None


def run(selection: list[tuple[str, Case]], *, compare: bool = True, providers: list[str] | None = None,
        reps: int = 7, budget_s: float = 20.0, timeout_s: float = 600.0, tuned: bool = True,
        device: str = "cpu", measure_error: bool = True, progress: bool = True) -> dict:
    """Measure the selection; returns the results document (what ``results.json`` holds)."""
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    load0 = os.getloadavg()
    ceilings = machine_ceilings(device)
    jobs = []
    for fam, case in selection:
        for prov, factory in case.providers.items():
            if not compare and not is_ours(prov):
                continue
            if providers and prov not in providers:
                continue
            jobs.append((fam, case, prov, device in provider_devices(factory)))
    modes = (False, True) if (tuned and device == "cpu") else (False,)
    total = sum(len(modes) for *_, runs in jobs if runs)
    update, describe, write, close = _progress(total) if progress else ((lambda k=1: None), (lambda d: None),
                                                                          (lambda s: None), (lambda: None))
    records, cases = [], {}
    with tempfile.TemporaryDirectory(prefix="multialign-bench-") as cache:
        os.environ["MULTIALIGN_BENCH_CACHE"] = cache       # float64 references shared by a case's providers
        try:
            for fam, case, prov, runs in jobs:
                ck = (fam, case.key)
                if ck not in cases:
                    cases[ck] = _case_doc(fam, case, ceilings)
                if not runs:
                    records.append({"family": fam, "case": case.key, "op": case.op, "size": case.size,
                                    "provider": prov, "device": device, "tuned_malloc": False, "status": "n/a",
                                    "error": f"runs on {'/'.join(provider_devices(case.providers[prov]))} only"})
                    continue
                for t in modes:
                    describe(f"{case.key} {prov}{' (tuned malloc)' if t else ''}")
                    rec = run_subprocess(fam, case.key, prov, t, reps=reps, budget_s=budget_s, timeout_s=timeout_s,
                                         device=device, measure_error=measure_error and not t)
                    records.append(rec)
                    if rec.get("status") not in ("ok", "n/a"):
                        write(f"  {case.key} {prov}: {rec.get('status')}: {rec.get('error', '')[:160]}")
                    update(1)
        finally:
            os.environ.pop("MULTIALIGN_BENCH_CACHE", None)
            close()
    return {"started": started, "finished": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join(["multialign"] + sys.argv[1:]) if sys.argv and "multialign" in sys.argv[0] else None,
            "load_average_start": load0, "load_average_end": os.getloadavg(), "device": device,
            "machine": machine_info(), "ceilings": ceilings, "reps": reps, "budget_s": budget_s,
            "cases": list(cases.values()), "records": records}


def _case_doc(fam: str, case: Case, ceilings: dict) -> dict:
    work = case.floor(case.params) if case.floor else None
    return {"family": fam, "case": case.key, "op": case.op, "size": case.size, "tier": case.tier,
            "params": case.params, "note": case.note, "work": work,
            "floor_s": floor_seconds(work, ceilings) if work else None,
            "has_reference": case.reference is not None}


def write_outputs(doc: dict, out_dir: str, *, plots: bool = True, doc_path: str | None = None) -> list[str]:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(doc, f, indent=1, default=str)
    return render(out_dir, plots=plots, doc_path=doc_path)


def render(out_dir: str, *, plots: bool = True, doc_path: str | None = None) -> list[str]:
    """(Re)build results.csv, results.md, plots/ and optionally the docs page from ``out_dir``/results.json."""
    written = []
    path = os.path.join(out_dir, "results.json")
    doc = None
    if os.path.exists(path):
        with open(path) as f:
            doc = json.load(f)
        rows = report.rows(doc)
        written.append(report.write_csv(rows, os.path.join(out_dir, "results.csv")))
        figs = report.plots(rows, doc, os.path.join(out_dir, "plots")) if plots else []
        written += figs
        md = report.markdown(doc, rows, figs, out_dir)
        with open(os.path.join(out_dir, "results.md"), "w") as f:
            f.write(md)
        written.append(os.path.join(out_dir, "results.md"))
    static = None
    spath = os.path.join(out_dir, "gpu_static.json")
    if os.path.exists(spath):
        with open(spath) as f:
            static = json.load(f)
    if doc_path:
        page = report.docs_page(doc, static, out_dir, doc_path)
        os.makedirs(os.path.dirname(os.path.abspath(doc_path)), exist_ok=True)
        with open(doc_path, "w") as f:
            f.write(page)
        written.append(doc_path)
    return written


def main_bench(a) -> int:
    """Entry point of ``multialign bench`` (arguments parsed by :mod:`multialign.cli`)."""
    out_dir = a.out
    if a.render:
        for p in render(a.render, plots=not a.no_plots, doc_path=a.doc):
            print(p)
        return 0
    ops = a.op or ([] if a.gpu_static else ["all"])
    status = 0
    if a.gpu_static:
        from . import gpu_static

        fams = sorted({OP_CHOICES[o][0] for o in ops if o in OP_CHOICES}) if ops and "all" not in ops else list(FAMILIES)
        res = gpu_static.run(fams, ccs=[int(c) for c in a.cc.split(",")], all_configs=not a.default_configs_only,
                             progress=not a.quiet)
        md = gpu_static.markdown(res)
        print(md)
        if out_dir:
            os.makedirs(out_dir, exist_ok=True)
            with open(os.path.join(out_dir, "gpu_static.json"), "w") as f:
                json.dump(res, f, indent=1)
            with open(os.path.join(out_dir, "gpu_static.md"), "w") as f:
                f.write(md + "\n")
        if not res["bar"]["passed"]:
            status = 3 if a.strict else 0
    if ops:
        device = a.device if a.device != "auto" else ("cuda" if _has_cuda() else "cpu")
        sizes = [s for tok in (a.sizes or []) for s in tok.split(",") if s]
        selection = select(ops, sizes or None, a.case)
        if not selection:
            print("multialign bench: nothing selected (check --op / --sizes / --case)", file=sys.stderr)
            return 2
        doc = run(selection, compare=a.compare, providers=a.providers.split(",") if a.providers else None,
                  reps=a.reps, budget_s=a.budget, timeout_s=a.timeout, tuned=not a.default_malloc_only,
                  device=device, measure_error=not a.no_error, progress=not a.quiet)
        rows = report.rows(doc)
        print(report.markdown(doc, rows, [], out_dir or "."))
        if out_dir:
            for p in write_outputs(doc, out_dir, plots=not a.no_plots, doc_path=a.doc):
                print(f"wrote {p}", file=sys.stderr)
    elif a.doc and out_dir:
        render(out_dir, plots=False, doc_path=a.doc)
    return status


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def add_arguments(p) -> None:
    p.add_argument("--op", action="append", choices=sorted(OP_CHOICES) + ["all"],
                   help="what to benchmark (repeatable; default all): gram = gram, gram_matvec and their backward; "
                        "mmd = mmd2; sinkhorn; stress; spd")
    p.add_argument("--sizes", action="append", metavar="S[,S...]",
                   help="tiers (small, medium, large), case size labels (e.g. 4096x64) or values of N; default all")
    p.add_argument("--case", action="append", metavar="KEY", help="a case key (e.g. 'mmd2[4096x64]') or op name")
    p.add_argument("--compare", action="store_true", help="time the peers too (default: multialign's backends only)")
    p.add_argument("--providers", help="comma-separated provider names to run (default: all)")
    p.add_argument("--out", metavar="DIR", help="write results.json/.csv/.md and plots/ here")
    p.add_argument("--doc", metavar="FILE", help="also write the full report page (e.g. docs/benchmarks.md)")
    p.add_argument("--render", metavar="DIR", help="only re-render tables, plots and --doc from DIR/results.json")
    p.add_argument("--reps", type=int, default=7, help="timed calls per provider (default 7)")
    p.add_argument("--budget", type=float, default=20.0, help="seconds of timed calls per provider (default 20)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds before a provider's run is abandoned")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--default-malloc-only", action="store_true", help="skip the tuned-malloc repeat (CPU)")
    p.add_argument("--no-error", action="store_true", help="skip the float64 accuracy check")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--gpu-static", action="store_true",
                   help="compile every Triton kernel for sm_80/sm_90 (no GPU needed) and report registers, spills, "
                        "shared memory, occupancy and tensor-core use")
    p.add_argument("--cc", default="80,90", help="compute capabilities for --gpu-static (default 80,90)")
    p.add_argument("--default-configs-only", action="store_true",
                   help="--gpu-static: only each kernel's first (default) autotune config")
    p.add_argument("--strict", action="store_true", help="--gpu-static: exit with status 3 when the bar is not met")
