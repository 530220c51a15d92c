"""PyTorch-eager kernel rules: small graphs, and BERT-Large / GPT-2 Large checked against the per-node labels."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from onnx import TensorProto, helper

from conftest import need_shared
from npower.features import extract
from npower.graph import load_graph
from npower.labels import EXPORTED_AS, kernel_categories, read_label
from npower.runtimes import RULE_SETS

TORCH = RULE_SETS[("torch", "cuda", "eager")]
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _model(nodes, inputs, weights=(), consts=()):
    """nodes: helper nodes; inputs: [(name, shape)]; weights: [(name, shape)] shape-only; consts: [TensorProto]."""
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)],
        [TensorProto(name=n, data_type=TensorProto.FLOAT, dims=s) for n, s in weights] + list(consts))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)


def _kernels(model):
    """Costed node name -> kind of the kernel it runs (merged, free and view nodes left out)."""
    graph = load_graph(model)
    found = TORCH.kernels(graph)
    out = {}
    for node in graph.nodes:
        fusion = found.get(node.name)
        if fusion is not None and (fusion.free or fusion.host is not None):
            continue
        layer = extract(fusion.kernel if fusion is not None and fusion.kernel is not None else node)
        if layer.kind != "free":
            out[node.name] = layer
    return out


def test_linear_on_3d_input_is_one_gemm_with_bias_over_flattened_rows():
    model = _model([helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
                    helper.make_node("Add", ["h", "b"], ["y"], name="bias")],
                   [("x", [8, 512, 1024])], [("w", [1024, 4096]), ("b", [4096])])
    kernels = _kernels(model)
    assert list(kernels) == ["mm"]
    assert kernels["mm"].kind == "gemm"
    assert kernels["mm"].features["m"] == 8 * 512 and kernels["mm"].features["has_bias"] == 1


def test_linear_without_bias_reads_transposed_weight_view():
    model = _model([helper.make_node("Transpose", ["w"], ["wt"], name="t", perm=[1, 0]),
                    helper.make_node("MatMul", ["x", "wt"], ["y"], name="lm_head")],
                   [("x", [4, 1024, 1280])], [("w", [50257, 1280])])
    kernels = _kernels(model)
    assert list(kernels) == ["lm_head"]
    assert kernels["lm_head"].kind == "gemm" and kernels["lm_head"].features["n"] == 50257
    assert kernels["lm_head"].features["has_bias"] == 0


def test_permute_is_a_view_unless_a_reshape_copies_it():
    model = _model([helper.make_node("Transpose", ["a"], ["at"], name="view_perm", perm=[0, 2, 1, 3]),
                    helper.make_node("Transpose", ["b"], ["bt"], name="view_kt", perm=[0, 2, 3, 1]),
                    helper.make_node("MatMul", ["at", "bt"], ["s"], name="scores"),
                    helper.make_node("Transpose", ["s"], ["st"], name="contiguous", perm=[0, 2, 1, 3]),
                    helper.make_node("Reshape", ["st", "shape"], ["y"], name="view")],
                   [("a", [2, 64, 4, 16]), ("b", [2, 64, 4, 16])],
                   consts=[helper.make_tensor("shape", TensorProto.INT64, [3], [2, 64, 256])])
    assert sorted(_kernels(model)) == ["contiguous", "scores"]


def test_erf_gelu_is_one_kernel_and_tanh_gelu_is_eight():
    def scalar(name, value):
        return helper.make_tensor(name, TensorProto.FLOAT, [], [value])
    erf = [helper.make_node("Div", ["x", "r2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
           helper.make_node("Add", ["e", "one"], ["p"]), helper.make_node("Mul", ["x", "p"], ["m"]),
           helper.make_node("Mul", ["m", "half"], ["y"])]
    consts = [scalar("r2", 1.4142), scalar("one", 1.0), scalar("half", 0.5), scalar("c", 0.044715),
              scalar("three", 3.0), scalar("k", 0.7978)]
    model = _model(erf, [("x", [4, 1024, 5120])], consts=consts)
    assert [k.kind for k in _kernels(model).values()] == ["gelu"]
    gelu_new = [helper.make_node("Mul", ["x", "half"], ["h"]), helper.make_node("Pow", ["x", "three"], ["p"]),
                helper.make_node("Mul", ["p", "c"], ["pc"]), helper.make_node("Add", ["x", "pc"], ["s"]),
                helper.make_node("Mul", ["s", "k"], ["sk"]), helper.make_node("Tanh", ["sk"], ["t"]),
                helper.make_node("Add", ["t", "one"], ["t1"]), helper.make_node("Mul", ["h", "t1"], ["y"])]
    assert len(_kernels(_model(gelu_new, [("x", [4, 1024, 5120])], consts=consts))) == 8


def test_select_and_shape_arithmetic_are_free_embedding_lookups_are_kernels():
    int64 = TensorProto.INT64
    nodes = [helper.make_node("Gather", ["wpe", "pos"], ["pe"], name="position_embedding"),
             helper.make_node("Add", ["x", "pe"], ["h"], name="add"),
             helper.make_node("Shape", ["h"], ["shape"], name="shape"),
             helper.make_node("Gather", ["shape", "zero"], ["batch"], name="batch_size"),
             helper.make_node("Gather", ["h", "zero"], ["y"], name="select", axis=1)]
    model = _model(nodes, [("x", [8, 512, 1024])], [("wpe", [512, 1024])],
                   consts=[helper.make_tensor("pos", int64, [1, 512], list(range(512))),
                           helper.make_tensor("zero", int64, [], [0])])
    assert sorted(_kernels(model)) == ["add", "position_embedding"]


# --- BERT-Large and GPT-2 Large against the NeuSight per-node labels --------------------------------------------
# Kernel counts derived by hand from models/*.json. Only kernels over at least batch x seqlen x 64 elements are
# counted (the activations), and in the export only those that depend on input_ids' values or read a parameter
# matrix (embedding tables): this leaves out the attention-mask set-up (a few kernels built from shapes alone,
# which differ between transformers versions) and BERT's pooler/classifier on (batch, 1024).
# BERT-Large, 24 layers: per layer 6 linear (query, key, value, attention output, intermediate, output), 2 bmm
# (scores, context), 2 LayerNorm, 1 softmax, 1 GELU (nn.GELU), 1 contiguous copy (permute -> view), 3 tensor
# adds (mask + 2 residuals), 1 scaling by 1/sqrt(64); outside: 3 embedding lookups, 2 adds summing them, 1 LayerNorm.
BERT = {"linear": 6 * 24, "bmm": 2 * 24, "layernorm": 2 * 24 + 1, "softmax": 24, "gelu": 24, "copy": 24,
        "add": 3 * 24 + 2, "divu": 24, "embedding": 3}
# GPT-2 Large, 36 layers: per layer 4 linear (c_attn, attn c_proj, c_fc, mlp c_proj; Conv1D = addmm), 2 bmm,
# 2 LayerNorm, 1 softmax, 1 scaling (/ sqrt(64)), 1 causal mask (torch.where), 1 contiguous copy, 2 residual
# adds, and gelu_new = 0.5*x (mulu), x**3 (powu), 0.044715*x^3 (mulu), x + . (add), sqrt(2/pi)*. (mulu),
# tanh, 1 + . (addu), . * . (mul); outside: 2 embedding lookups, 1 add, final LayerNorm, lm_head (linear).
GPT2 = {"linear": 4 * 36 + 1, "bmm": 2 * 36, "layernorm": 2 * 36 + 1, "softmax": 36, "divu": 36, "where": 36,
        "copy": 36, "add": 3 * 36 + 1, "mulu": 3 * 36, "powu": 36, "tanh": 36, "addu": 36, "mul": 36, "embedding": 2}
CASES = [("bert_large", "Tesla_V100-PCIE-32GB/bert_large-inf-512-8", 8, 512, BERT),
         ("gpt2_large", "Tesla_V100-PCIE-32GB/gpt2_large-inf-1024-4", 4, 1024, GPT2)]


def _exported(expected: dict[str, int]) -> Counter:
    out: Counter = Counter()
    for category, count in expected.items():
        out[EXPORTED_AS.get(category, category)] += count
    return out


@pytest.mark.parametrize("model,label,batch,seqlen,expected", CASES, ids=[c[0] for c in CASES])
def test_onnx_kernels_match_hand_derived_counts(model, label, batch, seqlen, expected):
    graph = load_graph(EXAMPLES / f"{model}.onnx", batch=batch)
    data = {t.name for t in graph.inputs}
    counted_nodes = set()
    for node in graph.nodes:  # topological: a node depends on the input's values through a non-Shape input
        reads_data = node.op_type != "Shape" and any(t is not None and t.name in data for t in node.inputs)
        reads_table = any(t is not None and t.is_weight and len(t.shape) >= 2 for t in node.inputs)
        if reads_data:
            data.update(t.name for t in node.outputs)
        if (reads_data or reads_table) and node.outputs[0].elements >= batch * seqlen * 64:
            counted_nodes.add(node.name)
    categories = kernel_categories(graph, TORCH.kernels(graph))
    counted = Counter(c for name, c in categories.items() if name in counted_nodes)
    assert counted == _exported(expected)


@pytest.mark.parametrize("model,label,batch,seqlen,expected", CASES, ids=[c[0] for c in CASES])
def test_label_kernels_match_hand_derived_counts(model, label, batch, seqlen, expected):
    path = need_shared("data", "neusight", "labels") / f"{label}.json"
    found = read_label(path)
    counted: Counter = Counter()
    for node in found.nodes:
        if node.category not in ("free", "view", "python") and node.elements >= batch * seqlen * 64:
            counted[node.category] += found.num_layer if node.in_layer else 1
    assert counted == Counter(expected)
