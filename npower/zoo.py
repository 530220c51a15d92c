"""Reference networks built from their published definitions (no downloads).

Used by the accuracy benchmark and the examples; none of them is in any pack's fitting data
(the profiler samples random configurations).
"""
from __future__ import annotations

from typing import Callable

import onnx

from .errors import NpowerError
from .netbuilder import NetBuilder


def _conv_bn_relu(b: NetBuilder, x: str, cout: int, k: int, stride: int = 1, groups: int = 1,
                  act: str = "relu") -> str:
    y = b.bn(b.conv(x, cout, k, stride, groups=groups, bias=False))
    return {"relu": b.relu, "relu6": b.relu6, "swish": b.swish, "none": lambda t: t}[act](y)


def alexnet(b: NetBuilder) -> str:
    x = b.maxpool(b.lrn(b.relu(b.conv("input", 96, 11, 4, pad=0))), 3, 2)
    x = b.maxpool(b.lrn(b.relu(b.conv(x, 256, 5, groups=2))), 3, 2)
    x = b.relu(b.conv(x, 384, 3))
    x = b.relu(b.conv(x, 384, 3, groups=2))
    x = b.maxpool(b.relu(b.conv(x, 256, 3, groups=2)), 3, 2)
    x = b.dropout(b.relu(b.gemm(b.flatten(x), 4096)))
    x = b.dropout(b.relu(b.gemm(x, 4096)))
    return b.softmax(b.gemm(x, 1000))


def vgg16(b: NetBuilder) -> str:
    x = "input"
    for width, repeats in ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)):
        for _ in range(repeats):
            x = b.relu(b.conv(x, width, 3))
        x = b.maxpool(x, 2, 2)
    x = b.relu(b.gemm(b.flatten(x), 4096))
    x = b.relu(b.gemm(x, 4096))
    return b.softmax(b.gemm(x, 1000))


def nin(b: NetBuilder) -> str:
    x = "input"
    for width, k, stride, pad in ((96, 11, 4, 0), (256, 5, 1, 2), (384, 3, 1, 1)):
        x = b.relu(b.conv(x, width, k, stride, pad=pad))
        x = b.relu(b.conv(x, width, 1))
        x = b.relu(b.conv(x, width, 1))
        x = b.maxpool(x, 3, 2, ceil=True)
    x = b.relu(b.conv(x, 1024, 3))
    x = b.relu(b.conv(x, 1024, 1))
    x = b.relu(b.conv(x, 1000, 1))
    return b.softmax(b.flatten(b.gap(x)))


def _inception(b: NetBuilder, x: str, c1: int, c3r: int, c3: int, c5r: int, c5: int, pp: int) -> str:
    branch1 = b.relu(b.conv(x, c1, 1))
    branch3 = b.relu(b.conv(b.relu(b.conv(x, c3r, 1)), c3, 3))
    branch5 = b.relu(b.conv(b.relu(b.conv(x, c5r, 1)), c5, 5))
    branch_pool = b.relu(b.conv(b.maxpool(x, 3, 1, pad=1), pp, 1))
    return b.concat([branch1, branch3, branch5, branch_pool])


def googlenet(b: NetBuilder) -> str:
    x = b.maxpool(b.relu(b.conv("input", 64, 7, 2)), 3, 2, ceil=True)
    x = b.lrn(x)
    x = b.relu(b.conv(b.relu(b.conv(x, 64, 1)), 192, 3))
    x = b.maxpool(b.lrn(x), 3, 2, ceil=True)
    x = _inception(b, x, 64, 96, 128, 16, 32, 32)
    x = _inception(b, x, 128, 128, 192, 32, 96, 64)
    x = b.maxpool(x, 3, 2, ceil=True)
    for spec in ((192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
                 (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128)):
        x = _inception(b, x, *spec)
    x = b.maxpool(x, 3, 2, ceil=True)
    x = _inception(b, x, 256, 160, 320, 32, 128, 128)
    x = _inception(b, x, 384, 192, 384, 48, 128, 128)
    x = b.dropout(b.flatten(b.gap(x)))
    return b.softmax(b.gemm(x, 1000))


def _resnet(b: NetBuilder, blocks: tuple[int, ...], bottleneck: bool) -> str:
    x = b.maxpool(_conv_bn_relu(b, "input", 64, 7, 2), 3, 2, pad=1)
    cin = 64
    for stage, repeats in enumerate(blocks):
        width = 64 * 2 ** stage
        cout = width * 4 if bottleneck else width
        for index in range(repeats):
            stride = 2 if stage > 0 and index == 0 else 1
            if bottleneck:
                y = _conv_bn_relu(b, x, width, 1)
                y = _conv_bn_relu(b, y, width, 3, stride)
                y = b.bn(b.conv(y, cout, 1, bias=False))
            else:
                y = _conv_bn_relu(b, x, width, 3, stride)
                y = b.bn(b.conv(y, cout, 3, bias=False))
            shortcut = b.bn(b.conv(x, cout, 1, stride, bias=False)) if stride != 1 or cin != cout else x
            x = b.relu(b.add(y, shortcut))
            cin = cout
    return b.gemm(b.flatten(b.gap(x)), 1000)


def resnet18(b: NetBuilder) -> str:
    return _resnet(b, (2, 2, 2, 2), bottleneck=False)


def resnet50(b: NetBuilder) -> str:
    return _resnet(b, (3, 4, 6, 3), bottleneck=True)


def mobilenet_v2(b: NetBuilder) -> str:
    x = _conv_bn_relu(b, "input", 32, 3, 2, act="relu6")
    cin = 32
    for expand, cout, repeats, first_stride in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                                                (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
        for index in range(repeats):
            stride = first_stride if index == 0 else 1
            hidden = cin * expand
            y = _conv_bn_relu(b, x, hidden, 1, act="relu6") if expand != 1 else x
            y = _conv_bn_relu(b, y, hidden, 3, stride, groups=hidden, act="relu6")
            y = _conv_bn_relu(b, y, cout, 1, act="none")
            x = b.add(y, x) if stride == 1 and cin == cout else y
            cin = cout
    x = _conv_bn_relu(b, x, 1280, 1, act="relu6")
    return b.gemm(b.flatten(b.gap(x)), 1000)


def densenet121(b: NetBuilder) -> str:
    x = b.maxpool(_conv_bn_relu(b, "input", 64, 7, 2), 3, 2, pad=1)
    channels = 64
    for stage, layers in enumerate((6, 12, 24, 16)):
        for _ in range(layers):
            y = b.conv(b.relu(b.bn(x)), 128, 1, bias=False)
            y = b.conv(b.relu(b.bn(y)), 32, 3, bias=False)
            x = b.concat([x, y])
            channels += 32
        if stage < 3:
            channels //= 2
            x = b.avgpool(b.conv(b.relu(b.bn(x)), channels, 1, bias=False), 2, 2)
    return b.gemm(b.flatten(b.gap(b.relu(b.bn(x)))), 1000)


def squeezenet(b: NetBuilder) -> str:
    def fire(x: str, squeeze: int, expand: int) -> str:
        s = b.relu(b.conv(x, squeeze, 1))
        return b.concat([b.relu(b.conv(s, expand, 1)), b.relu(b.conv(s, expand, 3))])

    x = b.maxpool(b.relu(b.conv("input", 96, 7, 2, pad=0)), 3, 2, ceil=True)
    x = fire(fire(fire(x, 16, 64), 16, 64), 32, 128)
    x = b.maxpool(x, 3, 2, ceil=True)
    x = fire(fire(fire(fire(x, 32, 128), 48, 192), 48, 192), 64, 256)
    x = b.maxpool(x, 3, 2, ceil=True)
    x = fire(x, 64, 256)
    x = b.relu(b.conv(b.dropout(x), 1000, 1))
    return b.softmax(b.flatten(b.gap(x)))


def efficientnet_b0(b: NetBuilder, squeeze_excite: bool = True, act: str = "swish") -> str:
    """EfficientNet-B0 (MBConv blocks with squeeze-and-excitation, Swish); the two switches build the variants
    `benchmarks/efficientnet_ablation.py` compares."""
    x = _conv_bn_relu(b, "input", 32, 3, 2, act=act)
    cin = 32
    for expand, cout, repeats, first_stride, k in ((1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 40, 2, 2, 5),
                                                   (6, 80, 3, 2, 3), (6, 112, 3, 1, 5), (6, 192, 4, 2, 5),
                                                   (6, 320, 1, 1, 3)):
        for index in range(repeats):
            stride = first_stride if index == 0 else 1
            hidden = cin * expand
            y = _conv_bn_relu(b, x, hidden, 1, act=act) if expand != 1 else x
            y = _conv_bn_relu(b, y, hidden, k, stride, groups=hidden, act=act)
            if squeeze_excite:
                squeeze = b.swish(b.conv(b.gap(y), max(1, cin // 4), 1))
                y = b.mul(y, b.sigmoid(b.conv(squeeze, hidden, 1)))
            y = _conv_bn_relu(b, y, cout, 1, act="none")
            x = b.add(y, x) if stride == 1 and cin == cout else y
            cin = cout
    x = _conv_bn_relu(b, x, 1280, 1, act=act)
    return b.gemm(b.flatten(b.gap(x)), 1000)


def vit_s_depth6(b: NetBuilder, dim: int = 384, depth: int = 6, heads: int = 6, patch: int = 16) -> str:
    """ViT-style encoder at ViT-Small's width (384, 6 heads) with 6 blocks, not ViT-Small's 12: patch
    embedding, pre-norm attention + MLP blocks (no class token)."""
    n = b.shapes["input"][0]
    side = b.shapes["input"][2] // patch
    tokens = side * side
    x = b.conv("input", dim, patch, patch, pad=0)
    x = b.transpose(b.reshape(x, (n, dim, tokens)), (0, 2, 1))
    head_dim = dim // heads
    for _ in range(depth):
        h = b.layernorm(x)
        qkv = [b.transpose(b.reshape(b.linear(h, dim), (n, tokens, heads, head_dim)), (0, 2, 1, 3))
               for _ in range(3)]
        scores = b.softmax(b.scale(b.matmul(qkv[0], b.transpose(qkv[1], (0, 1, 3, 2))), head_dim ** -0.5))
        attended = b.reshape(b.transpose(b.matmul(scores, qkv[2]), (0, 2, 1, 3)), (n, tokens, dim))
        x = b.add(x, b.linear(attended, dim))
        mlp = b.linear(b.gelu(b.linear(b.layernorm(x), 4 * dim)), dim)
        x = b.add(x, mlp)
    x = b.reshape(b.layernorm(x), (n, tokens * dim))
    return b.gemm(x, 1000)


NETWORKS: dict[str, tuple[Callable[[NetBuilder], str], tuple[int, int, int]]] = {
    "alexnet": (alexnet, (3, 227, 227)),
    "vgg16": (vgg16, (3, 224, 224)),
    "nin": (nin, (3, 224, 224)),
    "googlenet": (googlenet, (3, 224, 224)),
    "resnet18": (resnet18, (3, 224, 224)),
    "resnet50": (resnet50, (3, 224, 224)),
    "mobilenet_v2": (mobilenet_v2, (3, 224, 224)),
    "densenet121": (densenet121, (3, 224, 224)),
    "squeezenet": (squeezenet, (3, 224, 224)),
    "efficientnet_b0": (efficientnet_b0, (3, 224, 224)),
    "vit_s_depth6": (vit_s_depth6, (3, 224, 224)),
}


def build(name: str, batch: int = 1, weights: bool = True, symbolic_batch: bool = False,
          opset: int = 17) -> onnx.ModelProto:
    """Build a reference network as an ONNX model (opset 13-21; vit_s_depth6 needs >= 17 for LayerNormalization)."""
    if name not in NETWORKS:
        raise NpowerError(f"unknown network '{name}'; known: {', '.join(NETWORKS)}")
    definition, chw = NETWORKS[name]
    builder = NetBuilder(name, (batch, *chw), weights=weights, symbolic_batch=symbolic_batch, opset=opset)
    return builder.model(definition(builder))
