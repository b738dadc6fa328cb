"""Argument checks shared by every op: errors name the argument, what was received and what was expected.

Cheap checks (types, ranks, shapes, dtypes, devices, parameter ranges) always run. Checks that read
tensor *values* (finite entries, weights summing to one, symmetry) cost a pass over the data and a
host synchronisation, so they run only while validation is on: ``multialign.set_validation(True)``,
the ``multialign.validation()`` context manager, or ``MULTIALIGN_VALIDATE=1`` in the environment.
They are skipped while ``torch.compile`` traces.
"""
from __future__ import annotations

import contextlib
import os
import threading
from typing import Iterator, Sequence

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

_state = threading.local()
_global = {"on": os.environ.get("MULTIALIGN_VALIDATE", "0").strip().lower() in ("1", "true", "yes", "on")}


def set_validation(enabled: bool) -> None:
    """Turn value checks (finite inputs, weights summing to one, symmetry, ...) on or off process-wide."""
    _global["on"] = bool(enabled)


@contextlib.contextmanager
def validation(enabled: bool = True) -> Iterator[None]:
    """Turn value checks on (or off) inside the ``with`` block, for this thread."""
    stack = getattr(_state, "stack", None)
    if stack is None:
        stack = _state.stack = []
    stack.append(bool(enabled))
    try:
        yield
    finally:
        stack.pop()


def validation_enabled() -> bool:
    if torch.compiler.is_compiling():
        return False
    stack = getattr(_state, "stack", None)
    if stack:
        return stack[-1]
    return _global["on"]


def _shape(t: torch.Tensor) -> str:
    return str(tuple(t.shape))


def check_tensor(name: str, t, *, op: str, min_dim: int = 1, max_dim: int | None = None,
                 dtypes: Sequence[torch.dtype] = FLOAT_DTYPES, what: str = "") -> torch.Tensor:
    """Check that ``t`` is a tensor of an allowed dtype with ``min_dim <= t.dim() <= max_dim``."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor{what and ' ' + what}, got {type(t).__name__}")
    if t.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{op}: {name} must have a floating dtype ({names}), got {str(t.dtype).replace('torch.', '')}")
    if t.dim() < min_dim or (max_dim is not None and t.dim() > max_dim):
        want = f"at least {min_dim}" if max_dim is None else (f"exactly {min_dim}" if min_dim == max_dim else f"{min_dim} to {max_dim}")
        raise ValueError(f"{op}: {name} must have {want} dimensions{what and ' ' + what}, got shape {_shape(t)}")
    return t


def check_same(op: str, **tensors: torch.Tensor | None) -> None:
    """All given tensors share one device and one dtype."""
    items = [(k, v) for k, v in tensors.items() if v is not None]
    if not items:
        return
    n0, t0 = items[0]
    for n, t in items[1:]:
        if t.device != t0.device:
            raise ValueError(f"{op}: {n} is on {t.device} but {n0} is on {t0.device}; expected all inputs on one device")
        if t.dtype != t0.dtype:
            raise TypeError(f"{op}: {n} has dtype {str(t.dtype).replace('torch.', '')} but {n0} has "
                            f"{str(t0.dtype).replace('torch.', '')}; expected one dtype for all inputs")


def check_finite(op: str, **tensors: torch.Tensor | None) -> None:
    """With validation on: every entry finite."""
    if not validation_enabled():
        return
    for n, t in tensors.items():
        if t is not None and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise ValueError(f"{op}: {n} has {bad} non-finite entries (NaN or inf); expected finite values")


def broadcast_batch(op: str, names: Sequence[str], shapes: Sequence[torch.Size]) -> torch.Size:
    """Broadcast the leading batch shapes of several inputs, with an error naming them."""
    try:
        return torch.broadcast_shapes(*shapes)
    except RuntimeError:
        desc = ", ".join(f"{n} batch shape {tuple(s)}" for n, s in zip(names, shapes))
        raise ValueError(f"{op}: leading batch dimensions do not broadcast ({desc})") from None
