"""Run the peer comparison for whole families and print the markdown tables (kept for the family helpers'
habit; ``multialign bench`` is the full command with plots, CSV and the docs page).

    python -m multialign.bench.compare gram [--case mmd2[16384x64]] [--providers a,b] [--out results.jsonl]

Each (case, provider) runs in its own subprocess, with default and tuned malloc; ratios are against the
best peer (a provider whose name does not start with ``multialign``) under its better allocator.
"""
from __future__ import annotations

import argparse
import json

from . import report
from .runner import all_cases, run


def compare(families, case_filter=None, providers=None, reps=7, budget_s=20.0, tuned_modes=(False, True), out=None):
    selection = [(fam, c) for fam in families for c in all_cases(fam)
                 if not case_filter or c.key in case_filter or c.op in case_filter]
    doc = run(selection, compare=True, providers=providers, reps=reps, budget_s=budget_s, tuned=True in tuned_modes)
    if out:
        with open(out, "a") as f:
            for r in doc["records"]:
                f.write(json.dumps(r) + "\n")
    md = report.markdown(doc, report.rows(doc), [], ".")
    print(md)
    return doc["records"], md


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("families", nargs="+")
    ap.add_argument("--case", action="append", help="case key or op name (repeatable)")
    ap.add_argument("--providers", help="comma-separated provider names")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--budget", type=float, default=20.0, help="seconds of timed calls per provider")
    ap.add_argument("--default-malloc-only", action="store_true")
    ap.add_argument("--out", help="append JSON records to this file")
    ap.add_argument("--markdown", help="write the tables to this file")
    a = ap.parse_args(argv)
    _, md = compare(a.families, a.case, a.providers.split(",") if a.providers else None, a.reps, a.budget,
                    (False,) if a.default_malloc_only else (False, True), a.out)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(md)


if __name__ == "__main__":
    main()
