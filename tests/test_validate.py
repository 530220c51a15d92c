"""`npower validate`: whole-network measurement vs prediction; failures and mismatches do not stop it."""
from __future__ import annotations

import dataclasses

import json

import onnx
import pytest
from onnx import TensorProto, helper

from npower.cli import main
from npower.validate import accuracy

from conftest import linear_pack

pytest.importorskip("onnxruntime")


@pytest.fixture
def cpu_pack(tmp_path):
    pack = linear_pack("cpu-test")
    pack.runtime = dataclasses.replace(pack.runtime, version="0.0-other", optimization="extended")
    path = pack.save(tmp_path / "cpu-test.yaml")
    return path


def broken_model(tmp_path) -> str:
    node = helper.make_node("NoSuchOp", ["x"], ["y"], domain="acme")
    graph = helper.make_graph([node], "bad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("acme", 1)],
                              ir_version=8)
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    return str(path)


def test_validate_measures_reports_and_goes_on_after_a_failure(tmp_path, cpu_pack, capsys):
    out = tmp_path / "v.json"
    code = main(["validate", "zoo:squeezenet", broken_model(tmp_path), "--gpu", str(cpu_pack), "--runs", "3",
                 "--format", "json", "-o", str(out), "--layers"])
    assert code == 0
    err = capsys.readouterr().err
    assert "measured with onnxruntime 0.0-other" in err and "bad.onnx" in err and "continuing" in err
    results = json.loads(out.read_text())["results"]
    good, bad = results
    assert good["measured_ms"] > 0 and good["predicted_ms"] > 0 and good["paleo_ms"] > 0
    assert good["accuracy"] == pytest.approx(accuracy(good["predicted_ms"], good["measured_ms"]))
    assert any(row["measured_ms"] > 0 for row in good["layers"])  # onnxruntime's per-node profile
    assert bad["error"]


def test_paleo_predictor_and_record(tmp_path, cpu_pack, capsys):
    assert main(["validate", "zoo:squeezenet", "--gpu", str(cpu_pack), "--runs", "3", "--predictor", "paleo",
                 "--record"]) == 0
    assert "mean runtime accuracy" in capsys.readouterr().out
    recorded = cpu_pack.read_text()
    assert "validation:" in recorded and "squeezenet@b1" in recorded


def test_all_models_failing_is_exit_2(tmp_path, cpu_pack):
    assert main(["validate", broken_model(tmp_path), "--gpu", str(cpu_pack), "--runs", "3"]) == 2
