"""Run the peer comparison for one or more families and print a markdown table.

    python -m multialign.bench.compare gram [--case mmd2[16384x64]] [--providers a,b] [--out results.jsonl]

Each (case, provider) runs in its own subprocess, with default and tuned malloc; ratios are against the
best peer (a provider whose name does not start with ``multialign``) under its better allocator.
"""
from __future__ import annotations

import argparse
import json

from .harness import floor_seconds, load_cases, machine_ceilings, run_subprocess


def _fmt_t(s):
    if s is None:
        return "–"
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def _fmt_mb(b):
    return "–" if b is None else f"{b / 2**20:.0f} MB"


def compare(families, case_filter=None, providers=None, reps=7, budget_s=20.0, tuned_modes=(False, True), out=None):
    ceilings = machine_ceilings()
    lines = [f"machine: GEMM {ceilings['gemm_flops_per_s'] / 1e9:.0f} GFLOP/s, exp {ceilings['exp_per_s'] / 1e9:.2f} G/s, "
             f"copy {ceilings['bytes_per_s'] / 1e9:.0f} GB/s (measured in this run)", ""]
    records = []
    for fam in families:
        for case in load_cases(fam):
            if case_filter and case.key not in case_filter and case.op not in case_filter:
                continue
            rows = []
            for prov in case.providers:
                if providers and prov not in providers:
                    continue
                recs = [run_subprocess(fam, case.key, prov, tuned, reps=reps, budget_s=budget_s) for tuned in tuned_modes]
                records.extend(recs)
                if out:
                    with open(out, "a") as f:
                        for r in recs:
                            f.write(json.dumps(r) + "\n")
                rows.append((prov, recs))
            floor = floor_seconds(case.floor(case.params), ceilings) if case.floor else None
            best_peer = min((r["median_s"] for p, recs in rows if not p.startswith("multialign")
                             for r in recs if "median_s" in r), default=None)
            lines.append(f"### {fam}: {case.key} {case.note}")
            lines.append("| provider | median (default malloc) | median (tuned) | peak mem Δ (default) | × floor | best peer / this |")
            lines.append("|---|---|---|---|---|---|")
            for prov, recs in rows:
                d = recs[0]
                t = recs[1] if len(recs) > 1 else {}
                best = min((r["median_s"] for r in recs if "median_s" in r), default=None)
                err = d.get("error") or t.get("error")
                xf = f"{best / floor:.2f}" if (best and floor) else "–"
                ratio = f"{best_peer / best:.2f}×" if (best and best_peer) else "–"
                lines.append(f"| {prov} | {_fmt_t(d.get('median_s'))} | {_fmt_t(t.get('median_s'))} | "
                             f"{_fmt_mb(d.get('peak_mem_delta_bytes'))} | {xf} | {ratio}{' — ' + err if err else ''} |")
            if floor:
                lines.append(f"\nfloor: {_fmt_t(floor)}")
            lines.append("")
            print("\n".join(lines[-(len(rows) + 5):]), flush=True)
    return records, "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("families", nargs="+")
    ap.add_argument("--case", action="append", help="case key or op name (repeatable)")
    ap.add_argument("--providers", help="comma-separated provider names")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--budget", type=float, default=20.0, help="seconds of timed calls per provider")
    ap.add_argument("--default-malloc-only", action="store_true")
    ap.add_argument("--out", help="append JSON records to this file")
    ap.add_argument("--markdown", help="write the table to this file")
    a = ap.parse_args(argv)
    _, md = compare(a.families, a.case, a.providers.split(",") if a.providers else None, a.reps, a.budget,
                    (False,) if a.default_malloc_only else (False, True), a.out)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(md + "\n")


if __name__ == "__main__":
    main()
