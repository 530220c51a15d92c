"""NeuSight importer: rows become the samples the equivalent ONNX nodes give; both layouts; packs and aliases."""
from __future__ import annotations

import csv
import json
import random

import pytest
from onnx import TensorProto, helper

from conftest import linear_pack, need_shared, single_node_model
from npower.cli import main
from npower.errors import NpowerError
from npower.features import extract
from npower.fit import FIT_FEATURES
from npower.graph import load_graph
from npower.importers.neusight import import_neusight, resolve_layout
from npower.pack import builtin_profiles_dir, find_pack
from npower.runtimes import RULE_SETS

DATA = ("data", "neusight")


def _equivalent_model(op: str, row: dict[str, str]):
    """The ONNX node a PyTorch call of this row exports to, written by hand from the data's README."""
    if op in ("linear", "bmm"):
        b, m, n, k = (int(row[c]) for c in "BMNK")
        if op == "bmm":
            return single_node_model("MatMul", [("a", [b, m, n]), ("b", [b, n, k])])
        return single_node_model("Gemm", [("x", [b * m, n])], {"transB": 1}, weights=[("w", [k, n]), ("bias", [k])])
    if op == "conv":
        b, cin, cout, k, size, stride, pad = (int(row[c]) for c in (
            "B", "Input_Channel", "Output_Channel", "Kernel_Szie", "Input_Size", "Stride", "Padding"))
        return single_node_model("Conv", [("x", [b, cin, size, size])],
                                 {"kernel_shape": [k, k], "strides": [stride] * 2, "pads": [pad] * 4},
                                 weights=[("w", [cout, cin, k, k])])
    shape = [int(row["B"]), int(row["H"])]
    if op == "ln":
        return single_node_model("LayerNormalization", [("x", shape)], {"axis": -1},
                                 weights=[("g", [shape[1]]), ("b", [shape[1]])])
    if op == "softmax":
        return single_node_model("Softmax", [("x", shape)], {"axis": -1})
    binary = {"add": "Add", "mul": "Mul", "div": "Div", "pow": "Pow"}
    if op in binary:
        return single_node_model(binary[op], [("x", shape), ("z", shape)])
    if op.rstrip("u") in binary:
        return single_node_model(binary[op.rstrip("u")], [("x", shape)], weights=[("s", [])])
    unary = {"relu": "Relu", "tanh": "Tanh", "gelu": "Gelu"}
    return single_node_model(unary[op], [("x", shape)], opset=20)


def test_sampled_rows_have_the_analyzers_features():
    root = need_shared(*DATA)
    result = import_neusight(root, "Tesla T4")
    by_file: dict[str, list[dict]] = {}
    for sample in result.samples:
        by_file.setdefault(sample["source"]["file"], []).append(sample)
    rng = random.Random(0)
    checked = 0
    for file, samples in sorted(by_file.items()):
        rows = {n: r for n, r in enumerate(csv.DictReader((root / file).open()), start=2)}
        for sample in rng.sample(samples, min(4, len(samples))):
            layer = extract(load_graph(_equivalent_model(sample["source"]["op"], rows[sample["source"]["line"]])).nodes[0])
            assert (layer.kind, layer.features, layer.specials) == (sample["kind"], sample["features"],
                                                                     sample["specials"]), file
            checked += 1
    assert checked >= 4 * 16  # every operator file of the training set, and the test files


def test_linear_row_and_an_exported_linear_land_on_one_kind():
    """nn.Linear on (B, M, N) exports as MatMul + bias Add; PyTorch eager's rules cost it as the row's Gemm."""
    root = need_shared(*DATA)
    sample = next(s for s in import_neusight(root, "Tesla T4").samples if s["source"]["op"] == "linear")
    (rows, n), (k, _) = sample["config"]["inputs"][0]["shape"], sample["config"]["inputs"][1]["shape"]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"), helper.make_node("Add", ["h", "b"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, rows, n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[n, k]),
                               TensorProto(name="b", data_type=TensorProto.FLOAT, dims=[k])])
    loaded = load_graph(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8))
    kernel = RULE_SETS[("torch", "cuda", "eager")].kernels(loaded)["mm"].kernel
    layer = extract(kernel)
    # one GEMM; only the weight's layout differs (nn.Linear's is transposed), which no GPU model sees (on a CPU it
    # picks MLAS's SGEMM paths: device_features.SGEMM_SHAPES)
    layout = ("trans_a", "trans_b")
    assert not set(layout) & set(FIT_FEATURES["gemm"]) and sample["features"]["trans_b"] == 1
    shape = {name: value for name, value in layer.features.items() if name not in layout}
    assert (layer.kind, shape) == (sample["kind"], {n: v for n, v in sample["features"].items() if n not in layout})
    assert layer.kind == "gemm"


def _write_original_layout(tmp_path, rows: list[list[str]]):
    """A clone of the source repository: spaces in GPU names, scripts/asplos/data/..."""
    data = tmp_path / "NeuSight" / "scripts" / "asplos" / "data"
    (data / "dataset" / "train" / "add").mkdir(parents=True)
    (data / "device_configs").mkdir()
    (data / "device_configs" / "Tesla T4.json").write_text(json.dumps(
        {"Device": "Tesla T4", "Dev_Mem": 16, "Mem_Bw": 320, "Num_Sm": 40, "Core_Per_SM": 64, "Freq": 1590,
         "SingleFLOPs": 8141, "L2Cache": 4}))
    with (data / "dataset" / "train" / "add" / "Tesla T4.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["OPName", "Latency", "Device", "B", "H"])
        writer.writerows(rows)
    return tmp_path / "NeuSight"


def test_original_repository_layout_and_unmapped_rows_are_counted(tmp_path):
    root = _write_original_layout(tmp_path, [["add", "0.03", "Tesla T4", "4", "8"],
                                             ["add", "0.03", "Tesla T4", "4", "8"],      # exact duplicate
                                             ["add", "nan", "Tesla T4", "4", "8"],
                                             ["add", "0.05", "Tesla T4", "0", "8"],
                                             ["sub", "0.05", "Tesla T4", "4", "8"]])
    assert resolve_layout(root).kernels.name == "dataset"
    result = import_neusight(root, "t4")
    assert [s["kind"] for s in result.samples] == ["add"]
    assert result.duplicates == 1
    assert sum(result.skipped.values()) == 3
    assert result.header["device"]["sms"] == 40 and result.header["runtime"]["name"] == "torch"


def test_import_command_writes_samples_and_bad_folder_is_one_line(tmp_path, capsys):
    root = _write_original_layout(tmp_path, [["add", "0.03", "Tesla T4", "4", "8"]])
    assert main(["import", "neusight", str(root), "--gpu", "Tesla T4", "-o", str(tmp_path / "s.jsonl")]) == 0
    assert len((tmp_path / "s.jsonl").read_text().splitlines()) == 2
    assert main(["import", "neusight", str(tmp_path / "absent"), "--gpu", "t4", "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("npower: error:") and len(err.strip().splitlines()) == 1


def _aliased(folder, name: str, kind: str, aliases: list[str]) -> None:
    pack = linear_pack(name)
    pack.provenance.update(source_kind=kind, aliases=aliases)
    pack.save(folder / f"{name}.yaml")


def test_alias_resolution_prefers_measured_and_a_tie_is_an_error(tmp_path):
    _aliased(tmp_path, "gpu-public", "public", ["x100"])
    _aliased(tmp_path, "gpu-estimated", "estimated", ["x100", "y100"])
    _aliased(tmp_path, "gpu-estimated-2", "estimated", ["y100"])
    assert find_pack("X100", [tmp_path]).name == "gpu-public"
    _aliased(tmp_path, "gpu-measured", "measured", ["x100"])
    assert find_pack("x100", [tmp_path]).name == "gpu-measured"
    with pytest.raises(NpowerError, match="gpu-estimated, gpu-estimated-2"):
        find_pack("y100", [tmp_path])


@pytest.mark.parametrize("alias, device", [("v100", "Tesla V100-PCIE-32GB"), ("a100", "NVIDIA A100-PCIE-40GB")])
def test_shipped_gpu_packs_answer_their_short_names(alias, device):
    if not any(builtin_profiles_dir().glob("*-torch2.1-cuda-fp32.yaml")):
        pytest.skip("no NeuSight GPU pack shipped yet")
    pack = find_pack(alias)
    assert pack.device["name"] == device and pack.provenance["source_kind"] == "public"
    assert pack.runtime.name == "torch" and pack.runtime.optimization == "eager"
