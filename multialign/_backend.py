"""Backend choice: ``"auto" | "triton" | "numba" | "torch"``.

The rule (DESIGN.md, "The backend contract"):

* ``backend="auto"`` (the default of every op): CUDA tensors run on Triton, CPU tensors on Numba,
  tensors on any other device on the PyTorch reference.
* ``multialign.use_backend(name)`` (a context manager) and, below it, the environment variable
  ``MULTIALIGN_BACKEND`` replace what ``"auto"`` means; an explicit ``backend=`` argument wins over both.
* ``"triton"`` on CPU tensors runs only under Triton's interpreter (``TRITON_INTERPRET=1`` set before
  Triton kernels are first imported); anywhere else it is an error, never a silent fallback.
* A backend that cannot run (package missing, device it does not serve) raises :class:`BackendError`
  saying why and what to use instead.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import threading
from types import ModuleType
from typing import Iterator

import torch

BACKENDS = ("auto", "triton", "numba", "torch")
_CONCRETE = ("triton", "numba", "torch")
ENV_VAR = "MULTIALIGN_BACKEND"

_state = threading.local()


class BackendError(RuntimeError):
    """A requested backend cannot run the given inputs."""


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"{what} must be one of {BACKENDS}, got {name!r}")
    return name


def _context_default() -> str | None:
    stack = getattr(_state, "stack", None)
    return stack[-1] if stack else None


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Make ``backend="auto"`` mean ``name`` inside the ``with`` block (thread-local, nestable).

    ``use_backend("auto")`` restores the device rule inside an outer ``use_backend``.
    """
    _check_name(name, "use_backend(name)")
    stack = getattr(_state, "stack", None)
    if stack is None:
        stack = _state.stack = []
    stack.append(name)
    try:
        yield
    finally:
        stack.pop()


def _env_default() -> str | None:
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if not value:
        return None
    return _check_name(value, f"environment variable {ENV_VAR}")


def triton_interpreter_active() -> bool:
    """True when Triton kernels run under the CPU interpreter.

    Triton decides this when a kernel is *decorated*, i.e. when ``multialign.kernels.triton`` is
    first imported; before that import the environment variable is what counts.
    """
    import sys

    mod = sys.modules.get("multialign.kernels.triton")
    if mod is not None:
        return bool(mod.INTERPRET)
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _device_of(tensors) -> torch.device | None:
    for t in tensors:
        if isinstance(t, torch.Tensor):
            return t.device
    return None


def resolve_backend(backend: str, *tensors: torch.Tensor, op: str = "op") -> str:
    """Turn ``backend`` (possibly ``"auto"``) into a concrete backend that can run ``tensors``.

    Raises :class:`BackendError` when the chosen backend cannot serve the tensors' device. Under
    ``torch.compile`` the decision is taken once, at trace time, and baked into the graph.
    """
    device = _device_of(tensors)
    return _resolve(backend, "cpu" if device is None else str(device), op)


@torch.compiler.assume_constant_result
def _resolve(backend: str, device: str, op: str) -> str:
    _check_name(backend, f"{op}: backend")
    dev_type = torch.device(device).type
    if backend == "auto":
        backend = _context_default() or _env_default() or "auto"
    if backend == "auto":
        if dev_type == "cuda":
            backend = "triton"
        elif dev_type == "cpu":
            backend = "numba"
        else:
            backend = "torch"
    if backend == "triton":
        if dev_type == "cuda":
            _require_module("triton", op)
        elif dev_type == "cpu":
            _require_module("triton", op)
            if not triton_interpreter_active():
                raise BackendError(
                    f"{op}: backend='triton' got CPU tensors; Triton runs on CPU tensors only under its "
                    "interpreter (set TRITON_INTERPRET=1 before multialign's Triton kernels are first used). "
                    "Use backend='numba' for fast CPU kernels or move the tensors to a CUDA device."
                )
        else:
            raise BackendError(f"{op}: backend='triton' cannot run tensors on device {device}; expected cuda (or cpu under TRITON_INTERPRET=1)")
    elif backend == "numba":
        _require_module("numba", op)
        if dev_type != "cpu":
            raise BackendError(
                f"{op}: backend='numba' runs on CPU tensors only, got tensors on {device}; "
                "use backend='triton' for CUDA tensors or backend='torch' for any device"
            )
    return backend


def _require_module(name: str, op: str) -> None:
    try:
        importlib.import_module(name)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise BackendError(f"{op}: backend {name!r} needs the package {name!r}, which cannot be imported ({exc})") from exc


_KERNEL_PACKAGES = {"torch": "reference", "numba": "numba", "triton": "triton"}


def kernel_module(backend: str, family: str) -> ModuleType:
    """The module ``multialign.kernels.<backend folder>.<family>`` for a concrete backend (imported lazily)."""
    if backend not in _CONCRETE:
        raise ValueError(f"kernel_module: backend must be one of {_CONCRETE}, got {backend!r}")
    return importlib.import_module(f"multialign.kernels.{_KERNEL_PACKAGES[backend]}.{family}")
