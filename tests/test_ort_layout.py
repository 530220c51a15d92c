"""onnxruntime CPU at ORT_ENABLE_ALL (its default level): npower's kernels are onnxruntime's, op by op.

The NCHWc rules (npower/runtimes/ort_layout.py) are checked against the optimised model onnxruntime
saves at ORT_ENABLE_ALL: on every zoo network and on small graphs that take each rule's branches,
the kernels npower costs (graph kernels plus the reorders it adds) have the same multiset of
signatures as the nodes onnxruntime runs (pure view ops aside): op (NCHWc ops qualified), and for
an nchwc Conv its (padded) weight shape, groups, Sum input and activation, for a ReorderOutput its
channels.
The profiler's per-kernel samples (`npower profile --optimization all`) run end to end on a tiny plan.
"""
from __future__ import annotations

import collections
import dataclasses
import importlib.util
import json
import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import linear_pack
from npower import zoo
from npower.cli import main
from npower.features import extract
from npower.features_nchwc import NCHWC, valid_macs, weight_touched
from npower.fit import current_layer
from npower.graph import Graph, Node, load_graph
from npower.kernel_map import kernel_nodes
from npower.pack import KindModels
from npower.polynomial import SparsePolynomial
from npower.predict import predict
from npower.profile.backends import KernelProfile, KernelTime
from npower.profile.cache_state import STEADY_STATE, InNetworkCacheState, base_kind, steady_kind
from npower.profile import plan
from npower.profile.build import build_model, configured_node
from npower.profile.ort_trace import costed_kernels, op_name
from npower.runtimes import RULE_SETS

needs_ort = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None,
                               reason="comparing with onnxruntime needs onnxruntime (pip install 'npower[profile]')")

ALL = RULE_SETS[("onnxruntime", "cpu", "all")]
VIEW_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Shape", "Size", "Constant",
            "ConstantOfShape", "Range"}
# onnxruntime's contrib kernels of the extended level, named by the op npower costs them as (their fusions
# are checked node by node in tests/test_fusion.py; the absorbed nodes' absence still shows here)
HOST_OF = {"FusedConv": "Conv", "FusedGemm": "Gemm", "FusedMatMul": "MatMul",
           "SkipLayerNormalization": "LayerNormalization"}


def _signature(op: str, attrs: dict, inputs: list[str], weight: tuple | None) -> tuple:
    if op == f"{NCHWC}:Conv":
        has_sum = len(inputs) > 3 and bool(inputs[3])
        return op, weight, attrs["group"], has_sum, attrs.get("activation", "")
    if op == f"{NCHWC}:ReorderOutput":
        return op, attrs["channels"], attrs.get("channels_last", 0)
    if op == f"{NCHWC}:ReorderInput":
        return op, attrs.get("channels_last", 0)
    return (HOST_OF.get(op, op),)


def executed_graph(model: onnx.ModelProto) -> onnx.GraphProto:
    """The graph onnxruntime runs at ORT_ENABLE_ALL: its optimised model, from the profiler's own trace."""
    from npower.profile.backends import OrtCpuBackend
    return OrtCpuBackend(optimization="all").trace(model.SerializeToString(), {}, lambda run: None)[1]


def onnxruntime_signatures(executed: onnx.GraphProto) -> collections.Counter:
    shapes = {init.name: tuple(init.dims) for init in executed.initializer}
    found = collections.Counter()
    for node in executed.node:
        if node.op_type not in VIEW_OPS:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
            weight = shapes.get(node.input[1]) if len(node.input) > 1 else None
            found[_signature(op_name(node.domain, node.op_type), attrs, list(node.input), weight)] += 1
    return found


def npower_signatures(model: onnx.ModelProto) -> collections.Counter:
    def names(kernel: Node) -> list[str]:
        return [t.name if t is not None else "" for t in kernel.inputs]
    kernels = [k for k in costed_kernels(load_graph(model), ALL) if extract(k).kind != "free"]
    return collections.Counter(_signature(op_name(k.domain, k.op_type), k.attrs, names(k),
                                          k.inputs[1].shape if len(k.inputs) > 1 and k.inputs[1] is not None else None)
                               for k in kernels)


@needs_ort
@pytest.mark.parametrize("name", list(zoo.NETWORKS))
def test_zoo_kernels_at_level_all_are_onnxruntimes(name):
    """Same kernels; and `validate --layers` maps each kernel onnxruntime runs to the row npower costs it in."""
    model = zoo.build(name, weights=True)
    executed = executed_graph(model)
    assert npower_signatures(model) == onnxruntime_signatures(executed)
    assert_kernels_map_to_costed_rows(model, executed)


@needs_ort
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_kernels_of_nodes_named_with_slashes_map_to_their_rows(name):
    """Keras and TF exports name nodes like `model/block_1/conv`: a blocked conv's kernel keeps that name, and
    must not fall through to the reorder that reads its output."""
    model = zoo.build(name, weights=True)
    for node in model.graph.node:
        node.name = f"{name}/block/{node.name}/op"
    assert_kernels_map_to_costed_rows(model, executed_graph(model))


def assert_kernels_map_to_costed_rows(model: onnx.ModelProto, executed: onnx.GraphProto) -> None:
    graph = load_graph(model)
    costed = {k.name for k in costed_kernels(graph, ALL) if extract(k).kind != "free"}
    ran = [n for n in executed.node if n.op_type not in VIEW_OPS]
    profile = KernelProfile([KernelTime(n.name, n.op_type, 0.0, tuple(n.input), tuple(n.output)) for n in ran], 0.0)
    fusions = ALL.kernels(graph)
    hosts = {fusions[n].host if n in fusions and fusions[n].host else n for n in kernel_nodes(profile, graph).values()}
    assert hosts == costed


def test_block_layout_on_resnet18():
    """ResNet-18 at 'all': its 20 convolutions run blocked, each residual Add (and the Relu after it) joins the
    Conv before it as its Sum input, and the only reorder is the ReorderOutput before the Flatten/Gemm head
    (the stem conv has 3 input channels, fewer than a block: it reads the NCHW input directly)."""
    found = npower_signatures(zoo.build("resnet18", weights=False))
    convs = {sig: n for sig, n in found.items() if sig[0] == f"{NCHWC}:Conv"}
    assert sum(convs.values()) == 20
    assert sum(n for sig, n in convs.items() if sig[3] and sig[4] == "Relu") == 8
    assert found[(f"{NCHWC}:ReorderOutput", 512, 0)] == 1 and found[("Add",)] == 0 and found[("Relu",)] == 0
    assert not any(sig[0] == f"{NCHWC}:ReorderInput" for sig in found)


# Small graphs, one branch of the rules each: (title, nodes, input channels, extra weights as (name, shape)).
def _conv(x: str, y: str, cout: int, cin: int, k: int = 3, group: int = 1) -> tuple[onnx.NodeProto, list]:
    node = helper.make_node("Conv", [x, f"{y}_w"], [y], kernel_shape=[k, k], pads=[k // 2] * 4, group=group)
    return node, [(f"{y}_w", [cout, cin // group, k, k])]


def _graph(*parts) -> tuple[list, list]:
    nodes, weights = [], []
    for part in parts:
        node, extra = part if isinstance(part, tuple) else (part, [])
        nodes.append(node)
        weights += extra
    return nodes, weights


def _op(op: str, inputs: list[str], output: str, **attrs) -> onnx.NodeProto:
    return helper.make_node(op, inputs, [output], **attrs)


CASES = {
    # the Sum joins the Conv of the first Add input that can take it; the Relu after it becomes its activation
    "sum_into_first_conv": _graph(_conv("x", "a", 32, 32, 1), _conv("x", "b", 32, 32, 3), _op("Add", ["a", "b"], "s"),
                                  _op("Relu", ["s"], "y")),
    "sum_skips_activated_conv": _graph(_conv("x", "a", 32, 32, 1), _op("Relu", ["a"], "r"), _conv("x", "b", 32, 32, 3),
                                       _op("Add", ["r", "b"], "y")),
    # fewer input channels than a block: the Conv reads the plain tensor (ReorderOutput of 8 channels)
    "narrow_conv_reads_plain": _graph(_conv("x", "a", 8, 32, 1), _op("Sigmoid", ["a"], "g"), _op("Mul", ["a", "g"], "q"),
                                      _conv("q", "y", 32, 8, 1)),
    # a Clip (fused at the extended level), a Sigmoid and a HardSigmoid after blocked Convs become their activations
    "epilogue_activations": _graph(_conv("x", "a", 32, 32, 1), (_op("Clip", ["a", "lo", "hi"], "c"),
                                                                [("lo", []), ("hi", [])]),
                                   _conv("c", "b", 32, 32, 3), _op("Sigmoid", ["b"], "g"),
                                   _conv("g", "d", 32, 32, 1), _op("HardSigmoid", ["d"], "y")),
    "grouped_and_depthwise": _graph(_conv("x", "a", 32, 32, 3, group=2), _conv("a", "b", 16, 32, 3, group=2),
                                    _conv("b", "c", 16, 16, 3, group=16), _conv("c", "y", 12, 16, 1)),
    "unpaddable_channels_stay_plain": _graph(_conv("x", "a", 18, 32, 1), _conv("a", "y", 18, 18, 3, group=18)),
    "concat_of_whole_blocks_only": _graph(_conv("x", "a", 32, 32, 1), _conv("x", "b", 32, 32, 3), _conv("x", "c", 24, 32, 1),
                                          _op("Concat", ["a", "b"], "ab", axis=1), _op("Concat", ["ab", "c"], "y", axis=1)),
    "batchnorm_on_blocked_becomes_conv": _graph(_conv("x", "a", 32, 32, 3), _op("Relu", ["a"], "r"),
                                                (_op("BatchNormalization", ["r", "s", "t", "m", "v"], "n"),
                                                 [(n, [32]) for n in "stmv"]), _op("Relu", ["n"], "y")),
    # a Mul by a per-channel constant of a blocked tensor: a depthwise 1x1 Conv (taking the Relu after it); by a
    # scalar, of a plain tensor, or an Add of a per-channel constant: plain
    "per_channel_mul_becomes_conv": _graph((_op("Mul", ["x", "s0"], "xs"), [("s0", [1, 32, 1, 1])]),
                                           _conv("xs", "a", 32, 32, 3), _op("Relu", ["a"], "r"),
                                           (_op("Mul", ["s1", "r"], "m"), [("s1", [32, 1, 1])]),
                                           _op("Relu", ["m"], "q"),
                                           (_op("Mul", ["q", "k"], "n"), [("k", [1])]),
                                           (_op("Add", ["n", "t"], "y"), [("t", [1, 32, 1, 1])])),
    "pools_and_elementwise": _graph(_op("MaxPool", ["x"], "p", kernel_shape=[2, 2], strides=[2, 2]),
                                    _conv("p", "a", 24, 32, 3), _op("AveragePool", ["a"], "q", kernel_shape=[2, 2]),
                                    _conv("p", "b", 32, 32, 1), _conv("p", "c", 32, 32, 3), _op("Mul", ["b", "c"], "m"),
                                    _op("Sub", ["b", "m"], "d"), _op("GlobalAveragePool", ["d"], "y")),
    "linear_resize_only": _graph(_conv("x", "a", 32, 32, 1),
                                 (_op("Resize", ["a", "", "sc"], "u", mode="linear"), [("sc", [1, 1, 2, 2])]),
                                 _conv("u", "b", 32, 32, 1),
                                 (_op("Resize", ["b", "", "sc2"], "y", mode="nearest"), [("sc2", [1, 1, 2, 2])])),
    # channels-last (x read as NHWC: 16 channels): the Transposes to and from channels-last around blocked kernels
    # are done by their reorders; a Transpose two kernels read, of a plain tensor, or of another permutation stays
    "transposes_done_by_reorders": _graph(_op("Transpose", ["x"], "t", perm=[0, 3, 1, 2]),
                                          _conv("t", "a", 16, 16, 7, group=16),
                                          _op("Transpose", ["a"], "n", perm=[0, 2, 3, 1]),
                                          (_op("LayerNormalization", ["n", "g", "b"], "l", axis=-1),
                                           [("g", [16]), ("b", [16])]),
                                          _op("Transpose", ["l"], "u", perm=[0, 3, 1, 2]), _conv("u", "c", 8, 16, 1),
                                          _op("Transpose", ["c"], "y", perm=[0, 2, 3, 1])),
    "transposes_that_stay": _graph(_op("Transpose", ["x"], "t", perm=[0, 3, 1, 2]), _conv("t", "a", 32, 16, 1),
                                   _conv("t", "b", 16, 16, 3), _op("Transpose", ["x"], "p", perm=[0, 2, 3, 1]),
                                   _op("Relu", ["p"], "r"), _op("Transpose", ["a"], "q", perm=[0, 1, 3, 2]),
                                   _op("Transpose", ["b"], "n", perm=[0, 2, 3, 1]), _op("Softmax", ["b"], "s", axis=1)),
}


def case_model(name: str) -> onnx.ModelProto:
    nodes, weights = CASES[name]
    rng = np.random.default_rng(0)
    initializers = [numpy_helper.from_array(np.array(shape, np.float32) if name.startswith("sc") else
                                            rng.uniform(0.5, 1.5, shape).astype(np.float32), name)
                    for name, shape in weights]
    for node in nodes:
        node.name = node.name or f"{node.op_type}:{node.output[0]}"  # the rows validate --layers maps kernels to
    readers = {i for n in nodes for i in n.input}
    outputs = [o for n in nodes for o in n.output if o not in readers]
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 16, 16])],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@needs_ort
@pytest.mark.parametrize("name", list(CASES))
def test_layout_rules_on_small_graphs_are_onnxruntimes(name):
    model = case_model(name)
    executed = executed_graph(model)
    assert npower_signatures(model) == onnxruntime_signatures(executed)
    assert_kernels_map_to_costed_rows(model, executed)


def test_channels_last_reorders_read_channels_from_the_last_axis():
    graph = load_graph(case_model("transposes_done_by_reorders"))
    kernels = {k.name: k for k in costed_kernels(graph, ALL)}
    assert "t" not in {k.outputs[0].name for k in kernels.values() if k.op_type == "Transpose"}
    into, out_of = kernels["ReorderInput:x"], kernels["ReorderOutput:n"]
    assert (into.attrs["channels_last"], out_of.attrs["channels_last"]) == (1, 1)
    for kernel in (into, out_of):
        layer = extract(kernel)
        assert (layer.features["channels"], layer.features["spatial"]) == (16, 32 * 16), kernel.name


def test_a_blocked_convs_activation_other_than_relu_is_costed_as_a_steady_pass_over_its_output():
    """A blocked Conv applies a Relu in its kernel (free) and a Clip, Sigmoid or HardSigmoid as a pass over the
    output it just wrote: that pass keeps its cost, from the pack's steady variant of the activation's kind where
    the pack has one and the layer lies inside its samples; else from the kind's own model."""
    graph = load_graph(case_model("epilogue_activations"))
    fusions = ALL.kernels(graph)
    costed = {name: (f.host, f.costs) for name, f in fusions.items() if f.host}
    assert costed == {"Clip:c": ("Conv:a", True), "Sigmoid:g": ("Conv:b", True), "HardSigmoid:y": ("Conv:d", True)}
    relu = load_graph(case_model("sum_into_first_conv"))
    assert {(f.host, f.costs) for f in ALL.kernels(relu).values() if f.host} == {("Conv:a", False)}
    pack = linear_pack()
    pack.runtime = dataclasses.replace(pack.runtime, optimization="all")
    pack.models["clip"] = KindModels(SparsePolynomial("linear", "ms", 0.0, [(1e-5, {"elements": 1})]))
    pack.models[steady_kind("clip")] = KindModels(SparsePolynomial("linear", "ms", 0.0, [(2e-6, {"elements": 1})]))
    elements = 32 * 16 * 16
    for covered, rate in (([0, 1e6], 2e-6), ([1e6, 2e6], 1e-5)):
        pack.provenance["sampled_ranges"] = {steady_kind("clip"): {"elements": covered}}
        clip = next(row for row in predict(graph, pack) if row.name == "Clip:c")
        assert (clip.source, clip.ms, clip.note) == ("fitted", pytest.approx(rate * elements),
                                                      "runs inside Conv:a's kernel")


@needs_ort
def test_profile_at_level_all_samples_each_kernel(tmp_path):
    """`npower profile --optimization all` on a tiny plan: a Conv sample becomes rows of its blocked kernel and
    its reorders, each refitted by `npower fit` to the kind it was recorded as and timed in the cache state it
    meets in a network; none fails the rules check."""
    samples = tmp_path / "all.jsonl"
    assert main(["profile", "-o", str(samples), "--optimization", "all", "--scale", "0.01", "--kinds",
                 "conv,maxpool,global_avgpool,relu", "--max-macs", "2e7", "--min-runs", "3", "--min-seconds", "0.01",
                 "--max-seconds", "0.05", "--quiet"]) == 0
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    assert rows[0]["type"] == "header" and rows[0]["runtime"]["graph_optimization"] == "all"
    assert rows[0]["cache_state"] == InNetworkCacheState.description and rows[0]["steady_state"] == STEADY_STATE
    assert 0 < rows[0]["trace_overhead_ms"] < 0.05  # measured: about 1 us per traced kernel
    kernels = rows[1:]
    assert kernels and not [row["error"] for row in kernels if row.get("error")]
    kinds = collections.Counter(row["kind"] for row in kernels)
    assert kinds["reorder_output"] >= 1 and any(kind.startswith("nchwc_conv") for kind in kinds), kinds
    for row in kernels:
        assert row["median_ms"] > 0 and base_kind(current_layer(row)[0]) == row["kind"]
        # only convs read weights; the reorders at the graph's edges are timed hot, other kernels in a steady loop too
        expected = "evicted" if "conv" in row["kind"] else "hot" if row["kind"].startswith("reorder") else "steady"
        assert row["cache_state"] == expected, row["kind"]
        assert row["median_ms"] == row["states"][row["cache_state"]]["median_ms"]
        assert ("steady" in row["states"]) is (expected == "steady") and "hot" in row["states"]
    by_key = collections.defaultdict(set)
    for row in kernels:
        by_key[row["key"]].add(row["kernel"])
    assert any({f"{NCHWC}:Conv", f"{NCHWC}:ReorderOutput"} <= ops for ops in by_key.values())


def test_first_conv_samples_read_their_input_from_memory_and_fit_a_kind_of_their_own(monkeypatch):
    """A `first_conv` draw reads a graph input: its evicted runs do not read the input back (a network's first conv
    finds it in memory), and only the kernel reading it is marked and fitted as the graph-input variant."""
    from npower.profile import ort_trace
    from npower.profile.backends import OrtCpuBackend, TimingPolicy

    configs = [config for _, config in plan.generate(["first_conv"], scale=0.2, seed=3)]
    for config in configs:  # convs over 1-4 channels: onnxruntime reads their NCHW input into blocked outputs
        kernels = [extract(k).kind for k in costed_kernels(load_graph(build_model(config, values=False)), ALL)]
        assert config["graph_input"] and "nchwc_conv_nchw" in kernels and "reorder_input" not in kernels, config
    config = configs[0]
    read_back = []
    state = InNetworkCacheState(evict_bytes=1 << 12)
    real_alternate = state.alternate
    monkeypatch.setattr(state, "alternate", lambda run, inputs: read_back.append(set(inputs)) or
                        real_alternate(run, inputs))
    monkeypatch.setattr(ort_trace, "in_network_cache_state", lambda: state)
    config["inputs"][0]["shape"] = [1, config["inputs"][0]["shape"][1], 32, 32]  # a small image: quick to time
    backend = OrtCpuBackend(optimization="all", policy=TimingPolicy(min_runs=2, min_seconds=0.0, max_seconds=0.05))
    rows = ort_trace.kernel_rows(backend, config, 0, {"key": "k", "kind": "conv"})
    assert read_back == [set()]
    kinds = {row["kernel"]: current_layer(row)[0] for row in rows}
    assert kinds == {f"{NCHWC}:Conv": "nchwc_conv_nchw@graph_input", f"{NCHWC}:ReorderOutput": "reorder_output"}
    del config["graph_input"]  # the same conv inside a network reads its input back from cache
    read_back.clear()
    rows = ort_trace.kernel_rows(backend, config, 0, {"key": "k", "kind": "conv"})
    assert read_back == [{"x0"}] and not any(row.get("graph_input") for row in rows)


def test_backends_that_trace_no_kernels_skip_graph_input_and_wrapped_configs(tmp_path):
    """At the extended level onnxruntime runs a single-node graph as one kernel and the profiler times it as a
    whole, reading its inputs back: a `first_conv` config would be an ordinary conv sample, and a wrapped one
    (`mid_graph_reorders`) would add its Negs' time to the conv's, so both are skipped."""
    samples = tmp_path / "extended.jsonl"
    assert main(["profile", "-o", str(samples), "--optimization", "extended", "--scale", "0.02", "--kinds",
                 "first_conv,mid_graph_reorders,relu", "--min-runs", "3", "--min-seconds", "0.01",
                 "--max-seconds", "0.05", "--quiet"]) == 0
    rows = [json.loads(line) for line in samples.read_text().splitlines()[1:]]
    assert rows and {row["kind"] for row in rows} == {"relu"}


def test_packs_list_and_analyze_header_name_the_level(tmp_path, capsys):
    pack = linear_pack("levelpack")
    pack.runtime = dataclasses.replace(pack.runtime, optimization="all")
    pack.save(tmp_path / "levelpack.yaml")
    assert main(["packs", "--profiles", str(tmp_path)]) == 0
    assert "CPUExecutionProvider (all)" in capsys.readouterr().out
    model = tmp_path / "r18.onnx"
    onnx.save(zoo.build("resnet18", weights=False), str(model))
    assert main(["analyze", str(model), "--gpu", "levelpack", "--profiles", str(tmp_path)]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "onnxruntime 0 CPUExecutionProvider (all) x1 fp32" in header


@needs_ort
def test_mid_graph_reorders_are_sampled_between_two_plain_kernels(tmp_path):
    """A wrapped config runs Neg -> ReorderInput -> blocked kernel -> ReorderOutput -> Neg: the rules predict the
    five kernels onnxruntime runs, the Negs are timed but not sampled, and the other rows say they were timed
    inside a graph; features come from the configured node, not from the Neg before it."""
    config = next(config for _, config in plan.generate(["mid_graph_reorders"], scale=0.01, seed=1))
    assert [node.op_type for node in load_graph(build_model(config, values=False)).nodes] == ["Neg", "Conv", "Neg"]
    assert configured_node(config).op_type == "Conv" and extract(configured_node(config)).kind == "conv_dw"
    samples = tmp_path / "mid.jsonl"
    assert main(["profile", "-o", str(samples), "--optimization", "all", "--scale", "0.01", "--kinds",
                 "mid_graph_reorders", "--min-runs", "3", "--min-seconds", "0.01", "--max-seconds", "0.05",
                 "--quiet"]) == 0
    rows = [json.loads(line) for line in samples.read_text().splitlines()][1:]
    assert not [row["error"] for row in rows if row.get("error")]
    kinds = collections.Counter(row["kind"] for row in rows)  # one of each per config
    assert set(kinds) == {"nchwc_conv_dw_1x1", "reorder_input", "reorder_output"} and len(set(kinds.values())) == 1
    assert all(row["mid_graph"] and base_kind(current_layer(row)[0]) == row["kind"] for row in rows)


def _nchwc_conv(x: tuple, w: tuple, pads: list[int], strides: list[int], group: int = 1) -> Node:
    """A single nchwc Conv node as npower loads it."""
    out = [(x[i + 2] + pads[i] + pads[i + 2] - w[i + 2]) // strides[i] + 1 for i in range(2)]
    node = helper.make_node("Conv", ["x", "w"], ["y"], domain=NCHWC, kernel_shape=list(w[2:]), pads=pads,
                            strides=strides, dilations=[1, 1], group=group)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [x[0], w[0], *out])],
                              [helper.make_tensor("w", TensorProto.FLOAT, w, np.zeros(w, np.float32).ravel())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(NCHWC, 1)])
    return load_graph(model).nodes[0]


def test_a_1x1_depthwise_conv_has_a_kind_of_its_own_that_older_packs_cost_as_depthwise():
    """A 1x1 depthwise conv (a BatchNormalization in a blocked region) is a stream over the tensor, not a window:
    `nchwc_conv_dw_1x1`, a 3x3 one `nchwc_conv_dw`. A pack fitted before the split has no model of the 1x1 kind
    and costs it with the depthwise model; a pack with one uses it."""
    scale = _nchwc_conv((1, 64, 28, 28), (64, 1, 1, 1), [0, 0, 0, 0], [1, 1], group=64)
    window = _nchwc_conv((1, 64, 28, 28), (64, 1, 3, 3), [1, 1, 1, 1], [1, 1], group=64)
    assert (extract(scale).kind, extract(window).kind) == ("nchwc_conv_dw_1x1", "nchwc_conv_dw")
    graph = Graph("g", 17, [scale, window], [])
    pack = linear_pack()
    pack.models["nchwc_conv_dw"] = KindModels(SparsePolynomial("linear", "ms", 0.0, [(1e-6, {"out_elems": 1})]))
    rows = predict(graph, pack, fusion=False)
    assert [(row.kind, row.source, row.ms) for row in rows] == [
        ("nchwc_conv_dw_1x1", "fitted", pytest.approx(1e-6 * 64 * 28 * 28)),
        ("nchwc_conv_dw", "fitted", pytest.approx(1e-6 * 64 * 28 * 28))]
    pack.models["nchwc_conv_dw_1x1"] = KindModels(SparsePolynomial("linear", "ms", 0.0, [(3e-6, {"out_elems": 1})]))
    assert [row.ms for row in predict(graph, pack, fusion=False)] == pytest.approx([3e-6 * 64 * 28 * 28,
                                                                                   1e-6 * 64 * 28 * 28])


@pytest.mark.parametrize("x, w, pads, strides, taps, touched", [
    # 3x3, pad 1 over a 1-pixel-high map: only the middle kernel row reads it (1 of 3 rows);
    # along the width, 128 outputs x 3 taps less the 2 that fall on the left and right padding
    ((11, 384, 1, 128), (64, 384, 3, 3), [1, 1, 1, 1], [1, 1], 1 * (3 * 128 - 2), 1 * 3),
    # 3x3, pad 1, stride 2 over 7x7 -> 4x4 outputs reading input rows -1..7: taps on -1 (output 0) and on 7
    # (output 3, tap 2) fall on padding: 12 - 2 = 10 per axis; each tap reads the input for some output
    ((1, 32, 7, 7), (32, 32, 3, 3), [1, 1, 1, 1], [2, 2], 10 * 10, 9),
    # no padding: every tap reads the input (7 x 7 outputs x 9 taps)
    ((2, 16, 9, 9), (48, 16, 3, 3), [0, 0, 0, 0], [1, 1], 49 * 9, 9),
    # 11x11, pad 5 over 2x2 -> 2x2 outputs: output 0 reads through taps 5 and 6, output 1 through 4 and 5,
    # so 3 of 11 taps per axis are ever loaded (9 of 121)
    ((1, 512, 2, 2), (64, 512, 11, 11), [5, 5, 5, 5], [1, 1], 4 * 4, 3 * 3),
])
def test_valid_macs_and_touched_weights_leave_out_the_taps_on_the_padding(x, w, pads, strides, taps, touched):
    conv = _nchwc_conv(x, w, pads, strides)
    assert valid_macs(conv) == x[0] * w[0] * w[1] * taps
    assert weight_touched(conv) == w[0] * w[1] * touched
    features = extract(conv).features
    assert (features["valid_macs"], features["weight_touched"]) == (valid_macs(conv), weight_touched(conv))


@pytest.mark.parametrize("x, w, pads, strides, expected", [
    # 3x3, pad 1, 5x14 -> 5x14: outputs 0 and 13 of a row reach the padding (2 taps each), the 12 between are two
    # groups of 6; the 5 output rows read 2+3+3+3+2 = 13 kernel rows; 80 channels = 5 blocks: sets of 4 and 1.
    # The weights' first read comes from memory, the 13 - 3 other kernel-row reads from cache; the second set reads
    # the input again; the second input block (32 channels) reads the output back
    ((1, 32, 5, 14), (80, 32, 3, 3), [1, 1, 1, 1], [1, 1],
     {"main_steps": 13 * 32 * 6 * 2, "main_fmas": 13 * 32 * 6 * 5, "rest_steps": 0, "rest_fmas": 0,
      "padded_steps": 13 * 32 * 4 * 2, "padded_fmas": 13 * 32 * 4 * 5,
      "weight_reads_near": (13 - 3) * 4 * 80 * 32 * 3, "weight_reads_mid": 0, "weight_reads_far": 4 * 80 * 32 * 9,
      "input_read": 4 * 32 * 5 * 14, "input_rereads_near": 4 * 32 * 5 * 14, "output_rereads_near": 4 * 80 * 5 * 14}),
    # NCHW input (3 channels, read unblocked), 3x3 stride 2 over 9x20 -> 4x9, 2 images: one group of 6 and 3
    # remaining outputs per row; 2 x 4 rows x 3 kernel rows; a 3-row kernel at stride 2 reads every input row;
    # one filter set and one input pass: nothing read again
    ((2, 3, 9, 20), (16, 3, 3, 3), [0, 0, 0, 0], [2, 2],
     {"main_steps": 24 * 3 * 3, "main_fmas": 24 * 3 * 3, "rest_steps": 24 * 3 * 9, "rest_fmas": 24 * 3 * 9,
      "padded_steps": 0, "padded_fmas": 0, "weight_reads_near": 24 * 4 * 16 * 3 * 3 - 4 * 16 * 3 * 9,
      "weight_reads_mid": 0, "weight_reads_far": 4 * 16 * 3 * 9, "input_read": 4 * 2 * 3 * 9 * 20,
      "input_rereads_near": 0, "output_rereads_near": 0}),
    # 3x3 over 256 -> 512 channels, 3 images: the weights (4.5 MiB) come from memory for the first image and from
    # the shared cache for the next two; each image's 3 output rows read 2 + 3 + 2 kernel rows
    ((3, 256, 3, 3), (512, 256, 3, 3), [1, 1, 1, 1], [1, 1],
     {"weight_reads_near": (21 - 9) * 4 * 512 * 256 * 3, "weight_reads_mid": 2 * 4 * 512 * 256 * 9,
      "weight_reads_far": 4 * 512 * 256 * 9}),
    # a pointwise conv at stride 1 sums 128 input channels per pass over the output (512 channels: 3 passes back);
    # at stride 2 it finishes one output row at a time
    ((1, 512, 8, 8), (64, 512, 1, 1), [0, 0, 0, 0], [1, 1], {"output_rereads_near": 3 * 4 * 64 * 8 * 8}),
    ((1, 512, 8, 8), (64, 512, 1, 1), [0, 0, 0, 0], [2, 2], {"output_rereads_near": 0}),
    # the first read of the input, by where the whole input fits (the layer before wrote all of it): 384 KiB near
    # (up to 1 MiB); 12.8 MB mid (up to 16 MiB); 19.3 MB (6.4 MB per image) far
    ((3, 512, 8, 8), (16, 512, 1, 1), [0, 0, 0, 0], [1, 1],
     {"input_read_near": 3 * 4 * 512 * 8 * 8, "input_read_mid": 0, "input_read_far": 0}),
    ((2, 512, 56, 56), (16, 512, 1, 1), [0, 0, 0, 0], [1, 1],
     {"input_read_near": 0, "input_read_mid": 2 * 4 * 512 * 56 * 56, "input_read_far": 0}),
    ((3, 512, 56, 56), (16, 512, 1, 1), [0, 0, 0, 0], [1, 1],
     {"input_read_near": 0, "input_read_mid": 0, "input_read_far": 3 * 4 * 512 * 56 * 56}),
])
def test_kernel_steps_follow_mlas_blocked_kernel(x, w, pads, strides, expected):
    features = extract(_nchwc_conv(x, w, pads, strides)).features
    assert {name: features[name] for name in expected} == expected


def test_a_grouped_convs_filter_sets_and_input_stay_in_its_group():
    # 16 groups of 32 output channels over 512 input channels each: one filter set per group (2 blocks), so no
    # group reads its input twice; every group's 32 input blocks but the first read its 32 outputs back
    features = extract(_nchwc_conv((1, 8192, 3, 3), (512, 512, 3, 3), [1, 1, 1, 1], [1, 1], group=16)).features
    assert features["input_read"] == 4 * 8192 * 3 * 3
    assert features["input_rereads_near"] + features["input_rereads_mid"] + features["input_rereads_far"] == 0
    assert features["output_rereads_near"] == 31 * 4 * 512 * 3 * 3
    assert (features["weight_reads_near"], features["weight_reads_far"]) == ((7 - 3) * 4 * 512 * 512 * 3,
                                                                              4 * 512 * 512 * 9)




def _few_output_blocks(configs: list[dict]) -> bool:
    """Outputs of 8-160 channels, some in a filter set of fewer than 4 blocks (under 64 channels)."""
    outputs = [config["inputs"][1]["shape"][0] for config in configs]
    return max(outputs) <= 160 and min(outputs) < 64 and all(c["inputs"][1]["shape"][1] % 16 == 0 for c in configs)


def _wide_kernels_both_strides(configs: list[dict]) -> bool:
    """5x5 and 7x7 kernels only, at stride 1 and at stride 2."""
    return {c["inputs"][1]["shape"][2] for c in configs} <= {5, 7} and \
        {c["attrs"]["strides"][0] for c in configs} == {1, 2}


def _blocked_channel_scales(configs: list[dict]) -> bool:
    """Channels in blocks of 16, each with one 1x1 filter tap, with and without a shift."""
    return all(c["inputs"][0]["shape"][1] % 16 == 0 and c["inputs"][1]["shape"] == [c["attrs"]["group"], 1, 1, 1]
               for c in configs) and {len(c["inputs"]) for c in configs} == {2, 3}


def _mobile_stages(configs: list[dict]) -> bool:
    """Mobile networks' feature maps (7-80 pixels a side) at batch 1-8, channels in blocks of 16, all three kernels."""
    shapes = [config["inputs"][0]["shape"] for config in configs]
    return all(n <= 8 and c % 16 == 0 and h == w and h in plan.MOBILE_SIDES for n, c, h, w in shapes) and \
        {c["inputs"][1]["shape"][2] for c in configs} == {3, 5, 7}


@pytest.mark.parametrize("draw, blocked_kind, count, covers", [
    ("narrow_pointwise", "nchwc_conv_1x1", 20, _few_output_blocks),
    ("wide_depthwise", "nchwc_conv_dw", 12, _wide_kernels_both_strides),
    ("mobile_depthwise", "nchwc_conv_dw", 24, _mobile_stages),
    ("channel_scale", "nchwc_conv_dw_1x1", 24, _blocked_channel_scales)])
def test_narrow_pointwise_and_depthwise_draws_are_the_blocked_kinds_they_cover(draw, blocked_kind, count, covers):
    configs = [config for kind, config in plan.generate([draw], scale=0.2, seed=1)]
    assert len(configs) == count and covers(configs)
    for config in configs:
        kinds = [extract(k).kind for k in costed_kernels(load_graph(build_model(config, values=False)), ALL)]
        assert [k for k in kinds if k not in ("free", "reorder_input", "reorder_output")] == [blocked_kind], config


def test_channels_last_broadcast_draws_are_binary_ops_with_a_run_per_pixel_or_token():
    configs = [config for _, config in plan.generate(["channels_last_broadcast"], scale=0.25, seed=1)]
    assert len(configs) == 30 and {c["op"] for c in configs} == {"Add", "Mul", "Sub", "Div"}
    for config in configs:
        shape = config["inputs"][0]["shape"]
        layer = extract(load_graph(build_model(config, values=False)).nodes[0])
        runs = math.prod(shape[:-1]) if shape[-1] > 1 else 1  # a one-channel operand is a scalar
        assert layer.kind == config["op"].lower() and layer.features["spans"] == runs, config


def test_decoder_upsampling_draws_double_the_side_with_a_plain_transposed_conv():
    configs = [config for _, config in plan.generate(["decoder_upsampling"], scale=0.25, seed=1)]
    assert len(configs) == 30 and {tuple(c["attrs"]["kernel_shape"]) for c in configs} == {(2, 2), (3, 3), (4, 4)}
    for config in configs:
        kernels = [k for k in costed_kernels(load_graph(build_model(config, values=False)), ALL)
                   if extract(k).kind != "free"]
        (kernel,) = kernels
        assert extract(kernel).kind == "conv_transpose", config
        assert kernel.outputs[0].shape[2:] == tuple(2 * side for side in kernel.inputs[0].shape[2:]), config


@pytest.mark.parametrize("draw, plain_kind", [("odd_pointwise", "conv_1x1"), ("odd_conv", "conv")])
def test_odd_channel_draws_are_convs_the_default_level_leaves_plain(draw, plain_kind):
    configs = [config for kind, config in plan.generate([draw], scale=0.2, seed=1)]
    assert len(configs) == 20
    for config in configs:
        kernels = [k for k in costed_kernels(load_graph(build_model(config, values=False)), ALL)
                   if extract(k).kind != "free"]
        assert [extract(k).kind for k in kernels] == [plain_kind], config
