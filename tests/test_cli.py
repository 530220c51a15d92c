"""End-to-end `npower analyze` with a pack the test writes: totals follow T=sum T_i, E=sum P_i T_i."""
from __future__ import annotations

import dataclasses

import csv
import io
import json
import subprocess
import sys

import onnx
import pytest

from npower import analyze, zoo
from npower.cli import main

from conftest import linear_pack


def test_totals_follow_the_definitions():
    report = analyze(zoo.build("alexnet", weights=False), gpu=linear_pack(), fusion=False)
    convs = [layer for layer in report.layers if layer.kind == "conv"]
    assert all(layer.ms == pytest.approx(layer.macs * 1e-6) for layer in convs)
    assert report.runtime_ms == pytest.approx(sum(layer.ms for layer in report.layers))
    energy = sum(100.0 * l.ms for l in convs) + sum(50.0 * l.ms for l in report.layers if l.kind == "relu")
    costed_without_power = [l for l in report.layers if l.kind not in ("conv", "relu") and l.ms > 0]
    assert costed_without_power  # gemm (fitted, no power model) and lrn/maxpool/softmax (roofline fallback)
    mean_w = energy / sum(l.ms for l in report.layers if l.kind in ("conv", "relu"))
    energy += sum(mean_w * l.ms for l in costed_without_power)
    assert report.energy_mj == pytest.approx(energy)
    assert report.power_w == pytest.approx(report.energy_mj / report.runtime_ms)
    assert {l.source for l in report.layers} >= {"fitted", "fallback", "free"}
    assert 0 < report.fitted_share < 1


def test_fusion_removes_folded_layers_from_the_cost():
    fused = analyze(zoo.build("resnet18", weights=False), gpu=linear_pack())
    plain = analyze(zoo.build("resnet18", weights=False), gpu=linear_pack(), fusion=False)
    assert sum(l.source == "fused" for l in fused.layers) == 20  # every BatchNorm folds into its Conv
    inside = [l for l in fused.layers if "runs inside" in l.note]
    assert len(inside) == 9 and all(l.kind == "relu" and l.ms > 0 for l in inside)  # CPU FusedConv's pass
    assert fused.runtime_ms < plain.runtime_ms
    cuda = linear_pack()
    cuda.runtime = dataclasses.replace(cuda.runtime, device="cuda", provider="CUDAExecutionProvider")
    on_gpu = analyze(zoo.build("resnet18", weights=False), gpu=cuda)
    assert sum(l.source == "fused" for l in on_gpu.layers) == 29  # activation is a free epilogue on CUDA


def write_model(tmp_path, name="alexnet", **kw):
    path = tmp_path / f"{name}.onnx"
    onnx.save(zoo.build(name, weights=False, **kw), str(path))
    return str(path)


def test_cli_formats(tmp_path, pack_dir, capsys):
    model = write_model(tmp_path)
    assert main(["analyze", model, "--gpu", "testpack", "--profiles", str(pack_dir)]) == 0
    table = capsys.readouterr().out
    assert "top 5 bottlenecks" in table and "by op kind" in table and "total:" in table
    assert main(["analyze", model, "--gpu", str(pack_dir / "testpack.yaml"), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["schema_version"] == 1 and data["totals"]["runtime_ms"] > 0
    assert data["totals"]["runtime_ms"] == pytest.approx(sum(l["ms"] for l in data["layers"]))
    out_csv = tmp_path / "r.csv"
    assert main(["analyze", model, "--gpu", "testpack", "--profiles", str(pack_dir), "-o", str(out_csv)]) == 0
    rows = list(csv.DictReader(io.StringIO(out_csv.read_text())))
    assert len(rows) == len(data["layers"]) and rows[0]["source"]
    out_html = tmp_path / "r.html"
    assert main(["analyze", model, "--gpu", "testpack", "--profiles", str(pack_dir), "-o", str(out_html)]) == 0
    assert out_html.read_text().startswith("<!doctype html>")


def test_symbolic_batch_via_cli(tmp_path, pack_dir, capsys):
    model = write_model(tmp_path, "resnet18", symbolic_batch=True)
    assert main(["analyze", model, "--gpu", "testpack", "--profiles", str(pack_dir)]) == 2
    assert "symbolic" in capsys.readouterr().err
    assert main(["analyze", model, "--gpu", "testpack", "--profiles", str(pack_dir), "--batch", "4",
                 "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["batch"] == 4


@pytest.mark.parametrize("args,message", [
    (["analyze", "missing.onnx", "--gpu", "testpack"], "no such file"),
    (["analyze", "{model}", "--gpu", "nosuch"], "unknown pack 'nosuch'; available packs:"),
    (["analyze", "{bad}", "--gpu", "testpack"], "not a valid ONNX model"),
    (["analyze", "{model}", "--gpu", "{badpack}"], "invalid YAML"),
])
def test_cli_errors_are_one_line_exit_2(tmp_path, pack_dir, args, message):
    model = write_model(tmp_path)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    badpack = tmp_path / "bad.yaml"
    badpack.write_text("a: [\n")
    argv = [a.format(model=model, bad=bad, badpack=badpack) for a in args] + ["--profiles", str(pack_dir)]
    result = subprocess.run([sys.executable, "-m", "npower.cli", *argv], capture_output=True, text=True)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_debug_shows_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "npower.cli", "--debug", "analyze", "nope.onnx", "--gpu", "x"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" in result.stderr


def test_packs_lists_pack(pack_dir, capsys):
    assert main(["packs", "--profiles", str(pack_dir)]) == 0
    assert "testpack: Test Device" in capsys.readouterr().out
