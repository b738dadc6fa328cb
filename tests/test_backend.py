"""The backend contract: how "auto" resolves, overrides, and the errors for impossible requests."""
import pytest
import torch

import multialign as ma
from multialign import _backend
from multialign._backend import BackendError, resolve_backend


def test_auto_picks_by_device(monkeypatch):
    monkeypatch.delenv(_backend.ENV_VAR, raising=False)
    assert resolve_backend("auto", torch.zeros(2)) == "numba"
    assert resolve_backend("auto", torch.zeros(2, device="meta")) == "torch"


def test_explicit_backend_wins(monkeypatch):
    monkeypatch.setenv(_backend.ENV_VAR, "torch")
    with ma.use_backend("torch"):
        assert resolve_backend("numba", torch.zeros(2)) == "numba"


def test_env_var_overrides_auto(monkeypatch):
    monkeypatch.setenv(_backend.ENV_VAR, "torch")
    assert resolve_backend("auto", torch.zeros(2)) == "torch"
    monkeypatch.setenv(_backend.ENV_VAR, "bogus")
    with pytest.raises(ValueError, match="MULTIALIGN_BACKEND"):
        resolve_backend("auto", torch.zeros(2))


def test_use_backend_context_nests_and_beats_env(monkeypatch):
    monkeypatch.setenv(_backend.ENV_VAR, "numba")
    x = torch.zeros(2)
    with ma.use_backend("torch"):
        assert resolve_backend("auto", x) == "torch"
        with ma.use_backend("auto"):
            assert resolve_backend("auto", x) == "numba"  # "auto" inside falls back to the env var
        assert resolve_backend("auto", x) == "torch"
    assert resolve_backend("auto", x) == "numba"


def test_unknown_backend_name():
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("cuda", torch.zeros(2))
    with pytest.raises(ValueError, match="use_backend"):
        with ma.use_backend("fast"):
            pass


def test_numba_refuses_non_cpu():
    with pytest.raises(BackendError, match="numba.*CPU"):
        resolve_backend("numba", torch.zeros(2, device="meta"))


def test_triton_on_cpu_needs_interpreter(monkeypatch):
    monkeypatch.setattr(_backend, "triton_interpreter_active", lambda: False)
    with pytest.raises(BackendError, match="TRITON_INTERPRET=1"):
        resolve_backend("triton", torch.zeros(2))


def test_triton_interpreter_is_on_in_ci():
    import os

    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("only meaningful when the suite runs under TRITON_INTERPRET=1")
    assert resolve_backend("triton", torch.zeros(2)) == "triton"
