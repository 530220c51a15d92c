"""Feature values against hand-computed numbers."""
from __future__ import annotations

import numpy as np
import pytest

from npower import zoo
from npower.device_features import derive
from npower.features import broadcast_spans, extract
from npower.graph import load_graph

from conftest import single_node_model


def features_of(model):
    return extract(load_graph(model).nodes[0])


def test_alexnet_every_costed_layer_matches_hand_computation():
    graph = load_graph(zoo.build("alexnet", batch=1, weights=False))
    got = [(n.op_type, extract(n)) for n in graph.nodes if n.op_type in ("Conv", "Gemm", "MaxPool")]
    expected = [  # (op, output H/W or N, MACs) from the AlexNet paper's shapes with groups=2
        ("Conv", 55, 55 * 55 * 96 * 11 * 11 * 3),
        ("MaxPool", 27, 0),
        ("Conv", 27, 27 * 27 * 256 * 5 * 5 * 48),
        ("MaxPool", 13, 0),
        ("Conv", 13, 13 * 13 * 384 * 3 * 3 * 256),
        ("Conv", 13, 13 * 13 * 384 * 3 * 3 * 192),
        ("Conv", 13, 13 * 13 * 256 * 3 * 3 * 192),
        ("MaxPool", 6, 0),
        ("Gemm", 4096, 9216 * 4096),
        ("Gemm", 4096, 4096 * 4096),
        ("Gemm", 1000, 4096 * 1000),
    ]
    assert [op for op, _ in got] == [op for op, _, _ in expected]
    for (op, layer), (_, size, macs) in zip(got, expected):
        if op == "Gemm":
            assert layer.features["n"] == size
        else:
            assert layer.features["out_h"] == layer.features["out_w"] == size
        assert layer.specials["macs"] == macs
    conv2 = got[2][1]
    assert conv2.features["groups"] == 2 and conv2.features["in_channels"] == 96
    assert conv2.specials["weight_elems"] == 256 * 48 * 5 * 5 + 256
    assert conv2.specials["in_bytes"] == 96 * 27 * 27 * 4


@pytest.mark.parametrize("auto_pad,expected_pads", [("SAME_UPPER", (0, 1)), ("SAME_LOWER", (1, 0)), ("VALID", (0, 0))])
def test_auto_pad_becomes_explicit_pads(auto_pad, expected_pads):
    model = single_node_model("Conv", [("x", [1, 8, 11, 11])], {"auto_pad": auto_pad, "strides": [2, 2]},
                              [("w", [4, 8, 2, 2])])
    node = load_graph(model).nodes[0]
    begin, end = expected_pads
    assert node.attrs["pads"] == [begin, begin, end, end]
    assert node.attrs["auto_pad"] == "NOTSET"
    layer = extract(node)
    assert layer.features["pad_h"] == begin + end
    assert layer.features["out_h"] == (6 if auto_pad != "VALID" else 5)


def test_depthwise_dilated_conv():
    model = single_node_model("Conv", [("x", [2, 32, 56, 56])], {"group": 32, "dilations": [2, 2], "pads": [2, 2, 2, 2]},
                              [("w", [32, 1, 3, 3])])
    layer = features_of(model)
    assert layer.features["groups"] == 32 and layer.features["dilation_h"] == 2
    assert layer.features["out_h"] == 56
    assert layer.specials["macs"] == 2 * 56 * 56 * 32 * 9


def test_conv1d_and_conv3d():
    conv1d = features_of(single_node_model("Conv", [("x", [1, 16, 100])], {}, [("w", [32, 16, 5])]))
    assert conv1d.features["out_w"] == 96 and conv1d.features["out_h"] == 1
    assert conv1d.specials["macs"] == 96 * 32 * 16 * 5
    conv3d = features_of(single_node_model("Conv", [("x", [1, 4, 8, 16, 16])], {"pads": [1] * 6}, [("w", [8, 4, 3, 3, 3])]))
    assert (conv3d.features["out_d"], conv3d.features["kernel_d"]) == (8, 3)
    assert conv3d.specials["macs"] == 8 * 16 * 16 * 8 * 4 * 27


@pytest.mark.parametrize("x,w,attrs,kind,setup,im2col,strided", [
    ([1, 8, 16, 16], [8, 1, 3, 3], {"group": 8, "pads": [1] * 4}, "conv_dw", 1, 8 * 9 * 256, 0),  # 3x3: im2col
    ([2, 8, 16, 16], [8, 1, 3, 3], {"group": 8, "strides": [2, 2]}, "conv_dw", 1, 8 * 9 * 49, 8 * 9 * 49),
    ([2, 8, 16, 16], [8, 1, 1, 1], {"group": 8}, "conv_dw", 0, 0, 0),                  # 1x1: a direct GEMM
    ([1, 8, 16, 16], [8, 1, 1, 1], {"group": 8, "strides": [2, 2]}, "conv_dw", 0, 8 * 64, 8 * 64),  # no setup
    ([1, 8, 20], [8, 1, 1], {"group": 8}, "conv_dw", 1, 0, 0),                         # 1-D: outside MLAS
    ([1, 8, 20], [4, 8, 1], {}, "conv", 1, 0, 0),                              # 1-D 1x1: outside MLAS too
    ([2, 8, 5, 5], [4, 8, 1, 1], {}, "conv_1x1", 0, 0, 0),                     # 2-D 1x1: a GEMM per image
    ([1, 4, 6, 8, 8], [2, 4, 3, 3, 3], {"strides": [1, 1, 2]}, "conv", 1, 4 * 27 * 4 * 6 * 3, 4 * 27 * 4 * 6 * 3),
])
def test_plain_conv_window_setup_and_strided_gather(x, w, attrs, kind, setup, im2col, strided):
    layer = features_of(single_node_model("Conv", [("x", x)], attrs, [("w", w)]))
    assert layer.kind == kind and layer.features["window_setup"] == setup
    assert (layer.features["im2col_elems"], layer.features["im2col_strided"]) == (im2col * x[0], strided * x[0])


def test_im2col_row_loop_and_edge_taps():
    """MLAS's im2col: a row per kernel tap and output row; the taps on the left/right padding of rows inside the
    map written one by one. 3x3, pad 1, stride 2 over 13x13 -> 7x7: the first and last output rows and columns have
    one tap on the padding, so the rows inside see 3 * 7 - 2 = 19 taps' rows per channel, each with 2 edge taps."""
    layer = features_of(single_node_model("Conv", [("x", [2, 5, 13, 13])], {"pads": [1] * 4, "strides": [2, 2]},
                                          [("w", [8, 5, 3, 3])]))
    assert layer.features["im2col_rows"] == 2 * 5 * 9 * 7
    assert layer.features["im2col_edge"] == 2 * 5 * 19 * 2
    unpadded = features_of(single_node_model("Conv", [("x", [1, 4, 6, 8, 8])], {}, [("w", [2, 4, 3, 3, 3])]))
    assert unpadded.features["im2col_rows"] == 4 * 27 * 4 * 6 and unpadded.features["im2col_edge"] == 0
    direct = features_of(single_node_model("Conv", [("x", [1, 8, 5, 5])], {}, [("w", [4, 8, 1, 1])]))
    assert direct.features["im2col_rows"] == 0 and direct.features["im2col_edge"] == 0


CPU = {"kind": "cpu", "name": "AMD EPYC"}


@pytest.mark.parametrize("op,x,w,attrs,macs,single_row,single_column", [
    ("Conv", [2, 8, 2, 2], [4, 8, 1, 1], {}, 2 * 4 * 8 * 16, 0, 0),          # N = 4 pixels: a whole 16-column panel
    ("Conv", [1, 8, 17, 1], [4, 8, 1, 1], {}, 4 * 8 * 32, 0, 0),             # N = 17: two panels
    ("Conv", [1, 8, 2, 2], [1, 8, 1, 1], {}, 8 * 4, 1, 0),                   # M = 1: A's row times B, nothing packed
    ("Conv", [3, 8, 1, 1], [4, 8, 1, 1], {}, 3 * 4 * 8, 0, 1),               # N = 1: a GEMV per image
    ("Conv", [1, 8, 6, 6], [4, 8, 3, 3], {"pads": [1] * 4}, 4 * 72 * 48, 0, 0),  # im2col: K = 8 x 9, N = 36
    ("ConvTranspose", [1, 8, 2, 2], [8, 1, 1, 1], {}, 8 * 16, 0, 0),         # A transposed: M = 1 packs B
    ("Gemm", [1, 64], [10, 64], {"transB": 1}, 64 * 10, 1, 0),               # a classifier at batch 1: one row
    ("Gemm", [5, 64], [1, 64], {"transB": 1}, 5 * 64 * 16, 0, 0),            # N = 1 but B transposed: packed
    ("MatMul", [3, 7, 64], [64, 20], {}, 21 * 64 * 32, 0, 0),                # B a matrix: 3 x 7 rows in one GEMM
    ("MatMul", [3, 1, 64], [3, 64, 20], {}, 3 * 64 * 20, 1, 0),              # batched: a single row in each
])
def test_mlas_sgemm_rounds_n_to_whole_panels_except_on_the_unpacked_paths(op, x, w, attrs, macs, single_row,
                                                                          single_column):
    layer = features_of(single_node_model(op, [("x", x)], attrs, [("w", w)]))
    columns = {name: np.array([value]) for name, value in layer.values().items()}
    sgemm = derive(layer.kind, columns, CPU)
    assert sgemm["sgemm_macs"][0] == macs
    assert (sgemm["gemm_single_row"][0], sgemm["gemm_single_column"][0]) == (single_row, single_column)
    assert derive(layer.kind, columns, {"kind": "gpu"}) == {}  # a GPU without an SM count: neither kind of feature


def test_conv_transpose():
    layer = features_of(single_node_model("ConvTranspose", [("x", [1, 64, 14, 14])], {"strides": [2, 2]},
                                          [("w", [64, 32, 2, 2])]))
    assert layer.kind == "conv_transpose" and layer.features["out_h"] == 28
    assert layer.specials["macs"] == 14 * 14 * 64 * 32 * 4
    # onnxruntime: per image and group, (32 out x 4 taps, 64 in) @ (64 in, 196 pixels) into a column buffer
    assert [layer.features[f] for f in ("gemm_m", "gemm_k", "gemm_n", "gemm_calls")] == [128, 64, 196, 1]
    assert layer.features["col_elems"] == 128 * 196
    grouped = features_of(single_node_model("ConvTranspose", [("x", [3, 64, 7, 7])], {"group": 4},
                                            [("w", [64, 8, 3, 3])]))
    assert [grouped.features[f] for f in ("gemm_m", "gemm_k", "gemm_n", "gemm_calls")] == [72, 16, 49, 12]


def test_gemm_transposes_and_batched_matmul():
    gemm = features_of(single_node_model("Gemm", [("a", [512, 8])], {"transA": 1, "transB": 1}, [("b", [100, 512])]))
    assert (gemm.features["m"], gemm.features["k"], gemm.features["n"]) == (8, 512, 100)
    attention = features_of(single_node_model("MatMul", [("q", [2, 12, 197, 64]), ("k", [2, 12, 64, 197])]))
    assert attention.kind == "matmul"
    assert attention.features["batch"] == 24
    assert attention.specials["macs"] == 24 * 197 * 64 * 197


def test_pool_ceil_mode_and_global_pool():
    pool = features_of(single_node_model("MaxPool", [("x", [1, 96, 55, 55])],
                                         {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}))
    assert pool.features["out_h"] == 27
    pool = features_of(single_node_model("MaxPool", [("x", [1, 8, 6, 6])],
                                         {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}))
    assert pool.features["out_h"] == 3  # floor would give 2
    gap = features_of(single_node_model("GlobalAveragePool", [("x", [4, 2048, 7, 7])]))
    assert gap.kind == "global_avgpool" and gap.features["spatial"] == 49


def test_elementwise_broadcast_and_free_views():
    add = features_of(single_node_model("Add", [("a", [8, 64, 28, 28]), ("b", [8, 64, 1, 1])]))
    assert add.kind == "add" and add.features["broadcast"] == 1 and add.features["elements"] == 8 * 64 * 28 * 28
    flat = features_of(single_node_model("Flatten", [("a", [8, 64, 2, 2])], {"axis": 1}))
    assert flat.kind == "free"
    softmax = features_of(single_node_model("Softmax", [("a", [2, 6, 197, 197])], {"axis": -1}))
    assert (softmax.features["outer"], softmax.features["axis_len"], softmax.features["inner"]) == (2 * 6 * 197, 197, 1)


@pytest.mark.parametrize("shapes, out, spans", [
    ([(1, 224, 224, 3), (3,)], (1, 224, 224, 3), 224 * 224),  # channels-last per-channel: a run per pixel
    ([(1, 224, 224, 3), (1, 1, 1, 3)], (1, 224, 224, 3), 224 * 224),
    ([(1, 3, 224, 224), (1, 3, 1, 1)], (1, 3, 224, 224), 3),  # channels-first: a run per channel
    ([(8, 64, 7, 7), (8, 64, 1, 1)], (8, 64, 7, 7), 8 * 64),
    ([(2, 197, 768), (768,)], (2, 197, 768), 2 * 197),  # a bias on token rows
    ([(1, 3, 224, 224), ()], (1, 3, 224, 224), 1),  # a scalar: one run
    ([(4, 1, 5), (1, 3, 5)], (4, 3, 5), 12),  # both broadcast: the shorter merged block decides
    ([(1, 1, 1, 32), (1, 1, 1, 32)], (1, 1, 1, 32), 1),  # axes of size 1 do not split runs
])
def test_broadcast_spans_count_the_runs_of_the_broadcast_loop(shapes, out, spans):
    assert broadcast_spans(shapes, out) == spans


def test_channels_last_per_channel_operand_is_an_elementwise_op_with_a_run_per_pixel():
    add = features_of(single_node_model("Add", [("a", [1, 56, 56, 144])], weights=[("b", [144])]))
    assert add.kind == "add" and add.features["spans"] == 56 * 56 and add.features["broadcast"] == 1
    relu = features_of(single_node_model("Relu", [("a", [1, 56, 56, 144])]))
    assert relu.features["spans"] == 1


def test_unknown_op_is_listed_not_fatal():
    layer = features_of(single_node_model("MyCustomOp", [("a", [1, 2])]))
    assert layer.kind == "unknown"
