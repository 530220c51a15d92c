"""Caffe frontend: deploy .prototxt (current `layer {}` and legacy V1 `layers {}`) -> ONNX.

No Caffe library and no weights: initializers are shape-only unless weights="random".
Shapes follow Caffe's own rules (pooling rounds up and clips the last window), written as
explicit ONNX pads so ONNX's shape rules give the same sizes.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from npower.errors import NpowerError
from npower.safeio import read_text

from .caffe_fields import INT32_MAX, Fields, elements_text
from .caffe_text import parse_prototxt

IR_VERSION, OPSET = 8, 17
V1_TYPES = {
    "CONVOLUTION": "Convolution", "DECONVOLUTION": "Deconvolution", "POOLING": "Pooling",
    "INNER_PRODUCT": "InnerProduct", "RELU": "ReLU", "PRELU": "PReLU", "SIGMOID": "Sigmoid", "TANH": "TanH",
    "ELU": "ELU", "LRN": "LRN", "DROPOUT": "Dropout", "SOFTMAX": "Softmax", "CONCAT": "Concat",
    "ELTWISE": "Eltwise", "FLATTEN": "Flatten", "SPLIT": "Split", "SLICE": "Slice", "POWER": "Power",
    "DATA": "Data", "IMAGE_DATA": "ImageData", "HDF5_DATA": "HDF5Data", "MEMORY_DATA": "MemoryData",
    "SOFTMAX_LOSS": "SoftmaxWithLoss", "EUCLIDEAN_LOSS": "EuclideanLoss", "ACCURACY": "Accuracy",
    "DUMMY_DATA": "DummyData", "HINGE_LOSS": "HingeLoss", "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss",
}
TRAINING_ONLY = {"Data", "ImageData", "HDF5Data", "MemoryData", "WindowData", "Accuracy", "SoftmaxWithLoss",
                 "EuclideanLoss", "HingeLoss", "SigmoidCrossEntropyLoss", "InfogainLoss", "ContrastiveLoss",
                 "MultinomialLogisticLoss", "Silence"}


MAX_PROTOTXT_BYTES = 16 * 2**20  # real deploy files are tens of KB
MAX_ALLOCATED_BYTES = 2**30  # weights npower fills in memory (random or constant) per model
POOL_METHODS = ("MAX", "AVE", "STOCHASTIC")
ELTWISE_OPS = ("PROD", "SUM", "MAX")
NORM_REGIONS = ("ACROSS_CHANNELS", "WITHIN_CHANNEL")
PHASES = ("TRAIN", "TEST")

Shape = tuple[int, ...]
Blob = tuple[str, Shape]


class _Net:
    """Conversion state: blob name -> (ONNX tensor, shape), nodes and initializers."""

    def __init__(self, file: str, random_weights: bool, seed: int = 0):
        self.file = file
        self.blobs: dict[str, Blob] = {}
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.random = random_weights
        self.rng = np.random.default_rng(seed)
        self.count = 0
        self.allocated = 0
        self.layer: Fields | None = None  # the layer being converted, for errors

    def fail(self, problem: str) -> NpowerError:
        return self.layer.error(problem) if self.layer is not None else NpowerError(f"{self.file}: {problem}")

    def fresh(self, base: str) -> str:
        self.count += 1
        return f"{base}__{self.count}"

    def check_shape(self, what: str, shape: Shape) -> Shape:
        """Caffe's limits: positive int32 dimensions and at most 2^31-1 elements per blob."""
        if any(d < 1 for d in shape):
            raise self.fail(f"{what} would have shape {shape}: every dimension must be positive")
        count = math.prod(shape)
        if any(d > INT32_MAX for d in shape) or count > INT32_MAX:
            raise self.fail(f"{what} of shape {shape} has {count:.3g} elements ({elements_text(count)}): "
                            f"Caffe blobs hold at most 2^31-1")
        return tuple(int(d) for d in shape)

    def add_input(self, name: str, shape: Shape) -> None:
        if not shape or any(d <= 0 for d in shape):
            raise self.fail(f"input '{name}' has a non-positive dimension {shape}")
        self.check_shape(f"input '{name}'", shape)
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
        self.blobs[name] = (name, tuple(shape))

    def weight(self, name: str, shape: Shape, fan_in: int = 1, fill: float | None = None) -> str:
        tensor = self.fresh(name)
        shape = self.check_shape(f"weight '{name}'", shape)
        if fill is not None or self.random:
            count = math.prod(shape)
            self.allocated += 4 * count
            if self.allocated > MAX_ALLOCATED_BYTES:
                raise self.fail(f"weight '{name}' of shape {shape} needs {elements_text(count)}: npower fills at most "
                                f"{elements_text(MAX_ALLOCATED_BYTES // 4)} of weights per model")
            if fill is not None:
                values = np.full(shape, fill, np.float32)
            else:
                values = self.rng.standard_normal(shape, dtype=np.float32)
                values *= np.float32(math.sqrt(2.0 / max(fan_in, 1)))
            self.inits.append(numpy_helper.from_array(values, tensor))
        else:
            self.inits.append(TensorProto(name=tensor, data_type=TensorProto.FLOAT, dims=list(shape)))
        return tensor

    def const(self, values, dtype=np.int64) -> str:
        tensor = self.fresh("const")
        self.inits.append(numpy_helper.from_array(np.array(values, dtype=dtype), tensor))
        return tensor

    def node(self, op: str, inputs: list[str], top: str, shape: Shape, name: str, **attrs) -> str:
        shape = self.check_shape(f"output '{top}'", shape)
        out = self.fresh(top) if top in self.blobs or top in {i.name for i in self.inputs} else top
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.fresh(name) if self._named(name) else name,
                                           **attrs))
        self.blobs[top] = (out, shape)
        return out

    def _named(self, name: str) -> bool:
        return any(n.name == name for n in self.nodes)


def _dims(param: Fields, field: str, count: int, default: int, low: int) -> list[int]:
    """Caffe's repeated-or-single spatial parameter (kernel_size, pad, stride, dilation)."""
    values = param.ints(field, low)
    if not values:
        return [default] * count
    if len(values) not in (1, count):
        raise param.fail(field, f"has {len(values)} values: give 1 or {count} (one per spatial axis)")
    return values if len(values) == count else values * count


def _window(param: Fields, spatial: int, default_kernel: int | None) -> tuple[list[int], list[int], list[int]]:
    """kernel, pad and stride; kernel_h/_w, pad_h/_w and stride_h/_w override (2-D only)."""
    kernel_given = param.has("kernel_size") or param.has("kernel_h") or param.has("kernel_w")
    if default_kernel is None and not kernel_given:
        raise param.fail("kernel_size", "is required")
    kernel = _dims(param, "kernel_size", spatial, default_kernel or 1, 1)
    pad = _dims(param, "pad", spatial, 0, 0)
    stride = _dims(param, "stride", spatial, 1, 1)
    for values, prefix, low in ((kernel, "kernel", 1), (pad, "pad", 0), (stride, "stride", 1)):
        for suffix, index in (("_h", 0), ("_w", -1)):
            if param.has(prefix + suffix):
                if spatial != 2:
                    raise param.fail(prefix + suffix, f"applies to 2-D inputs only, this one has {spatial} spatial axes")
                values[index] = param.int(prefix + suffix, low=low)
    return kernel, pad, stride


def _axis(param: Fields, field: str, default: int, rank: int, fallback: str | None = None) -> int:
    """An axis in [-rank, rank), returned non-negative."""
    name = field if param.has(field) or fallback is None or not param.has(fallback) else fallback
    axis = param.int(name, default, low=-rank, high=rank - 1)
    return axis % rank


def _spatial_out(param: Fields, what: str, sizes: list[int]) -> list[int]:
    if any(s < 1 for s in sizes):
        raise param.error(f"{what}: the window does not fit the input (output size {sizes})")
    return sizes


Handler = Callable[[_Net, Fields, list[Blob], list[str]], None]


@dataclass(frozen=True)
class _Spec:
    """A layer handler and what it needs: bottoms (min, max) and the rank range of its first input."""

    handler: Handler
    bottoms: tuple[int, int | None] = (1, 1)
    rank: tuple[int, int] = (1, 8)


HANDLERS: dict[str, _Spec] = {}


def handles(*types: str, bottoms: tuple[int, int | None] = (1, 1), rank: tuple[int, int] = (1, 8)):
    def add(fn: Handler) -> Handler:
        for layer_type in types:
            HANDLERS[layer_type] = _Spec(fn, bottoms, rank)
        return fn
    return add


@handles("Convolution", "Deconvolution", rank=(3, 5))
def _conv(net: _Net, layer: Fields, bottoms: list[Blob], tops: list[str]) -> None:
    param = layer.sub("convolution_param")
    (x, shape), spatial = bottoms[0], len(bottoms[0][1]) - 2
    kernel, pad, stride = _window(param, spatial, None)
    dilation = _dims(param, "dilation", spatial, 1, 1)
    groups, cout = param.int("group", 1, low=1), param.int("num_output", low=1)
    cin = shape[1]
    if cin % groups or cout % groups:
        raise param.fail("group", f"{groups} must divide the input channels ({cin}) and num_output ({cout})")
    name = layer.layer
    if layer.text("type") in ("Deconvolution", "DECONVOLUTION"):
        out = [s * (n - 1) + d * (k - 1) + 1 - 2 * p for n, k, p, s, d in zip(shape[2:], kernel, pad, stride, dilation)]
        weight = net.weight(f"{name}_w", (cin, cout // groups, *kernel), cin * math.prod(kernel))
        op = "ConvTranspose"
    else:
        out = [(n + 2 * p - (d * (k - 1) + 1)) // s + 1 for n, k, p, s, d in zip(shape[2:], kernel, pad, stride, dilation)]
        weight = net.weight(f"{name}_w", (cout, cin // groups, *kernel), cin // groups * math.prod(kernel))
        op = "Conv"
    _spatial_out(param, f"input {shape[2:]}, kernel {kernel}, pad {pad}, stride {stride}, dilation {dilation}", out)
    inputs = [x, weight] + ([net.weight(f"{name}_b", (cout,), fill=0.0)] if param.bool("bias_term", True) else [])
    net.node(op, inputs, tops[0], (shape[0], cout, *out), name, kernel_shape=kernel, strides=stride,
             pads=pad + pad, dilations=dilation, group=groups)


@handles("Pooling", rank=(4, 4))
def _pool(net: _Net, layer: Fields, bottoms: list[Blob], tops: list[str]) -> None:
    param = layer.sub("pooling_param")
    (x, shape) = bottoms[0]
    method = param.enum("pool", "MAX", POOL_METHODS)
    if method == "STOCHASTIC":
        raise param.fail("pool", "STOCHASTIC is not supported (MAX and AVE are)")
    is_max = method == "MAX"
    if param.bool("global_pooling", False):
        net.node("GlobalMaxPool" if is_max else "GlobalAveragePool", [x], tops[0], (*shape[:2], 1, 1), layer.layer)
        return
    kernel, pad, stride = _window(param, 2, None)
    sizes, end_pads = [], []
    for n, k, p, s in zip(shape[2:], kernel, pad, stride):
        if p >= k or k > n + 2 * p:
            raise param.error(f"pooling window {kernel} with pad {pad} does not fit input {shape[2:]} "
                              "(Caffe needs pad < kernel <= input + 2 * pad)")
        size = (n + 2 * p - k + s - 1) // s + 1  # Caffe rounds up
        if p > 0 and (size - 1) * s >= n + p:
            size -= 1  # Caffe clips a last window that would start inside the padding
        sizes.append(size)
        end_pads.append(max((size - 1) * s + k - n - p, 0))
    attrs = {"kernel_shape": kernel, "strides": stride, "pads": pad + end_pads}
    if not is_max:
        attrs["count_include_pad"] = 1
    net.node("MaxPool" if is_max else "AveragePool", [x], tops[0], (*shape[:2], *sizes), layer.layer, **attrs)


@handles("InnerProduct", rank=(2, 8))
def _inner_product(net: _Net, layer: Fields, bottoms: list[Blob], tops: list[str]) -> None:
    param = layer.sub("inner_product_param")
    (x, shape), name = bottoms[0], layer.layer
    axis = _axis(param, "axis", 1, len(shape))
    cout = param.int("num_output", low=1)
    if axis == 0:
        raise param.fail("axis", "0 would fold the batch into the features: use 1 or more")
    if len(shape) != axis + 1 or axis != 1:
        flat = (math.prod(shape[:axis]), math.prod(shape[axis:]))
        x = net.node("Flatten", [x], net.fresh(f"{name}_flat"), flat, f"{name}_flatten", axis=axis)
        shape = flat
    inputs = [x, net.weight(f"{name}_w", (cout, shape[1]), shape[1])]
    if param.bool("bias_term", True):
        inputs.append(net.weight(f"{name}_b", (cout,), fill=0.0))
    net.node("Gemm", inputs, tops[0], (shape[0], cout), name, transB=1)


def _same_shape(op: str, param: str | None = None, field: str = "", attr: str = "", default: float = 0.0) -> Handler:
    """Register a shape-preserving one-input layer; optionally one finite float attribute."""
    def handler(net: _Net, layer: Fields, bottoms: list[Blob], tops: list[str]) -> None:
        attrs = {attr: layer.sub(param).float(field, default)} if param else {}
        net.node(op, [bottoms[0][0]], tops[0], bottoms[0][1], layer.layer, **attrs)
    return handler


for _type, _op in (("Sigmoid", "Sigmoid"), ("TanH", "Tanh"), ("AbsVal", "Abs"), ("BNLL", "Softplus"),
                   ("Dropout", "Dropout")):
    handles(_type)(_same_shape(_op))
handles("ELU")(_same_shape("Elu", "elu_param", "alpha", "alpha", 1.0))


@handles("Softmax")
def _softmax(net: _Net, layer: Fields, bottoms: list[Blob], tops: list[str]) -> None:
    (x, shape) = bottoms[0]
    axis = _axis(layer.sub("softmax_param"), "axis", 1, len(shape))
    net.node("Softmax", [x], tops[0], shape, layer.layer, axis=axis)


@handles("ReLU")
def _relu(net: _Net, layer: Fields, bottoms: list[Blob], tops: list[str]) -> None:
    slope = layer.sub("relu_param").float("negative_slope", 0.0)
    if slope:
        net.node("LeakyRelu", [bottoms[0][0]], tops[0], bottoms[0][1], layer.layer, alpha=slope)
    else:
        net.node("Relu", [bottoms[0][0]], tops[0], bottoms[0][1], layer.layer)


@handles("PReLU", rank=(2, 8))
def _prelu(net: _Net, layer: Fields, bottoms: list[Blob], tops: list[str]) -> None:
    (x, shape) = bottoms[0]
    shared = layer.sub("prelu_param").bool("channel_shared", False)
    slope_shape = (1,) if shared else (shape[1], *([1] * (len(shape) - 2)))
    net.node("PRelu", [x, net.weight(f"{layer.layer}_slope", slope_shape, fill=0.25)], tops[0], shape, layer.layer)


@handles("LRN", rank=(3, 8))
def _lrn(net: _Net, layer: Fields, bottoms: list[Blob], tops: list[str]) -> None:
    param = layer.sub("lrn_param")
    if param.enum("norm_region", "ACROSS_CHANNELS", NORM_REGIONS) != "ACROSS_CHANNELS":
        raise param.fail("norm_region", "WITHIN_CHANNEL is not supported")
    size = param.int("local_size", 5, low=1, high=INT32_MAX)
    if size % 2 == 0:
        raise param.fail("local_size", f"must be odd (Caffe's rule), got {size}")
    net.node("LRN", [bottoms[0][0]], tops[0], bottoms[0][1], layer.layer, size=size,
             alpha=param.float("alpha", 1.0), beta=param.float("beta", 0.75), bias=param.float("k", 1.0, low=1e-30))


@handles("BatchNorm", rank=(2, 8))
def _batchnorm(net: _Net, layer: Fields, bottoms: list[Blob], tops: list[str]) -> None:
    (x, shape) = bottoms[0]
    eps = layer.sub("batch_norm_param").float("eps", 1e-5, low=0.0)
    params = [net.weight(f"{layer.layer}_{p}", (shape[1],), fill=1.0 if p in ("scale", "var") else 0.0)
              for p in ("scale", "bias", "mean", "var")]
    net.node("BatchNormalization", [x, *params], tops[0], shape, layer.layer, epsilon=eps)


@handles("Scale", bottoms=(1, 2), rank=(2, 8))
def _scale(net: _Net, layer: Fields, bottoms: list[Blob], tops: list[str]) -> None:
    """Scale after BatchNorm folds into it (Caffe's BatchNorm has no affine part); else Mul (+ Add)."""
    (x, shape), name = bottoms[0], layer.layer
    producer = next((n for n in reversed(net.nodes) if n.output[0] == x), None)
    if producer is not None and producer.op_type == "BatchNormalization" and len(bottoms) == 1:
        net.blobs[tops[0]] = (x, shape)
        return
    bias = layer.sub("scale_param").bool("bias_term", False)
    per_channel = (shape[1], *([1] * (len(shape) - 2)))
    factor = bottoms[1][0] if len(bottoms) > 1 else net.weight(f"{name}_s", per_channel, fill=1.0)
    y = net.node("Mul", [x, factor], tops[0] if not bias else net.fresh(f"{name}_mul"), shape,
                 f"{name}_mul" if bias else name)
    if bias:
        net.node("Add", [y, net.weight(f"{name}_b", per_channel, fill=0.0)], tops[0], shape, name)


def _same_shapes(layer: Fields, bottoms: list[Blob]) -> Shape:
    shapes = {b[1] for b in bottoms}
    if len(shapes) > 1:
        raise layer.error(f"inputs must have the same shape, got {', '.join(str(s) for s in shapes)}")
    return bottoms[0][1]


@handles("Eltwise", bottoms=(2, None))
def _eltwise(net: _Net, layer: Fields, bottoms: list[Blob], tops: list[str]) -> None:
    param, name = layer.sub("eltwise_param"), layer.layer
    operation = param.enum("operation", "SUM", ELTWISE_OPS)
    shape = _same_shapes(layer, bottoms)
    names = [b[0] for b in bottoms]
    if operation == "PROD":
        current = names[0]
        for index, other in enumerate(names[1:], start=1):
            last = index == len(names) - 1
            current = net.node("Mul", [current, other], tops[0] if last else net.fresh(f"{name}_mul"), shape,
                               name if last else f"{name}_{index}")
        return
    if operation == "MAX":
        net.node("Max", names, tops[0], shape, name)
        return
    coeffs = param.floats("coeff")
    if coeffs and len(coeffs) != len(names):
        raise param.fail("coeff", f"has {len(coeffs)} values for {len(names)} inputs")
    if coeffs and any(c != 1.0 for c in coeffs):
        names = [n if c == 1.0 else net.node("Mul", [n, net.const(c, np.float32)], net.fresh(f"{name}_c"), shape,
                                             f"{name}_coeff{i}") for i, (n, c) in enumerate(zip(names, coeffs))]
    net.node("Add" if len(names) == 2 else "Sum", names, tops[0], shape, name)


@handles("Concat", bottoms=(1, None))
def _concat(net: _Net, layer: Fields, bottoms: list[Blob], tops: list[str]) -> None:
    param = layer.sub("concat_param")
    rank = len(bottoms[0][1])
    axis = _axis(param, "axis", 1, rank, fallback="concat_dim")
    others = {b[1][:axis] + b[1][axis + 1:] for b in bottoms}
    if len(others) > 1 or any(len(b[1]) != rank for b in bottoms):
        raise layer.error(f"inputs {[b[1] for b in bottoms]} differ outside the concat axis {axis}")
    shape = list(bottoms[0][1])
    shape[axis] = sum(b[1][axis] for b in bottoms)
    net.node("Concat", [b[0] for b in bottoms], tops[0], tuple(shape), layer.layer, axis=axis)


@handles("Flatten")
def _flatten(net: _Net, layer: Fields, bottoms: list[Blob], tops: list[str]) -> None:
    (x, shape) = bottoms[0]
    param = layer.sub("flatten_param")
    axis, end = _axis(param, "axis", 1, len(shape)), _axis(param, "end_axis", -1, len(shape))
    if end < axis:
        raise param.fail("end_axis", f"({end}) comes before axis ({axis})")
    out = (*shape[:axis], math.prod(shape[axis:end + 1]), *shape[end + 1:])
    if end == len(shape) - 1:
        net.node("Flatten", [x], tops[0], out, layer.layer, axis=axis)
    else:
        net.node("Reshape", [x, net.const(out)], tops[0], out, layer.layer)


@handles("Reshape")
def _reshape(net: _Net, layer: Fields, bottoms: list[Blob], tops: list[str]) -> None:
    (x, shape) = bottoms[0]
    param = layer.sub("reshape_param")
    if param.has("axis") or param.has("num_axes"):
        raise param.fail("axis", "and num_axes are not supported (reshape the whole blob)")
    block = param.sub("shape")
    dims = block.ints("dim", low=-1, high=INT32_MAX)
    if not dims or dims.count(-1) > 1 or any(d == 0 and i >= len(shape) for i, d in enumerate(dims)):
        raise block.fail("dim", f"{dims} is not a valid reshape of {shape} (one -1 at most; 0 copies an input axis)")
    out = [shape[i] if d == 0 else d for i, d in enumerate(dims)]
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        if math.prod(shape) % known:
            raise block.fail("dim", f"{dims} does not divide the {math.prod(shape)} elements of {shape}")
        out[out.index(-1)] = math.prod(shape) // known
    if math.prod(out) != math.prod(shape):
        raise block.fail("dim", f"{dims} gives {math.prod(out)} elements, the input {shape} has {math.prod(shape)}")
    net.node("Reshape", [x, net.const(dims)], tops[0], tuple(out), layer.layer)


@handles("Crop", bottoms=(2, 2))
def _crop(net: _Net, layer: Fields, bottoms: list[Blob], tops: list[str]) -> None:
    (x, shape), (_, reference) = bottoms[0], bottoms[1]
    param = layer.sub("crop_param")
    if len(reference) != len(shape):
        raise layer.error(f"the reference blob {reference} and the input {shape} differ in rank")
    axis = _axis(param, "axis", 2, len(shape))
    offsets = param.ints("offset", low=0, high=INT32_MAX) or [0]
    axes = list(range(axis, len(shape)))
    if len(offsets) not in (1, len(axes)):
        raise param.fail("offset", f"has {len(offsets)} values: give 1 or {len(axes)}")
    starts = [offsets[0] if len(offsets) == 1 else offsets[i] for i in range(len(axes))]
    ends = [s + reference[a] for s, a in zip(starts, axes)]
    if any(end > shape[a] for end, a in zip(ends, axes)):
        raise param.fail("offset", f"{offsets} crops outside the input {shape} (reference {reference})")
    out = (*shape[:axis], *reference[axis:])
    net.node("Slice", [x, net.const(starts), net.const(ends), net.const(axes)], tops[0], out, layer.layer)


@handles("Split")
def _split(net: _Net, layer: Fields, bottoms: list[Blob], tops: list[str]) -> None:
    for top in tops:  # Caffe's Split copies a blob to several consumers: an alias in ONNX
        net.blobs[top] = bottoms[0]


@handles("Slice")
def _slice(net: _Net, layer: Fields, bottoms: list[Blob], tops: list[str]) -> None:
    (x, shape) = bottoms[0]
    param = layer.sub("slice_param")
    axis = _axis(param, "axis", 1, len(shape), fallback="slice_dim")
    points = param.ints("slice_point", low=1, high=INT32_MAX)
    if points:
        bounds = [0, *points, shape[axis]]
        if len(points) != len(tops) - 1 or any(b <= a for a, b in zip(bounds, bounds[1:])):
            raise param.fail("slice_point", f"{points} must rise strictly inside (0, {shape[axis]}) and number one "
                             f"less than the tops ({len(tops)})")
    else:
        if shape[axis] % len(tops):
            raise layer.error(f"axis {axis} of size {shape[axis]} does not split evenly into {len(tops)} tops")
        bounds = [shape[axis] * i // len(tops) for i in range(len(tops) + 1)]
    sizes = [b - a for a, b in zip(bounds, bounds[1:])]
    outputs = [net.fresh(top) for top in tops]
    for top, size in zip(tops, sizes):
        net.check_shape(f"output '{top}'", (*shape[:axis], size, *shape[axis + 1:]))
    net.nodes.append(helper.make_node("Split", [x, net.const(sizes)], outputs, name=layer.layer, axis=axis))
    for top, out, size in zip(tops, outputs, sizes):
        out_shape = list(shape)
        out_shape[axis] = size
        net.blobs[top] = (out, tuple(out_shape))


@handles("Power")
def _power(net: _Net, layer: Fields, bottoms: list[Blob], tops: list[str]) -> None:
    (x, shape), name = bottoms[0], layer.layer
    param = layer.sub("power_param")
    power, scale, shift = (param.float(k, d) for k, d in (("power", 1.0), ("scale", 1.0), ("shift", 0.0)))
    steps = [("Mul", scale, scale != 1.0), ("Add", shift, shift != 0.0), ("Pow", power, power != 1.0)]
    steps = [s for s in steps if s[2]] or [("Mul", 1.0, True)]
    for index, (op, value, _) in enumerate(steps):
        last = index == len(steps) - 1
        x = net.node(op, [x, net.const(value, np.float32)], tops[0] if last else net.fresh(f"{name}_{op}"), shape,
                     name if last else f"{name}_{op.lower()}")


def _batched(shape: Shape, batch: int | None, bound: bool) -> Shape:
    return (batch, *shape[1:]) if batch and not bound else shape


def _input_layers(net: _Net, layer: Fields, tops: list[str], batch: int | None, shapes: Mapping[str, Shape]) -> None:
    param = layer.sub("input_param") if layer.has("input_param") else layer.sub("dummy_data_param")
    declared = param.subs("shape")
    if declared and len(declared) not in (1, len(tops)):
        raise param.fail("shape", f"has {len(declared)} shapes for {len(tops)} tops: give 1 or one per top")
    for index, top in enumerate(tops):
        dims = declared[min(index, len(declared) - 1)].ints("dim", low=1, high=INT32_MAX) if declared else []
        shape = tuple(shapes.get(top, dims))
        if not shape:
            raise layer.error(f"input '{top}' has no shape: pass --input-shape {top}=NxCxHxW")
        net.add_input(top, _batched(shape, batch, top in shapes))


def _root_inputs(net: _Net, model: Fields, batch: int | None, shapes: Mapping[str, Shape]) -> None:
    names = model.texts("input")
    dims = model.ints("input_dim", low=1, high=INT32_MAX)
    declared = model.subs("input_shape")
    if declared and len(declared) != len(names):
        raise model.fail("input_shape", f"has {len(declared)} shapes for {len(names)} inputs")
    if not declared and dims and len(dims) != 4 * len(names):
        raise model.fail("input_dim", f"has {len(dims)} values: give 4 per input ({len(names)} inputs)")
    for index, input_name in enumerate(names):
        if input_name in shapes:
            shape = tuple(shapes[input_name])
        elif declared:
            shape = tuple(declared[index].ints("dim", low=1, high=INT32_MAX))
        else:
            shape = tuple(dims[4 * index: 4 * index + 4])
        if not shape:
            raise model.fail("input", f"'{input_name}' has no shape: pass --input-shape {input_name}=NxCxHxW")
        net.add_input(input_name, _batched(shape, batch, input_name in shapes))


def _excluded(layer: Fields) -> bool:
    """Layers not in the TEST (deployment) phase."""
    phases = [rule.enum("phase", "TEST", PHASES) for rule in layer.subs("include") if rule.has("phase")]
    if phases and "TEST" not in phases:
        return True
    return any(rule.has("phase") and rule.enum("phase", "TEST", PHASES) == "TEST" for rule in layer.subs("exclude"))


def _convert_layer(net: _Net, layer: Fields, layer_type: str, batch: int | None, shapes: Mapping[str, Shape]) -> None:
    tops, bottoms = layer.texts("top"), layer.texts("bottom")
    if layer_type in ("Input", "DummyData"):
        _input_layers(net, layer, tops, batch, shapes)
        return
    spec = HANDLERS.get(layer_type)
    if spec is None:
        raise NpowerError(f"{net.file}:{layer.message.line}: layer '{layer.layer}' has unsupported type '{layer_type}'")
    low, high = spec.bottoms
    if not low <= len(bottoms) <= (high or len(bottoms)):
        wanted = f"{low}" if low == high else f"{low} or more" if high is None else f"{low} to {high}"
        raise layer.fail("bottom", f"count is {len(bottoms)}: a {layer_type} layer takes {wanted}")
    if not tops or "" in tops + bottoms:
        raise layer.fail("top" if "" not in bottoms else "bottom", "is missing or empty: blobs need names")
    missing = [b for b in bottoms if b not in net.blobs]
    if missing:
        raise layer.fail("bottom", f"'{missing[0]}' is made by no earlier layer")
    inputs = [net.blobs[b] for b in bottoms]
    rank = len(inputs[0][1])
    if not spec.rank[0] <= rank <= spec.rank[1]:
        raise layer.error(f"a {layer_type} layer needs an input of rank {spec.rank[0]} to {spec.rank[1]}, "
                          f"got shape {inputs[0][1]}")
    spec.handler(net, layer, inputs, tops)


def convert_prototxt(text: str, name: str = "caffe", batch: int | None = None,
                     input_shapes: Mapping[str, Shape] | None = None, weights: str = "none") -> onnx.ModelProto:
    """Convert a deploy prototxt to ONNX. weights: 'none' (shape-only) or 'random' (He-scaled)."""
    model = Fields(parse_prototxt(text, name), name, "(net)")
    if batch is not None and not 1 <= batch <= INT32_MAX:
        raise NpowerError(f"--batch must be from 1 to {INT32_MAX}, got {batch}")
    net = _Net(name, random_weights=weights == "random")
    shapes = dict(input_shapes or {})
    _root_inputs(net, model, batch, shapes)
    for index, message in enumerate(model.message.get("layer", []) + model.message.get("layers", [])):
        layer = Fields(message, name, f"layer{index}")
        layer = Fields(message, name, layer.text("name", f"layer{index}"))
        net.layer = layer
        raw_type = layer.text("type", "")
        layer_type = V1_TYPES.get(raw_type, raw_type)
        if _excluded(layer) or layer_type in TRAINING_ONLY:
            continue
        _convert_layer(net, layer, layer_type, batch, shapes)
    net.layer = None
    if not net.nodes:
        raise NpowerError(f"{name}: no deployable layers found")
    consumed = {i for node in net.nodes for i in node.input}
    produced = {o for node in net.nodes for o in node.output}
    outputs = {tensor: shape for tensor, shape in net.blobs.values() if tensor not in consumed and tensor in produced}
    graph = helper.make_graph(net.nodes, model.text("name", name), net.inputs,
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, list(shape))
                               for o, shape in outputs.items()], net.inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                             producer_name="npower.caffe")


class CaffeFrontend:
    """Reads Caffe deploy .prototxt files (no Caffe install, weights optional)."""

    name = "caffe"
    description = "Caffe .prototxt (V1 and current syntax), own parser"
    suffixes = (".prototxt", ".pt.txt")
    extra = "caffe"
    requires: tuple[str, ...] = ()

    def accepts(self, source: Any) -> bool:
        return isinstance(source, (str, os.PathLike)) and str(source).endswith(self.suffixes)

    def convert(self, source: Any, batch: int | None = None,
                input_shapes: Mapping[str, tuple[int, ...]] | None = None, weights: str = "none",
                **_options: Any) -> onnx.ModelProto:
        if not isinstance(source, (str, os.PathLike)):
            raise NpowerError(f"the caffe frontend reads .prototxt files, not a {type(source).__name__}")
        path = Path(source)
        text = read_text(path, "prototxt", MAX_PROTOTXT_BYTES)
        return convert_prototxt(text, path.name, batch, input_shapes, weights)


FRONTEND = CaffeFrontend()
