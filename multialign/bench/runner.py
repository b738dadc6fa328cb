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


def all_cases(family: str, op_only: bool = True) -> list[Case]:
    return load_cases(family) + (op_only_cases(family) if op_only else [])


def select(ops: list[str], sizes: list[str] | None = None, case_filter: list[str] | None = None,
           op_only: bool = True) -> list[tuple[str, Case]]:
    """(family, case) pairs for the --op choices, filtered by --sizes (tiers, size labels or values of N);
    ``op_only=False`` leaves out the op-only cases (ops without a peer case: multialign against its reference)."""
    chosen = list(OP_CHOICES) if "all" in ops else ops
    out = []
    for name in chosen:
        if name not in OP_CHOICES:
            raise SystemExit(f"multialign bench: --op must be one of {sorted(OP_CHOICES) + ['all']}, got {name!r}")
        fam, pred = OP_CHOICES[name]
        for case in all_cases(fam, op_only):
            if not pred(case.op):
                continue
            if sizes and not _size_matches(case, sizes):
                continue
            if case_filter and case.key not in case_filter and case.op not in case_filter:
                continue
            out.append((fam, case))
    return out


def bar_selection(selection: list[tuple[str, Case]]) -> list[tuple[str, Case]]:
    """Only the cases named by the kernel issues' bars (``report.BARS``), each with only the providers its
    bars compare (``--bars``: the shortest run that checks every bar)."""
    import dataclasses

    out = []
    for fam, case in selection:
        keep = report.bar_providers(case)
        if keep:
            out.append((fam, dataclasses.replace(case, providers={p: f for p, f in case.providers.items()
                                                                   if p in keep})))
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
        reps: int = 7, budget_s: float = 20.0, timeout_s: float = 600.0, tuned: bool | str = True,
        device: str = "cpu", measure_error: bool = True, progress: bool = True,
        peer_tiers: list[str] | None = None, procs: int = 1) -> dict:
    """Measure the selection; returns the results document (what ``results.json`` holds).

    ``tuned``: also time with tuned malloc -- True / "all", "peers" (peers only: multialign keeps the default
    allocator, which can only make its ratios conservative), False / "none".
    ``peer_tiers``: time the peers only on cases of these tiers (the others get multialign's rows and a
    "not timed" row per peer) -- e.g. the large sizes, where the eager peers need N x M memory and minutes.
    ``procs``: time each configuration in this many fresh subprocesses and keep the fastest (its record gets
    ``process_medians_s``, every process's median). On the development VM the same kernel runs at a
    speed that is fixed within a process but differs between processes by up to 4-6x (e.g. the online
    Sinkhorn: 0.27 s or 1.0-1.6 s per 10 iterations; single-threaded too), so one process per
    configuration can report either mode."""
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    load0 = os.getloadavg()
    ceilings = machine_ceilings(device, procs)
    jobs = []
    for fam, case in selection:
        for prov, factory in case.providers.items():
            if not compare and not is_ours(prov):
                continue
            if providers and prov not in providers:
                continue
            jobs.append((fam, case, prov, device in provider_devices(factory)))

    def skipped(case, prov):
        return peer_tiers is not None and not is_ours(prov) and case.tier not in peer_tiers

    mode = {True: "all", False: "none"}.get(tuned, tuned)
    if mode not in ("all", "peers", "none"):
        raise ValueError(f"tuned must be True, False, 'all', 'peers' or 'none', got {tuned!r}")

    def modes_for(case, prov):
        both = device == "cpu" and case.tuned_malloc and (mode == "all" or (mode == "peers" and not is_ours(prov)))
        return (False, True) if both else (False,)
    total = sum(len(modes_for(case, prov)) for _, case, prov, runs in jobs if runs and not skipped(case, prov))
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
                if skipped(case, prov):
                    records.append({"family": fam, "case": case.key, "op": case.op, "size": case.size,
                                    "provider": prov, "device": device, "tuned_malloc": False, "status": "skipped",
                                    "error": f"peers not timed at the {case.tier} size in this run "
                                             f"(--peer-sizes {','.join(peer_tiers)})"})
                    continue
                default_rec = None
                for t in modes_for(case, prov):
                    if t and default_rec is not None and not _allocator_can_matter(default_rec):
                        default_rec["tuned_malloc_skipped"] = (
                            "peak memory too small for the allocator to matter "
                            f"(< {ALLOCATOR_SHARE:.0%} of the median at 1 GB/s)" if default_rec.get("status") == "ok"
                            else f"{default_rec.get('status')} under the default malloc")
                        update(1)
                        continue
                    describe(f"{case.key} {prov}{' (tuned malloc)' if t else ''}")
                    rec = _best_of_processes(
                        lambda k: run_subprocess(fam, case.key, prov, t, reps=reps, budget_s=budget_s,
                                                 timeout_s=timeout_s, device=device,
                                                 measure_error=measure_error and not t and k == 0), procs)
                    records.append(rec)
                    if not t:
                        default_rec = rec
                    if rec.get("status") not in ("ok", "n/a"):
                        write(f"  {case.key} {prov}: {rec.get('status')}: {rec.get('error', '')[:160]}")
                    update(1)
        finally:
            os.environ.pop("MULTIALIGN_BENCH_CACHE", None)
            close()
    return {"started": started, "finished": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join(["multialign"] + sys.argv[1:]) if sys.argv and "multialign" in sys.argv[0] else None,
            "load_average_start": load0, "load_average_end": os.getloadavg(), "device": device,
            "peer_tiers": peer_tiers, "tuned_malloc": mode,
            "machine": machine_info(), "ceilings": ceilings, "reps": reps, "budget_s": budget_s,
            "cases": list(cases.values()), "records": records}


def _best_of_processes(run_one, procs: int) -> dict:
    """``run_one(k)`` for k < procs (each a fresh subprocess); the fastest successful record, with every
    process's median in ``process_medians_s`` and the first run's error measurement kept."""
    recs = [run_one(k) for k in range(max(1, procs))]
    ok = [r for r in recs if r.get("status") == "ok" and r.get("median_s") is not None]
    if not ok:
        return recs[0]
    best = dict(min(ok, key=lambda r: r["median_s"]))
    if len(recs) > 1:
        best["process_medians_s"] = [r.get("median_s") for r in recs]
        for key in ("max_abs_err", "max_rel_err"):
            if key in recs[0] and key not in best:
                best[key] = recs[0][key]
    return best


# The tuned-malloc repeat is skipped when fresh pages cannot matter: the default run's peak memory, faulted in
# at a pessimistic 1 GB/s, would cost less than this share of its median (KeOps, online and fused kernels).
ALLOCATOR_SHARE = 0.05


def _allocator_can_matter(rec: dict) -> bool:
    if rec.get("status") != "ok" or "median_s" not in rec:
        return False         # failed, out of memory or timed out: the allocator would not change that
    peak = rec.get("peak_mem_delta_bytes")
    return peak is None or peak / 1e9 >= ALLOCATOR_SHARE * rec["median_s"]


def merge(old: dict, new: dict) -> dict:
    """``old`` with the cases of ``new`` replaced or added (``--merge``: a report built from several runs, e.g.
    one per op). Machine, ceilings and allocator settings are the newest run's; every run is listed in ``runs``."""
    if old.get("device") != new.get("device"):
        raise SystemExit(f"multialign bench --merge: {old.get('device')} results cannot be merged with "
                         f"{new.get('device')} results")
    fresh = {(c["family"], c["case"]) for c in new["cases"]}
    keep_cases = [c for c in old["cases"] if (c["family"], c["case"]) not in fresh]
    keep_recs = [r for r in old["records"] if (r["family"], r["case"]) not in fresh]
    runs = old.get("runs") or [{k: old.get(k) for k in RUN_KEYS}]
    out = dict(new, cases=keep_cases + new["cases"], records=keep_recs + new["records"],
               runs=runs + [{k: new.get(k) for k in RUN_KEYS}])
    out["started"] = min(r["started"] for r in out["runs"] if r.get("started"))
    out["load_average_start"] = max((r["load_average_start"] for r in out["runs"] if r.get("load_average_start")),
                                    key=lambda v: v[0])
    return out


RUN_KEYS = ("started", "finished", "command", "load_average_start", "load_average_end")


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
                             progress=not a.quiet, jobs=a.jobs)
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
        # --op with --gpu-static picks the families to compile; it does not also start the timings
        return status
    if ops:
        device = a.device if a.device != "auto" else ("cuda" if _has_cuda() else "cpu")
        sizes = [s for tok in (a.sizes or []) for s in tok.split(",") if s]
        selection = select(ops, sizes or None, a.case, op_only=not a.peer_cases_only and not a.bars)
        if a.bars:
            selection = bar_selection(selection)
        if not selection:
            print("multialign bench: nothing selected (check --op / --sizes / --case)", file=sys.stderr)
            return 2
        doc = run(selection, compare=a.compare, providers=a.providers.split(",") if a.providers else None,
                  reps=a.reps, budget_s=a.budget, timeout_s=a.timeout,
                  tuned="none" if a.default_malloc_only else a.tuned_malloc,
                  device=device, measure_error=not a.no_error, progress=not a.quiet,
                  peer_tiers=[t for tok in a.peer_sizes for t in tok.split(",") if t] if a.peer_sizes else None,
                  procs=a.procs)
        if a.merge and out_dir and os.path.exists(os.path.join(out_dir, "results.json")):
            with open(os.path.join(out_dir, "results.json")) as f:
                doc = merge(json.load(f), doc)
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
    p.add_argument("--peer-sizes", action="append", metavar="TIER[,TIER...]",
                   help="with --compare: time the peers only at these tiers (e.g. small,medium); larger cases get "
                        "multialign's rows only (default: every selected size)")
    p.add_argument("--bars", action="store_true",
                   help="only the cases and providers that the kernel issues' performance bars compare (the "
                        "shortest run that checks every bar; what `make bench-docs` times)")
    p.add_argument("--peer-cases-only", action="store_true",
                   help="leave out the op-only cases (ops without a peer case, timed against multialign's own "
                        "PyTorch reference; asv tracks them)")
    p.add_argument("--providers", help="comma-separated provider names to run (default: all)")
    p.add_argument("--out", metavar="DIR", help="write results.json/.csv/.md and plots/ here")
    p.add_argument("--doc", metavar="FILE", help="also write the full report page (e.g. docs/benchmarks.md)")
    p.add_argument("--merge", action="store_true",
                   help="merge into an existing --out DIR/results.json (cases of this run replace the same cases "
                        "there): build one report from several runs, e.g. one per op")
    p.add_argument("--render", metavar="DIR", help="only re-render tables, plots and --doc from DIR/results.json")
    p.add_argument("--reps", type=int, default=7, help="timed calls per provider (default 7)")
    p.add_argument("--procs", type=int, default=1,
                   help="fresh subprocesses per configuration, the fastest kept (default 1; this VM's speed "
                        "differs between processes by up to several x, see runner.run)")
    p.add_argument("--budget", type=float, default=20.0, help="seconds of timed calls per provider (default 20)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds before a provider's run is abandoned")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--tuned-malloc", choices=("all", "peers", "none"), default="all",
                   help="CPU: also time with tuned malloc (freed memory kept for reuse) -- every provider (default), "
                        "the peers only (multialign keeps glibc's default: conservative ratios), or none")
    p.add_argument("--default-malloc-only", action="store_true", help="same as --tuned-malloc none")
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
    p.add_argument("--jobs", type=int, help="--gpu-static: families compiled at a time (default 2)")
