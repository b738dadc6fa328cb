"""Test utilities shared by every kernel family's tests (and usable by downstream projects).

* :func:`assert_close` compares a backend's output with the reference under a per-dtype tolerance table
  and reports where and how badly they differ; NaN or inf anywhere in the actual output is a failure.
* :func:`poisoned_outputs` makes every output allocated by ``multialign.kernels`` start as NaN (floats)
  or the most negative integer, so an element a kernel forgets to write cannot pass.
* :func:`odd_sizes` and :func:`make_tensor` produce the awkward inputs kernels get wrong: 1, primes,
  non-powers of two, non-contiguous layouts and leading batch dimensions.
* :func:`check_gradients` runs ``torch.autograd.gradcheck`` in float64 with a non-trivial upstream
  gradient (a function that is "not the last layer").
* :func:`available_backends` lists the backends this machine can test (Triton only under its interpreter
  or on a GPU).
"""
from __future__ import annotations

import contextlib
import importlib.util
from typing import Callable, Iterator, Sequence

import torch

# (rtol, atol) against the reference; families with iterative algorithms pass their own.
TOLERANCES = {
    torch.float64: (1e-9, 1e-11),
    torch.float32: (2e-5, 2e-6),
    torch.float16: (1e-2, 1e-3),
    torch.bfloat16: (3e-2, 1e-2),
}

#: sizes every shape-generic kernel must handle: 1, small primes, non-powers of two, a tile edge +- 1
ODD_SIZES = (1, 2, 3, 5, 7, 13, 17, 31, 33, 37, 64, 65, 100)


def odd_sizes(limit: int | None = None) -> tuple[int, ...]:
    return tuple(s for s in ODD_SIZES if limit is None or s <= limit)


def tolerance(dtype: torch.dtype, rtol: float | None = None, atol: float | None = None) -> tuple[float, float]:
    r, a = TOLERANCES[dtype]
    return (r if rtol is None else rtol), (a if atol is None else atol)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, *, dtype: torch.dtype | None = None,
                 rtol: float | None = None, atol: float | None = None, name: str = "output") -> None:
    """``|actual - expected| <= atol + rtol * |expected|`` elementwise, with a readable failure.

    ``dtype`` picks the tolerance row (default: the dtype of ``actual``). The comparison is made in
    float64. Non-finite values in ``actual`` fail unless ``expected`` has the same value there.
    """
    if actual.shape != expected.shape:
        raise AssertionError(f"{name}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}")
    r, a = tolerance(dtype or actual.dtype, rtol, atol)
    act = actual.detach().to(torch.float64).cpu()
    exp = expected.detach().to(torch.float64).cpu()
    same_nonfinite = (~torch.isfinite(exp)) & ((act == exp) | (torch.isnan(act) & torch.isnan(exp)))
    bad_nonfinite = (~torch.isfinite(act)) & ~same_nonfinite
    diff = (act - exp).abs()
    bad = (diff > a + r * exp.abs()) & ~same_nonfinite
    bad |= bad_nonfinite
    if bool(bad.any()):
        idx = bad.nonzero()[:5].tolist()
        worst = torch.where(bad, diff.nan_to_num(float("inf")), torch.zeros_like(diff))
        w = int(worst.reshape(-1).argmax())
        raise AssertionError(
            f"{name}: {int(bad.sum())} of {bad.numel()} elements differ beyond rtol={r:g}, atol={a:g}; "
            f"first at {idx}; worst |diff|={float(diff.reshape(-1)[w]):.3e} (actual {float(act.reshape(-1)[w]):.6g}, "
            f"expected {float(exp.reshape(-1)[w]):.6g}); non-finite in actual: {int(bad_nonfinite.sum())}")


@contextlib.contextmanager
def poisoned_outputs(enabled: bool = True) -> Iterator[None]:
    """Inside the block, kernel outputs start as NaN / INT_MIN instead of uninitialised memory."""
    from multialign.kernels import _alloc

    old = _alloc.POISON
    _alloc.POISON = enabled
    try:
        yield
    finally:
        _alloc.POISON = old


def make_tensor(*shape: int, dtype: torch.dtype = torch.float64, device="cpu", seed: int | None = None,
                noncontiguous: bool = False, scale: float = 1.0, low: float | None = None,
                requires_grad: bool = False) -> torch.Tensor:
    """Random normal (or uniform in [low, scale) when ``low`` is given) tensor.

    ``noncontiguous=True`` returns a strided view (every other element of the last dimension of a
    larger buffer, then transposed twice) with the same values a contiguous call would give.
    """
    gen = torch.Generator(device="cpu")
    gen.manual_seed(torch.seed() if seed is None else seed)
    if low is None:
        base = torch.randn(*shape, generator=gen, dtype=torch.float64) * scale
    else:
        base = torch.rand(*shape, generator=gen, dtype=torch.float64) * (scale - low) + low
    base = base.to(dtype).to(device)
    if noncontiguous and base.numel() > 0:
        # every other element of a wider buffer whose gaps hold NaN: a kernel that ignores strides reads NaN
        big = torch.full((*shape[:-1], 2 * shape[-1]), float("nan"), dtype=dtype, device=device)
        big[..., ::2] = base
        base = big[..., ::2]
        if base.is_contiguous() and base.dim() >= 2:  # last dimension of size 1: strides are ignored there
            base = base.transpose(-1, -2).contiguous().transpose(-1, -2)
    out = base
    return out.requires_grad_(requires_grad)


def check_gradients(fn: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor], *, eps: float = 1e-6,
                    atol: float = 1e-6, rtol: float = 1e-4, fast_mode: bool = False, seed: int = 0) -> None:
    """``torch.autograd.gradcheck`` of ``sum(w * fn(*inputs))`` with a fixed random weight ``w``.

    The weight makes the upstream gradient non-trivial (not all ones), which catches backwards that only
    work at the last layer. Inputs must be float64 leaf tensors with ``requires_grad`` where wanted.
    """
    weights: dict[tuple, torch.Tensor] = {}

    def wrapped(*args):
        out = fn(*args)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        total = 0.0
        for k, o in enumerate(outs):
            key = (k, tuple(o.shape))
            if key not in weights:
                g = torch.Generator().manual_seed(seed + k)
                weights[key] = (torch.rand(o.shape, generator=g, dtype=torch.float64) + 0.5).to(o.device)
            total = total + (weights[key] * o).sum()
        return total

    torch.autograd.gradcheck(wrapped, tuple(inputs), eps=eps, atol=atol, rtol=rtol, fast_mode=fast_mode)


def available_backends() -> list[str]:
    """Backends this machine can run: torch always; numba if importable; triton on a GPU or under the
    interpreter (``TRITON_INTERPRET=1``)."""
    from multialign._backend import triton_interpreter_active

    out = ["torch"]
    if importlib.util.find_spec("numba") is not None:
        out.append("numba")
    if importlib.util.find_spec("triton") is not None and (torch.cuda.is_available() or triton_interpreter_active()):
        out.append("triton")
    return out


def device_for(backend: str) -> str:
    """The device a backend's tests run on: Triton on CUDA when present, else CPU (interpreter)."""
    if backend == "triton" and torch.cuda.is_available():
        return "cuda"
    return "cpu"
