"""`npower compare`: numbers equal `npower analyze`, EPR and ranking, batch re-binding, errors, HTML fallback."""
from __future__ import annotations

import csv
import io
import json

import onnx
import pytest
from onnx import TensorProto, helper

from npower import NpowerError, compare, zoo
from npower.cli import main
from npower.comparison import count_params
from npower.html_report import pareto_front

from conftest import linear_pack, need_shared

CPU_PACK = "amd-epyc-cpu-ort1.32-fp32-extended"


def write_zoo(tmp_path, name):
    path = tmp_path / f"{name}.onnx"
    onnx.save(zoo.build(name, weights=False, symbolic_batch=True), str(path))
    return str(path)


def run_json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("pack", ["testpack", CPU_PACK])
def test_json_and_csv_equal_analyze(tmp_path, pack_dir, capsys, pack):
    models = [write_zoo(tmp_path, "alexnet"), write_zoo(tmp_path, "resnet18")]
    common = ["--gpu", pack, "--profiles", str(pack_dir)]
    rows = run_json(capsys, ["compare", *models, *common, "--batch", "1", "4", "--format", "json"])["rows"]
    assert main(["compare", *models, *common, "--batch", "1", "4", "--format", "csv"]) == 0
    csv_rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == len(csv_rows) == 4
    for row, csv_row in zip(rows, csv_rows):
        model = next(m for m in models if m.endswith(row["model"]))
        analyzed = run_json(capsys, ["analyze", model, *common, "--batch", str(row["batch"]), "--format", "json"])
        totals, batch = analyzed["totals"], row["batch"]
        assert row["latency_ms"] == totals["runtime_ms"]
        assert row["power_w"] == totals["power_w"]
        assert row["fitted_share"] == totals["fitted_share"]
        assert row["throughput_inf_per_s"] == pytest.approx(batch / totals["runtime_ms"] * 1e3)
        assert row["macs_per_inference"] == pytest.approx(sum(layer["macs"] for layer in analyzed["layers"]) / batch)
        if pack == CPU_PACK:  # no power model: null in JSON, empty in CSV, never 0
            assert row["power_w"] is None and row["energy_mj_per_inference"] is None
            assert csv_row["power_w"] == "" and csv_row["energy_mj_per_inference"] == ""
        else:
            assert row["energy_mj_per_inference"] == pytest.approx(totals["energy_mj"] / batch)
            assert float(csv_row["energy_mj_per_inference"]) == row["energy_mj_per_inference"]
        assert float(csv_row["latency_ms"]) == row["latency_ms"] and int(csv_row["batch"]) == batch
        assert csv_row["model"] == row["model"] and csv_row["pack"] == row["pack"]


def test_table_shows_missing_power_as_na(tmp_path, capsys):
    assert main(["compare", write_zoo(tmp_path, "squeezenet"), "--gpu", CPU_PACK, "--batch", "2"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("1 "))
    assert line.split()[6:8] == ["n/a", "n/a"]  # power W, mJ/inf


def test_epr_ranks_models_within_each_batch():
    alexnet, resnet18 = (zoo.build(name, weights=False, symbolic_batch=True) for name in ("alexnet", "resnet18"))
    result = compare([alexnet, resnet18], gpu=linear_pack(), batch=[1, 2], accuracy={"alexnet": 57.0, "resnet18": 69.8},
                     alpha=2.0, sort="epr")
    assert [row.batch for row in result.rows] == [1, 1, 2, 2]
    for batch in (1, 2):
        eprs = [row.epr_mj for row in result.rows if row.batch == batch]
        assert eprs == sorted(eprs) and eprs[0] < eprs[1]
    for row in result.rows:
        error = {"alexnet": 0.43, "resnet18": 0.302}[row.model]
        assert row.error_rate == pytest.approx(error)
        assert row.epr_mj == pytest.approx(error ** 2 * row.energy_mj_per_inference)
    assert [rank for rank, _ in result.ranked()] == [1, 2, 1, 2]
    by_latency = compare([alexnet, resnet18], gpu=linear_pack(), batch=1, sort="latency").rows
    assert by_latency[0].latency_ms <= by_latency[1].latency_ms
    assert by_latency[0].epr_mj is None


def test_params_count_float_weights_only():
    model = zoo.build("resnet18", weights=False)
    expected = sum(_size(t.dims) for t in model.graph.initializer if t.data_type == TensorProto.FLOAT)
    assert count_params(model) == expected
    assert 11.0e6 < expected < 12.0e6  # ResNet-18: 11.7 M parameters


def _size(dims):
    size = 1
    for dim in dims:
        size *= dim
    return size


def fixed_batch_model(path):
    """x[1,4] -> Reshape to (1, -1) -> Relu: the batch size is written into the Reshape."""
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [1, -1])
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["r"], name="reshape"),
                               helper.make_node("Relu", ["r"], ["y"], name="relu")], "fixed",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [shape])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return str(path)


def test_onnx_graph_that_fixes_its_batch_is_flagged(tmp_path):
    rows = compare([fixed_batch_model(tmp_path / "fixed.onnx")], gpu=linear_pack(), batch=[1, 8]).rows
    assert rows[0].warnings == []
    assert any("fixes its batch size" in warning for warning in rows[1].warnings)


def test_same_architecture_from_caffe_and_pytorch_compares_equal():
    pytest.importorskip("torch", reason="the PyTorch side needs npower[torch]")
    from test_frontends import TorchLeNet
    prototxt = str(need_shared("models", "caffe", "lenet.prototxt"))
    # dynamo writes batch 1 into the flatten Reshape: batch 8 must be converted again, not re-bound
    result = compare([prototxt, TorchLeNet().eval()], gpu=[linear_pack(), CPU_PACK], batch=[1, 8],
                     input_shapes={"input": (1, 1, 28, 28)})
    caffe = [row for row in result.rows if row.model == "lenet.prototxt"]
    torch = [row for row in result.rows if row.model != "lenet.prototxt"]
    assert len(caffe) == len(torch) == 4
    for ours, theirs in zip(caffe, torch):
        assert (ours.pack, ours.batch) == (theirs.pack, theirs.batch)
        assert ours.latency_ms == pytest.approx(theirs.latency_ms, rel=1e-9)
        assert ours.macs_per_inference == theirs.macs_per_inference
        assert ours.params == theirs.params == 431_080
        assert ours.energy_mj_per_inference == pytest.approx(theirs.energy_mj_per_inference, rel=1e-9) \
            if ours.energy_mj_per_inference is not None else theirs.energy_mj_per_inference is None
    assert caffe[0].batch == 1 and caffe[1].batch == 8 and caffe[0].latency_ms < caffe[1].latency_ms


@pytest.mark.parametrize("argv, message", [
    (["--accuracy", "alexnet=seventy"], "expected NAME=TOP1_PERCENT"),
    (["--accuracy", "vgg16=71.5"], "no model is named 'vgg16'"),
    (["--accuracy", "alexnet=0.5e3"], "in percent"),
    (["--input-shape", "pixels=1x3x227x227"], "no model has as an input"),
    (["--batch", "0"], "--batch"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    try:
        code = main(["compare", write_zoo(tmp_path, "alexnet"), "--gpu", CPU_PACK, *argv])
    except SystemExit as exc:  # argparse-level errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("npower: error: ") and message in err and err.count("\n") == 1


def test_missing_model_file_is_a_user_error(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "nope.prototxt"), "--gpu", CPU_PACK]) == 2
    assert "no such file" in capsys.readouterr().err


def test_pareto_front():
    points = [(1.0, 30.0), (2.0, 25.0), (3.0, 27.0), (0.5, 40.0), (2.0, 25.0)]
    assert pareto_front(points) == [3, 0, 1, 4]


def test_html_without_plotly_keeps_tables_and_says_how(tmp_path, capsys, monkeypatch):
    from npower import html_report
    monkeypatch.setattr(html_report, "_plotly_js", lambda: None)
    out = tmp_path / "cmp.html"
    assert main(["compare", write_zoo(tmp_path, "alexnet"), "--gpu", CPU_PACK, "-o", str(out)]) == 0
    assert "pip install 'npower[html]'" in capsys.readouterr().err
    page = out.read_text()
    assert "<table>" in page and "npower[html]" in page and "Plotly.newPlot" not in page
    assert "alexnet.onnx" in page and "n/a" in page


def test_html_embeds_plotly_and_draws_every_plot(tmp_path):
    pytest.importorskip("plotly", reason="HTML plots need npower[html]")
    model = zoo.build("alexnet", weights=False, symbolic_batch=True)
    page = compare([model], gpu=linear_pack(), batch=[1, 4], accuracy={"alexnet": 57.0}).to_html()
    assert "<script src" not in page  # plotly.js is embedded: nothing fetched from the network
    for plot in ("plot-latency", "plot-energy", "plot-kinds", "plot-pareto"):
        assert f"Plotly.newPlot('{plot}'" in page


def test_npower_compare_stays_the_function_after_submodules_load():
    import npower
    import npower.comparison  # noqa: F401 - a submodule named `compare` would replace the attribute
    from npower.api import compare as api_compare
    assert npower.compare is api_compare
