"""Caffe frontend: deploy .prototxt (current `layer {}` and legacy V1 `layers {}`) -> ONNX.

No Caffe library and no weights: initializers are shape-only unless weights="random".
Shapes follow Caffe's own rules (pooling rounds up and clips the last window), written as
explicit ONNX pads so ONNX's shape rules give the same sizes.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from npower.errors import NpowerError

from .caffe_text import Message, one, parse_prototxt

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


class _Net:
    """Conversion state: blob name -> (ONNX tensor, shape), nodes and initializers."""

    def __init__(self, random_weights: bool, seed: int = 0):
        self.blobs: dict[str, tuple[str, tuple[int, ...]]] = {}
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.random = random_weights
        self.rng = np.random.default_rng(seed)
        self.count = 0
        self.last: str | None = None

    def fresh(self, base: str) -> str:
        self.count += 1
        return f"{base}__{self.count}"

    def add_input(self, name: str, shape: tuple[int, ...]) -> None:
        if any(d <= 0 for d in shape):
            raise NpowerError(f"input '{name}' has a non-positive dimension {shape}")
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
        self.blobs[name] = (name, tuple(shape))

    def weight(self, name: str, shape: tuple[int, ...], fan_in: int = 1, fill: float | None = None) -> str:
        tensor = self.fresh(name)
        if fill is not None or self.random:
            values = np.full(shape, fill, np.float32) if fill is not None else \
                (self.rng.standard_normal(shape) * math.sqrt(2.0 / max(fan_in, 1))).astype(np.float32)
            self.inits.append(numpy_helper.from_array(values, tensor))
        else:
            self.inits.append(TensorProto(name=tensor, data_type=TensorProto.FLOAT, dims=list(shape)))
        return tensor

    def const(self, values, dtype=np.int64) -> str:
        tensor = self.fresh("const")
        self.inits.append(numpy_helper.from_array(np.array(values, dtype=dtype), tensor))
        return tensor

    def node(self, op: str, inputs: list[str], top: str, shape: tuple[int, ...], name: str, **attrs) -> str:
        out = self.fresh(top) if top in self.blobs or top in {i.name for i in self.inputs} else top
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.fresh(name) if self._named(name) else name,
                                           **attrs))
        self.blobs[top] = (out, tuple(int(d) for d in shape))
        self.last = top
        return out

    def _named(self, name: str) -> bool:
        return any(n.name == name for n in self.nodes)


def _dims(message: Message, field: str, count: int, default: int) -> list[int]:
    """Caffe's repeated-or-single spatial parameter (kernel_size, pad, stride, dilation)."""
    values = message.get(field, [])
    if not values:
        return [default] * count
    return [int(v) for v in values] if len(values) == count else [int(values[0])] * count


def _window(param: Message, spatial: int, defaults: tuple[int, int, int]) -> tuple[list[int], list[int], list[int]]:
    kernel = _dims(param, "kernel_size", spatial, defaults[0])
    pad = _dims(param, "pad", spatial, defaults[1])
    stride = _dims(param, "stride", spatial, defaults[2])
    for values, prefix in ((kernel, "kernel"), (pad, "pad"), (stride, "stride")):
        if f"{prefix}_h" in param:
            values[0] = int(one(param, f"{prefix}_h"))
        if f"{prefix}_w" in param:
            values[-1] = int(one(param, f"{prefix}_w"))
    return kernel, pad, stride


def _param(layer: Message, name: str) -> Message:
    return one(layer, name, {}) or {}


Handler = Callable[[_Net, Message, list[tuple[str, tuple[int, ...]]], list[str], str], None]
HANDLERS: dict[str, Handler] = {}


def handles(*types: str) -> Callable[[Handler], Handler]:
    def add(fn: Handler) -> Handler:
        for layer_type in types:
            HANDLERS[layer_type] = fn
        return fn
    return add


@handles("Convolution", "Deconvolution")
def _conv(net: _Net, layer: Message, bottoms, tops, name: str) -> None:
    param = _param(layer, "convolution_param")
    (x, shape), spatial = bottoms[0], len(bottoms[0][1]) - 2
    kernel, pad, stride = _window(param, spatial, (1, 0, 1))
    dilation = _dims(param, "dilation", spatial, 1)
    groups, cout = int(one(param, "group", 1)), int(one(param, "num_output"))
    cin = shape[1]
    if one(layer, "type") == "Deconvolution":
        weight = net.weight(f"{name}_w", (cin, cout // groups, *kernel), cin * math.prod(kernel))
        out = [s * (n - 1) + d * (k - 1) + 1 - 2 * p for n, k, p, s, d in zip(shape[2:], kernel, pad, stride, dilation)]
        op = "ConvTranspose"
    else:
        weight = net.weight(f"{name}_w", (cout, cin // groups, *kernel), cin // groups * math.prod(kernel))
        out = [(n + 2 * p - (d * (k - 1) + 1)) // s + 1 for n, k, p, s, d in zip(shape[2:], kernel, pad, stride, dilation)]
        op = "Conv"
    inputs = [x, weight] + ([net.weight(f"{name}_b", (cout,), fill=0.0)] if one(param, "bias_term", True) else [])
    net.node(op, inputs, tops[0], (shape[0], cout, *out), name, kernel_shape=kernel, strides=stride,
             pads=pad + pad, dilations=dilation, group=groups)


@handles("Pooling")
def _pool(net: _Net, layer: Message, bottoms, tops, name: str) -> None:
    param = _param(layer, "pooling_param")
    (x, shape) = bottoms[0]
    method = str(one(param, "pool", "MAX"))
    if method not in ("MAX", "AVE", "0", "1"):
        raise NpowerError(f"layer '{name}': pooling method {method} is not supported (MAX and AVE are)")
    is_max = method in ("MAX", "0")
    if one(param, "global_pooling", False):
        net.node("GlobalMaxPool" if is_max else "GlobalAveragePool", [x], tops[0], (*shape[:2], 1, 1), name)
        return
    kernel, pad, stride = _window(param, 2, (0, 0, 1))
    sizes, end_pads = [], []
    for n, k, p, s in zip(shape[2:], kernel, pad, stride):
        size = int(math.ceil((n + 2 * p - k) / s)) + 1
        if p > 0 and (size - 1) * s >= n + p:
            size -= 1  # Caffe clips a last window that would start inside the padding
        sizes.append(size)
        end_pads.append((size - 1) * s + k - n - p)
    attrs = {"kernel_shape": kernel, "strides": stride, "pads": pad + end_pads}
    if not is_max:
        attrs["count_include_pad"] = 1
    net.node("MaxPool" if is_max else "AveragePool", [x], tops[0], (*shape[:2], *sizes), name, **attrs)


@handles("InnerProduct")
def _inner_product(net: _Net, layer: Message, bottoms, tops, name: str) -> None:
    param = _param(layer, "inner_product_param")
    (x, shape) = bottoms[0]
    axis = int(one(param, "axis", 1)) % len(shape)
    cout = int(one(param, "num_output"))
    if len(shape) != axis + 1 or axis != 1:
        flat = (math.prod(shape[:axis]), math.prod(shape[axis:]))
        x = net.node("Flatten", [x], net.fresh(f"{name}_flat"), flat, f"{name}_flatten", axis=axis)
        shape = flat
    inputs = [x, net.weight(f"{name}_w", (cout, shape[1]), shape[1])]
    if one(param, "bias_term", True):
        inputs.append(net.weight(f"{name}_b", (cout,), fill=0.0))
    net.node("Gemm", inputs, tops[0], (shape[0], cout), name, transB=1)


def _same_shape(op: str, param: str | None = None, field: str = "", attr: str = "", default: Any = None,
                cast: type = float) -> Handler:
    """Shape-preserving one-input layers; optionally one attribute read from the layer's parameters."""
    def handler(net: _Net, layer: Message, bottoms, tops, name: str) -> None:
        attrs = {attr: cast(one(_param(layer, param), field, default))} if param else {}
        net.node(op, [bottoms[0][0]], tops[0], bottoms[0][1], name, **attrs)
    return handler


HANDLERS["Sigmoid"] = _same_shape("Sigmoid")
HANDLERS["TanH"] = _same_shape("Tanh")
HANDLERS["AbsVal"] = _same_shape("Abs")
HANDLERS["BNLL"] = _same_shape("Softplus")
HANDLERS["Dropout"] = _same_shape("Dropout")
HANDLERS["ELU"] = _same_shape("Elu", "elu_param", "alpha", "alpha", 1.0)
HANDLERS["Softmax"] = _same_shape("Softmax", "softmax_param", "axis", "axis", 1, int)


@handles("ReLU")
def _relu(net: _Net, layer: Message, bottoms, tops, name: str) -> None:
    slope = float(one(_param(layer, "relu_param"), "negative_slope", 0.0))
    if slope:
        net.node("LeakyRelu", [bottoms[0][0]], tops[0], bottoms[0][1], name, alpha=slope)
    else:
        net.node("Relu", [bottoms[0][0]], tops[0], bottoms[0][1], name)


@handles("PReLU")
def _prelu(net: _Net, layer: Message, bottoms, tops, name: str) -> None:
    (x, shape) = bottoms[0]
    shared = one(_param(layer, "prelu_param"), "channel_shared", False)
    slope_shape = (1,) if shared else (shape[1], *([1] * (len(shape) - 2)))
    net.node("PRelu", [x, net.weight(f"{name}_slope", slope_shape, fill=0.25)], tops[0], shape, name)


@handles("LRN")
def _lrn(net: _Net, layer: Message, bottoms, tops, name: str) -> None:
    param = _param(layer, "lrn_param")
    if str(one(param, "norm_region", "ACROSS_CHANNELS")) not in ("ACROSS_CHANNELS", "0"):
        raise NpowerError(f"layer '{name}': LRN WITHIN_CHANNEL is not supported")
    net.node("LRN", [bottoms[0][0]], tops[0], bottoms[0][1], name, size=int(one(param, "local_size", 5)),
             alpha=float(one(param, "alpha", 1.0)), beta=float(one(param, "beta", 0.75)), bias=float(one(param, "k", 1.0)))


@handles("BatchNorm")
def _batchnorm(net: _Net, layer: Message, bottoms, tops, name: str) -> None:
    (x, shape) = bottoms[0]
    eps = float(one(_param(layer, "batch_norm_param"), "eps", 1e-5))
    params = [net.weight(f"{name}_{p}", (shape[1],), fill=1.0 if p in ("scale", "var") else 0.0)
              for p in ("scale", "bias", "mean", "var")]
    net.node("BatchNormalization", [x, *params], tops[0], shape, name, epsilon=eps)


@handles("Scale")
def _scale(net: _Net, layer: Message, bottoms, tops, name: str) -> None:
    """Scale after BatchNorm folds into it (Caffe's BatchNorm has no affine part); else Mul (+ Add)."""
    (x, shape) = bottoms[0]
    producer = next((n for n in reversed(net.nodes) if n.output[0] == x), None)
    if producer is not None and producer.op_type == "BatchNormalization" and len(bottoms) == 1:
        net.blobs[tops[0]] = (x, shape)
        return
    param = _param(layer, "scale_param")
    factor = bottoms[1][0] if len(bottoms) > 1 else net.weight(f"{name}_s", (shape[1], *([1] * (len(shape) - 2))),
                                                               fill=1.0)
    y = net.node("Mul", [x, factor], tops[0] if not one(param, "bias_term", False) else net.fresh(f"{name}_mul"),
                 shape, f"{name}_mul" if one(param, "bias_term", False) else name)
    if one(param, "bias_term", False):
        net.node("Add", [y, net.weight(f"{name}_b", (shape[1], *([1] * (len(shape) - 2))), fill=0.0)],
                 tops[0], shape, name)


@handles("Eltwise")
def _eltwise(net: _Net, layer: Message, bottoms, tops, name: str) -> None:
    param = _param(layer, "eltwise_param")
    operation = str(one(param, "operation", "SUM"))
    shape = bottoms[0][1]
    names = [b[0] for b in bottoms]
    if operation in ("PROD", "0"):
        current = names[0]
        for index, other in enumerate(names[1:], start=1):
            last = index == len(names) - 1
            current = net.node("Mul", [current, other], tops[0] if last else net.fresh(f"{name}_mul"), shape,
                               name if last else f"{name}_{index}")
        return
    if operation in ("MAX", "2"):
        net.node("Max", names, tops[0], shape, name)
        return
    coeffs = [float(c) for c in param.get("coeff", [])]
    if coeffs and any(c != 1.0 for c in coeffs):
        names = [n if c == 1.0 else net.node("Mul", [n, net.const(c, np.float32)], net.fresh(f"{name}_c"), shape,
                                             f"{name}_coeff{i}") for i, (n, c) in enumerate(zip(names, coeffs))]
    net.node("Add" if len(names) == 2 else "Sum", names, tops[0], shape, name)


@handles("Concat")
def _concat(net: _Net, layer: Message, bottoms, tops, name: str) -> None:
    param = _param(layer, "concat_param")
    axis = int(one(param, "axis", one(param, "concat_dim", 1))) % len(bottoms[0][1])
    shape = list(bottoms[0][1])
    shape[axis] = sum(b[1][axis] for b in bottoms)
    net.node("Concat", [b[0] for b in bottoms], tops[0], tuple(shape), name, axis=axis)


@handles("Flatten")
def _flatten(net: _Net, layer: Message, bottoms, tops, name: str) -> None:
    (x, shape) = bottoms[0]
    param = _param(layer, "flatten_param")
    axis, end = int(one(param, "axis", 1)) % len(shape), int(one(param, "end_axis", -1)) % len(shape)
    out = (*shape[:axis], math.prod(shape[axis:end + 1]), *shape[end + 1:])
    if end == len(shape) - 1:
        net.node("Flatten", [x], tops[0], out, name, axis=axis)
    else:
        net.node("Reshape", [x, net.const(out)], tops[0], out, name)


@handles("Reshape")
def _reshape(net: _Net, layer: Message, bottoms, tops, name: str) -> None:
    (x, shape) = bottoms[0]
    dims = [int(d) for d in one(_param(layer, "reshape_param"), "shape", {}).get("dim", [])]
    out = [shape[i] if d == 0 else d for i, d in enumerate(dims)]
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        out[out.index(-1)] = math.prod(shape) // known
    net.node("Reshape", [x, net.const(dims)], tops[0], tuple(out), name)


@handles("Crop")
def _crop(net: _Net, layer: Message, bottoms, tops, name: str) -> None:
    (x, shape), (_, reference) = bottoms[0], bottoms[1]
    param = _param(layer, "crop_param")
    axis = int(one(param, "axis", 2)) % len(shape)
    offsets = [int(o) for o in param.get("offset", [0])]
    axes = list(range(axis, len(shape)))
    starts = [offsets[0] if len(offsets) == 1 else offsets[i] for i in range(len(axes))]
    ends = [s + reference[a] for s, a in zip(starts, axes)]
    out = (*shape[:axis], *reference[axis:])
    net.node("Slice", [x, net.const(starts), net.const(ends), net.const(axes)], tops[0], out, name)


@handles("Split")
def _split(net: _Net, layer: Message, bottoms, tops, name: str) -> None:
    for top in tops:  # Caffe's Split copies a blob to several consumers: an alias in ONNX
        net.blobs[top] = bottoms[0]


@handles("Slice")
def _slice(net: _Net, layer: Message, bottoms, tops, name: str) -> None:
    (x, shape) = bottoms[0]
    param = _param(layer, "slice_param")
    axis = int(one(param, "axis", one(param, "slice_dim", 1))) % len(shape)
    points = [int(p) for p in param.get("slice_point", [])]
    bounds = [0, *points, shape[axis]] if points else [shape[axis] * i // len(tops) for i in range(len(tops) + 1)]
    sizes = [b - a for a, b in zip(bounds, bounds[1:])]
    outputs = [net.fresh(top) for top in tops]
    net.nodes.append(helper.make_node("Split", [x, net.const(sizes)], outputs, name=name, axis=axis))
    for top, out, size in zip(tops, outputs, sizes):
        out_shape = list(shape)
        out_shape[axis] = size
        net.blobs[top] = (out, tuple(out_shape))


@handles("Power")
def _power(net: _Net, layer: Message, bottoms, tops, name: str) -> None:
    (x, shape) = bottoms[0]
    param = _param(layer, "power_param")
    power, scale, shift = (float(one(param, k, d)) for k, d in (("power", 1.0), ("scale", 1.0), ("shift", 0.0)))
    steps = [("Mul", scale, scale != 1.0), ("Add", shift, shift != 0.0), ("Pow", power, power != 1.0)]
    steps = [s for s in steps if s[2]] or [("Mul", 1.0, True)]
    for index, (op, value, _) in enumerate(steps):
        last = index == len(steps) - 1
        x = net.node(op, [x, net.const(value, np.float32)], tops[0] if last else net.fresh(f"{name}_{op}"), shape,
                     name if last else f"{name}_{op.lower()}")


def _input_layers(net: _Net, layer: Message, tops: list[str], batch: int | None,
                  shapes: Mapping[str, tuple[int, ...]]) -> None:
    param = _param(layer, "input_param") or _param(layer, "dummy_data_param")
    declared = param.get("shape", [])
    for index, top in enumerate(tops):
        dims = declared[min(index, len(declared) - 1)].get("dim", []) if declared else []
        shape = tuple(shapes.get(top, [int(d) for d in dims]))
        if not shape:
            raise NpowerError(f"input '{top}' has no shape: pass --input-shape {top}=NxCxHxW")
        net.add_input(top, (batch, *shape[1:]) if batch and top not in shapes else shape)


def _root_inputs(net: _Net, model: Message, batch: int | None, shapes: Mapping[str, tuple[int, ...]]) -> None:
    names = model.get("input", [])
    dims = [int(d) for d in model.get("input_dim", [])]
    declared = model.get("input_shape", [])
    for index, input_name in enumerate(names):
        if input_name in shapes:
            shape = tuple(shapes[input_name])
        elif declared:
            shape = tuple(int(d) for d in declared[index].get("dim", []))
        else:
            shape = tuple(dims[4 * index: 4 * index + 4])
        if not shape:
            raise NpowerError(f"input '{input_name}' has no shape: pass --input-shape {input_name}=NxCxHxW")
        net.add_input(input_name, (batch, *shape[1:]) if batch and input_name not in shapes else shape)


def _excluded(layer: Message) -> bool:
    """Layers not in the TEST (deployment) phase."""
    phases = [str(one(rule, "phase", "")) for rule in layer.get("include", [])]
    if phases and not any(p in ("TEST", "1") for p in phases):
        return True
    return any(str(one(rule, "phase", "")) in ("TEST", "1") for rule in layer.get("exclude", []))


def convert_prototxt(text: str, name: str = "caffe", batch: int | None = None,
                     input_shapes: Mapping[str, tuple[int, ...]] | None = None,
                     weights: str = "none") -> onnx.ModelProto:
    """Convert a deploy prototxt to ONNX. weights: 'none' (shape-only) or 'random' (He-scaled)."""
    model = parse_prototxt(text, name)
    net = _Net(random_weights=weights == "random")
    shapes = dict(input_shapes or {})
    _root_inputs(net, model, batch, shapes)
    layers = model.get("layer", []) + model.get("layers", [])
    for index, layer in enumerate(layers):
        raw_type = str(one(layer, "type", ""))
        layer_type = V1_TYPES.get(raw_type, raw_type)
        layer_name = str(one(layer, "name", f"layer{index}"))
        tops, bottoms = [str(t) for t in layer.get("top", [])], [str(b) for b in layer.get("bottom", [])]
        if _excluded(layer) or layer_type in TRAINING_ONLY:
            continue
        if layer_type in ("Input", "DummyData"):
            _input_layers(net, layer, tops, batch, shapes)
            continue
        handler = HANDLERS.get(layer_type)
        if handler is None:
            raise NpowerError(f"{name}: layer '{layer_name}' has unsupported type '{raw_type}'")
        missing = [b for b in bottoms if b not in net.blobs]
        if missing:
            raise NpowerError(f"{name}: layer '{layer_name}' reads blob '{missing[0]}', which no earlier layer makes")
        handler(net, layer, [net.blobs[b] for b in bottoms], tops, layer_name)
    if not net.nodes:
        raise NpowerError(f"{name}: no deployable layers found")
    consumed = {i for node in net.nodes for i in node.input}
    produced = {o for node in net.nodes for o in node.output}
    outputs = {tensor: shape for tensor, shape in net.blobs.values() if tensor not in consumed and tensor in produced}
    graph = helper.make_graph(net.nodes, str(one(model, "name", name)), net.inputs,
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
        path = Path(source)
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise NpowerError(f"{path}: cannot read ({exc})") from exc
        return convert_prototxt(text, path.name, batch, input_shapes, weights)


FRONTEND = CaffeFrontend()
