"""Fusion rules agree with what onnxruntime actually executes."""
from __future__ import annotations

import collections

import onnx
import pytest

from npower import zoo
from npower.features import extract
from npower.runtimes import RULE_SETS
from npower.graph import load_graph

ort = pytest.importorskip("onnxruntime")

CPU_EXTENDED = RULE_SETS[("onnxruntime", "cpu", "extended")]
VIEW_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Shape", "Constant"}


def executed_kernels(model, tmp_path) -> int:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    nodes = onnx.load(str(tmp_path / "opt.onnx")).graph.node
    return sum(1 for node in nodes if node.op_type not in VIEW_OPS)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "googlenet", "alexnet", "efficientnet_b0", "vit_small"])
def test_costed_nodes_match_onnxruntime_kernels(name, tmp_path):
    model = zoo.build(name, weights=True)
    graph = load_graph(model)
    fused = CPU_EXTENDED.kernels(graph)
    costed = [n for n in graph.nodes if extract(n).kind != "free" and fused.get(n.name, None) is None
              or (fused.get(n.name) is not None and fused[n.name].host is None
                  and not fused[n.name].free)]  # kernels, not passes inside them
    assert len(costed) == executed_kernels(model, tmp_path)


def _kernel_ops(graph) -> collections.Counter:
    return collections.Counter(f.kernel.op_type for f in CPU_EXTENDED.kernels(graph).values() if f.kernel is not None)


def test_fusion_kinds():
    graph = load_graph(zoo.build("efficientnet_b0", weights=False))
    assert _kernel_ops(graph)["QuickGelu"] == 49
    vit = load_graph(zoo.build("vit_small", weights=False))
    assert _kernel_ops(vit)["Gelu"] == 6
