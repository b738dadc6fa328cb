"""Input generators for the benchmarks: one :class:`Workload` per public op, shared by every suite.

The asv suite (``benchmarks/benchmarks/``), the pytest-benchmark files (``benchmarks/test_*.py``) and the
op-only rows of ``multialign bench`` all build their inputs here, so a figure means the same problem
wherever it appears. Each workload names its sizes (``small`` is the CI size: seconds, not minutes; the
others are the sizes of the kernel issues), the arguments it passes, which inputs are differentiated
in a forward+backward measurement, and the float64 reference its accuracy is measured against: the
same op with ``backend="torch"`` (the PyTorch reference, the project's specification) on the inputs
upcast to float64.

    from multialign.bench.workloads import prepare
    p = prepare("mmd2", "numba", "medium", "float32")
    p.forward(); p.forward_backward(); p.error()       # max |out - out_f64_reference|, abs and relative

Benchmarks never time the Triton interpreter: ``triton`` is offered only where CUDA is.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import inspect
import math
import os
from typing import Any, Callable

import torch

TIERS = ("small", "medium", "large")


@dataclasses.dataclass(frozen=True)
class Size:
    label: str    # shown in asv / pytest-benchmark ids
    tier: str     # small | medium | large: what --sizes / MULTIALIGN_BENCH_SIZES select
    params: dict


@dataclasses.dataclass(frozen=True)
class Workload:
    op: str                                   # public name in multialign.ops
    family: str
    sizes: tuple[Size, ...]
    make: Callable[[dict, torch.dtype, str, int], tuple[tuple, dict]]   # (params, dtype, device, seed) -> args, kwargs
    grad_args: tuple[int, ...] = ()           # positions of the differentiated arguments (empty: no backward)
    value: Callable[[Any], Any] = staticmethod(lambda out: out)          # output -> tensor(s) compared / differentiated
    extra_backends: tuple[tuple[str, dict], ...] = ()   # e.g. ("numba-online", {"backend": "numba", "path": "online"})
    dense_torch: tuple[str, ...] = ("large",)  # tiers where the torch reference needs N x M memory: not run
    reference_tiers: tuple[str, ...] = ("small", "medium")   # tiers where the float64 reference is affordable
    work: Callable[[dict], dict] | None = None   # {"flops", "exps", "bytes"} of one forward call, for floors
    iters: Callable[[dict], int] | None = None   # iterations per call (iterative solvers), for per-iteration time

    def size(self, label: str) -> Size:
        for s in self.sizes:
            if s.label == label:
                return s
        raise KeyError(f"{self.op}: no size {label!r}; sizes are {[s.label for s in self.sizes]}")

    @property
    def fn(self) -> Callable:
        from multialign import ops

        return getattr(ops, self.op)

    @property
    def has_backend_arg(self) -> bool:
        return "backend" in inspect.signature(self.fn).parameters

    def backends(self) -> dict[str, dict]:
        """Backend label -> keyword arguments, for the backends this machine can benchmark."""
        if not self.has_backend_arg:
            return {"default": {}}
        out = {name: {"backend": name} for name in machine_backends()}
        for label, kw in self.extra_backends:
            if kw.get("backend") in out:
                out[label] = dict(kw)
        return out


# --------------------------------------------------------------------------------------------- helpers
def machine_backends() -> list[str]:
    """Backends worth timing here: torch always, numba if installed, triton only on a CUDA device."""
    out = ["torch"]
    if importlib.util.find_spec("numba") is not None:
        out.append("numba")
    if torch.cuda.is_available() and importlib.util.find_spec("triton") is not None:
        out.append("triton")
    return out


def device_for(backend_kwargs: dict) -> str:
    be = backend_kwargs.get("backend", "torch")
    if be == "triton":
        return "cuda"
    if be == "numba":
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def selected_tiers(default: str = "small,medium,large") -> tuple[str, ...]:
    """Tiers chosen by ``MULTIALIGN_BENCH_SIZES`` (comma-separated; CI uses ``small``)."""
    raw = os.environ.get("MULTIALIGN_BENCH_SIZES", default)
    tiers = tuple(t.strip() for t in raw.split(",") if t.strip())
    bad = [t for t in tiers if t not in TIERS]
    if bad:
        raise ValueError(f"MULTIALIGN_BENCH_SIZES: unknown tier(s) {bad}; expected a comma-separated subset of {TIERS}")
    return tiers


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape, dtype=torch.float32, device="cpu", seed=0, scale=1.0) -> torch.Tensor:
    """Standard normal drawn in float64 and cast, so float32 and float64 runs see the same numbers."""
    return (torch.randn(shape, generator=_gen(seed), dtype=torch.float64) * scale).to(dtype=dtype, device=device)


def rand(*shape, dtype=torch.float32, device="cpu", seed=0, scale=1.0) -> torch.Tensor:
    return (torch.rand(shape, generator=_gen(seed), dtype=torch.float64) * scale).to(dtype=dtype, device=device)


def spd(B, d, dtype=torch.float32, device="cpu", seed=0) -> torch.Tensor:
    """Well-conditioned random SPD matrices ``A A^T / d + I / 2`` (eigenvalues roughly in [0.5, 5])."""
    A = torch.randn(B, d, d, generator=_gen(seed), dtype=torch.float64)
    S = A @ A.transpose(-1, -2) / d + 0.5 * torch.eye(d, dtype=torch.float64)
    return S.to(dtype=dtype, device=device)


def _shape(p: dict, *tail: int) -> tuple[int, ...]:
    return ((p["B"],) if p.get("B", 1) > 1 else ()) + tail


# --------------------------------------------------------------------------------------------- gram
def _gram_in(p, dtype, device, seed):
    x = randn(*_shape(p, p["N"], p["D"]), dtype=dtype, device=device, seed=seed)
    y = randn(*_shape(p, p.get("M", p["N"]), p["D"]), dtype=dtype, device=device, seed=seed + 1)
    return (x, y), {"gamma": 1.0 / p["D"]}


def _matvec_in(p, dtype, device, seed):
    (x, y), kw = _gram_in(p, dtype, device, seed)
    v = randn(*_shape(p, p.get("M", p["N"]), p.get("C", 1)), dtype=dtype, device=device, seed=seed + 2)
    return (x, y, v), kw


def _nm(p):
    return p.get("B", 1) * p["N"] * p.get("M", p["N"])


GRAM_SIZES = (Size("small", "small", {"N": 256, "D": 64}), Size("medium", "medium", {"N": 4096, "D": 64}),
              Size("large", "large", {"N": 8192, "D": 64}))
REDUCTION_SIZES = (Size("small", "small", {"N": 256, "D": 64}), Size("medium", "medium", {"N": 4096, "D": 64}),
                   Size("large", "large", {"N": 16384, "D": 64}))

# --------------------------------------------------------------------------------------------- sinkhorn
SINKHORN_ITERS = 100


def _sink_in(p, dtype, device, seed):
    # unit-scale data: points in [0, 1/sqrt(D)]^D, so the squared-distance cost lies in [0, 1]
    s = 1.0 / math.sqrt(p["D"])
    x = rand(*_shape(p, p["N"], p["D"]), dtype=dtype, device=device, seed=seed, scale=s)
    y = rand(*_shape(p, p.get("M", p["N"]), p["D"]), dtype=dtype, device=device, seed=seed + 1, scale=s)
    return (x, y), {"eps": 0.05, "max_iter": SINKHORN_ITERS, "tol": 0.0}   # tol 0: exactly max_iter iterations


def _sink_matrix_in(p, dtype, device, seed):
    (x, y), kw = _sink_in(p, dtype, device, seed)
    C = torch.cdist(x.double(), y.double()).square_().to(dtype)
    return (C,), kw


def _sink_work(p):
    return {"exps": 2 * _nm(p) * SINKHORN_ITERS}


SINKHORN_SIZES = (Size("small", "small", {"N": 256, "D": 2}), Size("medium", "medium", {"N": 4096, "D": 2}),
                  Size("medium-d64", "medium", {"N": 4096, "D": 64}), Size("large", "large", {"N": 16384, "D": 2}),
                  Size("batched", "medium", {"B": 256, "N": 256, "D": 16}))
SINKHORN_VARIANTS = (("numba-online", {"backend": "numba", "path": "online"}),
                     ("numba-matrix", {"backend": "numba", "path": "matrix"}))


def _sinkhorn_value(r):
    return r.cost


# --------------------------------------------------------------------------------------------- stress
def _stress_in(p, dtype, device, seed):
    x = randn(*_shape(p, p["N"], p["D1"]), dtype=dtype, device=device, seed=seed)
    y = randn(*_shape(p, p["N"], p["D2"]), dtype=dtype, device=device, seed=seed + 1)
    return (x, y), {}


def _stress_work(p):
    n = p.get("B", 1) * p["N"] * p["N"] // 2       # upper triangle
    return {"flops": 2 * n * (p["D1"] + p["D2"])}


STRESS_SIZES = (Size("small", "small", {"N": 256, "D1": 64, "D2": 16}),
                Size("medium", "medium", {"N": 4096, "D1": 512, "D2": 64}),
                Size("large", "large", {"N": 16384, "D1": 512, "D2": 64}))


# --------------------------------------------------------------------------------------------- spd
def _spd1_in(p, dtype, device, seed):
    return (spd(p["B"], p["d"], dtype, device, seed),), {}


def _spd_pow_in(p, dtype, device, seed):
    return (spd(p["B"], p["d"], dtype, device, seed), 0.3), {}


def _spd_exp_in(p, dtype, device, seed):
    S = spd(p["B"], p["d"], torch.float64, "cpu", seed)
    return ((S - 1.5 * torch.eye(p["d"], dtype=torch.float64)).to(dtype=dtype, device=device),), {}


def _spd2_in(p, dtype, device, seed):
    return (spd(p["B"], p["d"], dtype, device, seed), spd(p["B"], p["d"], dtype, device, seed + 1)), {}


def _frechet_in(p, dtype, device, seed):
    mu1 = randn(p["B"], p["d"], dtype=dtype, device=device, seed=seed + 2)
    mu2 = randn(p["B"], p["d"], dtype=dtype, device=device, seed=seed + 3)
    return (mu1, spd(p["B"], p["d"], dtype, device, seed), mu2, spd(p["B"], p["d"], dtype, device, seed + 1)), {}


def _cov_in(p, dtype, device, seed):
    return (randn(p["B"], p["k"], p["d"], dtype=dtype, device=device, seed=seed), "ledoit_wolf"), {}


def _eigh_value(r):
    w, V = r
    return w, V * V        # eigenvector signs differ between solvers; V * V does not


def _eig_work(p):
    # one symmetric eigendecomposition ~ 9 d^3 flops (tridiagonalisation + QR), plus V f(w) V^T ~ 2 d^3
    return {"flops": 11 * p["B"] * p["d"] ** 3}


SPD_SIZES = (Size("small", "small", {"B": 512, "d": 8}), Size("100000x3", "medium", {"B": 100000, "d": 3}),
             Size("10000x16", "medium", {"B": 10000, "d": 16}), Size("1000x64", "large", {"B": 1000, "d": 64}))
COV_SIZES = (Size("small", "small", {"B": 64, "k": 128, "d": 8}), Size("medium", "medium", {"B": 256, "k": 512, "d": 64}))


# --------------------------------------------------------------------------------------------- catalogue
def _spd_op(op, make=_spd1_in, n=1, value=lambda out: out):
    return Workload(op, "spd", SPD_SIZES, make, grad_args=tuple(range(n)), value=value, dense_torch=(),
                    reference_tiers=("small", "medium", "large"), work=_eig_work)


WORKLOADS: dict[str, Workload] = {w.op: w for w in [
    Workload("gram", "gram", GRAM_SIZES, _gram_in, grad_args=(0, 1), reference_tiers=("small", "medium"),
             dense_torch=(), work=lambda p: {"flops": 2 * _nm(p) * p["D"], "exps": _nm(p), "bytes": 4 * _nm(p)}),
    Workload("gram_matvec", "gram", REDUCTION_SIZES, _matvec_in, grad_args=(0, 1, 2),
             work=lambda p: {"flops": 2 * _nm(p) * (p["D"] + p.get("C", 1)), "exps": _nm(p)}),
    Workload("mmd2", "gram", REDUCTION_SIZES, _gram_in, grad_args=(0, 1),
             work=lambda p: {"flops": 3 * 2 * _nm(p) * p["D"], "exps": 3 * _nm(p)}),
    Workload("sinkhorn", "sinkhorn", SINKHORN_SIZES, _sink_in, grad_args=(0, 1), value=_sinkhorn_value,
             extra_backends=SINKHORN_VARIANTS, work=_sink_work, iters=lambda p: SINKHORN_ITERS),
    Workload("sinkhorn_matrix", "sinkhorn", SINKHORN_SIZES[:3] + SINKHORN_SIZES[4:], _sink_matrix_in, grad_args=(0,),
             value=_sinkhorn_value, extra_backends=SINKHORN_VARIANTS[1:], work=_sink_work,
             iters=lambda p: SINKHORN_ITERS),
    Workload("sinkhorn_divergence", "sinkhorn", SINKHORN_SIZES, _sink_in, grad_args=(0, 1),
             extra_backends=SINKHORN_VARIANTS, work=lambda p: {"exps": 3 * 2 * _nm(p) * SINKHORN_ITERS},
             iters=lambda p: SINKHORN_ITERS),
    Workload("stress", "stress", STRESS_SIZES, _stress_in, grad_args=(0, 1), work=_stress_work),
    _spd_op("spd_eigh", value=_eigh_value),
    _spd_op("spd_log"), _spd_op("spd_sqrt"), _spd_op("spd_invsqrt"), _spd_op("spd_exp", make=_spd_exp_in),
    _spd_op("spd_pow", make=_spd_pow_in),
    _spd_op("log_euclidean_distance", make=_spd2_in, n=2),
    _spd_op("affine_invariant_distance", make=_spd2_in, n=2),
    _spd_op("stein_divergence", make=_spd2_in, n=2),
    Workload("frechet_distance", "spd", SPD_SIZES, _frechet_in, grad_args=(0, 1, 2, 3), dense_torch=(),
             reference_tiers=TIERS, work=lambda p: {"flops": 3 * 11 * p["B"] * p["d"] ** 3}),
    Workload("covariance", "spd", COV_SIZES, _cov_in, grad_args=(0,), dense_torch=(), reference_tiers=TIERS,
             work=lambda p: {"flops": 2 * p["B"] * p["k"] * p["d"] ** 2}),
]}


def public_ops() -> list[str]:
    """Every public op of ``multialign.ops`` (functions defined in its family modules)."""
    from multialign import ops

    names = []
    for name in dir(ops):
        obj = getattr(ops, name)
        if name.startswith("_") or inspect.isclass(obj) or inspect.ismodule(obj) or not callable(obj):
            continue
        if getattr(obj, "__module__", "").startswith("multialign.ops."):
            names.append(name)
    return sorted(names)


def available(family: str | None = None) -> list[Workload]:
    """Workloads of the ops that exist in this checkout (families land one by one)."""
    have = set(public_ops())
    return [w for w in WORKLOADS.values() if w.op in have and (family is None or w.family == family)]


def uncovered_ops() -> list[str]:
    """Public ops without a workload: a benchmark gap (``tests/test_bench.py`` fails on it)."""
    return [op for op in public_ops() if op not in WORKLOADS]


# --------------------------------------------------------------------------------------------- running
class NotApplicable(NotImplementedError):
    """This (op, backend, size, dtype) is not measured; asv reads NotImplementedError in setup as a skip."""


def _to_list(v) -> list[torch.Tensor]:
    if isinstance(v, torch.Tensor):
        return [v]
    if isinstance(v, (tuple, list)):
        return [t for item in v for t in _to_list(item)]
    raise TypeError(f"cannot compare a {type(v).__name__}")


def max_error(got, want) -> tuple[float, float]:
    """(max |got - want|, max |got - want| / max |want|) over every tensor of the two outputs, in float64.

    NaN anywhere gives NaN: a wrong result must not read as accurate."""
    abs_err = rel_err = 0.0
    for g, w in zip(_to_list(got), _to_list(want), strict=True):
        g = g.detach().to("cpu", torch.float64)
        w = w.detach().to("cpu", torch.float64)
        if g.shape != w.shape:
            raise ValueError(f"output shape {tuple(g.shape)} differs from the reference's {tuple(w.shape)}")
        if g.numel() == 0:
            continue
        d = float((g - w).abs().max()) if not (torch.isnan(g).any() or torch.isnan(w).any()) else math.nan
        scale = float(w.abs().max())
        abs_err = max(abs_err, d) if not math.isnan(d) else math.nan
        r = d / scale if scale > 0 else d
        rel_err = max(rel_err, r) if not math.isnan(r) else math.nan
    return abs_err, rel_err


class Prepared:
    """One op on one backend, size and dtype, ready to time: ``forward()``, ``forward_backward()``, ``error()``."""

    def __init__(self, w: Workload, backend: str, label: str, dtype: str | torch.dtype = "float32", seed: int = 0,
                 backward: bool = False, device: str | None = None):
        self.w = w
        bks = w.backends()
        if backend not in bks:
            raise NotApplicable(f"{w.op}: backend {backend!r} not benchmarked here (available: {sorted(bks)})")
        self.kwargs_backend = bks[backend]
        self.backend = backend
        self.size = w.size(label)
        if backend.startswith("torch") and self.size.tier in w.dense_torch:
            raise NotApplicable(f"{w.op}: the torch reference at {label} needs N x M memory (not benchmarked)")
        if backward and not w.grad_args:
            raise NotApplicable(f"{w.op} has no backward")
        self.dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        self.device = device or device_for(self.kwargs_backend)
        self.seed = seed
        args, kw = w.make(self.size.params, self.dtype, self.device, seed)
        self.args = list(args)
        self.kwargs = {**kw, **self.kwargs_backend}
        if backward:
            for i in w.grad_args:
                self.args[i] = self.args[i].detach().clone().requires_grad_(True)
            out = self._value(self._call())
            self.upstream = [randn(*t.shape, dtype=t.dtype, device=t.device, seed=seed + 7 + k)
                             for k, t in enumerate(_to_list(out))]

    def _call(self, args=None, kwargs=None):
        return self.w.fn(*(self.args if args is None else args), **(self.kwargs if kwargs is None else kwargs))

    def _value(self, out):
        return self.w.value(out)

    def forward(self):
        return self._call()

    def forward_backward(self):
        for i in self.w.grad_args:
            self.args[i].grad = None
        outs = _to_list(self._value(self._call()))
        torch.autograd.backward(outs, self.upstream)
        return tuple(self.args[i].grad for i in self.w.grad_args)

    # ---------------------------------------------------------------- accuracy
    def _reference_inputs(self):
        """The very inputs of this run (rounded to its dtype), upcast to float64, for the torch reference."""
        args = [a.detach().to("cpu", torch.float64) if isinstance(a, torch.Tensor) else a for a in self.args]
        kw = {k: v for k, v in self.kwargs.items() if k not in ("backend", "path")}
        if self.w.has_backend_arg:
            kw["backend"] = "torch"
        return args, kw

    def error(self) -> tuple[float, float]:
        """Max error of the forward output against the float64 reference on the same inputs."""
        if self.size.tier not in self.w.reference_tiers:
            raise NotApplicable(f"{self.w.op}: no float64 reference at {self.size.label} (too large)")
        with torch.no_grad():
            got = self._value(self._call([a.detach() if isinstance(a, torch.Tensor) else a for a in self.args]))
            args, kw = self._reference_inputs()
            want = self._value(self._call(args, kw))
        return max_error(got, want)

    def grad_error(self) -> tuple[float, float]:
        """Max error of the input gradients (upstream weights fixed) against the float64 reference."""
        if self.size.tier not in self.w.reference_tiers:
            raise NotApplicable(f"{self.w.op}: no float64 reference at {self.size.label} (too large)")
        if not hasattr(self, "upstream"):
            raise NotApplicable("prepared without backward=True")
        got = self.forward_backward()
        args, kw = self._reference_inputs()
        for i in self.w.grad_args:
            args[i].requires_grad_(True)
        outs = _to_list(self._value(self._call(args, kw)))
        torch.autograd.backward(outs, [u.to("cpu", torch.float64) for u in self.upstream])
        return max_error(got, tuple(args[i].grad for i in self.w.grad_args))


@functools.lru_cache(maxsize=None)
def workload(op: str) -> Workload:
    try:
        return WORKLOADS[op]
    except KeyError:
        raise KeyError(f"no workload for op {op!r}; known: {sorted(WORKLOADS)}") from None


def prepare(op: str, backend: str, label: str, dtype: str = "float32", *, backward: bool = False,
            seed: int = 0, device: str | None = None) -> Prepared:
    return Prepared(workload(op), backend, label, dtype, seed=seed, backward=backward, device=device)


def op_params(family: str, backward: bool = False, tiers: tuple[str, ...] | None = None) -> list[tuple[str, str, str]]:
    """(op, backend, size label) triples of a family's workloads for parametrised benchmarks."""
    tiers = tiers or selected_tiers("small,medium")
    out = []
    for w in available(family):
        if backward and not w.grad_args:
            continue
        for s in w.sizes:
            if s.tier not in tiers:
                continue
            for b in w.backends():
                if b.startswith("torch") and s.tier in w.dense_torch:
                    continue
                out.append((w.op, b, s.label))
    return out
