"""The wheel: kernels/ is installed as multialign.kernels (never as a top-level `kernels`), and an
installed copy imports and runs from outside the source tree."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True, text=True)
    (whl,) = out.glob("multialign-*.whl")
    return whl


def test_wheel_layout(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "multialign/kernels/__init__.py" in names
    for fam in ("reference", "numba", "triton"):
        assert f"multialign/kernels/{fam}/gram.py" in names
    assert "multialign/ops/gram.py" in names
    assert not any(n.startswith("kernels/") for n in names), "a top-level `kernels` package must never be installed"
    meta = next(n for n in names if n.endswith("METADATA"))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    assert "Requires-Dist: torch>=2.4" in text
    assert 'triton>=3.0; sys_platform == "linux"' in text


def test_installed_wheel_imports_and_runs(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, text=True)
    code = ("import multialign, multialign.kernels.numba.gram as g, torch; from multialign import ops; "
            "assert multialign.__file__.startswith(%r), multialign.__file__; "
            "x = torch.randn(5, 3, dtype=torch.float64); "
            "print(float(ops.mmd2(x, x + 1, backend='torch')))" % str(target))
    env = dict(os.environ, PYTHONPATH=str(target))
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert float(res.stdout.strip().splitlines()[-1]) > 0
