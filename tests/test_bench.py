"""The benchmark machinery: coverage of every public op, the harness's measurements and reports, and the
static GPU report (Triton kernels compiled for sm_80 / sm_90 without a GPU).

Fast by design: one in-process harness run on a small case, one `multialign bench` run in a subprocess, one
Triton kernel compiled for both targets, and every Triton module's kernels enumerated (each has an AOT spec).
The exhaustive static check -- every kernel at every autotune config for sm_80 and sm_90, against the bar --
takes 10+ minutes on 2 cores and is `make gpu-static` (`multialign bench --gpu-static --strict`), reported in
docs/benchmarks.md, not a CI test.
"""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from multialign.bench import gpu_static, report, workloads
from multialign.bench.cases import FAMILIES, op_only_cases
from multialign.bench.harness import Case, Unavailable, _classify, load_cases, max_errors, run_one


def test_every_public_op_has_a_benchmark_workload():
    """An op that lands without a workload would be missing from asv, pytest-benchmark and `multialign bench`."""
    assert workloads.public_ops(), "multialign.ops exposes no op?"
    assert workloads.uncovered_ops() == [], "add these ops to multialign/bench/workloads.py WORKLOADS"


def test_every_op_is_in_some_comparison_case():
    for fam in FAMILIES:
        ops = {c.op.removesuffix("_fwd_bwd") for c in load_cases(fam) + op_only_cases(fam)}
        for w in workloads.available(fam):
            assert w.op in ops, f"{w.op} has no case in `multialign bench --op {fam}`"


def test_case_keys_are_unique():
    for fam in FAMILIES:
        keys = [c.key for c in load_cases(fam) + op_only_cases(fam)]
        assert len(keys) == len(set(keys)), f"duplicate case keys in {fam}"


@pytest.mark.parametrize("op", sorted(workloads.WORKLOADS))
def test_workload_small_inputs_are_deterministic(op):
    w = workloads.WORKLOADS[op]
    s = w.sizes[0]
    assert s.tier == "small" and s.label == "small"
    a1, kw1 = w.make(s.params, torch.float32, "cpu", 0)
    a2, kw2 = w.make(s.params, torch.float32, "cpu", 0)
    for x, y in zip(a1, a2):
        if isinstance(x, torch.Tensor):
            assert x.dtype == torch.float32 and torch.equal(x, y)
    assert kw1 == kw2


def test_max_errors_catches_nan_and_shapes():
    want = torch.tensor([1.0, -2.0], dtype=torch.float64)
    e = max_errors(torch.tensor([1.0, -2.5]), want)
    assert e["max_abs_err"] == pytest.approx(0.5) and e["max_rel_err"] == pytest.approx(0.25)
    assert math.isnan(max_errors(torch.tensor([float("nan"), 0.0]), want)["max_abs_err"])
    with pytest.raises(ValueError):
        max_errors(torch.zeros(3), want)
    assert max_errors(None, want) == {}
    e = workloads.max_error((torch.ones(2), torch.zeros(1)), (torch.ones(2), torch.full((1,), 0.5)))
    assert e == (0.5, 1.0)


def test_failures_are_classified():
    assert _classify(MemoryError()) == "oom"
    assert _classify(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate")) == "oom"
    assert _classify(ModuleNotFoundError("No module named 'pykeops'", name="pykeops")) == "missing"
    assert _classify(Unavailable("cuda only")) == "n/a"
    assert _classify(ValueError("boom")) == "failed"


def test_run_one_measures_time_memory_and_error():
    """In process, on the smallest gram_matvec case: a torch peer (fast to run, no JIT)."""
    case = next(c for c in load_cases("gram") if c.op == "gram_matvec" and c.tier == "small")
    rec = run_one("gram", case.key, "torch-dense", reps=2, budget_s=0.5)
    assert rec["status"] == "ok", rec
    assert rec["reps"] >= 1 and 0 < rec["min_s"] <= rec["median_s"] <= rec["max_s"]
    assert rec["first_call_s"] > 0
    assert "peak_mem_delta_bytes" in rec
    # float32 dense K @ v against the float64 reference: small but not zero
    assert 0 < rec["max_rel_err"] < 1e-4


def test_run_one_reports_device_mismatch_as_not_applicable():
    case = next(c for c in load_cases("gram") if c.tier == "small" and "multialign-triton" in c.providers)
    rec = run_one("gram", case.key, "multialign-triton", reps=1, budget_s=0.1)
    assert rec["status"] == "n/a" and "cuda" in rec["error"]


def _doc():
    c = {"family": "gram", "case": "mmd2[4x4]", "op": "mmd2", "size": "4x4", "tier": "small", "params": {"N": 4, "D": 4},
         "note": "", "work": {"flops": 1e9}, "floor_s": 0.01, "has_reference": True}
    c2 = dict(c, case="mmd2[8x4]", size="8x4", params={"N": 8, "D": 4}, floor_s=0.04)
    recs = []
    for case, scale in ((c, 1.0), (c2, 4.0)):
        for prov, t in (("multialign-numba", 0.02), ("torch-dense", 0.05), ("keops", 0.1)):
            for tuned in (False, True):
                recs.append({"family": "gram", "case": case["case"], "provider": prov, "tuned_malloc": tuned,
                             "status": "ok", "median_s": t * scale * (0.9 if tuned else 1), "min_s": t * scale * 0.8,
                             "max_s": t * scale * 1.2, "reps": 5, "first_call_s": 1.0, "peak_mem_delta_bytes": 2**20,
                             **({} if tuned else {"max_abs_err": 1e-7, "max_rel_err": 1e-6})})
    recs.append({"family": "gram", "case": c["case"], "provider": "geomloss", "tuned_malloc": False, "status": "missing",
                 "error": "geomloss is not installed"})
    return {"cases": [c, c2], "records": recs, "device": "cpu", "machine": {}, "ceilings": {},
            "load_average_start": [0.5], "load_average_end": [0.5]}


def test_report_rows_ratios_and_tables(tmp_path):
    doc = _doc()
    rows = report.rows(doc)
    ours = next(r for r in rows if r["provider"] == "multialign-numba" and r["case"] == "mmd2[4x4]")
    assert ours["median_s"] == pytest.approx(0.018)          # the better allocator
    assert ours["best_peer"] == "torch-dense"
    assert ours["speedup_vs_best_peer"] == pytest.approx(0.045 / 0.018)
    assert ours["x_floor"] == pytest.approx(1.8)
    assert ours["max_rel_err"] == 1e-6
    missing = next(r for r in rows if r["provider"] == "geomloss")
    assert missing["status"] == "missing"
    md = report.markdown(doc, rows, [], str(tmp_path))
    assert "not installed" in md and "2.50×" in md
    report.write_csv(rows, str(tmp_path / "r.csv"))
    assert (tmp_path / "r.csv").read_text().count("\n") == len(rows) + 1
    figs = report.plots(rows, doc, str(tmp_path / "plots"))
    if figs:  # matplotlib installed
        assert all(os.path.getsize(f) > 1000 for f in figs)


def test_issue_bars_are_evaluated_from_the_rows():
    def row(case, prov, t, **kw):
        return {"case": case, "provider": prov, "ours": prov.startswith("multialign"), "status": "ok", "median_s": t,
                **kw}
    rows = [row("gram[4096x64]", "multialign-numba", 0.02, x_floor=1.2), row("gram[4096x64]", "torch-cdist", 0.05),
            row("gram_fwd_bwd[4096x64]", "multialign-numba", 0.1), row("gram_fwd_bwd[4096x64]", "torch-autograd-gemm", 0.2),
            row("mmd2[131072x64]", "multialign-numba", 3.0, peak_mem_bytes=2**20)]
    got = {(b["case"], b["what"]): b for b in report.bar_rows(rows)}
    gram = next(b for (c, _), b in got.items() if c == "gram[4096x64]")
    assert gram["met"] is True and "2.50×" in gram["measured"] and "1.20× floor" in gram["measured"]
    fb = next(b for (c, _), b in got.items() if c == "gram_fwd_bwd[4096x64]")
    assert fb["met"] is False and "2.00×" in fb["measured"]                 # 2x < the 3x bar
    assert next(b for (c, _), b in got.items() if c == "mmd2[131072x64]")["met"] is True
    assert all(b["met"] is None for (c, _), b in got.items() if c.startswith("stress"))
    assert "| #2 |" in "\n".join(report.bars_table(rows))


def test_every_issue_bar_names_an_existing_case_and_providers():
    """A renamed case or provider would silently turn a bar into "not measured"."""
    cases = {c.key: c for fam in FAMILIES for c in load_cases(fam)}
    for b in report.BARS:
        assert b.case in cases, f"bar {b.what!r}: no case {b.case!r} (renamed? update report.BARS)"
        for p in (b.ours or ()) + (b.peers or ()):
            assert p in cases[b.case].providers, f"bar {b.what!r}: {b.case} has no provider {p!r}"


def test_bars_select_exactly_the_compared_cases_and_providers():
    """`multialign bench --bars` (what make bench-docs times): every case a bar names, only the providers it compares."""
    from multialign.bench.runner import bar_selection, select

    sel = {c.key: c for _, c in bar_selection(select(["gram", "mmd"]))}
    assert set(sel) == {"gram[4096x64]", "gram_fwd_bwd[4096x64]", "mmd2[16384x64]", "gram_matvec[16384x64,C=1]",
                        "mmd2[131072x64]"}
    assert set(sel["mmd2[16384x64]"].providers) == {"multialign-numba", "multialign-triton", "keops-lazytensor",
                                                    "torch-dense-inplace"}
    assert set(sel["mmd2[131072x64]"].providers) == {"multialign-numba", "multialign-triton"}
    assert "sklearn-rbf_kernel" in sel["gram[4096x64]"].providers          # "the best peer": every peer


def test_merge_replaces_the_rerun_cases_and_keeps_the_others():
    from multialign.bench.runner import merge

    old, new = _doc(), _doc()
    old.update(started="2026-01-01T10:00", finished="2026-01-01T10:10", command="a")
    new.update(started="2026-01-01T11:00", finished="2026-01-01T11:10", command="b", cases=new["cases"][:1],
               records=[dict(r, median_s=1.0) for r in new["records"] if r["case"] == "mmd2[4x4]"])
    m = merge(old, new)
    assert {c["case"] for c in m["cases"]} == {"mmd2[4x4]", "mmd2[8x4]"}
    assert all(r["median_s"] == 1.0 for r in m["records"] if r["case"] == "mmd2[4x4]" and "median_s" in r)
    assert any(r["case"] == "mmd2[8x4]" for r in m["records"])
    assert [r["command"] for r in m["runs"]] == ["a", "b"] and m["started"] == "2026-01-01T10:00"
    assert "merged from 2 runs" in report.markdown(m, report.rows(m), [], ".")


def test_best_of_processes_keeps_the_fastest_and_every_median():
    from multialign.bench.runner import _best_of_processes

    recs = [{"status": "ok", "median_s": 3.0, "max_abs_err": 1e-7, "max_rel_err": 2e-7},
            {"status": "ok", "median_s": 1.0}, {"status": "timeout"}]
    best = _best_of_processes(lambda k: recs[k], 3)
    assert best["median_s"] == 1.0 and best["process_medians_s"] == [3.0, 1.0, None]
    assert best["max_abs_err"] == 1e-7 and best["max_rel_err"] == 2e-7
    assert _best_of_processes(lambda k: recs[2], 2)["status"] == "timeout"
    assert "process_medians_s" not in _best_of_processes(lambda k: recs[0], 1)


def test_cli_parses_bench_options():
    from multialign.cli import build_parser

    a = build_parser().parse_args(["bench", "--op", "mmd", "--sizes", "small", "--compare", "--out", "x"])
    assert a.op == ["mmd"] and a.sizes == ["small"] and a.compare and a.out == "x" and not a.gpu_static
    a = build_parser().parse_args(["bench", "--op", "gram", "--op", "spd", "--peer-sizes", "small,medium"])
    assert a.op == ["gram", "spd"] and a.peer_sizes == ["small,medium"] and a.procs == 1
    assert build_parser().parse_args(["bench", "--procs", "3"]).procs == 3


def test_cli_end_to_end_writes_json_csv_markdown_and_the_docs_page(tmp_path):
    """`multialign bench` in a subprocess, as a user runs it: a torch peer timed in its own subprocess on the
    small Gram case (float64 error measured), not timed at the medium size (--peer-sizes), Triton marked as
    CUDA-only; every output file written."""
    out, page = tmp_path / "res", tmp_path / "docs" / "benchmarks.md"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "multialign.cli", "bench", "--op", "gram", "--case", "gram[1024x64]",
                           "--case", "gram[4096x64]", "--compare", "--providers", "torch-inplace-gemm,multialign-triton",
                           "--peer-sizes", "small", "--default-malloc-only", "--reps", "2", "--budget", "0.2",
                           "--out", str(out), "--doc", str(page), "--quiet"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((out / "results.json").read_text())
    recs = {(r["case"], r["provider"]): r for r in doc["records"]}
    ok = recs[("gram[1024x64]", "torch-inplace-gemm")]
    assert ok["status"] == "ok" and ok["reps"] >= 1 and 0 < ok["max_rel_err"] < 1e-4, ok
    assert recs[("gram[4096x64]", "torch-inplace-gemm")]["status"] == "skipped"
    assert recs[("gram[1024x64]", "multialign-triton")]["status"] == "n/a"
    assert doc["ceilings"]["gemm_flops_per_s"] > 0 and doc["cases"][0]["floor_s"] > 0
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("family,op,case") and len(csv_lines) == 1 + 4
    md = (out / "results.md").read_text()
    assert "gram[1024x64]" in md and "not timed" in md
    text = page.read_text()
    assert text.startswith("# Benchmarks") and "torch-inplace-gemm" in text and "make bench-docs" in text


# --------------------------------------------------------------------------------------------- GPU static
def test_occupancy_arithmetic():
    # 255 registers x 4 warps: 8 K registers per warp -> 8 warps per SM -> 2 blocks
    o = gpu_static.occupancy(80, 255, 4, 32768)
    assert o["blocks_per_sm"] == 2 and o["limiter"] == "registers" and o["occupancy"] == pytest.approx(8 / 64)
    # 32 registers, 4 warps, no shared memory: the warp limit (16 blocks of 4 warps)
    o = gpu_static.occupancy(90, 32, 4, 0)
    assert o["blocks_per_sm"] == 16 and o["occupancy"] == 1.0 and "warps" in o["limiter"]
    # shared memory bound: 100 KB per block -> one block on sm_80 (164 KB per SM), two on sm_90 (228 KB)
    assert gpu_static.occupancy(80, 32, 4, 100 * 1024)["blocks_per_sm"] == 1
    assert gpu_static.occupancy(90, 32, 4, 100 * 1024)["blocks_per_sm"] == 2
    assert gpu_static.occupancy(80, 32, 4, 200 * 1024)["blocks_per_sm"] == 0      # does not launch


def test_dot_precision_parsing():
    line = ("%s = tt.dot %a, %b, %c, inputPrecision = tf32x3 : tensor<128x16xf32> * tensor<16x64xf32> -> "
            "tensor<128x64xf32> loc(#loc1)")
    assert gpu_static.dots_of(line) == [{"operand": "f32", "precision": "tf32x3", "acc": "f32", "shape": "128x64x16",
                                         "tensor_cores": True}]
    ieee = "%s = tt.dot %a, %b, %c : tensor<32x32xf32> * tensor<32x32xf32> -> tensor<32x32xf32>"
    assert gpu_static.dots_of(ieee)[0]["precision"] == "ieee" and not gpu_static.dots_of(ieee)[0]["tensor_cores"]
    half = "%s = tt.dot %a, %b, %c, inputPrecision = tf32 : tensor<64x32xbf16> * tensor<32x16xbf16> -> tensor<64x16xf32>"
    assert gpu_static.dots_of(half)[0]["tensor_cores"]
    f64 = "%s = tt.dot %a, %b, %c, inputPrecision = tf32 : tensor<16x16xf64> * tensor<16x16xf64> -> tensor<16x16xf64>"
    assert gpu_static.dots_of(f64)[0]["precision"] == "f64"


def test_gpu_static_bar_counts_default_config_spills_only():
    def rec(kernel, idx, spills, autotuned=True, tc=True):
        return {"family": "f", "kernel": kernel, "variant": "", "config": f"c{idx}", "cc": 90, "compiled": True,
                "autotuned": autotuned, "config_index": idx, "spills": spills, "stack": 8 * spills, "local": 0,
                "tensor_core_ok": tc}
    ok = gpu_static.evaluate([rec("a", 0, False), rec("a", 1, True)], {"f": []}, [], [90])
    assert ok["passed"] and not ok["spills"] and len(ok["spills_other_configs"]) == 1
    bad = gpu_static.evaluate([rec("a", 0, True), rec("b", 0, False, autotuned=False, tc=False)], {"f": ["c_kernel"]},
                              [], [90])
    assert not bad["passed"] and len(bad["spills"]) == 1 and len(bad["no_tensor_cores"]) == 1
    assert bad["kernels_without_spec"] == {"f": ["c_kernel"]}
    assert gpu_static.is_default(rec("b", 3, False, autotuned=False))


def _static(args, timeout=900):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "multialign.bench.gpu_static", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_gpu_static_compiles_a_tf32_kernel_for_sm80_and_sm90(tmp_path):
    """The Gram forward kernel (tf32x3 dots) at its first config: HMMA on sm_80, HGMMA (wgmma) on sm_90."""
    out = tmp_path / "s.json"
    _static(["gram", "--kernel", "_gram_fwd_kernel", "--default-configs-only", "--json", str(out)])
    res = json.loads(out.read_text())
    ks = {r["cc"]: r for r in res["kernels"]}
    assert set(ks) == {80, 90}
    for cc, r in ks.items():
        assert r["compiled"], r.get("error")
        assert 0 < r["regs"] <= 255 and r["shared"] > 0 and r["blocks_per_sm"] >= 1
        assert r["dots"] and all(d["precision"] in ("tf32x3", "ieee") for d in r["dots"])
        assert r["tensor_core_ok"]
    if any(d["tensor_cores"] for d in ks[80]["dots"]):
        assert ks[80]["sass"].get("HMMA", 0) > 0 and ks[80]["ptx_mma"] > 0
        assert ks[90]["sass"].get("HGMMA", 0) + ks[90]["sass"].get("HMMA", 0) > 0


def test_gpu_static_every_default_config_meets_the_bar(tmp_path):
    """Issue 6's static bar, in CI: every Triton kernel of every family compiles at its default config for
    sm_80 and sm_90, with no stack (spills), and every TF32/half dot on tensor cores (~1 min on 2 cores)."""
    out = tmp_path / "d.json"
    proc = subprocess.run([sys.executable, "-m", "multialign.bench.gpu_static", "--default-configs-only", "--strict",
                           "--json", str(out)], env={k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"},
                          capture_output=True, text=True, timeout=1800)
    res = json.loads(out.read_text()) if out.exists() else {}
    bar = res.get("bar", {})
    assert proc.returncode == 0 and bar.get("passed"), (
        {k: v for k, v in bar.items() if k != "passed" and v} or proc.stderr[-2000:])
    assert {r["cc"] for r in res["kernels"]} == {80, 90}
    assert all(r["compiled"] and r["stack"] == 0 for r in res["kernels"])


def test_gpu_static_every_triton_kernel_has_an_aot_spec():
    proc = _static(["--list"])
    listed = [line for line in proc.stdout.splitlines() if line.strip()]
    assert any(line.startswith("gram._gram_fwd_kernel") for line in listed)
    assert "kernels without" not in proc.stdout


def test_cuda_exp_ceiling_kernel_computes_the_chain():
    """The kernel behind the CUDA exp-rate ceiling, run by the interpreter on CPU tensors."""
    from multialign._backend import triton_interpreter_active

    if not triton_interpreter_active():
        pytest.skip("needs TRITON_INTERPRET=1 (how the suite runs) or a GPU")
    from multialign.bench._cuda import exp_chain

    x = torch.rand(64, dtype=torch.float32)
    out = exp_chain(x, torch.empty_like(x), reps=5, block=32)
    v, acc = x.double(), torch.zeros(64, dtype=torch.float64)
    for _ in range(5):
        v = torch.exp(-0.5 * v)
        acc += v
    torch.testing.assert_close(out.double(), acc, rtol=1e-6, atol=1e-6)


def test_cpu_ceilings_best_of_fresh_processes():
    """--procs K measures the ceilings in K fresh subprocesses and keeps each rate's best."""
    from multialign.bench.harness import machine_ceilings

    c = machine_ceilings("cpu", procs=2)
    assert c["device"] == "cpu" and "best of 2 processes" in c["how"]
    for k in ("gemm_flops_per_s", "exp_per_s", "bytes_per_s"):
        assert math.isfinite(c[k]) and c[k] > 0, k
