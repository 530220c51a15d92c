"""The wheel ships the packs as package data and registers the frontends as entry points."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from npower import analyze, zoo

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
    packages = {str(p.parent.relative_to(ROOT)) for p in (ROOT / "npower").rglob("__init__.py")}
    assert {f"{package}/__init__.py" for package in packages} <= names  # every subpackage ships
    entry_points = wheel.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "[npower.frontends]" in entry_points and "caffe = npower_frontends.caffe:FRONTEND" in entry_points
    assert "npower = npower.cli:main" in entry_points


def test_installed_packs_are_found_from_any_folder(tmp_path):
    result = subprocess.run([sys.executable, "-m", "npower.cli", "packs"], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 0
    assert "INVALID" not in result.stdout
    for pack in (ROOT / "gpu_profiles").glob("*.yaml"):
        assert f"{pack.stem}:" in result.stdout


def test_measured_packs_keep_their_raw_samples_beside_them():
    """A pack fitted from the project's own profiles names its sample files (one, or several pooled runs),
    and they lie beside it in the repository's gpu_profiles/, so anyone with a checkout can refit it."""
    from npower.pack import load_pack
    measured = 0
    for path in (ROOT / "gpu_profiles").glob("*.yaml"):
        provenance = load_pack(path).provenance
        if provenance.get("source_kind", "measured") == "measured":  # packs from before the field: measured
            measured += 1
            files = provenance.get("samples_files") or [provenance["samples_file"]]
            assert all((path.parent / name).is_file() for name in files), (path.name, files)
    assert measured >= 2  # the CPU packs


def _reference_network(pack_name: str):
    """A network of the kinds the pack was fitted on: ResNet-18 for onnxruntime CPU packs (fitted on the full
    sweep), BERT-Large at batch 8 (examples/) for the PyTorch-eager GPU packs (fitted on transformer operators)."""
    from npower.pack import find_pack
    pack = find_pack(pack_name)
    if pack.runtime.name == "torch":
        return pack, str(ROOT / "examples" / "bert_large.onnx"), 8
    return pack, zoo.build("resnet18", weights=False), None


@pytest.mark.parametrize("pack", sorted(p.stem for p in (ROOT / "gpu_profiles").glob("*.yaml")))
def test_shipped_pack_predicts_a_network_with_its_fitted_models(pack):
    """Each shipped pack loads by name and costs its reference network from fitted models: every layer of a kind
    the pack models is fitted, the others are roofline fallbacks of kinds its provenance lists as not fitted
    (or never measured), and a pack with nothing missing costs >= 95 % of the network from fitted models."""
    loaded, network, batch = _reference_network(pack)
    assert loaded.name == pack  # the name reports print is the name users type (`npower fit -o` names it)
    report = analyze(network, gpu=loaded, batch=batch)
    assert report.runtime_ms > 0
    assert not [layer.name for layer in report.layers if layer.source in ("unknown", "unresolved")]
    for layer in report.layers:
        if layer.kind in loaded.models and layer.source in ("fitted", "fallback"):
            assert layer.source == "fitted", (layer.name, layer.kind)
    missing = {layer.kind for layer in report.layers if layer.source == "fallback"}
    if not missing & set(loaded.provenance.get("not_fitted") or {}):
        assert report.fitted_share > 0.95, (missing, report.fitted_share)


def test_build_has_no_setuptools_warnings(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v",
                             "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "BuildBackendWarning" not in result.stdout + result.stderr  # e.g. the licence table (SPDX string now)
    assert "DeprecationWarning" not in result.stdout + result.stderr
