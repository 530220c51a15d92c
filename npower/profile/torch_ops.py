"""ONNX operators as PyTorch eager calls: op_type -> factory(node spec) -> callable on tensors.

A factory reads the node's attributes and constant inputs (initializer values) once, and returns
a function of the node's input tensors (all of them, constants included, None for absent optional
ones) that calls what an eager PyTorch model calls for that layer (F.conv2d, torch.addmm, ...).
Unsupported attribute combinations raise NotImplementedError (a profiler row records it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..registry import registrar

Fn = Callable[..., Any]


@dataclass(frozen=True)
class NodeSpec:
    """What a factory sees of a node."""

    op_type: str
    attrs: dict[str, Any]
    consts: tuple[np.ndarray | None, ...]  # initializer values per input, None for runtime inputs
    outputs: int = 1

    def const(self, index: int) -> np.ndarray | None:
        return self.consts[index] if index < len(self.consts) else None


OPS: dict[str, Callable[[NodeSpec], Fn]] = {}


op = registrar(OPS)  # @op("Relu", ...): the PyTorch factory of those ONNX op types


def make_op(spec: NodeSpec) -> Fn:
    if spec.op_type not in OPS:
        raise NotImplementedError(f"no PyTorch mapping for ONNX op {spec.op_type}")
    return OPS[spec.op_type](spec)


UNARY: dict[str, Fn] = {"Relu": torch.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Erf": torch.erf,
                        "Gelu": F.gelu, "HardSwish": F.hardswish, "Neg": torch.neg, "Identity": lambda x: x,
                        "Dropout": lambda x: x}
BINARY: dict[str, Fn] = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div}


@op(*UNARY)
def _unary(spec: NodeSpec) -> Fn:
    fn = UNARY[spec.op_type]
    return lambda x, *_: fn(x)


@op(*BINARY)
def _binary(spec: NodeSpec) -> Fn:
    return BINARY[spec.op_type]


@op("MatMul")
def _matmul(spec: NodeSpec) -> Fn:
    return torch.matmul


@op("Gemm")
def _gemm(spec: NodeSpec) -> Fn:
    alpha, beta = spec.attrs.get("alpha", 1.0), spec.attrs.get("beta", 1.0)
    trans_a, trans_b = spec.attrs.get("transA", 0), spec.attrs.get("transB", 0)

    def run(a, b, c=None):
        a, b = (a.t() if trans_a else a), (b.t() if trans_b else b)
        if c is None:
            return torch.mm(a, b) if alpha == 1.0 else torch.mm(a, b) * alpha
        return torch.addmm(c, a, b, beta=beta, alpha=alpha)
    return run


def _window(spec: NodeSpec, rank: int) -> tuple[list[int], list[int], list[int], list[int]]:
    """(kernel, strides, pads_begin, pads_end) of a conv or pool node."""
    attrs = spec.attrs
    if attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise NotImplementedError(f"{spec.op_type} auto_pad={attrs['auto_pad']}")
    kernel = list(attrs.get("kernel_shape") or [])
    pads = list(attrs.get("pads") or [0] * 2 * rank)
    return kernel, list(attrs.get("strides") or [1] * rank), pads[:rank], pads[rank:]


def _pad_pairs(begin: list[int], end: list[int]) -> list[int]:
    """F.pad order: last dimension first."""
    return [p for b, e in zip(reversed(begin), reversed(end)) for p in (b, e)]


def _rank(spec: NodeSpec) -> int:
    if spec.attrs.get("kernel_shape"):
        return len(spec.attrs["kernel_shape"])
    weight = spec.const(1)
    if weight is None:
        raise NotImplementedError(f"{spec.op_type} without kernel_shape or a constant weight")
    return weight.ndim - 2


@op("Conv")
def _conv(spec: NodeSpec) -> Fn:
    rank = _rank(spec)
    _, strides, begin, end = _window(spec, rank)
    conv = (F.conv1d, F.conv2d, F.conv3d)[rank - 1]
    dilations, groups = spec.attrs.get("dilations") or [1] * rank, spec.attrs.get("group", 1)
    if begin == end:
        return lambda x, w, b=None: conv(x, w, b, strides, begin, dilations, groups)
    pairs = _pad_pairs(begin, end)
    return lambda x, w, b=None: conv(F.pad(x, pairs), w, b, strides, 0, dilations, groups)


@op("ConvTranspose")
def _conv_transpose(spec: NodeSpec) -> Fn:
    rank = _rank(spec)
    _, strides, begin, end = _window(spec, rank)
    if begin != end or spec.attrs.get("output_shape"):
        raise NotImplementedError("ConvTranspose with asymmetric pads or output_shape")
    conv = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[rank - 1]
    out_pad = spec.attrs.get("output_padding") or [0] * rank
    dilations, groups = spec.attrs.get("dilations") or [1] * rank, spec.attrs.get("group", 1)
    return lambda x, w, b=None: conv(x, w, b, strides, begin, out_pad, groups, dilations)


@op("MaxPool", "AveragePool")
def _pool(spec: NodeSpec) -> Fn:
    rank = len(spec.attrs["kernel_shape"])
    kernel, strides, begin, end = _window(spec, rank)
    ceil = bool(spec.attrs.get("ceil_mode", 0))
    if spec.op_type == "MaxPool":
        if spec.attrs.get("storage_order", 0) or spec.outputs > 1:
            raise NotImplementedError("MaxPool indices output or storage_order")
        pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[rank - 1]
        dilations = spec.attrs.get("dilations") or [1] * rank
        if begin == end:
            return lambda x: pool(x, kernel, strides, begin, dilations, ceil)
        pairs = _pad_pairs(begin, end)
        return lambda x: pool(F.pad(x, pairs, value=-math.inf), kernel, strides, 0, dilations, ceil)
    if begin != end:
        raise NotImplementedError("AveragePool with asymmetric pads")
    pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[rank - 1]
    include = bool(spec.attrs.get("count_include_pad", 0))
    return lambda x: pool(x, kernel, strides, begin, ceil, include)


@op("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(spec: NodeSpec) -> Fn:
    if spec.op_type == "GlobalAveragePool":
        return lambda x: F.adaptive_avg_pool2d(x, 1) if x.dim() == 4 else x.mean(tuple(range(2, x.dim())), True)
    return lambda x: F.adaptive_max_pool2d(x, 1) if x.dim() == 4 else x.amax(tuple(range(2, x.dim())), True)


@op("BatchNormalization")
def _batchnorm(spec: NodeSpec) -> Fn:
    eps = spec.attrs.get("epsilon", 1e-5)
    return lambda x, scale, bias, mean, var: F.batch_norm(x, mean, var, scale, bias, False, 0.0, eps)


@op("InstanceNormalization")
def _instancenorm(spec: NodeSpec) -> Fn:
    eps = spec.attrs.get("epsilon", 1e-5)
    return lambda x, scale, bias: F.instance_norm(x, weight=scale, bias=bias, eps=eps)


@op("LayerNormalization")
def _layernorm(spec: NodeSpec) -> Fn:
    axis, eps = spec.attrs.get("axis", -1), spec.attrs.get("epsilon", 1e-5)
    if spec.outputs > 1:
        raise NotImplementedError("LayerNormalization mean/inv_std outputs")
    return lambda x, w, b=None: F.layer_norm(x, x.shape[axis:], w, b, eps)


@op("SkipLayerNormalization")
def _skip_layernorm(spec: NodeSpec) -> Fn:
    eps = spec.attrs.get("epsilon", 1e-5)
    return lambda x, skip, w, b=None: F.layer_norm(x + skip, x.shape[-1:], w, b, eps)


@op("LRN")
def _lrn(spec: NodeSpec) -> Fn:
    a = spec.attrs
    return lambda x: F.local_response_norm(x, a["size"], a.get("alpha", 1e-4), a.get("beta", 0.75), a.get("bias", 1.0))


@op("Softmax")
def _softmax(spec: NodeSpec) -> Fn:
    axis = spec.attrs.get("axis", -1)
    return lambda x: torch.softmax(x, axis)


@op("LeakyRelu")
def _leaky(spec: NodeSpec) -> Fn:
    alpha = spec.attrs.get("alpha", 0.01)
    return lambda x: F.leaky_relu(x, alpha)


@op("HardSigmoid")
def _hardsigmoid(spec: NodeSpec) -> Fn:
    alpha, beta = spec.attrs.get("alpha", 0.2), spec.attrs.get("beta", 0.5)
    if math.isclose(alpha, 1 / 6, rel_tol=1e-6) and beta == 0.5:
        return F.hardsigmoid
    return lambda x: torch.clamp(x * alpha + beta, 0.0, 1.0)


@op("QuickGelu")
def _quickgelu(spec: NodeSpec) -> Fn:
    alpha = spec.attrs.get("alpha", 1.702)
    return lambda x: x * torch.sigmoid(x * alpha)


@op("PRelu")
def _prelu(spec: NodeSpec) -> Fn:
    def run(x, slope):
        channel_shaped = x.dim() >= 2 and slope.numel() == x.shape[1] and \
            (slope.dim() == 1 and x.dim() == 2 or slope.dim() == x.dim() - 1)
        return F.prelu(x, slope.reshape(-1)) if channel_shaped else torch.where(x >= 0, x, x * slope)
    return run


@op("Clip")
def _clip(spec: NodeSpec) -> Fn:
    lo, hi = (None if spec.const(i) is None else float(spec.const(i)) for i in (1, 2))

    def run(x, low=None, high=None):
        if (low is not None and lo is None) or (high is not None and hi is None):
            raise NotImplementedError("Clip with runtime bounds")
        return torch.clamp(x, lo, hi)
    return run


@op("Concat")
def _concat(spec: NodeSpec) -> Fn:
    axis = spec.attrs["axis"]
    return lambda *xs: torch.cat(xs, axis)


@op("Split")
def _split(spec: NodeSpec) -> Fn:
    axis = spec.attrs.get("axis", 0)
    sizes = spec.const(1)
    split = [int(s) for s in sizes] if sizes is not None else spec.attrs.get("split")
    if split is None:
        return lambda x, *_: torch.tensor_split(x, spec.outputs, axis)
    return lambda x, *_: torch.split(x, split, axis)


@op("Slice")
def _slice(spec: NodeSpec) -> Fn:
    starts, ends, axes, steps = (spec.const(i) for i in range(1, 5))
    if starts is None or ends is None:
        raise NotImplementedError("Slice with runtime starts/ends")
    axes = list(range(len(starts))) if axes is None else [int(a) for a in axes]
    steps = [1] * len(starts) if steps is None else [int(s) for s in steps]
    if any(s <= 0 for s in steps):
        raise NotImplementedError("Slice with negative steps")

    def run(x, *_):
        index: list[slice] = [slice(None)] * x.dim()
        for start, end, axis, step in zip(starts, ends, axes, steps):
            index[axis] = slice(int(start), int(end), step)
        return x[tuple(index)]
    return run


@op("Pad")
def _pad(spec: NodeSpec) -> Fn:
    pads, value = spec.const(1), spec.const(2)
    if pads is None or spec.const(3) is not None:
        raise NotImplementedError("Pad with runtime pads or axes")
    rank = len(pads) // 2
    pairs = _pad_pairs([int(p) for p in pads[:rank]], [int(p) for p in pads[rank:]])
    while pairs and pairs[-2:] == [0, 0]:
        pairs = pairs[:-2]
    mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}[spec.attrs.get("mode", "constant")]
    fill = float(value) if value is not None and value.size else 0.0
    if mode == "constant":
        return lambda x, *_: F.pad(x, pairs, value=fill)
    return lambda x, *_: F.pad(x, pairs, mode=mode)


@op("Resize")
def _resize(spec: NodeSpec) -> Fn:
    scales, sizes = spec.const(2), spec.const(3)
    mode = spec.attrs.get("mode", "nearest")
    transform = spec.attrs.get("coordinate_transformation_mode", "half_pixel")
    if scales is not None and scales.size:
        if list(scales[:2]) != [1.0, 1.0]:
            raise NotImplementedError("Resize over batch or channels")
        target = {"scale_factor": [float(s) for s in scales[2:]]}
    elif sizes is not None:
        target = {"size": [int(s) for s in sizes[2:]]}
    else:
        raise NotImplementedError("Resize with runtime scales/sizes")
    if mode == "nearest":
        return lambda x, *_: F.interpolate(x, mode="nearest", **target)
    if transform not in ("half_pixel", "pytorch_half_pixel", "align_corners"):
        raise NotImplementedError(f"Resize coordinate_transformation_mode={transform}")
    corners = transform == "align_corners"
    names = {"linear": ("linear", "bilinear", "trilinear"), "cubic": (None, "bicubic", None)}[mode]

    def run(x, *_):
        return F.interpolate(x, mode=names[x.dim() - 3], align_corners=corners, **target)
    return run


@op("Transpose")
def _transpose(spec: NodeSpec) -> Fn:
    perm = spec.attrs.get("perm")
    return lambda x: x.permute(perm or list(reversed(range(x.dim()))))


@op("ReduceMean", "ReduceMax", "ReduceSum")
def _reduce(spec: NodeSpec) -> Fn:
    axes_input = spec.const(1)
    axes = [int(a) for a in axes_input] if axes_input is not None else spec.attrs.get("axes")
    keep = bool(spec.attrs.get("keepdims", 1))
    fn = {"ReduceMean": torch.mean, "ReduceMax": torch.amax, "ReduceSum": torch.sum}[spec.op_type]
    return lambda x, *_: fn(x, axes or list(range(x.dim())), keep)


@op("Reshape")
def _reshape(spec: NodeSpec) -> Fn:
    shape = spec.const(1)
    if shape is None:
        raise NotImplementedError("Reshape with a runtime shape")
    allow_zero = spec.attrs.get("allowzero", 0)

    def run(x, _shape):
        target = [x.shape[i] if d == 0 and not allow_zero else int(d) for i, d in enumerate(shape)]
        return x.reshape(target)
    return run


@op("Flatten")
def _flatten(spec: NodeSpec) -> Fn:
    axis = spec.attrs.get("axis", 1)
    return lambda x: x.reshape(math.prod(x.shape[:axis]), -1)
