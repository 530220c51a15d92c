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
from npower.profile.cache_state import graph_input_kind, steady_kind

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
    # On CUDA the Relu and residual Add+Relu are free epilogues of cuDNN kernels: the stem's BatchNorm and Relu
    # (2); per basic block (8), conv1's BatchNorm and Relu and conv2's BatchNorm, Add and Relu (5); the BatchNorm
    # of each of the 3 downsampling shortcut convs (3).
    assert sum(l.source == "fused" for l in on_gpu.layers) == 2 + 8 * 5 + 3


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
    layer_rows = [row for row in rows if row["source"] not in ("total", "per inference")]
    assert len(layer_rows) == len(data["layers"]) and rows[0]["source"]
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


@pytest.mark.parametrize("argv", [["--debug", "analyze", "nope.onnx", "--gpu", "x"],
                                  ["analyze", "nope.onnx", "--gpu", "x", "--debug"]])
def test_debug_shows_traceback(argv):
    result = subprocess.run([sys.executable, "-m", "npower.cli", *argv], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" in result.stderr


def test_packs_lists_pack(pack_dir, capsys):
    assert main(["packs", "--profiles", str(pack_dir)]) == 0
    assert "testpack: Test Device" in capsys.readouterr().out


def test_packs_and_analyze_name_the_cpu_generation(tmp_path, capsys):
    pack = linear_pack()
    pack.device["cpu"] = "family 25 model 17"
    pack.save(tmp_path / "testpack.yaml")
    assert main(["packs", "--profiles", str(tmp_path)]) == 0
    assert "testpack: Test Device, family 25 model 17" in capsys.readouterr().out
    assert main(["analyze", "zoo:squeezenet", "--gpu", str(tmp_path / "testpack.yaml")]) == 0
    assert "(Test Device, family 25 model 17," in capsys.readouterr().out


def test_packs_counts_graph_input_and_steady_variants_apart_from_op_kinds(tmp_path, capsys):
    pack = linear_pack()
    kinds = len(pack.models)
    pack.models[graph_input_kind("conv")] = pack.models["conv"]
    pack.save(tmp_path / "testpack.yaml")
    assert main(["packs", "--profiles", str(tmp_path)]) == 0
    assert f"{kinds} op kinds (+1 graph-input variant)," in capsys.readouterr().out
    pack.models[steady_kind("relu")] = pack.models[steady_kind("conv")] = pack.models["relu"]
    pack.save(tmp_path / "testpack.yaml")
    assert main(["packs", "--profiles", str(tmp_path)]) == 0
    assert f"{kinds} op kinds (+1 graph-input variant and 2 steady variants)," in capsys.readouterr().out


def test_version(capsys):
    import npower
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"npower {npower.__version__}"
    from importlib.metadata import version
    assert version("npower") == npower.__version__  # the package metadata reads the same string


def test_unknown_report_suffix_is_an_error_before_any_work(tmp_path, pack_dir, capsys):
    out = tmp_path / "report.xlsx"
    assert main(["analyze", "zoo:alexnet", "--gpu", "testpack", "--profiles", str(pack_dir), "-o", str(out)]) == 2
    assert "cannot tell the report format" in capsys.readouterr().err and not out.exists()
    assert main(["analyze", "zoo:alexnet", "--gpu", "testpack", "--profiles", str(pack_dir), "-o", str(out),
                 "--format", "json"]) == 0
    assert json.loads(out.read_text())["model"] == "alexnet"


def test_zoo_never_overwrites_silently_and_says_where(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["zoo", "squeezenet", "--no-weights"]) == 0
    written = tmp_path / "squeezenet.onnx"
    assert capsys.readouterr().out.strip() == f"wrote {written}"
    written.write_bytes(b"mine")
    assert main(["zoo", "squeezenet", "--no-weights"]) == 2
    assert "--force" in capsys.readouterr().err and written.read_bytes() == b"mine"
    assert main(["zoo", "squeezenet", "--no-weights", "--force"]) == 0 and onnx.load(str(written)).graph.node


def test_help_names_defaults(capsys):
    for argv, words in ((["analyze", "--help"], ["--format", "default: from the -o suffix", "zoo:NAME"]),
                        (["zoo", "--help"], ["default: NETWORK.onnx", "--force"]),
                        (["validate", "--help"], ["default: 30", "--batch"])):
        with pytest.raises(SystemExit):
            main(argv)
        text = " ".join(capsys.readouterr().out.split())
        assert all(word in text for word in words), (argv, text)


def test_per_inference_figures_in_every_format(tmp_path, pack_dir, capsys):
    base = ["analyze", "zoo:alexnet", "--gpu", "testpack", "--profiles", str(pack_dir), "--batch", "4"]
    report = analyze(zoo.build("alexnet", batch=4, weights=False), gpu=linear_pack())
    per_image = report.runtime_ms / 4
    assert main(base) == 0
    assert f"per inference (batch 4): {per_image:.3f} ms" in capsys.readouterr().out
    assert main([*base, "--format", "json"]) == 0
    totals = json.loads(capsys.readouterr().out)["totals"]
    assert totals["ms_per_inference"] == pytest.approx(per_image)
    assert totals["inferences_per_s"] == pytest.approx(4e3 / report.runtime_ms)
    assert main([*base, "--format", "csv"]) == 0
    rows = {row["source"]: row for row in csv.DictReader(io.StringIO(capsys.readouterr().out))}
    assert float(rows["per inference"]["ms"]) == pytest.approx(per_image)
    assert "inferences/s" in rows["per inference"]["note"]
    assert main([*base, "--format", "html"]) == 0
    assert f"{per_image:.3f} ms" in capsys.readouterr().out
    assert main(base[:-2] + ["--batch", "1"]) == 0  # batch 1: the totals are per inference already
    assert "per inference" not in capsys.readouterr().out


def test_csv_has_totals_and_whole_macs(tmp_path, pack_dir, capsys):
    assert main(["analyze", "zoo:alexnet", "--gpu", "testpack", "--profiles", str(pack_dir), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    layers, total = rows[:-1], rows[-1]
    assert total["source"] == "total" and all(row["source"] != "total" for row in layers)
    assert all(row["macs"].isdigit() and row["flops"].isdigit() for row in rows)
    assert int(total["macs"]) == sum(int(row["macs"]) for row in layers) > 0
    assert float(total["ms"]) == pytest.approx(sum(float(row["ms"]) for row in layers))


def test_merged_layer_that_costs_time_says_so_in_the_table(capsys):
    report = analyze(zoo.build("resnet18", weights=False), gpu=linear_pack())
    inside = [layer for layer in report.layers if layer.note.startswith("runs inside")]
    assert inside and all(layer.source == "fitted" for layer in inside)
    table = report.to_table()
    for layer in inside:
        row = next(line for line in table.splitlines() if line.startswith(layer.name + " "))
        assert f"fitted ({layer.note})" in row


def test_readme_pack_table_is_what_packs_prints(monkeypatch, capsys):
    from pathlib import Path
    monkeypatch.delenv("NPOWER_PROFILES", raising=False)
    assert main(["packs", "--markdown"]) == 0
    table = capsys.readouterr().out
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert table in readme, f"regenerate the README's pack table with `npower packs --markdown`:\n{table}"
