"""Loading and walking: symbolic dims, weightless models, bad input."""
from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from npower import NpowerError, zoo
from npower.graph import load_graph, parse_input_shape

from conftest import single_node_model


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
    """A model whose weights live in a 3 GB external file (sparse) loads in bounded memory."""
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
    with pytest.raises(NpowerError, match="positive"):
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
@pytest.mark.parametrize("name", ["resnet18", "vit_small", "squeezenet"])
def test_opsets_13_to_21_give_the_same_features(name, opset):
    from onnx import version_converter
    from npower.features import extract
    base = zoo.build(name, weights=False)
    if opset > 17:
        model = version_converter.convert_version(base, opset)
    elif name == "vit_small":
        pytest.skip("LayerNormalization exists from opset 17")
    else:
        model = zoo.build(name, weights=False, opset=opset)
    assert model.opset_import[0].version == opset

    def signature(m):
        return [(n.op_type, extract(n).kind, n.outputs[0].shape, extract(n).specials.get("macs"))
                for n in load_graph(m).nodes]
    assert signature(model) == signature(base)
