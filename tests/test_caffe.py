"""Caffe frontend: the shared third-party prototxt files, both syntaxes, Caffe's shape rules, errors."""
from __future__ import annotations

import glob
import os

import numpy as np
import onnx
import pytest

from npower import NpowerError, analyze
from npower.cli import main
from npower.features import extract
from npower.graph import load_graph
from npower_frontends.caffe import FRONTEND, convert_prototxt
from npower_frontends.caffe_text import parse_prototxt

from conftest import linear_pack, need_shared, shared_missing_reason, shared_path

SHARED = shared_path("models", "caffe")
FILES = sorted(glob.glob(str(SHARED / "*.prototxt"))) or [
    pytest.param(None, marks=pytest.mark.skip(reason=shared_missing_reason("models", "caffe")))]
# Per-image MACs, layer by layer: out_channels x in_channels/groups x k x k x out_h x out_w; in x out for FC.
ALEXNET_MACS = (96 * 3 * 11 * 11 * 55 * 55 + 256 * 48 * 5 * 5 * 27 * 27 + 384 * 256 * 3 * 3 * 13 * 13
                + 384 * 192 * 3 * 3 * 13 * 13 + 256 * 192 * 3 * 3 * 13 * 13 + 9216 * 4096 + 4096 * 4096 + 4096 * 1000)
VGG19_CONVS = ([(3, 64, 224), (64, 64, 224), (64, 128, 112), (128, 128, 112), (128, 256, 56)] + [(256, 256, 56)] * 3
               + [(256, 512, 28)] + [(512, 512, 28)] * 3 + [(512, 512, 14)] * 4)  # (in, out, side), 3x3 pad 1
VGG19_MACS = (sum(cin * cout * 9 * side * side for cin, cout, side in VGG19_CONVS)
              + 25088 * 4096 + 4096 * 4096 + 4096 * 1000)
# Final output shapes by Caffe's rules, and per-image MACs of the network.
EXPECTED = {
    "bvlc_alexnet.prototxt": ((10, 1000), ALEXNET_MACS),  # 724,406,816
    "bvlc_reference_caffenet.prototxt": ((10, 1000), ALEXNET_MACS),  # same layers, pool before norm
    "cifar10_quick.prototxt": ((1, 10), 32 * 3 * 25 * 32 * 32 + 32 * 32 * 25 * 16 * 16 + 64 * 32 * 25 * 8 * 8
                               + 1024 * 64 + 64 * 10),  # 12,354,176: Caffe's round-up pools give 16, 8, 4
    "lenet.prototxt": ((64, 10), 20 * 25 * 24 * 24 + 50 * 20 * 25 * 8 * 8 + 800 * 500 + 500 * 10),  # 2,293,000
    "vgg19_v1syntax.prototxt": ((10, 1000), VGG19_MACS),  # 19,632,062,464
}


# Pooling outputs by Caffe's rule out = ceil((in + 2 pad - k) / stride) + 1 (ONNX's floor differs where marked).
CAFFE_POOLS = {
    "cifar10_quick.prototxt": {"pool1": (32, 16, 16),  # conv1 32x32 (pad 2, k 5); ceil(29/2)+1 = 16, floor: 15
                               "pool2": (32, 8, 8),    # conv2 16x16; ceil(13/2)+1 = 8, floor: 7
                               "pool3": (64, 4, 4)},   # conv3 8x8; ceil(5/2)+1 = 4, floor: 3
    "bvlc_alexnet.prototxt": {"pool1": (96, 27, 27),   # conv1 (227-11)/4+1 = 55; (55-3)/2+1 = 27
                              "pool2": (256, 13, 13),  # conv2 27 (pad 2, k 5); (27-3)/2+1 = 13
                              "pool5": (256, 6, 6)},   # conv5 13; (13-3)/2+1 = 6
}


def test_shared_files_are_present():
    need_shared("models", "caffe")
    assert {os.path.basename(f) for f in FILES} == set(EXPECTED)


@pytest.mark.parametrize("path", FILES, ids=lambda path: os.path.basename(path or "shared-missing"))
def test_shared_file_converts_checks_and_runs(path):
    ort = pytest.importorskip("onnxruntime")
    name = os.path.basename(path)
    runs = "vgg" not in name  # VGG-19's 144 M random weights take ~4 GB through onnxruntime: shapes only
    model = FRONTEND.convert(path, weights="random" if runs else "none", batch=None if runs else 1)
    if runs:  # the checker wants initializer data; strict shape inference below checks every model
        onnx.checker.check_model(model, full_check=True)
    graph = load_graph(model)
    batch = graph.inputs[0].shape[0]
    out_shape, macs_per_image = EXPECTED[name]
    assert sum(extract(n).specials.get("macs", 0) for n in graph.nodes) == macs_per_image * batch
    assert graph.nodes[-1].outputs[0].shape == (batch, *out_shape[1:])
    if runs:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        feeds = {t.name: np.random.default_rng(0).standard_normal(t.shape).astype(np.float32) for t in graph.inputs}
        assert session.run(None, feeds)[0].shape == (batch, *out_shape[1:])
    # ONNX's shape rules over the converter's explicit pads give Caffe's pooling sizes, derived by hand in
    # CAFFE_POOLS (strict inference also fails if they contradict the declared output shape).
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    shapes = {vi.name: tuple(d.dim_value for d in vi.type.tensor_type.shape.dim) for vi in inferred.graph.value_info}
    pooled = {node.name: shapes.get(node.output[0]) for node in inferred.graph.node}
    for layer, shape in CAFFE_POOLS.get(name, {}).items():
        assert pooled[layer] == (batch, *shape), layer


def test_caffe_pooling_rounds_up_where_onnx_floors():
    text = """
    input: "data" input_shape { dim: 1 dim: 8 dim: 112 dim: 112 }
    layer { name: "pool" type: "Pooling" bottom: "data" top: "pool"
            pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
    layer { name: "padded" type: "Pooling" bottom: "pool" top: "padded"
            pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
    layer { name: "clipped" type: "Pooling" bottom: "data" top: "clipped"
            pooling_param { pool: MAX kernel_size: 3 stride: 3 pad: 2 } }
    layer { name: "global" type: "Pooling" bottom: "padded" top: "global"
            pooling_param { pool: AVE global_pooling: true } }
    """
    shapes = {n.name: n.outputs[0].shape for n in load_graph(convert_prototxt(text)).nodes}
    assert shapes["pool"] == (1, 8, 56, 56)     # ceil((112-3)/2)+1; floor would give 55
    assert shapes["padded"] == (1, 8, 29, 29)   # ceil((56+2-3)/2)+1; the last window starts at 56 < 56+1
    assert shapes["global"] == (1, 8, 1, 1)
    assert shapes["clipped"] == (1, 8, 38, 38)  # ceil((112+4-3)/3)+1 = 39, but window 39 starts at 114 >= 112+2


def test_layer_coverage_and_deploy_filtering():
    text = """
    name: "coverage"
    layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN } }
    layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 2 dim: 4 dim: 16 dim: 16 } } }
    layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
            convolution_param { num_output: 8 kernel_h: 3 kernel_w: 1 pad_h: 1 group: 2 dilation: 1 bias_term: false } }
    layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
    layer { name: "scale" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
    layer { name: "prelu" type: "PReLU" bottom: "conv" top: "conv" }
    layer { name: "split" type: "Split" bottom: "conv" top: "a" top: "b" }
    layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "sum" eltwise_param { operation: SUM coeff: 1 coeff: -1 } }
    layer { name: "prod" type: "Eltwise" bottom: "a" bottom: "sum" top: "prod" eltwise_param { operation: PROD } }
    layer { name: "max" type: "Eltwise" bottom: "a" bottom: "prod" top: "max" eltwise_param { operation: MAX } }
    layer { name: "slice" type: "Slice" bottom: "max" top: "s1" top: "s2" slice_param { axis: 1 slice_point: 3 } }
    layer { name: "cat" type: "Concat" bottom: "s2" bottom: "s1" top: "cat" }
    layer { name: "deconv" type: "Deconvolution" bottom: "cat" top: "up" convolution_param { num_output: 4 kernel_size: 2 stride: 2 } }
    layer { name: "crop" type: "Crop" bottom: "up" bottom: "data" top: "crop" crop_param { axis: 2 offset: 1 } }
    layer { name: "elu" type: "ELU" bottom: "crop" top: "crop" }
    layer { name: "tanh" type: "TanH" bottom: "crop" top: "t" }
    layer { name: "sig" type: "Sigmoid" bottom: "t" top: "sg" }
    layer { name: "pow" type: "Power" bottom: "sg" top: "pw" power_param { power: 2 scale: 0.5 shift: 1 } }
    layer { name: "lrn" type: "LRN" bottom: "pw" top: "n" lrn_param { local_size: 3 } }
    layer { name: "relu" type: "ReLU" bottom: "n" top: "n" relu_param { negative_slope: 0.1 } }
    layer { name: "flat" type: "Flatten" bottom: "n" top: "f" }
    layer { name: "ip" type: "InnerProduct" bottom: "f" top: "ip" inner_product_param { num_output: 10 } }
    layer { name: "drop" type: "Dropout" bottom: "ip" top: "ip" }
    layer { name: "reshape" type: "Reshape" bottom: "ip" top: "r" reshape_param { shape { dim: 0 dim: -1 dim: 1 } } }
    layer { name: "prob" type: "Softmax" bottom: "r" top: "prob" }
    layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
    """
    model = convert_prototxt(text, weights="random")
    onnx.checker.check_model(model, full_check=True)
    graph = load_graph(model)
    ops = [n.op_type for n in graph.nodes]
    for op in ("Conv", "BatchNormalization", "PRelu", "Add", "Mul", "Max", "Split", "Concat", "ConvTranspose",
               "Slice", "Elu", "Tanh", "Sigmoid", "Pow", "LRN", "LeakyRelu", "Flatten", "Gemm", "Dropout",
               "Reshape", "Softmax"):
        assert op in ops, op
    assert ops.count("BatchNormalization") == 1  # Scale folded into it
    assert graph.nodes[0].attrs["kernel_shape"] == [3, 1]
    crop = next(n for n in graph.nodes if n.op_type == "Slice" and n.outputs[0].shape[1] == 4)
    assert crop.outputs[0].shape == (2, 4, 16, 16)
    assert graph.nodes[-1].outputs[0].shape == (2, 10, 1)
    import onnxruntime as ort
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert session.run(None, {"data": np.ones((2, 4, 16, 16), np.float32)})[0].shape == (2, 10, 1)


def test_v1_syntax_types_and_input_dim():
    text = """
    input: "data" input_dim: 1 input_dim: 3 input_dim: 32 input_dim: 32
    layers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1" convolution_param { num_output: 16 kernel_size: 5 } }
    layers { name: "relu1" type: RELU bottom: "conv1" top: "conv1" }
    layers { name: "pool1" type: POOLING bottom: "conv1" top: "pool1" pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
    layers { name: "fc" type: INNER_PRODUCT bottom: "pool1" top: "fc" inner_product_param { num_output: 10 } }
    layers { name: "loss" type: SOFTMAX_LOSS bottom: "fc" top: "loss" }
    """
    graph = load_graph(convert_prototxt(text))
    assert [n.op_type for n in graph.nodes] == ["Conv", "Relu", "AveragePool", "Flatten", "Gemm"]
    assert graph.nodes[-1].outputs[0].shape == (1, 10)


def test_errors_name_line_layer_and_type():
    with pytest.raises(NpowerError, match=r"net:3:\d+: "):
        parse_prototxt('name: "x"\nlayer {\n  type: "Convolution" : : \n}', "net")
    with pytest.raises(NpowerError, match="missing '}'"):
        parse_prototxt('layer { name: "a"', "net")
    with pytest.raises(NpowerError, match="layer 'odd' has unsupported type 'Mystery'"):
        convert_prototxt('input: "d" input_dim: 1 input_dim: 1 input_dim: 4 input_dim: 4\n'
                         'layer { name: "odd" type: "Mystery" bottom: "d" top: "o" }')


def test_analyze_and_convert_prototxt_directly(tmp_path, pack_dir, capsys):
    path = need_shared("models", "caffe") / "bvlc_alexnet.prototxt"
    report = analyze(str(path), gpu=linear_pack(), batch=1)
    assert report.batch == 1 and report.runtime_ms > 0
    out = tmp_path / "alexnet.onnx"
    assert main(["convert", str(path), "-o", str(out), "--batch", "2"]) == 0
    assert load_graph(str(out)).inputs[0].shape == (2, 3, 227, 227)
    assert main(["analyze", str(SHARED / "lenet.prototxt"), "--gpu", "testpack", "--profiles", str(pack_dir)]) == 0
    bad = tmp_path / "bad.prototxt"
    bad.write_text("layer { name: ")
    assert main(["analyze", str(bad), "--gpu", "testpack", "--profiles", str(pack_dir)]) == 2
    assert "bad.prototxt:1:" in capsys.readouterr().err
