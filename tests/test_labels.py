"""Recorded whole-model labels: reading, categorising fx nodes, comparing predictions, `npower validate --label`."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
from onnx import TensorProto, helper

from conftest import need_shared
from npower.errors import NpowerError
from npower.labels import compare_with_label, find_labels, read_label
from npower.pack import KindModels, Pack
from npower.polynomial import SparsePolynomial

LAYER = "{'nn_module_stack': OrderedDict([('bert.encoder.layer.0', <class 'BertLayer'>), " \
        "('bert.encoder.layer.0.output.dense', <class 'torch.nn.modules.linear.Linear'>)])}"
OUTSIDE = "{'nn_module_stack': OrderedDict([('bert.embeddings.LayerNorm', " \
          "<class 'torch.nn.modules.normalization.LayerNorm'>)])}"
# (op, target, meta, input_shapes, output_shape, latency, Name)
ROWS = [("placeholder", "input_ids", "{}", "[]", "(2, 4)", 0.0, "input_ids"),
        ("call_method", "size", "{}", "[[2, 4]]", "(1,)", 0.011, "size"),
        ("call_function", "<built-in function getitem>", "{}", "[[1]]", "(1,)", 0.010, "getitem"),
        ("call_module", "bert.embeddings.LayerNorm", OUTSIDE, "[[2, 4, 8]]", "(2, 4, 8)", 0.05, "ln"),
        ("call_module", "bert.encoder.layer.0.output.dense", LAYER, "[[2, 4, 8]]", "(2, 4, 8)", 0.5, "dense"),
        ("call_function", "<built-in function truediv>", LAYER, "[[2, 2, 4, 4]]", "(2, 2, 4, 4)", 0.1, "truediv"),
        ("call_function", "<built-in function add>", LAYER, "[[2, 4, 8], [2, 4, 8]]", "(2, 4, 8)", 0.2, "add"),
        ("call_method", "contiguous", LAYER, "[[2, 4, 2, 4]]", "(2, 4, 2, 4)", 0.03, "contiguous"),
        ("call_method", "permute", LAYER, "[[2, 4, 2, 4]]", "(2, 2, 4, 4)", 0.015, "permute")]


def write_label(folder, name="bert_large-inf-4-2", fw=10.0, layers=3, rows=ROWS):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps({"num_layer": layers, "fw_latency": fw, "e2e_latency": fw}))
    with open(folder / f"{name}.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["op", "target", "meta", "input_shapes", "output_shape", "latency", "Name"])
        writer.writerows(rows)
    return folder / f"{name}.json"


def test_read_label_categories_and_layer_multiplicity(tmp_path):
    label = read_label(write_label(tmp_path / "labels" / "Some_GPU"))
    assert (label.gpu, label.model, label.seqlen, label.batch, label.num_layer, label.fw_ms) == \
        ("Some_GPU", "bert_large", 4, 2, 3, 10.0)
    per = label.per_category()
    assert per["python"] == (2, pytest.approx(0.021))      # size/getitem on shapes: no kernel, counted apart
    assert per["layernorm"] == (1, pytest.approx(0.05))     # outside the layers: once
    assert per["linear"] == (3, pytest.approx(1.5))         # layer 0 x num_layer
    assert per["divu"][0] == 3 and per["add"][0] == 3 and per["copy"][0] == 3 and per["view"][0] == 3


def test_find_labels_reads_the_labels_subfolder(tmp_path):
    write_label(tmp_path / "labels" / "GPU_A")
    write_label(tmp_path / "labels" / "GPU_B", name="gpt2_large-inf-4-2")
    assert [(x.gpu, x.model) for x in find_labels(tmp_path)] == [("GPU_A", "bert_large"), ("GPU_B", "gpt2_large")]


@pytest.mark.parametrize("breakage", ["no_csv", "bad_json", "bad_name", "bad_latency"])
def test_bad_labels_are_one_line_errors(tmp_path, breakage):
    path = write_label(tmp_path / "g")
    if breakage == "no_csv":
        path.with_suffix(".csv").unlink()
    elif breakage == "bad_json":
        path.write_text("{}")
    elif breakage == "bad_name":
        path = path.rename(tmp_path / "g" / "bert.json")
    else:
        write_label(tmp_path / "g", rows=[ROWS[3][:5] + ("fast",) + ROWS[3][6:]])
    with pytest.raises(NpowerError):
        read_label(path)


def _linear_model(batch="batch", seqlen=4):
    """input_ids-like (batch, seqlen) float input -> Unsqueeze -> MatMul + bias (one nn.Linear)."""
    nodes = [helper.make_node("Unsqueeze", ["x", "axes"], ["h"]), helper.make_node("MatMul", ["h", "w"], ["mm"]),
             helper.make_node("Add", ["mm", "b"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, seqlen])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [helper.make_tensor("axes", TensorProto.INT64, [1], [2]),
                               TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1, 8]),
                               TensorProto(name="b", data_type=TensorProto.FLOAT, dims=[8])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)


def torch_pack(gemm_ms=2.0):
    models = {"gemm": KindModels(SparsePolynomial("linear", "ms", gemm_ms))}
    return Pack("torch-test", {"name": "Some GPU", "peak_gflops": 1000.0, "bandwidth_gbs": 100.0},
                {"name": "torch", "version": "2.1.0", "device": "cuda", "graph_optimization": "eager"}, models)


def test_compare_with_label_costs_one_gemm_and_breaks_down_per_kind(tmp_path):
    import onnx
    onnx.save(_linear_model(), tmp_path / "m.onnx")
    label = read_label(write_label(tmp_path / "GPU"))
    result = compare_with_label(tmp_path / "m.onnx", label, torch_pack())
    assert result.predicted_ms == pytest.approx(2.0) and result.fitted_share == 1.0
    assert result.error == pytest.approx(2.0 / 10.0 - 1)
    linear = next(k for k in result.kinds if k.category == "linear")
    assert (linear.label_count, linear.predicted_count) == (3, 1)
    assert linear.label_ms == pytest.approx(1.5) and linear.predicted_ms == pytest.approx(2.0)
    with pytest.raises(NpowerError, match="do not match the label"):
        onnx.save(_linear_model(seqlen=5), tmp_path / "m5.onnx")
        compare_with_label(tmp_path / "m5.onnx", label, torch_pack())


def _npower(*args):
    return subprocess.run([sys.executable, "-m", "npower.cli", *map(str, args)], capture_output=True, text=True)


def test_cli_validate_label(tmp_path):
    import onnx
    onnx.save(_linear_model(), tmp_path / "m.onnx")
    torch_pack().save(tmp_path / "torch-test.yaml")
    label = write_label(tmp_path / "GPU")
    done = _npower("validate", tmp_path / "m.onnx", "--gpu", tmp_path / "torch-test.yaml", "--label", label, "--layers")
    assert done.returncode == 0, done.stderr
    assert "-80.0%" in done.stdout and "linear" in done.stdout
    wrong_batch = _npower("validate", tmp_path / "m.onnx", "--gpu", tmp_path / "torch-test.yaml", "--label", label,
                          "--batch", "3")
    assert wrong_batch.returncode == 2 and wrong_batch.stderr.startswith("npower: error: --batch 3")
    missing = _npower("validate", tmp_path / "m.onnx", "--gpu", tmp_path / "torch-test.yaml", "--label",
                      tmp_path / "nope-inf-4-2.json")
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1


def test_every_shared_label_reads_and_every_fx_node_is_categorised():
    labels = find_labels(need_shared("data", "neusight"))
    assert len(labels) == 27  # 7 GPUs x 4 cases, less P4's GPT-2 batch 8
    assert not [(x.path.name, n.name) for x in labels for n in x.nodes if n.category == "other"]


def test_every_labelled_case_with_a_fitted_pack_predicts_within_a_third_of_its_label():
    """The shipped public packs on the example models, per recorded label: no blown-up layer model (a scalar
    operand's count once extrapolated to GPT-2's 1024 x 1024 mask and predicted 1e18 ms) and no gross miss."""
    from pathlib import Path

    from npower.pack import available_packs, load_pack
    packs = {}
    for path in available_packs().values():
        pack = load_pack(path)
        if pack.runtime.name == "torch" and not pack.estimated:
            packs["".join(c for c in str(pack.device.get("name")).lower() if c.isalnum())] = pack
    examples = Path(__file__).resolve().parents[1] / "examples"
    cases = 0
    for label in find_labels(need_shared("data", "neusight")):
        pack = packs.get("".join(c for c in label.gpu.lower() if c.isalnum()))
        if pack is not None:
            result = compare_with_label(examples / f"{label.model}.onnx", label, pack)
            assert abs(result.error) < 1 / 3, (label.path.name, pack.name, result.error)
            cases += 1
    assert cases == 27
