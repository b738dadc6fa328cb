"""Timing, peak memory and floors for the peer comparison.

How a figure is taken (the same rules PEERS.md used, so figures compare):

* **time**: one untimed warm-up call (JIT compilation, thread pools), then repeated calls until
  ``reps`` calls or ``budget_s`` seconds; the median is reported with min and max.
* **peak memory**: each (case, provider) runs in a fresh subprocess; after the inputs are built and
  the first (compiling) call is done, the kernel's peak-RSS counter is reset (``/proc/self/clear_refs``),
  and the figure is the peak RSS during the timed calls minus the RSS before them -- one call's
  working set, output included. The first call's time is reported separately.
* **allocator**: every provider is timed twice, with glibc's default malloc and with
  ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` set high (freed memory kept for reuse).
  Fresh pages cost 1-3 GB/s on the development VM, so eager peers run up to 3x faster tuned; a
  ratio is always taken against the better of the two.
* **floor**: ``flops / GEMM rate + exps / exp rate`` (or ``bytes / bandwidth`` when larger), with the
  rates measured on this machine in the same run (:func:`machine_ceilings`).
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

TUNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(16 << 30), "MALLOC_TRIM_THRESHOLD_": str(16 << 30)}


@dataclasses.dataclass
class Case:
    op: str                                   # e.g. "gram", "mmd2"
    size: str                                 # label, e.g. "4096x64"
    params: dict                              # passed to every provider factory and to floor
    providers: dict[str, Callable[[dict], Callable[[], Any]]]
    floor: Callable[[dict], dict] | None = None
    note: str = ""

    @property
    def key(self) -> str:
        return f"{self.op}[{self.size}]"


def load_cases(family: str) -> list[Case]:
    return importlib.import_module(f"multialign.bench.cases.{family}").CASES


def _rss_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _block(out):
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out


def time_fn(fn: Callable[[], Any], reps: int = 7, budget_s: float = 20.0, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        _block(fn())
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < reps and (not times or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        _block(fn())
        times.append(time.perf_counter() - t0)
    return times


def run_one(family: str, case_key: str, provider: str, reps: int, budget_s: float) -> dict:
    """Run in the current process (the CLI calls this in a fresh subprocess per provider)."""
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    case = next(c for c in load_cases(family) if c.key == case_key)
    rec: dict = {"family": family, "case": case_key, "op": case.op, "size": case.size, "provider": provider,
                 "tuned_malloc": "MALLOC_MMAP_THRESHOLD_" in os.environ}
    try:
        fn = case.providers[provider](case.params)
        _block(None)
        t_first = time.perf_counter()
        _block(fn())  # first call: JIT compilation / KeOps build / thread-pool start, reported separately
        rec["first_call_s"] = time.perf_counter() - t_first
        import gc

        gc.collect()
        have_reset = _reset_peak()
        rss0 = _rss_bytes("VmRSS")
        times = time_fn(fn, reps=reps, budget_s=budget_s, warmup=0)
        rec.update(median_s=statistics.median(times), min_s=min(times), max_s=max(times), reps=len(times))
        if have_reset:
            rec["peak_mem_delta_bytes"] = max(0, _rss_bytes("VmHWM") - rss0)
    except Exception as exc:  # a peer failing (OOM, unsupported) is a result, not a crash
        rec["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    return rec


def run_subprocess(family: str, case_key: str, provider: str, tuned: bool, reps: int = 7,
                   budget_s: float = 20.0, timeout_s: float = 600.0) -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "2")
    env.setdefault("MKL_NUM_THREADS", env["OMP_NUM_THREADS"])
    env.setdefault("OPENBLAS_NUM_THREADS", env["OMP_NUM_THREADS"])
    env.setdefault("NUMBA_NUM_THREADS", env["OMP_NUM_THREADS"])
    for k in TUNED_MALLOC:
        env.pop(k, None)
    if tuned:
        env.update(TUNED_MALLOC)
    cmd = [sys.executable, "-m", "multialign.bench.harness", family, case_key, provider, str(reps), str(budget_s)]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"family": family, "case": case_key, "provider": provider, "tuned_malloc": tuned,
                "error": f"timeout after {timeout_s:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {"family": family, "case": case_key, "provider": provider, "tuned_malloc": tuned,
            "error": f"subprocess failed (rc {proc.returncode}): {proc.stderr[-400:]}"}


def machine_ceilings() -> dict:
    """GEMM rate (float32, 2048 x 512 x 2048), exp rate (float32, 16 M elements) and copy bandwidth, measured now."""
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    a, b = torch.randn(2048, 512), torch.randn(512, 2048)
    c = torch.empty(2048, 2048)
    t = statistics.median(time_fn(lambda: torch.mm(a, b, out=c), reps=9, budget_s=5))
    x = torch.rand(1 << 24) * -10
    y = torch.empty_like(x)
    te = statistics.median(time_fn(lambda: torch.exp(x, out=y), reps=9, budget_s=5))
    tc = statistics.median(time_fn(lambda: y.copy_(x), reps=9, budget_s=5))
    return {"gemm_flops_per_s": 2 * 2048 * 512 * 2048 / t, "exp_per_s": x.numel() / te,
            "bytes_per_s": 2 * x.numel() * 4 / tc}


def floor_seconds(work: dict, ceilings: dict) -> float:
    compute = work.get("flops", 0) / ceilings["gemm_flops_per_s"] + work.get("exps", 0) / ceilings["exp_per_s"]
    memory = work.get("bytes", 0) / ceilings["bytes_per_s"]
    return max(compute, memory)


if __name__ == "__main__":
    fam, key, prov, reps_, budget_ = sys.argv[1:6]
    print(json.dumps(run_one(fam, key, prov, int(reps_), float(budget_))))
