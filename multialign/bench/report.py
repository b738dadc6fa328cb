"""Tables, CSV, plots and the docs page from a ``results.json`` written by :mod:`multialign.bench.runner`.

One row per (case, provider): the better of its default-malloc and tuned-malloc runs (median, min, max,
reps), both medians, peak memory (default malloc: what a user gets), the first call, the floor and
x floor, achieved GFLOP/s, the ratio to the best peer of the same case (best peer's median / this
median: > 1 means faster than every peer) and the max error against float64.
"""
from __future__ import annotations

import csv
import math
import os
import re

FIELDS = ["family", "op", "case", "size", "tier", "x", "provider", "ours", "status", "median_s", "min_s", "max_s",
          "reps", "median_default_s", "median_tuned_s", "peak_mem_bytes", "first_call_s", "floor_s", "x_floor",
          "gflops", "best_peer", "best_peer_median_s", "speedup_vs_best_peer", "max_abs_err", "max_rel_err",
          "per_iter_s", "note", "error"]


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
            flops = (c.get("work") or {}).get("flops")
            if flops:
                row["gflops"] = flops / best["median_s"] / 1e9
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
             "failed": "**failed**"}.get(st, st)
    return f"{label}: {r.get('error', '')[:140]}".replace("|", "\\|").replace("\n", " ")


def case_table(case_rows: list[dict]) -> list[str]:
    lines = ["| provider | median | min – max (reps) | median, tuned malloc | peak mem Δ | first call | × floor "
             "| GFLOP/s | best peer / this | max err vs f64 (abs / rel) | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(case_rows, key=lambda r: (not r["ours"], r.get("median_s") or math.inf)):
        if r["status"] == "n/a" and r.get("error", "").startswith("runs on"):
            continue                      # a provider for another device (e.g. Triton on a CPU run)
        if r["status"] != "ok":
            lines.append(f"| {r['provider']} | – | – | – | – | – | – | – | – | – | {_status_text(r)} |")
            continue
        sp = r.get("speedup_vs_best_peer")
        name = f"**{r['provider']}**" if r["ours"] else r["provider"]
        med = fmt_t(r["median_s"]) + (f" ({fmt_t(r['per_iter_s'])}/iter)" if r.get("per_iter_s") else "")
        xf = f"{r['x_floor']:.2f}" if r.get("x_floor") else "–"
        gf = f"{r['gflops']:.0f}" if r.get("gflops") else "–"
        spt = f"{sp:.2f}×" if sp else "–"
        lines.append(f"| {name} | {med} | {fmt_t(r['min_s'])} – {fmt_t(r['max_s'])} ({r['reps']}) | "
                     f"{fmt_t(r.get('median_tuned_s'))} | {fmt_mb(r.get('peak_mem_bytes'))} | "
                     f"{fmt_t(r.get('first_call_s'))} | {xf} | {gf} | {spt} | {fmt_err(r)} | {r.get('note', '')} |")
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
    lines = machine_lines(doc) + ["", f"{heading} Headline: multialign against the best peer of each case", ""]
    lines += headline(rows_) + [""]
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
              "tuned: freed memory kept); peak mem Δ = peak RSS during the timed calls minus RSS before them "
              "(default malloc); × floor = median / floor (floor = FLOPs / GEMM rate + exps / exp rate, or bytes / "
              "bandwidth); best peer / this > 1 means faster than every peer; max err = max |value - float64 "
              "reference| on the same inputs, absolute / relative to max |reference|."]
    return "\n".join(lines) + "\n"


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
multialign bench --op all --compare --out docs/bench-results --doc docs/benchmarks.md   # CPU figures (~1-2 h)
multialign bench --gpu-static --out docs/bench-results --doc docs/benchmarks.md         # the GPU static report
make bench-docs                                                                        # both
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
            lines += [f"> **Taken under load** (load average {load:.1f} at the start of the run on a "
                      f"{doc.get('machine', {}).get('cores')}-core machine: other work was running). Ratios between "
                      "providers measured in the same run are meaningful; absolute times are pessimistic. Rerun the "
                      "first command on a quiet machine to refresh them.", ""]
        lines += ["## CPU: multialign against its peers", ""]
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
