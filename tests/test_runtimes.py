"""The typed runtime: parsing a pack's runtime field, rule sets chosen from it, fused kernels costed as they run."""
from __future__ import annotations

import pytest
from onnx import TensorProto, helper

from npower.errors import NpowerError
from npower.features import extract
from npower.graph import load_graph
from npower.runtimes import RULE_SETS, Runtime

CPU = {"name": "onnxruntime", "version": "1.32.0", "execution_provider": "CPUExecutionProvider",
       "graph_optimization": "extended", "precision": "fp32", "intra_op_threads": 1}


def test_runtime_round_trips_and_picks_its_rules():
    runtime = Runtime.from_dict(CPU)
    assert (runtime.device, runtime.optimization, runtime.threads) == ("cpu", "extended", 1)
    assert Runtime.from_dict(runtime.to_dict()) == runtime
    assert runtime.rules is RULE_SETS[("onnxruntime", "cpu", "extended")]
    basic = Runtime.from_dict({**CPU, "graph_optimization": "basic"})
    assert basic.rules is not runtime.rules
    torch = Runtime.from_dict({"name": "torch", "version": "2.1.0", "device": "cuda"})
    assert torch.optimization == "eager" and "PyTorch" in torch.rules.name


@pytest.mark.parametrize("change, field", [
    ({"name": "tensorrt"}, "runtime.name"),
    ({"graph_optimization": "turbo"}, "no kernel rules"),
    ({"device": "cuda"}, "runtime.execution_provider"),
    ({"intra_op_threads": -1}, "runtime.intra_op_threads"),
    ({"colour": "red"}, "runtime.colour"),
])
def test_bad_runtime_fields_are_named(change, field):
    with pytest.raises(NpowerError, match=field):
        Runtime.from_dict({**CPU, **change})


def _swish_model():
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"], name="sig"), helper.make_node("Mul", ["x", "s"], ["y"], name="mul")]
    graph = helper.make_graph(nodes, "swish", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64, 32, 32])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_fused_host_is_costed_as_the_kernel_that_runs():
    graph = load_graph(_swish_model())
    found = RULE_SETS[("onnxruntime", "cpu", "extended")].kernels(graph)
    assert found["sig"].host == "mul"
    kernel = found["mul"].kernel
    features = extract(kernel)
    elements = 64 * 32 * 32
    # QuickGelu reads x once and writes y: 2 x 4 bytes per element, not the Mul's 3 (x, sigmoid(x), y).
    assert features.kind == "quickgelu" and features.specials["total_bytes"] == 2 * 4 * elements
    assert extract(graph.nodes[1]).specials["total_bytes"] == 3 * 4 * elements


def test_constant_subgraphs_are_folded_where_the_runtime_folds_them():
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [1, -1])
    nodes = [helper.make_node("Mul", ["shape", "shape"], ["shape2"], name="const_mul"),
             helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshape")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    g = load_graph(model)
    assert RULE_SETS[("onnxruntime", "cpu", "basic")].kernels(g)["const_mul"].free
    assert "const_mul" not in RULE_SETS[("onnxruntime", "cpu", "disabled")].kernels(g)
