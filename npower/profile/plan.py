"""Sampling plans: seeded, reproducible single-layer configurations per op kind.

A config is plain data: {"op", "domain", "attrs", "inputs": [{"shape", "weight", "init"?}],
"outputs", "out_shape"?}. Distributions lean towards the sizes real networks use
(powers of two, 7/14/28/56/112/224 maps, 1/3/5/7/11 kernels) with a random tail.
"""
from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Callable, Iterator

import numpy as np

Config = dict[str, Any]

COMMON_SPATIAL = [1, 2, 4, 7, 8, 13, 14, 16, 17, 27, 28, 32, 35, 55, 56, 64, 112, 128, 224]
COMMON_CHANNELS = [3, 16, 24, 32, 48, 64, 96, 128, 160, 192, 256, 320, 384, 512, 768, 1024, 2048]


def config_key(config: Config) -> str:
    """Stable identity of a config (for resuming)."""
    return hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


class Sampler:
    """Seeded draws biased towards common network sizes."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def choice(self, values, weights=None):
        index = self.rng.choice(len(values), p=None if weights is None else np.array(weights) / sum(weights))
        return values[int(index)]

    def log_int(self, low: int, high: int) -> int:
        return int(round(2 ** self.rng.uniform(math.log2(low), math.log2(high))))

    def common_or_log(self, common: list[int], low: int, high: int, p_common: float = 0.7) -> int:
        pool = [v for v in common if low <= v <= high]
        return self.choice(pool) if pool and self.rng.random() < p_common else self.log_int(low, high)

    def batch(self, high: int = 256) -> int:
        return 1 if self.rng.random() < 0.35 else self.log_int(1, high)

    def spatial(self, low: int = 1, high: int = 512) -> int:
        return self.common_or_log(COMMON_SPATIAL, low, high)

    def channels(self, high: int = 2048) -> int:
        return self.common_or_log(COMMON_CHANNELS, 1, high)


def _tensor(shape, weight: bool = False, **extra) -> dict[str, Any]:
    return {"shape": [int(d) for d in shape], "weight": weight, **extra}


def _conv(s: Sampler, transpose: bool = False) -> Config:
    rank = s.choice([1, 2, 3], [0.04, 0.92, 0.04])
    k = s.choice([1, 3, 5, 7, 11], [0.35, 0.42, 0.1, 0.1, 0.03])
    stride = s.choice([1, 2, 4], [0.72, 0.25, 0.03])
    dilation = s.choice([1, 2, 4], [0.9, 0.07, 0.03]) if k == 3 and not transpose else 1
    cin = s.channels()
    depthwise = not transpose and s.rng.random() < 0.15
    groups = cin if depthwise else (s.choice([2, 4, 8, 32]) if s.rng.random() < 0.05 else 1)
    if cin % groups:
        groups = 1
    cout = cin if depthwise else s.channels()
    cout = max(groups, cout - cout % groups)
    size = s.spatial(1, 512 if rank < 3 else 64)
    sizes = [size] * rank if s.rng.random() < 0.9 else [s.spatial(1, 512 if rank < 3 else 64) for _ in range(rank)]
    pad = s.choice(["same", "zero", "rand"], [0.7, 0.25, 0.05])
    pads = [(k - 1) * dilation // 2 if pad == "same" else 0 if pad == "zero" else int(s.rng.integers(0, k))] * rank
    effective = (k - 1) * dilation + 1
    sizes = [max(n, effective - 2 * p) for n, p in zip(sizes, pads)]
    n = s.batch()
    attrs = {"kernel_shape": [k] * rank, "strides": [stride] * rank, "pads": pads * 2, "group": groups}
    if transpose:
        weight = [cin, cout // groups, *([k] * rank)]
    else:
        attrs["dilations"] = [dilation] * rank
        weight = [cout, cin // groups, *([k] * rank)]
    inputs = [_tensor([n, cin, *sizes]), _tensor(weight, True)]
    if s.rng.random() < 0.7:
        inputs.append(_tensor([cout], True))
    return {"op": "ConvTranspose" if transpose else "Conv", "attrs": attrs, "inputs": inputs}


# Decoders' upsampling ConvTransposes at stride 2: U-Net's 2x2, DCGAN's and pix2pix's 4x4 pad 1, FCN's and
# segmentation heads' 3x3 pad 1 with an output padding of 1 (each doubles the side)
UPSAMPLINGS = ({"kernel_shape": [2, 2], "pads": [0, 0, 0, 0]}, {"kernel_shape": [4, 4], "pads": [1, 1, 1, 1]},
               {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "output_padding": [1, 1]})
DECODER_ELEMENTS = 2 ** 24  # at most 64 MiB an input


def _decoder_upsampling(s: Sampler) -> Config:
    """A decoder's ConvTranspose (`UPSAMPLINGS`) from 32-1024 channels to half as many (to as many, or to an
    image's 1-3 channels now and then), over a 4-128 pixel side at batch 1-16: the general draw's transposed
    convs are mostly shapes no network has (stride 1, 1x1 kernels)."""
    cin = s.choice([32, 64, 128, 256, 512, 1024])
    cout = s.choice([cin // 2, cin, s.choice([1, 3])], [0.7, 0.2, 0.1])
    batch = s.choice([1, 2, 4, 8, 16], [0.4, 0.2, 0.2, 0.1, 0.1])
    side = max(4, min(s.choice([4, 7, 8, 14, 16, 28, 32, 56, 64, 128]), math.isqrt(DECODER_ELEMENTS // (batch * cin))))
    attrs = {**s.choice(UPSAMPLINGS), "strides": [2, 2], "group": 1}
    inputs = [_tensor([batch, cin, side, side]), _tensor([cin, cout, *attrs["kernel_shape"]], True)]
    if s.rng.random() < 0.8:
        inputs.append(_tensor([cout], True))
    return {"op": "ConvTranspose", "attrs": attrs, "inputs": inputs}


def _depthwise(s: Sampler, channels: int, kernel_weights: list[float], batch_high: int,
               stride_weights: tuple[float, float] = (0.7, 0.3)) -> Config:
    """A 2-D "same"-padded depthwise conv over `channels`: kernel 3, 5 or 7, stride 1 or 2."""
    k, stride = s.choice([3, 5, 7], kernel_weights), s.choice([1, 2], list(stride_weights))
    size = max(s.spatial(4, 224), k)
    attrs = {"kernel_shape": [k, k], "strides": [stride, stride], "pads": [k // 2] * 4, "group": channels,
             "dilations": [1, 1]}
    return {"op": "Conv", "attrs": attrs, "inputs": [_tensor([s.batch(batch_high), channels, size, size]),
                                                     _tensor([channels, 1, k, k], True), _tensor([channels], True)]}


def _odd_depthwise(s: Sampler) -> Config:
    """A depthwise conv over a channel count that is not a multiple of 4 (NASNet's 11, 22, 42, ...):
    onnxruntime's NCHWc layout leaves it plain at every level, so it is drawn where `conv` rarely goes."""
    return _depthwise(s, 4 * s.log_int(1, 512) + int(s.rng.integers(1, 4)), [0.6, 0.3, 0.1], 32)


def _blocked_depthwise(s: Sampler) -> Config:
    """A depthwise conv over a multiple of 16 channels (MobileNet, EfficientNet, Xception): onnxruntime
    runs it as its NCHWc depthwise kernel (`nchwc_conv_dw`), which the general conv draw reaches rarely
    and mostly at shapes no network has."""
    return _depthwise(s, 16 * s.log_int(1, 120), [0.7, 0.25, 0.05], 16)


def _wide_depthwise(s: Sampler) -> Config:
    """A 5x5 or 7x7 depthwise conv over a multiple of 16 channels, at stride 1 or 2 alike (EfficientNet's and
    MnasNet's 5x5 stride-2 stages, NASNet's 7x7 ones): the blocked depthwise draw has them rarely."""
    return _depthwise(s, 16 * s.log_int(1, 120), [0.0, 0.5, 0.5], 16, stride_weights=(0.5, 0.5))


# Feature-map sides of mobile networks' depthwise stages (inputs of 96-224 after their stems and strides)
MOBILE_SIDES = [7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80]


def _mobile_depthwise(s: Sampler) -> Config:
    """A depthwise conv as an inverted-residual block has it (MobileNetV2/V3, EfficientNet, MnasNet): a block's
    16-160 channels times an expansion of 1-6, rounded to a block of 16, over a mobile network's feature map at
    batch 1-8, which the blocked depthwise draw reaches rarely. On random networks of these blocks, the pack priced
    such layers with 4-16 MB of activations 1.45x their in-network time without these samples and 1.36x with them
    (`benchmarks/depthwise_networks.py`)."""
    channels = max(16, s.choice([16, 24, 32, 40, 48, 64, 80, 96, 112, 160]) * s.choice([1, 3, 4, 6]) // 16 * 16)
    k, stride = s.choice([3, 5, 7], [0.6, 0.25, 0.15]), s.choice([1, 2], [0.75, 0.25])
    side, batch = s.choice(MOBILE_SIDES), s.choice([1, 2, 4, 8], [0.4, 0.2, 0.2, 0.2])
    attrs = {"kernel_shape": [k, k], "strides": [stride, stride], "pads": [k // 2] * 4, "group": channels,
             "dilations": [1, 1]}
    return {"op": "Conv", "attrs": attrs, "inputs": [_tensor([batch, channels, side, side]),
                                                     _tensor([channels, 1, k, k], True), _tensor([channels], True)]}


CHANNEL_SCALE_ELEMENTS = 2 ** 26  # at most 256 MiB a tensor
WRAP_OP = "Neg"  # a plain element-wise op that nothing fuses with and the NCHWc layout leaves plain


def _channel_scale(s: Sampler) -> Config:
    """A per-channel scale (and shift) over a multiple of 16 channels: inside a blocked region onnxruntime runs a
    BatchNormalization (pre-activation ResNets, DenseNet's 58) or a Mul by per-channel constants as a 1x1
    depthwise conv (`nchwc_conv_dw_1x1`), a stream over the tensor that only rare general conv draws reach."""
    channels = 16 * s.log_int(1, 128)
    batch = s.choice([1, 2, 4, 8, 16, 32], [0.4, 0.15, 0.2, 0.1, 0.1, 0.05])
    side = max(1, min(s.spatial(1, 224), math.isqrt(CHANNEL_SCALE_ELEMENTS // (batch * channels))))
    attrs = {"kernel_shape": [1, 1], "strides": [1, 1], "pads": [0, 0, 0, 0], "group": channels, "dilations": [1, 1]}
    inputs = [_tensor([batch, channels, side, side]), _tensor([channels, 1, 1, 1], True)]
    if s.rng.random() < 0.7:  # a BatchNormalization's shift; a Mul has none
        inputs.append(_tensor([channels], True))
    return {"op": "Conv", "attrs": attrs, "inputs": inputs}


def _mid_graph_reorders(s: Sampler) -> Config:
    """A blocked per-channel scale (`channel_scale`) between two plain ops (`WRAP_OP`): its ReorderInput reads
    a tensor the kernel before it just wrote and its ReorderOutput writes one the kernel after it reads, as where a
    network's blocked regions begin and end. A single-node graph's reorders read the user's input and write the
    graph output instead, 1.5-3x slower (`fit` fits the reorder kinds on these samples where a run has them)."""
    return {**_channel_scale(s), "wrap": WRAP_OP}


def _narrow_pointwise(s: Sampler) -> Config:
    """A blocked 1x1 conv (input channels a multiple of 16) to few output channels, 8 to 160 (MobileNet's
    and EfficientNet's projections to 16, 24, 40, 80 or 96): MLAS computes outputs in filter sets of up to 4
    blocks of 16, and under 64 channels, or beyond each multiple of 64, a set has fewer blocks, which run at
    another rate per multiply-add; the general conv draw has such layers rarely."""
    cin, cout = 16 * s.log_int(1, 64), 8 * s.log_int(1, 20)
    size, stride = s.spatial(2, 128), s.choice([1, 2], [0.8, 0.2])
    attrs = {"kernel_shape": [1, 1], "strides": [stride, stride], "pads": [0, 0, 0, 0], "group": 1,
             "dilations": [1, 1]}
    return {"op": "Conv", "attrs": attrs, "inputs": [_tensor([s.batch(16), cin, size, size]),
                                                     _tensor([cout, cin, 1, 1], True), _tensor([cout], True)]}


# A network's first conv over an image: (kernel, stride) of a stem (3x3/2: MobileNet, EfficientNet; 7x7/2:
# ResNet, GoogLeNet; 11x11/4: AlexNet; 3x3/1: VGG) or a patch embedding (4x4/4: ConvNeXt, 16x16/16: ViT).
FIRST_CONVS = [(3, 2), (7, 2), (11, 4), (3, 1), (5, 2), (4, 4), (16, 16)]


def _first_conv(s: Sampler) -> Config:
    """A conv over 1, 3 or 4 image channels reading a graph input, which a network's first conv meets in memory
    (the profiler does not read it back into cache: `cache_state`)."""
    kernel, stride = s.choice(FIRST_CONVS, [0.25, 0.2, 0.1, 0.1, 0.1, 0.1, 0.15])
    cin, cout = s.choice([1, 3, 4], [0.15, 0.75, 0.1]), s.common_or_log([16, 24, 32, 48, 64, 96, 384, 768], 8, 1024)
    size = max(s.common_or_log([224, 256, 299, 320, 384, 512], 32, 512), kernel)
    pads = [0] * 4 if kernel == stride else [kernel // 2] * 4
    attrs = {"kernel_shape": [kernel, kernel], "strides": [stride, stride], "pads": pads, "group": 1,
             "dilations": [1, 1]}
    return {"op": "Conv", "attrs": attrs, "graph_input": True,
            "inputs": [_tensor([s.batch(16), cin, size, size]), _tensor([cout, cin, kernel, kernel], True),
                       _tensor([cout], True)]}


def _odd_channels_conv(s: Sampler, kernel: int, stride: int) -> Config:
    """A "same"-padded ungrouped 2-D conv over more than 16 input channels, not a multiple of 4 (NASNet's 42 or
    66, a concat of odd widths): onnxruntime's NCHWc layout pads a blocked input only from a multiple of 4
    (`ort_layout.PADDABLE`), so it leaves this conv plain at every level."""
    cin, cout = 4 * s.log_int(5, 512) + int(s.rng.integers(1, 4)), s.channels()
    size = max(s.spatial(1, 224), kernel)
    attrs = {"kernel_shape": [kernel, kernel], "strides": [stride, stride], "pads": [kernel // 2] * 4, "group": 1,
             "dilations": [1, 1]}
    return {"op": "Conv", "attrs": attrs, "inputs": [_tensor([s.batch(32), cin, size, size]),
                                                     _tensor([cout, cin, kernel, kernel], True), _tensor([cout], True)]}


def _odd_pointwise(s: Sampler) -> Config:
    """A 1x1 conv at stride 1 over odd input channels: one GEMM per image (`conv_1x1`), which the general conv
    draw reaches rarely."""
    return _odd_channels_conv(s, 1, 1)


def _odd_conv(s: Sampler) -> Config:
    """A 3x3, 5x5 or 7x7 conv at stride 1 or 2 over odd input channels: im2col + GEMM (`conv`)."""
    return _odd_channels_conv(s, s.choice([3, 5, 7], [0.7, 0.2, 0.1]), s.choice([1, 2], [0.7, 0.3]))


def _gemm(s: Sampler) -> Config:
    m = s.batch(1024)
    k, n = s.common_or_log([256, 512, 1000, 1024, 2048, 4096, 9216, 25088], 10, 25088, 0.5), \
        s.common_or_log([10, 100, 256, 512, 1000, 1024, 2048, 4096], 10, 25000, 0.5)
    trans_b = int(s.rng.random() < 0.8)
    inputs = [_tensor([m, k]), _tensor([n, k] if trans_b else [k, n], True)]
    if s.rng.random() < 0.85:
        inputs.append(_tensor([n], True))
    return {"op": "Gemm", "attrs": {"transB": trans_b}, "inputs": inputs}


def _transformer_gemm(s: Sampler) -> Config:
    """A transformer's projection: (batch x tokens, hidden) by a (hidden, n) weight plus bias, the Gemm
    onnxruntime runs for MatMul + Add (the `gemm` kind, drawn where CNN classifiers leave it sparse)."""
    tokens = s.batch(16) * s.common_or_log([49, 64, 128, 196, 197, 256, 384, 512], 1, 2048)
    k, n = (s.common_or_log([256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096], 64, 8192) for _ in range(2))
    return {"op": "Gemm", "attrs": {}, "inputs": [_tensor([tokens, k]), _tensor([k, n], True), _tensor([n], True)]}


def _matmul(s: Sampler) -> Config:
    if s.rng.random() < 0.5:  # attention-like: (B, heads, T, d) x (B, heads, d, T) or (.., T, T) x (.., T, d)
        batch, heads = s.batch(64), s.choice([1, 2, 4, 6, 8, 12, 16])
        tokens = s.common_or_log([49, 64, 128, 196, 197, 256, 512, 1024], 8, 2048)
        head_dim = s.choice([32, 48, 64, 80, 96, 128])
        left, right = ([tokens, head_dim], [head_dim, tokens]) if s.rng.random() < 0.5 else \
            ([tokens, tokens], [tokens, head_dim])
        return {"op": "MatMul", "attrs": {}, "inputs": [_tensor([batch, heads, *left]), _tensor([batch, heads, *right])]}
    rows = [s.batch(64), s.common_or_log([1, 49, 128, 196, 197, 256, 512], 1, 1024)]
    k = s.common_or_log([64, 128, 256, 384, 512, 768, 1024, 2048, 3072, 4096], 10, 8192)
    n = s.common_or_log([64, 128, 256, 384, 512, 768, 1000, 1024, 2048, 3072, 4096], 10, 25000)
    shape = rows if s.rng.random() < 0.7 else [rows[0] * rows[1]]
    return {"op": "MatMul", "attrs": {}, "inputs": [_tensor([*shape, k]), _tensor([k, n], True)]}


def _pool(op: str) -> Callable[[Sampler], Config]:
    def draw(s: Sampler) -> Config:
        k = s.choice([2, 3, 5, 7], [0.4, 0.45, 0.05, 0.1])
        stride = s.choice([1, 2, 3], [0.2, 0.75, 0.05])
        pad = s.choice([0, k // 2], [0.6, 0.4])
        size = max(s.spatial(2, 256), k)
        attrs = {"kernel_shape": [k, k], "strides": [stride, stride], "pads": [pad] * 4,
                 "ceil_mode": int(s.rng.random() < 0.3)}
        return {"op": op, "attrs": attrs, "inputs": [_tensor([s.batch(), s.channels(1024), size, size])]}
    return draw


def _nchw(op: str, attrs: dict | None = None, params: int = 0) -> Callable[[Sampler], Config]:
    """Ops over an NCHW tensor with optional per-channel parameter tensors."""
    def draw(s: Sampler) -> Config:
        c, size = s.channels(), s.spatial(1, 224)
        inputs = [_tensor([s.batch(128), c, size, size])]
        inputs += [_tensor([c], True, init="positive" if i == 3 else "normal") for i in range(params)]
        extra = {"size": s.choice([3, 5])} if op == "LRN" else {}
        return {"op": op, "attrs": {**(attrs or {}), **extra}, "inputs": inputs}
    return draw


def _tokens(s: Sampler) -> list[int]:
    """(batch, tokens, hidden) of a transformer's activations."""
    return [s.batch(64), s.common_or_log([49, 128, 196, 197, 256, 512], 1, 2048),
            s.common_or_log([64, 128, 256, 384, 512, 768, 1000, 1024], 2, 4096)]


def _rows(s: Sampler) -> list[int]:
    if s.rng.random() < 0.5:
        return _tokens(s)
    return [s.batch(), s.common_or_log([10, 100, 1000], 2, 30000)]


def _softmax(s: Sampler) -> Config:
    if s.rng.random() < 0.5:
        tokens = s.common_or_log([49, 64, 128, 196, 197, 256], 8, 1024)
        return {"op": "Softmax", "attrs": {"axis": -1},
                "inputs": [_tensor([s.batch(64), s.choice([1, 4, 6, 8, 12]), tokens, tokens])]}
    return {"op": "Softmax", "attrs": {"axis": -1}, "inputs": [_tensor(_rows(s))]}


def _layernorm(s: Sampler) -> Config:
    shape = _rows(s)
    return {"op": "LayerNormalization", "attrs": {"axis": -1, "epsilon": 1e-5},
            "inputs": [_tensor(shape), _tensor([shape[-1]], True, init="positive"), _tensor([shape[-1]], True)]}


def _skip_layernorm(s: Sampler) -> Config:
    """onnxruntime's residual Add + LayerNormalization kernel (its contrib op takes 3-D inputs)."""
    shape = _tokens(s)
    return {"op": "SkipLayerNormalization", "domain": "com.microsoft", "attrs": {"epsilon": 1e-5},
            "inputs": [_tensor(shape), _tensor(shape), _tensor([shape[-1]], True, init="positive"),
                       _tensor([shape[-1]], True)], "out_shape": shape}


def _activation_shape(s: Sampler) -> list[int]:
    if s.rng.random() < 0.7:
        return [s.batch(64), s.channels(1024), *([s.spatial(1, 224)] * 2)]
    return _rows(s)


def _elementwise(op: str, arity: int = 1, domain: str = "", attrs: dict | None = None,
                 extra_inputs: Callable[[list[int]], list[dict]] | None = None) -> Callable[[Sampler], Config]:
    def draw(s: Sampler) -> Config:
        shape = _activation_shape(s)
        inputs = [_tensor(shape)]
        for _ in range(arity - 1):
            other = shape
            if s.rng.random() < 0.3 and len(shape) == 4:  # per-channel or SE-style broadcast
                other = [shape[0], shape[1], 1, 1] if s.rng.random() < 0.5 else [shape[1], 1, 1]
            inputs.append(_tensor(other, weight=len(other) < len(shape)))
        if extra_inputs:
            inputs += extra_inputs(shape)
        config = {"op": op, "attrs": dict(attrs or {}), "inputs": inputs}
        if domain:
            config["domain"], config["out_shape"] = domain, shape
        return config
    return draw


def _channels_last_broadcast(s: Sampler) -> Config:
    """A binary op with a per-channel operand on the innermost axis: a channels-last image ([N, H, W, C] by [C],
    as Keras models normalise their input) or token rows by a bias; onnxruntime's broadcast loop then makes one
    short run per pixel or token (`features.broadcast_spans`), which the channels-first draws never do."""
    if s.rng.random() < 0.7:
        shape = [s.batch(16), *([s.spatial(1, 224)] * 2), s.common_or_log([3, 8, 16, 24, 32, 64, 96, 144], 1, 1024)]
    else:
        shape = _rows(s)
    other = [shape[-1]] if s.rng.random() < 0.5 else [1] * (len(shape) - 1) + [shape[-1]]
    return {"op": s.choice(["Add", "Mul", "Sub", "Div"]), "attrs": {},
            "inputs": [_tensor(shape), _tensor(other, True)]}


def _concat(s: Sampler) -> Config:
    pieces = s.choice([2, 3, 4, 6], [0.6, 0.15, 0.2, 0.05])
    shape = _activation_shape(s)
    inputs = [_tensor([shape[0], max(1, s.channels(512)), *shape[2:]]) for _ in range(pieces)]
    return {"op": "Concat", "attrs": {"axis": 1}, "inputs": inputs}


def _split(s: Sampler) -> Config:
    shape = _activation_shape(s)
    pieces = s.choice([2, 3, 4])
    shape[1] = max(shape[1] - shape[1] % pieces, pieces)
    return {"op": "Split", "attrs": {"axis": 1}, "outputs": pieces,
            "inputs": [_tensor(shape), _tensor([pieces], True, value=[shape[1] // pieces] * pieces)]}


def _slice(s: Sampler) -> Config:
    shape = _activation_shape(s)
    axis = int(s.rng.integers(1, len(shape)))
    end = max(1, int(shape[axis] * s.rng.uniform(0.2, 1.0)))
    return {"op": "Slice", "attrs": {}, "inputs": [
        _tensor(shape), _tensor([1], True, value=[0]), _tensor([1], True, value=[end]), _tensor([1], True, value=[axis])]}


def _pad(s: Sampler) -> Config:
    shape = [s.batch(64), s.channels(512), *([s.spatial(1, 224)] * 2)]
    p = s.choice([1, 2, 3])
    return {"op": "Pad", "attrs": {"mode": "constant"},
            "inputs": [_tensor(shape), _tensor([8], True, value=[0, 0, p, p, 0, 0, p, p])]}


def _resize(s: Sampler) -> Config:
    factor = s.choice([2.0, 4.0, 0.5])
    shape = [s.batch(32), s.channels(512), *([s.spatial(2 if factor < 1 else 1, 128)] * 2)]
    mode = s.choice(["nearest", "linear"])
    return {"op": "Resize", "attrs": {"mode": mode}, "inputs": [
        _tensor(shape), _tensor([0], True, value=[]), _tensor([4], True, value=[1.0, 1.0, factor, factor])]}


def _transpose(s: Sampler) -> Config:
    if s.rng.random() < 0.5:
        shape = [s.batch(64), s.choice([49, 196, 197, 256, 512]), s.choice([4, 6, 8, 12]), s.choice([32, 64])]
        perm = [0, 2, 1, 3]
    else:
        shape = [s.batch(64), s.channels(1024), *([s.spatial(1, 128)] * 2)]
        perm = s.choice([[0, 2, 3, 1], [0, 3, 1, 2], [0, 1, 3, 2]])
    return {"op": "Transpose", "attrs": {"perm": perm}, "inputs": [_tensor(shape)]}


def _reduce(s: Sampler) -> Config:
    shape = _activation_shape(s)
    axes = [2, 3] if len(shape) == 4 and s.rng.random() < 0.5 else [len(shape) - 1]
    # opset 17: ReduceMean/ReduceMax take axes as an attribute (ReduceSum takes an input).
    return {"op": s.choice(["ReduceMean", "ReduceMax"]), "attrs": {"axes": axes, "keepdims": 1},
            "inputs": [_tensor(shape)]}


def _clip_bounds(_shape: list[int]) -> list[dict]:
    return [_tensor([], True, value=0.0), _tensor([], True, value=6.0)]


def _prelu_slope(shape: list[int]) -> list[dict]:
    return [_tensor([shape[1], 1, 1] if len(shape) == 4 else [shape[-1]], True, init="positive")]


# kind -> (draw function, default share of the plan)
PLANS: dict[str, tuple[Callable[[Sampler], Config], int]] = {
    "conv": (_conv, 900),
    "conv_transpose": (lambda s: _conv(s, transpose=True), 60),
    "gemm": (_gemm, 130),
    "matmul": (_matmul, 170),
    "maxpool": (_pool("MaxPool"), 110),
    "avgpool": (_pool("AveragePool"), 70),
    "global_avgpool": (_nchw("GlobalAveragePool"), 50),
    "global_maxpool": (_nchw("GlobalMaxPool"), 40),
    "batchnorm": (_nchw("BatchNormalization", {"epsilon": 1e-5}, params=4), 60),
    "instancenorm": (_nchw("InstanceNormalization", {"epsilon": 1e-5}, params=2), 40),
    "lrn": (_nchw("LRN", {"alpha": 1e-4, "beta": 0.75, "bias": 1.0}), 40),
    "layernorm": (_layernorm, 50),
    "softmax": (_softmax, 60),
    "relu": (_elementwise("Relu"), 40),
    "leakyrelu": (_elementwise("LeakyRelu", attrs={"alpha": 0.1}), 40),
    "clip": (_elementwise("Clip", extra_inputs=_clip_bounds), 40),
    "sigmoid": (_elementwise("Sigmoid"), 40),
    "hardsigmoid": (_elementwise("HardSigmoid"), 40),
    "hardswish": (_elementwise("HardSwish"), 40),
    "tanh": (_elementwise("Tanh"), 40),
    "erf": (_elementwise("Erf"), 40),
    "gelu": (_elementwise("Gelu", domain="com.microsoft"), 40),
    "quickgelu": (_elementwise("QuickGelu", domain="com.microsoft", attrs={"alpha": 1.0}), 40),
    "prelu": (_elementwise("PRelu", extra_inputs=_prelu_slope), 40),
    "add": (_elementwise("Add", 2), 50),
    "sub": (_elementwise("Sub", 2), 25),
    "mul": (_elementwise("Mul", 2), 45),
    "div": (_elementwise("Div", 2), 25),
    "concat": (_concat, 50),
    "split": (_split, 40),
    "slice": (_slice, 40),
    "pad": (_pad, 40),
    "resize": (_resize, 40),
    "transpose": (_transpose, 45),
    "reduce": (_reduce, 40),
    # new entries go last: the others' seeds stay unchanged
    "skip_layernorm": (_skip_layernorm, 40),
    "transformer_gemm": (_transformer_gemm, 100),
    "odd_depthwise": (_odd_depthwise, 80),
    "blocked_depthwise": (_blocked_depthwise, 100),
    "odd_pointwise": (_odd_pointwise, 100),
    "odd_conv": (_odd_conv, 100),
    "narrow_pointwise": (_narrow_pointwise, 100),
    "wide_depthwise": (_wide_depthwise, 60),
    "first_conv": (_first_conv, 80),
    "mobile_depthwise": (_mobile_depthwise, 120),
    "channels_last_broadcast": (_channels_last_broadcast, 120),
    "channel_scale": (_channel_scale, 120),
    "decoder_upsampling": (_decoder_upsampling, 120),
    "mid_graph_reorders": (_mid_graph_reorders, 300),
}


def generate(kinds: list[str] | None = None, scale: float = 1.0, seed: int = 0,
             accept: Callable[[Config], bool] | None = None, max_tries: int = 50) -> Iterator[tuple[str, Config]]:
    """Yield (kind, config) for the plan: `scale` times each kind's default count, interleaved."""
    wanted = {kind: max(1, round(count * scale)) for kind, (_, count) in PLANS.items()
              if kinds is None or kind in kinds}
    samplers = {kind: Sampler(seed * 1000 + index) for index, kind in enumerate(PLANS)}
    made = {kind: 0 for kind in wanted}
    while any(made[k] < wanted[k] for k in wanted):
        for kind in wanted:
            if made[kind] >= wanted[kind]:
                continue
            draw = PLANS[kind][0]
            for _ in range(max_tries):
                config = draw(samplers[kind])
                if accept is None or accept(config):
                    break
            else:
                made[kind] = wanted[kind]  # this kind's space is exhausted under the budget
                continue
            made[kind] += 1
            yield kind, config
