"""Loading and walking: symbolic dims, weightless models, bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from npower import NpowerError, analyze, zoo
from npower.cli import main
from npower.graph import load_graph, parse_input_shape

from conftest import linear_pack, single_node_model


def test_symbolic_batch_needs_binding_and_names_the_dimension():
    model = zoo.build("resnet18", batch=1, weights=False, symbolic_batch=True)
    with pytest.raises(NpowerError, match=r"input 'input' dimension 0 \('N'\) is symbolic"):
        load_graph(model)
    graph = load_graph(model, batch=8)
    assert graph.nodes[-1].outputs[0].shape == (8, 1000)
    graph = load_graph(model, input_shapes={"input": (2, 3, 112, 112)})
    assert graph.nodes[0].outputs[0].shape == (2, 64, 56, 56)


def test_input_shape_parsing_and_errors():
    assert parse_input_shape("data=1x3x224x224") == ("data", (1, 3, 224, 224))
    for bad in ("data", "data=1xAx3", "=1x2", "x=0x3"):
        with pytest.raises(NpowerError):
            parse_input_shape(bad)
    with pytest.raises(NpowerError, match="model's inputs are: input"):
        load_graph(zoo.build("alexnet", weights=False), input_shapes={"nope": (1, 3, 227, 227)})


def test_missing_external_data_is_never_read(tmp_path):
    model = zoo.build("resnet18", batch=1, weights=True)
    path = tmp_path / "resnet.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, location="weights.bin", size_threshold=0)
    (tmp_path / "weights.bin").unlink()
    graph = load_graph(str(path))
    assert len(graph.nodes) == len(model.graph.node)


def test_huge_external_weights_reference_analyzes_without_reading(tmp_path):
    """A model whose weights live in a 3 GB external file loads in bounded memory: a fresh interpreter
    loading it peaks under 600 MB (46 MB measured; onnx.load, which reads the weights, peaks at 5.9 GB)."""
    weights = tmp_path / "big.bin"
    with open(weights, "wb") as handle:
        handle.truncate(3 * 2 ** 30)
    init = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[25000, 30000])
    init.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "big.bin"), ("offset", "0"), ("length", str(25000 * 30000 * 4))):
        entry = init.external_data.add()
        entry.key, entry.value = key, value
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    graph = helper.make_graph([node], "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 25000])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [init])
    path = tmp_path / "big.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    assert path.stat().st_size < 10_000
    node = load_graph(str(path)).nodes[0]
    assert node.outputs[0].shape == (1, 30000) and node.inputs[1].is_weight
    # Peak RSS of a fresh interpreter (VmHWM: its own address space; ru_maxrss would carry this process's peak).
    script = ("import sys; from npower.graph import load_graph; load_graph(sys.argv[1]); "
              "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))")
    if not Path("/proc/self/status").exists():
        pytest.skip("peak memory is read from /proc (Linux)")
    child = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True)
    assert child.returncode == 0, child.stderr
    assert int(child.stdout) < 600 * 1024  # KB


def _vit_with_all_tensors_external(tmp_path):
    """zoo's ViT saved with every tensor external, Reshape shape tensors included (size_threshold=0)."""
    path = tmp_path / "vit.onnx"
    onnx.save_model(zoo.build("vit_s_depth6", weights=True), str(path), save_as_external_data=True,
                    location="vit.bin", size_threshold=0)
    return path


def roofline_pack():
    """No fitted model: every layer is the roofline of the shipped CPU pack's measured peak figures."""
    pack = linear_pack("roofline")
    pack.models.clear()
    pack.device.update(peak_gflops=101.45, bandwidth_gbs=24.5)
    return pack


def test_small_external_tensors_are_read_when_their_file_exists(tmp_path):
    path = _vit_with_all_tensors_external(tmp_path)
    in_memory = analyze(zoo.build("vit_s_depth6", weights=False), gpu=roofline_pack())
    from_file = analyze(str(path), gpu=roofline_pack())
    assert from_file.runtime_ms == pytest.approx(in_memory.runtime_ms)
    assert not any(layer.source in ("unknown", "unresolved") for layer in from_file.layers)


def test_missing_external_shape_data_fails_naming_the_cause(tmp_path, capsys):
    """Without vit.bin the Reshape shapes are unknown and most layers cannot be costed: an error naming the
    file, not a 1.24 ms ViT; --allow-partial writes the partial report and exits 3."""
    path = _vit_with_all_tensors_external(tmp_path)
    (tmp_path / "vit.bin").unlink()
    with pytest.raises(NpowerError, match=r"cannot be costed.*vit\.bin beside the model are missing"):
        analyze(str(path), gpu=roofline_pack())
    pack = roofline_pack().save(tmp_path / "p.yaml")
    assert main(["analyze", str(path), "--gpu", str(pack)]) == 2
    assert main(["analyze", str(path), "--gpu", str(pack), "--allow-partial", "--format", "json"]) == 3
    report = json.loads(capsys.readouterr().out)
    assert report["partial"] is True and any(w.startswith("PARTIAL") for w in report["warnings"])


@pytest.mark.parametrize("content,message", [
    (None, "no such file"),
    (b"", "empty file"),
    (b"this is not an onnx file at all", "not a valid ONNX model"),
])
def test_bad_files(tmp_path, content, message):
    path = tmp_path / "m.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(NpowerError, match=message):
        load_graph(str(path))


def test_truncated_model(tmp_path):
    data = zoo.build("alexnet", weights=True).SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(NpowerError):
        load_graph(str(path))


def test_cyclic_and_undefined_graphs():
    a = helper.make_node("Relu", ["b"], ["a"], name="first")
    b = helper.make_node("Relu", ["a"], ["b"], name="second")
    graph = helper.make_graph([a, b], "cyc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])])
    cyclic = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    with pytest.raises(NpowerError, match="cycle"):
        load_graph(cyclic)
    lost = single_node_model("Relu", [("x", [1, 4])])
    lost.graph.node[0].input[0] = "ghost"
    with pytest.raises(NpowerError, match="reads 'ghost'"):
        load_graph(lost)


def test_zero_and_negative_dims():
    with pytest.raises(NpowerError, match="must be positive|zero or negative"):
        load_graph(single_node_model("Relu", [("x", [1, 0, 4])]))
    with pytest.raises(NpowerError, match="positive|--batch must be from 1"):
        load_graph(single_node_model("Relu", [("x", [1, 4])]), batch=0)


def test_control_flow_is_reported_not_crashed():
    then_graph = helper.make_graph([helper.make_node("Identity", ["x"], ["t"])], "then", [],
                                   [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])])
    node = helper.make_node("If", ["c"], ["y"], then_branch=then_graph, else_branch=then_graph)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                                            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    from npower.features import extract
    assert extract(load_graph(model).nodes[0]).kind == "unknown"


@pytest.mark.parametrize("opset", [13, 15, 19, 21])
@pytest.mark.parametrize("name", ["resnet18", "vit_s_depth6", "squeezenet"])
def test_opsets_13_to_21_give_the_same_features(name, opset):
    from onnx import version_converter
    from npower.features import extract
    base = zoo.build(name, weights=False)
    if opset > 17:
        model = version_converter.convert_version(base, opset)
    elif name == "vit_s_depth6":
        pytest.skip("LayerNormalization exists from opset 17")
    else:
        model = zoo.build(name, weights=False, opset=opset)
    assert model.opset_import[0].version == opset

    def signature(m):
        return [(n.op_type, extract(n).kind, n.outputs[0].shape, extract(n).specials.get("macs"))
                for n in load_graph(m).nodes]
    assert signature(model) == signature(base)


def test_an_identity_of_an_initializer_is_a_weight():
    """The PyTorch exporter shares equal initializers (zero biases) through Identity nodes, chained at times:
    the Conv's bias must stay a constant, or no NCHWc layout rule accepts the Conv."""
    nodes = [helper.make_node("Identity", ["b0"], ["b1"]), helper.make_node("Identity", ["b1"], ["b2"]),
             helper.make_node("Conv", ["x", "w", "b2"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 8, 8])],
        [helper.make_tensor("w", TensorProto.FLOAT, [32, 16, 3, 3], [0.0] * 32 * 16 * 9),
         helper.make_tensor("b0", TensorProto.FLOAT, [32], [0.0] * 32)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    conv = next(node for node in load_graph(model).nodes if node.op_type == "Conv")
    assert [t.is_weight for t in conv.inputs] == [False, True, True]
