"""Kernel rules agree, op by op, with what onnxruntime executes.

CPU rule sets: for every zoo network, and for small MatMul graphs, at each CPU level, the kernels npower
costs are exactly the nodes of onnxruntime's optimised model: the same op-type multiset and the same graph
nodes. The CUDA rule set (no GPU here) is checked against onnxruntime's transformer registrations, quoted
where they are used: ConvActivationFusion takes Relu only on the CUDA provider, plus Conv+Add+Relu;
GemmActivationFusion is registered for the CPU provider only; the transformer fusions
(QuickGelu, Gelu, SkipLayerNormalization, FusedMatMul) are registered for CPU and CUDA alike.
"""
from __future__ import annotations

import collections
import importlib.util
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest

from npower import zoo
from npower.features import extract
from npower.graph import Graph, load_graph
from npower.kernel_map import kernel_nodes
from npower.profile.backends import KernelProfile, KernelTime
from npower.runtimes import RULE_SETS, Fusion

needs_ort = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None,
                               reason="comparing with onnxruntime needs onnxruntime (pip install 'npower[profile]')")

CPU_LEVELS = ("basic", "extended")  # 'all' joins once its layout rules exist (issue 12)
CUDA = RULE_SETS[("onnxruntime", "cuda", "extended")]
CPU_EXTENDED = RULE_SETS[("onnxruntime", "cpu", "extended")]
FREE_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Shape", "Size", "Constant",
            "ConstantOfShape", "Range"}  # npower's free kinds; onnxruntime runs them as (near-)copies
ACTIVATIONS = {"Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid"}


def executed_graph(model: onnx.ModelProto, level: str) -> onnx.GraphProto:
    """The graph onnxruntime runs on the CPU at `level` (its saved optimised model, weights left out)."""
    import onnxruntime as ort
    with tempfile.TemporaryDirectory() as folder:
        options = ort.SessionOptions()
        options.graph_optimization_level = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED}[level]
        options.optimized_model_filepath = str(Path(folder) / "executed.onnx")
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name", "executed.data")
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return onnx.load(str(Path(folder) / "executed.onnx"), load_external_data=False).graph


def npower_kernels(graph: Graph, fusions: dict[str, Fusion]) -> dict[str, str]:
    """Host node name -> the op onnxruntime names its kernel, for every kernel npower costs. A rule that
    merges into a synthesized kernel names it; a host that absorbed an activation, a scale or transposed
    operand, or a residual Add, gets onnxruntime's contrib op name."""
    by_name = {node.name: node for node in graph.nodes}
    members: dict[str, set[str]] = collections.defaultdict(set)
    for name, fusion in fusions.items():
        if fusion.host:
            members[fusion.host].add(by_name[name].op_type)
    kernels = {}
    for node in graph.nodes:
        fusion = fusions.get(node.name)
        if (fusion is not None and (fusion.host or fusion.free)) or extract(node).kind == "free":
            continue
        op = fusion.kernel.op_type if fusion is not None and fusion.kernel is not None else node.op_type
        absorbed = members[node.name]
        renamed = {"Conv": "FusedConv", "Gemm": "FusedGemm"}.get(op) if absorbed & ACTIVATIONS else None
        if op == "MatMul" and absorbed & {"Mul", "Div", "Transpose"}:
            renamed = "FusedMatMul"
        if op == "LayerNormalization" and "Add" in absorbed:
            renamed = "SkipLayerNormalization"
        kernels[node.name] = renamed or op
    return kernels


def onnxruntime_kernels(graph: Graph, executed: onnx.GraphProto) -> tuple[collections.Counter, set[str]]:
    """Op-type multiset of the optimised graph's kernels, and the original nodes whose work they run."""
    nodes = [n for n in executed.node if n.op_type not in FREE_OPS]
    profile = KernelProfile([KernelTime(n.name, n.op_type, 0.0, tuple(n.input), tuple(n.output)) for n in nodes], 0.0)
    return collections.Counter(n.op_type for n in nodes), set(kernel_nodes(profile, graph).values())


@needs_ort
@pytest.mark.parametrize("name", list(zoo.NETWORKS))
def test_costed_kernels_are_onnxruntimes_op_by_op(name):
    assert_kernels_are_onnxruntimes(zoo.build(name, weights=True))


def assert_kernels_are_onnxruntimes(model: onnx.ModelProto) -> None:
    """At each CPU level, npower's kernels are onnxruntime's, op by op, hosted by the same nodes."""
    graph = load_graph(model)
    for level in CPU_LEVELS:
        ours = npower_kernels(graph, RULE_SETS[("onnxruntime", "cpu", level)].kernels(graph))
        ops, hosts = onnxruntime_kernels(graph, executed_graph(model, level))
        assert collections.Counter(ours.values()) == ops, level
        assert set(ours) == hosts, level


def test_basic_level_rules_differ_from_extended():
    """ResNet-18 at the basic level: only the 20 BatchNorms fold (Conv+Relu fusion is an extended-level
    transformer), so its 17 Relus stay kernels; at extended the 9 Relus right after a Conv group join it."""
    graph = load_graph(zoo.build("resnet18", weights=False))
    basic = npower_kernels(graph, RULE_SETS[("onnxruntime", "cpu", "basic")].kernels(graph))
    extended = npower_kernels(graph, CPU_EXTENDED.kernels(graph))
    assert collections.Counter(basic.values())["Relu"] == 17
    assert collections.Counter(extended.values())["Relu"] == 17 - 9
    assert collections.Counter(extended.values())["FusedConv"] == 9


def _kernel_ops(graph: Graph, rules=CPU_EXTENDED) -> collections.Counter:
    return collections.Counter(npower_kernels(graph, rules.kernels(graph)).values())


def test_fusion_kinds():
    graph = load_graph(zoo.build("efficientnet_b0", weights=False))
    # x*sigmoid(x) in EfficientNet-B0: the stem, the head, and in its 16 MBConv blocks the depthwise conv's and
    # the squeeze-excite reduction's activations (16 + 16) plus the expansion conv's in the 15 blocks that
    # expand (the first has expand ratio 1); the excite gate multiplies another tensor: not a swish.
    assert _kernel_ops(graph)["QuickGelu"] == 1 + 1 + 16 + 16 + 15
    vit = load_graph(zoo.build("vit_s_depth6", weights=False))
    assert _kernel_ops(vit)["Gelu"] == 6  # one per MLP, one MLP per block, 6 blocks


def test_cuda_rules_follow_onnxruntimes_cuda_registrations():
    # ConvActivationFusion on CUDA: Relu only. MobileNetV2's activations are Clip (ReLU6): its 35 Clips (stem,
    # head, the depthwise conv of all 17 blocks, the expansion conv of the 16 that expand) stay kernels; its
    # BatchNorms still fold into their Convs (a basic-level rule, any provider).
    mobilenet = _kernel_ops(load_graph(zoo.build("mobilenet_v2", weights=False)), CUDA)
    assert mobilenet["FusedConv"] == 0 and mobilenet["Clip"] == 35 and mobilenet["BatchNormalization"] == 0
    # GemmActivationFusion is registered for the CPU provider only: AlexNet's fc6/fc7 keep their Relus on
    # CUDA, while its 5 Conv+Relu pairs fuse on both.
    alexnet = _kernel_ops(load_graph(zoo.build("alexnet", weights=False)), CUDA)
    assert alexnet["FusedGemm"] == 0 and alexnet["Relu"] == 2 and alexnet["FusedConv"] == 5
    assert _kernel_ops(load_graph(zoo.build("alexnet", weights=False)))["FusedGemm"] == 2
    # Conv+Add+Relu (CUDA only): each of ResNet-18's 8 residual Add+Relu pairs joins the Conv before it;
    # on the CPU they stay two kernels each.
    resnet = load_graph(zoo.build("resnet18", weights=False))
    assert _kernel_ops(resnet, CUDA)["Add"] == 0 and _kernel_ops(resnet, CUDA)["FusedConv"] == 1 + 8 + 8
    assert _kernel_ops(resnet)["Add"] == 8
    # The transformer fusions are registered for CUDA as for the CPU.
    for name in ("efficientnet_b0", "vit_s_depth6"):
        graph = load_graph(zoo.build(name, weights=False))
        cpu, cuda = _kernel_ops(graph), _kernel_ops(graph, CUDA)
        for op in ("QuickGelu", "Gelu", "SkipLayerNormalization", "FusedMatMul", "Gemm"):
            assert cuda[op] == cpu[op], (name, op)


def _matmul_model(nodes: list[onnx.NodeProto], weights: dict[str, tuple]) -> onnx.ModelProto:
    """Graph inputs a (2, 4, 8) and b (2, 8, 4); `weights` name -> shape (filled with 0.5)."""
    from onnx import TensorProto, helper, numpy_helper
    initializers = [numpy_helper.from_array(np.full(shape, 0.5, np.float32), name) for name, shape in weights.items()]
    readers = {i for n in nodes for i in n.input}
    outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
               for n in nodes for o in n.output if o not in readers]
    inputs = [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 4, 8]),
              helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, 8, 4])]
    graph = helper.make_graph(nodes, "matmul", inputs, outputs, initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _node(op: str, inputs: list[str], output: str) -> onnx.NodeProto:
    return onnx.helper.make_node(op, inputs, [output], name=output)


MATMUL_CASES = {
    # Add(bias, x), as the PyTorch exporter writes a Linear layer's bias: still MatMul + bias -> Gemm
    "bias_first": ([_node("MatMul", ["a", "w"], "m"), _node("Add", ["bias", "m"], "y")], {"w": (8, 16), "bias": (16,)}),
    # scalar scales of both operands (attention's q and k scaled apart) and a division of the output -> alpha
    "scaled_operands": ([_node("Mul", ["a", "s"], "as"), _node("Mul", ["t", "b"], "bs"),
                         _node("MatMul", ["as", "bs"], "m"), _node("Div", ["m", "d"], "y")],
                        {"s": (), "t": (1, 1, 1), "d": ()}),
    # a per-element scale is no scale; nor is a constant divided by the operand
    "scales_that_stay": ([_node("Div", ["s", "a"], "as"), _node("MatMul", ["as", "b"], "y"),
                          _node("Mul", ["b", "v"], "bv"), _node("MatMul", ["a", "bv"], "z")],
                         {"s": (), "v": (1, 1, 4)}),
}


@needs_ort
@pytest.mark.parametrize("name", list(MATMUL_CASES))
def test_matmul_fusions_on_small_graphs_are_onnxruntimes(name):
    assert_kernels_are_onnxruntimes(_matmul_model(*MATMUL_CASES[name]))


def test_residual_add_and_layernorm_are_one_skip_layernorm_kernel_of_its_own_kind():
    """onnxruntime's SkipLayerNormalization costs about 10x a LayerNormalization of the same rows on the CPU
    (0.38 vs 0.03 ms at 128x768): it is costed as a kind of its own, over the Add's two inputs."""
    graph = load_graph(zoo.build("vit_s_depth6", weights=False))
    fusions = CPU_EXTENDED.kernels(graph)
    skips = [f.kernel for f in fusions.values() if f.kernel is not None and f.kernel.op_type == "SkipLayerNormalization"]
    assert skips and all(extract(k).kind == "skip_layernorm" for k in skips)
    assert all(len(k.inputs) >= 3 and not k.inputs[0].is_weight and not k.inputs[1].is_weight for k in skips)
    plain = [n for n in graph.nodes if n.op_type == "LayerNormalization" and n.name not in
             {k.name for k in skips}]
    assert plain and all(extract(n).kind == "layernorm" for n in plain)
