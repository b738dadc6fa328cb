"""Tables, CSV, plots and the docs page from a ``results.json`` written by :mod:`multialign.bench.runner`.

One row per (case, provider): the better of its default-malloc and tuned-malloc runs (median, min, max,
reps), both medians, peak memory (default malloc: what a user gets), the first call, the floor and
x floor, achieved GFLOP/s, the ratio to the best peer of the same case (best peer's median / this
median: > 1 means faster than every peer) and the max error against float64.
"""
from __future__ import annotations

import csv
import dataclasses
import math
import os
import re

FIELDS = ["family", "op", "case", "size", "tier", "x", "provider", "ours", "status", "median_s", "min_s", "max_s",
          "reps", "median_default_s", "median_tuned_s", "peak_mem_bytes", "first_call_s", "floor_s", "x_floor",
          "gflops", "flops_frac", "gbs", "bw_frac", "best_peer", "best_peer_median_s", "speedup_vs_best_peer",
          "max_abs_err", "max_rel_err", "per_iter_s", "note", "error"]


def _x_of(params: dict):
    for k in ("N", "B", "n"):
        if k in params:
            return params[k]
    return None


def rows(doc: dict) -> list[dict]:
    cases = {(c["family"], c["case"]): c for c in doc["cases"]}
    groups: dict[tuple, list[dict]] = {}
    for r in doc["records"]:
        groups.setdefault((r["family"], r["case"], r["provider"]), []).append(r)
    out = []
    for (fam, key, prov), recs in groups.items():
        c = cases.get((fam, key), {})
        default = next((r for r in recs if not r.get("tuned_malloc")), None)
        tuned = next((r for r in recs if r.get("tuned_malloc")), None)
        ok = [r for r in (default, tuned) if r and r.get("status", "ok") == "ok" and "median_s" in r]
        best = min(ok, key=lambda r: r["median_s"]) if ok else None
        first = default or tuned
        row = {"family": fam, "op": c.get("op", first.get("op")), "case": key, "size": c.get("size", first.get("size")),
               "tier": c.get("tier"), "x": _x_of(c.get("params", {})), "provider": prov,
               "ours": prov.startswith("multialign"), "status": "ok" if best else first.get("status", "failed"),
               "note": "; ".join(x for x in (c.get("note", ""), (best or first).get("note", "")) if x),
               "error": "" if best else first.get("error", "")}
        if best:
            row.update(median_s=best["median_s"], min_s=best["min_s"], max_s=best["max_s"], reps=best["reps"],
                       first_call_s=(default or best).get("first_call_s"))
            row["median_default_s"] = default.get("median_s") if default else None
            row["median_tuned_s"] = tuned.get("median_s") if tuned else None
            mem_src = default if default and "peak_mem_delta_bytes" in default else best
            row["peak_mem_bytes"] = mem_src.get("peak_mem_delta_bytes")
            errsrc = next((r for r in (default, tuned) if r and "max_abs_err" in r), None)
            if errsrc:
                row["max_abs_err"], row["max_rel_err"] = errsrc["max_abs_err"], errsrc["max_rel_err"]
            elif (default or {}).get("error_note"):
                row["note"] = "; ".join(x for x in (row["note"], default["error_note"]) if x)
            floor = c.get("floor_s")
            if floor:
                row["floor_s"] = floor
                row["x_floor"] = best["median_s"] / floor
            work = c.get("work") or {}
            ceil = doc.get("ceilings") or {}
            if work.get("flops"):
                row["gflops"] = work["flops"] / best["median_s"] / 1e9
                if ceil.get("gemm_flops_per_s"):
                    row["flops_frac"] = work["flops"] / best["median_s"] / ceil["gemm_flops_per_s"]
            if work.get("bytes"):
                row["gbs"] = work["bytes"] / best["median_s"] / 1e9
                if ceil.get("bytes_per_s"):
                    row["bw_frac"] = work["bytes"] / best["median_s"] / ceil["bytes_per_s"]
            iters = c.get("params", {}).get("iters")
            if iters:
                row["per_iter_s"] = best["median_s"] / iters
        out.append(row)
    # ratio to the best peer of the same case
    by_case: dict[tuple, list[dict]] = {}
    for r in out:
        by_case.setdefault((r["family"], r["case"]), []).append(r)
    for group in by_case.values():
        peers = [r for r in group if not r["ours"] and r.get("median_s")]
        if not peers:
            continue
        bp = min(peers, key=lambda r: r["median_s"])
        for r in group:
            r["best_peer"], r["best_peer_median_s"] = bp["provider"], bp["median_s"]
            if r.get("median_s"):
                r["speedup_vs_best_peer"] = bp["median_s"] / r["median_s"]
    return out


def write_csv(rows_: list[dict], path: str) -> str:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows_:
            w.writerow({k: r.get(k, "") for k in FIELDS})
    return path


# --------------------------------------------------------------------------------------------- formatting
def fmt_t(s) -> str:
    if s is None:
        return "–"
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    return f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"


def fmt_mb(b) -> str:
    if b is None:
        return "–"
    return f"{b / 2**30:.2f} GB" if b >= 2**30 else f"{b / 2**20:.0f} MB"


def fmt_err(r: dict) -> str:
    a, rel = r.get("max_abs_err"), r.get("max_rel_err")
    if a is None:
        return "–"
    if isinstance(a, float) and math.isnan(a):
        return "**NaN**"
    return f"{a:.1e} / {rel:.1e}"


def _status_text(r: dict) -> str:
    st = r.get("status")
    if st == "ok":
        return ""
    label = {"oom": "**out of memory**", "missing": "not installed", "n/a": "n/a", "timeout": "**timeout**",
             "failed": "**failed**", "skipped": "not timed"}.get(st, st)
    return f"{label}: {r.get('error', '')[:140]}".replace("|", "\\|").replace("\n", " ")


def _rate(r: dict) -> str:
    """Achieved GFLOP/s (TFLOP/s above 1000) and GB/s, with the share of the measured ceiling."""
    out = []
    if r.get("gflops"):
        g = r["gflops"]
        txt = f"{g / 1e3:.1f} TFLOP/s" if g >= 1000 else f"{g:.0f} GFLOP/s"
        out.append(txt + (f" ({r['flops_frac']:.0%})" if r.get("flops_frac") else ""))
    if r.get("gbs"):
        out.append(f"{r['gbs']:.0f} GB/s" + (f" ({r['bw_frac']:.0%})" if r.get("bw_frac") else ""))
    return ", ".join(out) or "–"


def case_table(case_rows: list[dict]) -> list[str]:
    lines = ["| provider | median | min – max (reps) | median, tuned malloc | peak mem Δ | first call | × floor "
             "| rate (of ceiling) | best peer / this | max err vs f64 (abs / rel) | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    skipped = [r["provider"] for r in case_rows if r["status"] == "skipped"]
    for r in sorted(case_rows, key=lambda r: (not r["ours"], r.get("median_s") or math.inf)):
        if r["status"] == "n/a" and r.get("error", "").startswith("runs on"):
            continue                      # a provider for another device (e.g. Triton on a CPU run)
        if r["status"] == "skipped":
            continue                      # one line for all of them, below
        if r["status"] != "ok":
            lines.append(f"| {r['provider']} | – | – | – | – | – | – | – | – | – | {_status_text(r)} |")
            continue
        sp = r.get("speedup_vs_best_peer")
        name = f"**{r['provider']}**" if r["ours"] else r["provider"]
        med = fmt_t(r["median_s"]) + (f" ({fmt_t(r['per_iter_s'])}/iter)" if r.get("per_iter_s") else "")
        xf = f"{r['x_floor']:.2f}" if r.get("x_floor") else "–"
        gf = _rate(r)
        spt = f"{sp:.2f}×" if sp else "–"
        lines.append(f"| {name} | {med} | {fmt_t(r['min_s'])} – {fmt_t(r['max_s'])} ({r['reps']}) | "
                     f"{fmt_t(r.get('median_tuned_s'))} | {fmt_mb(r.get('peak_mem_bytes'))} | "
                     f"{fmt_t(r.get('first_call_s'))} | {xf} | {gf} | {spt} | {fmt_err(r)} | {r.get('note', '')} |")
    if skipped:
        why = next(r.get("error", "") for r in case_rows if r["status"] == "skipped")
        lines.append(f"| {', '.join(skipped)} | – | – | – | – | – | – | – | – | – | not timed: {why} |")
    return lines


def headline(rows_: list[dict]) -> list[str]:
    """Per case: our best backend against the best peer."""
    by_case: dict[tuple, list[dict]] = {}
    for r in rows_:
        by_case.setdefault((r["family"], r["op"], r["case"]), []).append(r)
    lines = ["| op | size | multialign | median | best peer | its median | speed-up | × floor (ours) "
             "| peak mem Δ ours / peer | max rel err ours / peer |", "|---|---|---|---|---|---|---|---|---|---|"]
    for (fam, op, key), group in by_case.items():
        ours = [r for r in group if r["ours"] and r.get("median_s")]
        if not ours:
            continue
        o = min(ours, key=lambda r: r["median_s"])
        peers = [r for r in group if not r["ours"] and r.get("median_s")]
        p = min(peers, key=lambda r: r["median_s"]) if peers else None
        xf = f"{o['x_floor']:.2f}" if o.get("x_floor") else "–"

        def rel(r):
            return f"{r['max_rel_err']:.1e}" if r and r.get("max_rel_err") is not None else "–"
        if p:
            lines.append(f"| {op} | {o['size']} | {o['provider']} | {fmt_t(o['median_s'])} | {p['provider']} | "
                         f"{fmt_t(p['median_s'])} | **{p['median_s'] / o['median_s']:.2f}×** | {xf} | "
                         f"{fmt_mb(o.get('peak_mem_bytes'))} / {fmt_mb(p.get('peak_mem_bytes'))} | {rel(o)} / {rel(p)} |")
        else:
            lines.append(f"| {op} | {o['size']} | {o['provider']} | {fmt_t(o['median_s'])} | – | – | – | {xf} | "
                         f"{fmt_mb(o.get('peak_mem_bytes'))} / – | {rel(o)} / – |")
    return lines


def machine_lines(doc: dict) -> list[str]:
    m, c = doc.get("machine", {}), doc.get("ceilings", {})
    v = m.get("versions", {})
    lines = [f"- machine: {m.get('cpu', '?')}, {m.get('cores')} cores ({m.get('threads')} threads used), "
             f"{m.get('memory_gib')} GiB; {m.get('platform', '')}",
             "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
             f"- run: {doc.get('started')} → {doc.get('finished')}, commit {m.get('commit')}, device {doc.get('device')}, "
             f"load average {doc.get('load_average_start', ['?'])[0]:.2f} at start, "
             f"{doc.get('load_average_end', ['?'])[0]:.2f} at end"]
    if doc.get("runs"):
        lines.append(f"- merged from {len(doc['runs'])} runs (`--merge`):")
        for r in doc["runs"]:
            load = (r.get("load_average_start") or [0])[0]
            lines.append(f"  - {r.get('started')} → {r.get('finished')}, load {load:.2f}: `{r.get('command')}`")
    elif doc.get("command"):
        lines.append(f"- command: `{doc['command']}`")
    mode = doc.get("tuned_malloc")
    if mode and doc.get("device", "cpu") == "cpu":
        lines.append("- allocator: " + {
            "all": "every provider timed with glibc's default malloc and with tuned malloc; the better is shown",
            "peers": "peers timed with default and tuned malloc (the better is shown); multialign with the "
                     "default malloc only (conservative ratios)",
            "none": "glibc's default malloc only"}.get(mode, mode))
    if doc.get("peer_tiers"):
        lines.append(f"- peers timed at the {', '.join(doc['peer_tiers'])} sizes; larger sizes: multialign only")
    if c:
        if c.get("device") == "cuda":
            lines.append(f"- ceilings (measured in this run, {c.get('name')}): GEMM f32 {c['gemm_flops_per_s'] / 1e12:.1f} "
                         f"TFLOP/s, TF32 {c['gemm_tf32_flops_per_s'] / 1e12:.0f}, f16 {c['gemm_f16_flops_per_s'] / 1e12:.0f}; "
                         f"exp {c['exp_per_s'] / 1e9:.0f} G/s; copy {c['bytes_per_s'] / 1e9:.0f} GB/s")
        else:
            lines.append(f"- ceilings (measured in this run): GEMM {c['gemm_flops_per_s'] / 1e9:.0f} GFLOP/s, "
                         f"exp {c['exp_per_s'] / 1e9:.2f} G/s, copy {c['bytes_per_s'] / 1e9:.1f} GB/s "
                         f"({c.get('how', '')})")
    return lines


def _fig_for(figs: list[str], fam: str, op: str) -> list[str]:
    return [f for f in figs if os.path.basename(f).startswith(f"{fam}__{op}__")]


def markdown(doc: dict, rows_: list[dict], figs: list[str], base_dir: str, heading: str = "##") -> str:
    lines = machine_lines(doc) + [""]
    if any(b["met"] is not None for b in bar_rows(rows_)):
        lines += [f"{heading} The kernel issues' bars", ""] + bars_table(rows_) + [""]
    lines += [f"{heading} Headline: multialign against the best peer of each case", ""] + headline(rows_) + [""]
    cases = doc["cases"]
    by_key: dict[tuple, list[dict]] = {}
    for r in rows_:
        by_key.setdefault((r["family"], r["case"]), []).append(r)
    shown_figs = set()
    for fam in dict.fromkeys(c["family"] for c in cases):
        lines += [f"{heading} {fam}", ""]
        for c in (c for c in cases if c["family"] == fam):
            group = by_key.get((fam, c["case"]))
            if not group:
                continue
            floor = f" — floor {fmt_t(c['floor_s'])}" if c.get("floor_s") else ""
            lines += [f"{heading}# {c['case']} {c.get('note', '')}{floor}", ""] + case_table(group) + [""]
            for f in _fig_for(figs, fam, c["op"]):
                if f not in shown_figs:
                    shown_figs.add(f)
                    lines += [f"![{os.path.basename(f)}]({os.path.relpath(f, base_dir)})", ""]
    lines += ["Columns: median / min – max over the timed calls of the better allocator (default glibc malloc or "
              "tuned: freed memory kept; the tuned repeat is skipped -- shown as – -- where the default run's peak "
              "memory, faulted in at 1 GB/s, would cost under 5 % of its median, or where it failed); peak mem Δ = peak RSS during the timed calls minus RSS before them "
              "(default malloc; on CUDA: max allocated during one call minus allocated before it); rate = the "
              "op's counted FLOPs (and bytes) over the median, in brackets as a share of the GEMM rate (bandwidth) "
              "measured in the same run; × floor = median / floor (floor = FLOPs / GEMM rate + exps / exp rate, or bytes / "
              "bandwidth); best peer / this > 1 means faster than every peer; max err = max |value - float64 "
              "reference| on the same inputs, absolute / relative to max |reference|."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- issue bars
@dataclasses.dataclass(frozen=True)
class Bar:
    """One performance bar of a kernel issue, checked against the rows of a run.

    ``ours`` / ``peers``: the providers compared (None: the fastest multialign provider / the fastest peer of
    the case). ``min_ratio``: peer median / ours median must reach it. The other limits apply to ours."""
    issue: int
    what: str
    case: str
    ours: tuple[str, ...] | None = None
    peers: tuple[str, ...] | None = None
    min_ratio: float | None = None
    max_x_floor: float | None = None
    max_peak_mb: float | None = None
    max_rel_err: float | None = None


def _spd_bars() -> list[Bar]:
    out = []
    for B, d in ((100000, 3), (10000, 16), (1000, 64)):
        for dt in ("float32", "float64"):
            ratio = 3.0 if d <= 16 else 1.0
            for fb in (False, True):
                err = 1e-5 if dt == "float32" and not fb else None    # the issue's accuracy bar: the forward
                case = f"spd_log{'_fwd_bwd' if fb else ''}[{B}x{d}x{d},{dt}]"
                peer = "torch-eigh-autograd" if fb else "torch-eigh-eager"
                out.append(Bar(5, f"spd_log {'fwd+bwd' if fb else 'fwd'} {dt}, (B, d) = ({B}, {d}): "
                                  f"≥ {ratio:g}× torch eigh" + (", rel err ≤ 1e-5" if err else ""),
                               case, peers=(peer,), min_ratio=ratio, max_rel_err=err))
    return out


BARS: list[Bar] = [
    Bar(2, "gram 4096×64: faster than the best peer (aim: 1.5× the floor)", "gram[4096x64]", min_ratio=1.0),
    Bar(2, "gram fwd+bwd 4096×64: ≥ 3× torch eager autograd", "gram_fwd_bwd[4096x64]",
        peers=("torch-autograd-gemm", "torch-autograd-cdist"), min_ratio=3.0),
    Bar(2, "mmd2 16384×64: ≥ 5× KeOps LazyTensor", "mmd2[16384x64]", peers=("keops-lazytensor",), min_ratio=5.0),
    Bar(2, "mmd2 16384×64: faster than dense torch, peak < 64 MB", "mmd2[16384x64]",
        peers=("torch-dense-inplace",), min_ratio=1.0, max_peak_mb=64),
    Bar(2, "gram_matvec 16384×64: ≥ 5× KeOps LazyTensor", "gram_matvec[16384x64,C=1]", peers=("keops-lazytensor",),
        min_ratio=5.0),
    Bar(2, "gram_matvec 16384×64: faster than dense torch, peak < 64 MB", "gram_matvec[16384x64,C=1]",
        peers=("torch-dense",), min_ratio=1.0, max_peak_mb=64),
    Bar(2, "mmd2 N = 131072 runs", "mmd2[131072x64]"),
    Bar(3, "sinkhorn log-domain, cost matrix, 4096×2: ≥ 3× the fastest log-domain peer, ≤ 2× the exp floor",
        "sinkhorn[4096x2,100it]", ours=("multialign-numba-logmatrix",),
        peers=("pot-sinkhorn_log-numpy", "pot-sinkhorn_log-torch", "torch-logsumexp-loop"), min_ratio=3.0,
        max_x_floor=2.0),
    Bar(3, "sinkhorn online 4096×64: ≥ 5× KeOps / GeomLoss online", "sinkhorn[4096x64,100it]",
        ours=("multialign-numba-online",), peers=("keops-logsumexp-loop", "geomloss-online"), min_ratio=5.0),
    Bar(3, "sinkhorn online 16384×2: peak < 64 MB", "sinkhorn[16384x2,10it]", ours=("multialign-numba-online",),
        max_peak_mb=64),
    Bar(3, "sinkhorn stabilised scaling 4096×2: within 1.5× of POT plain Sinkhorn", "sinkhorn[4096x2,100it]",
        ours=("multialign-numba-scaling",), peers=("pot-sinkhorn-plain",), min_ratio=1 / 1.5),
    Bar(3, "sinkhorn batched 256 × 256×256, D = 16: ≥ 10× POT ot.batch", "sinkhorn_batched[256x256x256x16,100it]",
        peers=("pot-ot.batch-log", "pot-sinkhorn_log-loop"), min_ratio=10.0),
    Bar(4, "stress fwd+bwd 4096: ≥ 3× torch eager, ≤ 1.5× the floor", "stress_fwd_bwd[4096x512x64]",
        peers=("torch-eager-cdist-autograd",), min_ratio=3.0, max_x_floor=1.5),
    Bar(4, "stress fwd+bwd N = 65536: runs, peak < 64 MB", "stress_fwd_bwd[65536x512x64]", max_peak_mb=64),
    *_spd_bars(),
]


def bar_providers(case, bars: list[Bar] = BARS) -> set[str] | None:
    """The providers of ``case`` (a harness Case) that its bars compare, or None when no bar names the case:
    the named ones, or every multialign provider / every peer where a bar says "the fastest"."""
    mine = [b for b in bars if b.case == case.key]
    if not mine:
        return None
    names = set()
    for b in mine:
        names |= set(b.ours) if b.ours else {p for p in case.providers if p.startswith("multialign")}
        if b.min_ratio is not None:
            names |= set(b.peers) if b.peers else {p for p in case.providers if not p.startswith("multialign")}
    return {p for p in names if p in case.providers}


def bar_rows(rows_: list[dict], bars: list[Bar] = BARS) -> list[dict]:
    """Each bar with what was measured and whether it is met (None: not measured in this run)."""
    by_case: dict[str, list[dict]] = {}
    for r in rows_:
        by_case.setdefault(r["case"], []).append(r)
    out = []
    for b in bars:
        group = by_case.get(b.case, [])
        ok = [r for r in group if r["status"] == "ok" and r.get("median_s")]
        ours = [r for r in ok if (r["provider"] in b.ours if b.ours else r["ours"])]
        peers = [r for r in ok if (r["provider"] in b.peers if b.peers else not r["ours"])]
        res = {"issue": b.issue, "what": b.what, "case": b.case, "met": None, "measured": "not measured in this run"}
        if not ours:
            out.append(res)
            continue
        o = min(ours, key=lambda r: r["median_s"])
        parts, checks = [f"{o['provider']} {fmt_t(o['median_s'])}"], []
        if b.min_ratio is not None:
            if not peers:
                res["measured"] = parts[0] + "; peer not measured in this run"
                out.append(res)
                continue
            p = min(peers, key=lambda r: r["median_s"])
            ratio = p["median_s"] / o["median_s"]
            parts.append(f"vs {p['provider']} {fmt_t(p['median_s'])}: **{ratio:.2f}×**")
            checks.append(ratio >= b.min_ratio)
        if b.max_x_floor is not None or o.get("x_floor"):
            if o.get("x_floor"):
                parts.append(f"{o['x_floor']:.2f}× floor")
            if b.max_x_floor is not None:
                checks.append(o.get("x_floor") is not None and o["x_floor"] <= b.max_x_floor)
        if b.max_peak_mb is not None:
            pk = o.get("peak_mem_bytes")
            parts.append(f"peak {fmt_mb(pk)}")
            checks.append(pk is not None and pk <= b.max_peak_mb * 2**20)
        if b.max_rel_err is not None:
            e = o.get("max_rel_err")
            parts.append(f"rel err {e:.1e}" if e is not None else "rel err not measured")
            checks.append(e is not None and e <= b.max_rel_err)
        res["measured"] = ", ".join(parts)
        res["met"] = all(checks)
        out.append(res)
    return out


def bars_table(rows_: list[dict]) -> list[str]:
    lines = ["| issue | bar | case | measured (median) | met |", "|---|---|---|---|---|"]
    for b in bar_rows(rows_):
        met = {True: "yes", False: "**no**", None: "–"}[b["met"]]
        lines.append(f"| #{b['issue']} | {b['what']} | `{b['case']}` | {b['measured']} | {met} |")
    return lines


# --------------------------------------------------------------------------------------------- plots
def _series_key(params: dict) -> str:
    rest = {k: v for k, v in params.items() if k not in ("N", "B", "n", "M", "device")}
    return ",".join(f"{k}={v}" for k, v in sorted(rest.items())) or "all"


def plots(rows_: list[dict], doc: dict, out_dir: str) -> list[str]:
    """Log-log time and peak memory against N (one line per implementation) for every op with >= 2 sizes."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    cases = {(c["family"], c["case"]): c for c in doc["cases"]}
    series: dict[tuple, list[dict]] = {}
    for r in rows_:
        c = cases.get((r["family"], r["case"]))
        if not c or r.get("x") is None or r["status"] != "ok":
            continue
        xname = next(k for k in ("N", "B", "n") if k in c["params"])
        series.setdefault((r["family"], r["op"], xname, _series_key(c["params"])), []).append(r)
    os.makedirs(out_dir, exist_ok=True)
    for old in os.listdir(out_dir):           # plots of a previous run that this one does not redraw
        if old.endswith(".png") and "__" in old:
            os.remove(os.path.join(out_dir, old))
    written = []
    for (fam, op, xname, skey), group in sorted(series.items()):
        xs = sorted({r["x"] for r in group})
        if len(xs) < 2:
            continue
        fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
        for prov in sorted({r["provider"] for r in group}, key=lambda p: (not p.startswith("multialign"), p)):
            pts = sorted((r["x"], r["median_s"], r.get("peak_mem_bytes")) for r in group if r["provider"] == prov)
            style = dict(marker="o", lw=2.2) if prov.startswith("multialign") else dict(marker=".", lw=1.2, alpha=0.85)
            ax_t.plot([p[0] for p in pts], [p[1] for p in pts], label=prov, **style)
            mem = [(p[0], max(p[2], 2**19) / 2**20) for p in pts if p[2] is not None]
            if mem:
                ax_m.plot([m[0] for m in mem], [m[1] for m in mem], label=prov, **style)
        floors = sorted({(r["x"], r["floor_s"]) for r in group if r.get("floor_s")})
        if len(floors) >= 2:
            ax_t.plot([f[0] for f in floors], [f[1] for f in floors], "k--", lw=1, label="floor")
        for ax, ylabel in ((ax_t, "median time per call (s)"), (ax_m, "peak memory Δ (MB, ≤ 0.5 shown as 0.5)")):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel(xname)
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
        ax_t.legend(fontsize=7)
        fig.suptitle(f"{op} ({skey}) — {doc.get('device', 'cpu')}, float32")
        fig.tight_layout()
        name = re.sub(r"[^A-Za-z0-9_.=-]+", "_", f"{fam}__{op}__{skey}") + ".png"
        path = os.path.join(out_dir, name)
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


# --------------------------------------------------------------------------------------------- docs page
REGENERATE = """\
```bash
make bench-docs     # all of the below, ~35 min on 2 cores; run it on a quiet machine (`uptime`)
multialign bench --gpu-static --out docs/bench-results                           # static GPU report (JSON, md)
for op in spd stress sinkhorn gram mmd; do                                       # what the issues' bars compare
  multialign bench --op $op --compare --bars --tuned-malloc all --reps 10 --budget 1 --procs 2 --merge --out docs/bench-results
done
multialign bench --render docs/bench-results --doc docs/benchmarks.md           # tables, plots, this page
```"""


def docs_page(doc: dict | None, static: dict | None, out_dir: str, doc_path: str) -> str:
    from . import gpu_static

    base = os.path.dirname(os.path.abspath(doc_path))
    lines = ["# Benchmarks", "",
             "Every figure on this page was produced by the commands below (nothing is typed by hand). Timings are "
             "medians on this machine, with every peer measured in the same run; see `multialign/bench/harness.py` "
             "for how time, peak memory, accuracy and floors are taken, and CONTRIBUTING.md for the asv and "
             "pytest-benchmark suites.", "", REGENERATE, ""]
    if doc:
        rows_ = rows(doc)
        figs = []
        pdir = os.path.join(out_dir, "plots")
        if os.path.isdir(pdir):
            figs = sorted(os.path.join(pdir, f) for f in os.listdir(pdir) if f.endswith(".png"))
        load = doc.get("load_average_start", [0])[0]
        if load >= 1.5:
            lines += [f"> **Possibly taken under load** (1-minute load average {load:.1f} at the start of the run on a "
                      f"{doc.get('machine', {}).get('cores')}-core machine: other work was running or had just "
                      "finished -- in a merged run, possibly the previous step of the same run). Ratios between "
                      "providers measured in the same run are meaningful; absolute times may be pessimistic. Rerun "
                      "the first command on a quiet machine to refresh them.", ""]
        lines += [f"## {'GPU (CUDA)' if doc.get('device') == 'cuda' else 'CPU'}: multialign against its peers", ""]
        md = markdown(doc, rows_, figs, base, heading="###")
        lines += [md]
    else:
        lines += ["(no timing results yet: run the first command above)", ""]
    lines += ["## GPU without a GPU: static report of every Triton kernel", ""]
    if static:
        lines += [gpu_static.markdown(static, heading="###")]
    else:
        lines += ["(not generated yet: `multialign bench --gpu-static --out docs/bench-results --doc docs/benchmarks.md`)"]
    return "\n".join(lines).rstrip() + "\n"
