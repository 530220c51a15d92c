"""The wheel ships the packs as package data and registers the frontends as entry points."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(out), str(ROOT)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(result.stderr)
    return zipfile.ZipFile(next(out.glob("npower-*.whl")))


def test_wheel_contains_packs_and_frontends(wheel):
    names = set(wheel.namelist())
    shipped = {p.name for p in (ROOT / "gpu_profiles").glob("*.yaml")}
    assert shipped, "no pack in gpu_profiles/"
    assert {f"npower/gpu_profiles/{name}" for name in shipped} <= names
    assert "npower_frontends/caffe.py" in names and "npower/profile/runner.py" in names
    entry_points = wheel.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "[npower.frontends]" in entry_points and "caffe = npower_frontends.caffe:FRONTEND" in entry_points
    assert "npower = npower.cli:main" in entry_points


def test_installed_packs_are_found_from_any_folder(tmp_path):
    result = subprocess.run([sys.executable, "-m", "npower.cli", "packs"], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 0
    for pack in (ROOT / "gpu_profiles").glob("*.yaml"):
        assert f"{pack.stem}:" in result.stdout
