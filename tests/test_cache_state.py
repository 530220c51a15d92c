"""The profiler's in-network cache states: cache size from sysfs, the alternating run, which kernels meet
which state, and samples bound to it."""
from __future__ import annotations

import pytest

from onnx import TensorProto, helper

from conftest import linear_pack
from npower import NpowerError
from npower.graph import Node, Tensor, load_graph
from npower.pack import KindModels
from npower.polynomial import SparsePolynomial
from npower.predict import predict
from npower.features import extract
from npower.runtimes.ort_rules import CPU_ACTIVATIONS
from npower.profile.cache_state import (EPILOGUE_KINDS, FALLBACK_CACHE_BYTES, MIN_STEADY_ROWS, STEADY, InNetworkCacheState, base_kind,
                                         fitted_states, graph_input_kind, in_network_ms, last_level_cache_bytes,
                                         reads_weight_matrix, steady_kind, steady_state_kinds, typical_ms)
from npower.profile.repeats import runtime_target_ms
from npower.profile.store import SampleWriter


def test_last_level_cache_is_the_largest_sysfs_cache(tmp_path):
    for index, size in enumerate(["48K", "32K", "1024K", "32768K"]):
        (tmp_path / "cache" / f"index{index}").mkdir(parents=True)
        (tmp_path / "cache" / f"index{index}" / "size").write_text(size + "\n")
    assert last_level_cache_bytes(str(tmp_path)) == 32 << 20
    assert last_level_cache_bytes(str(tmp_path / "missing")) == FALLBACK_CACHE_BYTES


class Recorder:
    """Stands for an input array: records that it was read."""

    def __init__(self, log: list[str], name: str):
        self.log, self.name = log, name

    def sum(self) -> float:
        self.log.append(f"read {self.name}")
        return 0.0


def test_calls_alternate_between_an_eviction_with_a_read_of_the_inputs_and_a_hot_run():
    log: list[str] = []
    state = InNetworkCacheState(evict_bytes=1 << 12)
    evict = state.buffer

    class Buffer:
        def sum(self) -> float:
            log.append("evict")
            return 0.0

    state.buffer = Buffer()
    prepared = state.alternate(lambda: log.append("run"), {"x0": Recorder(log, "x0"), "x1": Recorder(log, "x1")})
    for _ in range(4):
        prepared()
    assert log == ["evict", "read x0", "read x1", "run", "run"] * 2
    assert evict.nbytes == 1 << 12
    # after 3 warm-up calls, the timed calls are numbered 3, 4, 5, ...: odd ones hot
    assert InNetworkCacheState.split([3.0, 4.0, 5.0, 6.0, 7.0], first_call=3) == ([4.0, 6.0], [3.0, 5.0, 7.0])


def _kernel(op: str, *weights: tuple, group: int = 1) -> Node:
    inputs = [Tensor("x", (1, 64, 8, 8), "float32", 4)] + [Tensor(f"w{i}", shape, "float32", 4, True)
                                                           for i, shape in enumerate(weights)]
    return Node(op, op, "", inputs, [Tensor("y", (1, 64, 8, 8), "float32", 4)], {"group": group})


@pytest.mark.parametrize("kernel, cold", [
    (_kernel("Conv", (64, 64, 1, 1), (64,)), True),          # a 1x1 filter bank
    (_kernel("Conv", (64, 1, 3, 3), group=64), True),        # depthwise
    (_kernel("Conv", (16, 1, 1, 1)), True),                  # one channel to 16: a filter bank
    (_kernel("FusedConv", (16, 1, 1, 1)), True),             # the same, with its activation fused
    (_kernel("ConvTranspose", (1, 3, 1, 1)), True),          # one channel to 3, transposed: a filter bank too
    (_kernel("Conv", (64, 1, 1, 1), group=64), False),       # a BatchNormalization as a 1x1 depthwise conv
    (_kernel("MatMul", (768, 3072)), True),
    (_kernel("LayerNormalization", (64,), (64,)), False),    # scale and shift only
    (_kernel("Mul", (1, 64, 1, 1)), False),                  # a per-channel constant
    (_kernel("Relu"), False),
])
def test_only_kernels_reading_a_weight_matrix_meet_evicted_caches(kernel, cold):
    assert reads_weight_matrix(kernel) is cold


def test_depthwise_samples_are_fitted_between_the_two_states():
    states = {"evicted": {"median_ms": 0.8}, "hot": {"median_ms": 0.2}}
    depthwise = {"kind": "nchwc_conv_dw", "median_ms": 0.8, "cache_state": "evicted", "states": states, "kernel": "Conv"}
    assert in_network_ms(depthwise) == pytest.approx(0.4)
    assert runtime_target_ms(depthwise, 0.01) == pytest.approx((0.79 * 0.19) ** 0.5)  # each state less overhead
    assert in_network_ms({**depthwise, "kind": "nchwc_conv"}) == 0.8  # a weight matrix: the state chosen
    assert in_network_ms({"kind": "conv_dw", "median_ms": 0.5}) == 0.5  # no states recorded (wall-clock rows)
    batchnorm = {**depthwise, "median_ms": 0.2, "cache_state": "hot"}  # a BatchNormalization as a 1x1 dw conv
    assert in_network_ms(batchnorm) == 0.2


def _timed(kind: str, state: str, **extra) -> dict:
    states = {"evicted": {"mean_ms": 0.09}, "hot": {"mean_ms": 0.06}, "steady": {"mean_ms": 0.04}}
    if state == "hot":
        del states["steady"]
    return {"kind": kind, "cache_state": state, "states": states, "kernel": "Relu", **states[state], **extra}


def test_an_epilogue_activation_with_enough_steady_rows_is_fitted_from_the_steady_state_as_a_variant():
    """Kernels without a weight matrix are timed in a steady loop too; an activation kind a host kernel can apply
    in its epilogue, with MIN_STEADY_ROWS rows timed so, is fitted from the hot state of all its rows and, as its
    steady variant, from the steady rows; any other kind from the hot state of all its rows (the alternating runs
    each row also has)."""
    rows = ([_timed("relu", "steady")] * MIN_STEADY_ROWS + [_timed("relu", "hot")] * 5
            + [_timed("clip", "steady")] * (MIN_STEADY_ROWS - 1) + [_timed("clip", "hot")] * 30
            + [_timed("add", "steady")] * MIN_STEADY_ROWS
            + [_timed("sigmoid", "steady", error="x")] * MIN_STEADY_ROWS)
    kinds = steady_state_kinds(rows)
    assert kinds == {"relu"}
    assert [(r["cache_state"], in_network_ms(r)) for r in fitted_states(_timed("relu", "steady"), kinds)] == \
        [("hot", 0.06), ("steady", 0.04)]
    assert [in_network_ms(r) for r in fitted_states(_timed("relu", "hot"), kinds)] == [0.06]
    assert [in_network_ms(r) for r in fitted_states(_timed("add", "steady"), kinds)] == [0.06]
    conv = _timed("conv", "evicted")
    assert fitted_states(conv, kinds) == [conv] and in_network_ms(conv) == 0.09
    assert steady_kind("relu") == "relu" + STEADY and base_kind(steady_kind("relu")) == "relu"


@pytest.mark.parametrize("op", sorted(CPU_ACTIVATIONS))
def test_every_activation_a_cpu_kernel_applies_in_its_epilogue_is_an_epilogue_kind(op):
    attrs = {"alpha": 0.1} if op == "LeakyRelu" else {}
    node = Node(op, op, "", [Tensor("x", (1, 8, 4, 4), "float32", 4)], [Tensor("y", (1, 8, 4, 4), "float32", 4)],
                attrs)
    assert extract(node).kind in EPILOGUE_KINDS


@pytest.mark.parametrize("op, group, weight, expected", [
    ("Conv", 1, [16, 1, 1, 1], 0.8), ("Conv", 16, [16, 1, 1, 1], 0.2), ("Conv", 1, [16, 3, 1, 1], 0.8),
    ("ConvTranspose", 1, [1, 3, 1, 1], 0.8)])
def test_rows_timed_hot_before_one_channel_convs_counted_as_filter_banks_fit_their_evicted_time(op, group, weight,
                                                                                                 expected):
    states = {"evicted": {"median_ms": 0.8}, "hot": {"median_ms": 0.2}}
    config = {"op": op, "attrs": {"group": group}, "inputs": [{"shape": [1, 16, 8, 8], "weight": False},
                                                              {"shape": weight, "weight": True}]}
    profiled = "evicted" if sorted(weight)[-2] > 1 else "hot"  # the state the profiler chose before
    row = {"kind": "nchwc_conv_nchw", "config": config, "states": states, "cache_state": profiled,
           "median_ms": states[profiled]["median_ms"]}
    assert in_network_ms(row) == expected


def test_samples_of_another_cache_state_are_not_resumed(tmp_path):
    path = tmp_path / "s.jsonl"
    header = {"runtime": {"name": "onnxruntime"}, "device": {"name": "cpu"}}
    with SampleWriter(path, {**header, "cache_state": "hot"}) as writer:
        writer.append({"type": "sample", "key": "a"})
    with pytest.raises(NpowerError, match="cache state 'hot' -> 'in-network"):
        SampleWriter(path, {**header, "cache_state": InNetworkCacheState.description})


def test_a_kernel_reading_a_graph_input_is_costed_by_the_graph_input_model():
    """x -> Conv -> Relu -> Conv: the first conv reads the user's input (from memory) and takes the pack's
    `conv@graph_input` model, inside the range of its samples; the second reads a tensor its network just wrote.
    A pack without the variant costs both with `conv`."""
    pack = linear_pack()
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    weights = [TensorProto(name="w1", data_type=TensorProto.FLOAT, dims=[8, 3, 3, 3]),
               TensorProto(name="w2", data_type=TensorProto.FLOAT, dims=[8, 8, 3, 3])]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="first", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["b"], name="relu"),
             helper.make_node("Conv", ["b", "w2"], ["y"], name="second", pads=[1, 1, 1, 1])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], weights),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    graph = load_graph(model)
    macs = {row.name: row.macs for row in predict(graph, pack, fusion=False)}
    assert {row.name: row.ms for row in predict(graph, pack, fusion=False) if row.kind == "conv"} == \
        pytest.approx({"first": 1e-6 * macs["first"], "second": 1e-6 * macs["second"]})
    variant = graph_input_kind("conv")
    pack.models[variant] = KindModels(SparsePolynomial("linear", "ms", 0.0, [(3e-6, {"macs": 1})]))
    pack.provenance["sampled_ranges"] = {variant: {"macs": [0.5 * macs["first"], 2.0 * macs["first"]]}}
    costed = {row.name: row.ms for row in predict(graph, pack, fusion=False) if row.kind == "conv"}
    assert costed == pytest.approx({"first": 3e-6 * macs["first"], "second": 1e-6 * macs["second"]})
    # a first conv outside what the variant's samples covered keeps its kind's model: no extrapolation
    pack.provenance["sampled_ranges"] = {variant: {"macs": [2.0 * macs["first"], 4.0 * macs["first"]]}}
    costed = {row.name: row.ms for row in predict(graph, pack, fusion=False) if row.kind == "conv"}
    assert costed == pytest.approx({"first": 1e-6 * macs["first"], "second": 1e-6 * macs["second"]})


def _variant_pack(kind: str = "conv"):
    """A linear pack (1e-6 ms per MAC) whose graph-input variant of `kind` charges 3e-6, over any size."""
    pack = linear_pack()
    variant = graph_input_kind(kind)
    pack.models[variant] = KindModels(SparsePolynomial("linear", "ms", 0.0, [(3e-6, {"macs": 1})]))
    pack.provenance["sampled_ranges"] = {variant: {"macs": [0.0, 1e12]}}
    return pack


def _conv_rates(nodes: list, inputs: list, weights: list) -> dict[str, float]:
    """ms per MAC of every conv of the graph, as the variant pack costs it (3e-6: graph-input model)."""
    y = helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, [y], weights),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    rows = predict(load_graph(model), _variant_pack(), fusion=False)
    return {row.name: pytest.approx(row.ms / row.macs) for row in rows if row.kind == "conv"}


def test_only_the_first_reader_of_a_graph_input_reads_it_from_memory():
    """Two convs over the same input: the first finds it in memory, the second in cache."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])
    weights = [TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[8, 3, 3, 3])]
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], name="first"),
             helper.make_node("Conv", ["x", "w"], ["b"], name="second"),
             helper.make_node("Add", ["a", "b"], ["y"], name="add")]
    assert _conv_rates(nodes, [x], weights) == {"first": 3e-6, "second": 1e-6}


def test_a_graph_input_read_through_a_view_is_still_read_from_memory():
    """x -> Reshape -> Conv: the reshape moves no data, so the conv is the input's first reader; x -> Relu ->
    Conv: the Relu reads it first and the conv reads what the Relu wrote."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3072])
    weights = [TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[8, 3, 3, 3]),
               helper.make_tensor("shape", TensorProto.INT64, [4], [1, 3, 32, 32])]
    through_view = [helper.make_node("Reshape", ["x", "shape"], ["image"], name="view"),
                    helper.make_node("Conv", ["image", "w"], ["y"], name="conv")]
    assert _conv_rates(through_view, [x], weights) == {"conv": 3e-6}
    image = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])
    through_relu = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
                    helper.make_node("Conv", ["r", "w"], ["y"], name="conv")]
    assert _conv_rates(through_relu, [image], weights[:1]) == {"conv": 1e-6}


def test_a_sample_is_fitted_on_its_runs_mean_where_recorded():
    """A kernel timed from the trace in whole microseconds: runs of 2, 2, 3 us have the median 2 and the mean 2.33;
    the mean is fitted (a network adds its kernels' times up), the median where a row has only that (public data)."""
    stats = {"median_ms": 0.002, "mean_ms": 0.00233}
    assert typical_ms(stats) == 0.00233 and typical_ms({"median_ms": 0.002}) == 0.002
    row = {"kind": "reorder_input", "cache_state": "hot", "kernel": "ReorderInput", **stats,
           "states": {"hot": stats, "evicted": {"median_ms": 0.004, "mean_ms": 0.005}}}
    assert in_network_ms(row) == 0.00233
    assert runtime_target_ms(row, 0.001) == pytest.approx(0.00133)
