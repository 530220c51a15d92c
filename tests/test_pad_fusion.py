"""onnxruntime's PadFusion (basic level), checked against onnxruntime 1.32 on graphs of two nodes.

A zero constant Pad read only by a Conv or an AveragePool is dropped and its padding added to the reader's
pads (an AveragePool then counts the padding); it is kept before a MaxPool, for another mode, for a padded
channel axis and for a Pad something else reads too. The kernels npower costs at the basic level, with
their pads, are the nodes of onnxruntime's optimised model.
"""
from __future__ import annotations

import collections
import importlib.util

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from npower.features import extract
from npower.graph import load_graph
from npower.profile.ort_trace import costed_kernels
from npower.runtimes import RULE_SETS
from test_fusion import FREE_OPS, executed_graph

needs_ort = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None,
                               reason="comparing with onnxruntime needs onnxruntime (pip install 'npower[profile]')")

BASIC = RULE_SETS[("onnxruntime", "cpu", "basic")]
KEEPS = [0, 0, 0, 1, 0, 0, 1, 2]  # spatial padding only, the smaller half first (as exporters write it)

# title: (the Pad's pads, its mode, the reader (op, attributes), a second reader of the Pad)
CASES = {
    "into_conv": (KEEPS, "constant", ("Conv", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}), False),
    "into_avgpool_counting_the_padding": (KEEPS, "constant", ("AveragePool", {"kernel_shape": [3, 3]}), False),
    "not_into_maxpool": (KEEPS, "constant", ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2]}), False),
    "not_reflect": (KEEPS, "reflect", ("Conv", {"kernel_shape": [3, 3]}), False),
    "not_channel_padding": ([0, 1, 0, 1, 0, 0, 1, 2], "constant", ("Conv", {"kernel_shape": [3, 3]}), False),
    "not_a_pad_read_twice": (KEEPS, "constant", ("Conv", {"kernel_shape": [3, 3]}), True),
}


def pad_model(name: str) -> onnx.ModelProto:
    pads, mode, (op, attrs), shared = CASES[name]
    channels = 8 + pads[1] + pads[5]
    weights = [numpy_helper.from_array(np.array(pads, np.int64), "pads"),
               numpy_helper.from_array(np.ones((8, channels, 3, 3), np.float32), "w")]
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"], mode=mode),
             helper.make_node(op, ["p", "w"] if op == "Conv" else ["p"], ["y"], **attrs)]
    nodes += [helper.make_node("Relu", ["p"], ["z"])] if shared else []
    outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in ["y"] + (["z"] if shared else [])]
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 9, 9])],
                              outputs, weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _window(op: str, attrs: dict) -> tuple:
    """A kernel as (op, its pads, whether it counts padding); attributes at their ONNX defaults."""
    pads = tuple(attrs.get("pads") or [0, 0, 0, 0]) if op in ("Conv", "AveragePool", "MaxPool") else ()
    return op, pads, int(attrs.get("count_include_pad", 0))


def npower_windows(model: onnx.ModelProto) -> collections.Counter:
    kernels = [k for k in costed_kernels(load_graph(model), BASIC) if extract(k).kind != "free"]
    return collections.Counter(_window(k.op_type, k.attrs) for k in kernels)


def onnxruntime_windows(executed: onnx.GraphProto) -> collections.Counter:
    return collections.Counter(_window(n.op_type, {a.name: helper.get_attribute_value(a) for a in n.attribute})
                               for n in executed.node if n.op_type not in FREE_OPS)


@needs_ort
@pytest.mark.parametrize("name", list(CASES))
def test_pad_fusion_is_onnxruntimes(name):
    model = pad_model(name)
    assert npower_windows(model) == onnxruntime_windows(executed_graph(model, "basic"))


def test_fused_pad_widens_the_conv_and_costs_nothing():
    """The Conv reads the unpadded tensor with its own pads plus the Pad's; its output is unchanged."""
    graph = load_graph(pad_model("into_conv"))
    fusions = BASIC.kernels(graph)
    pad, conv = graph.nodes
    kernel = fusions[conv.name].kernel
    assert fusions[pad.name].host == conv.name
    assert kernel.attrs["pads"] == [1, 2, 2, 3] and kernel.inputs[0] is pad.inputs[0]
    assert kernel.outputs == conv.outputs
