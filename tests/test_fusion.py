"""Fusion rules agree with what onnxruntime actually executes."""
from __future__ import annotations

import collections

import onnx
import pytest

from npower import zoo
from npower.features import extract
from npower.fusion import find_fusions
from npower.graph import load_graph

ort = pytest.importorskip("onnxruntime")

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
    fused = find_fusions(graph)
    costed = [n for n in graph.nodes if extract(n).kind != "free" and fused.get(n.name, None) is None
              or (fused.get(n.name) is not None and fused[n.name].host is None)]  # kernels, not passes inside them
    assert len(costed) == executed_kernels(model, tmp_path)


def test_fusion_kinds():
    graph = load_graph(zoo.build("efficientnet_b0", weights=False))
    kinds = collections.Counter(f.kind for f in find_fusions(graph).values() if f.kind)
    assert kinds["quickgelu"] == 49
    vit = load_graph(zoo.build("vit_small", weights=False))
    assert collections.Counter(f.kind for f in find_fusions(vit).values() if f.kind)["gelu"] == 6
