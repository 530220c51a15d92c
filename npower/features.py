"""Per-op feature extraction: one registry mapping op_type -> extractor.

Each extractor turns a resolved graph Node into LayerFeatures: the op kind (the key of its
model in a pack), named base hyperparameters and derived special terms (MACs, FLOPs,
elements and bytes). The profiler runs the same extractors on its single-node graphs, so a
sampled configuration and a real layer give identical feature vectors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from .errors import NpowerError
from .graph import CONTROL_FLOW, Node, Tensor
from .registry import registrar

FREE = "free"          # no work at inference: views, Identity, Dropout, shape arithmetic
UNKNOWN = "unknown"    # op type without an extractor
UNRESOLVED = "unresolved"  # extractor exists but the node's shapes are unknown


@dataclass(frozen=True)
class LayerFeatures:
    """What the cost models see of one layer."""

    kind: str
    features: dict[str, float]
    specials: dict[str, float]

    def values(self) -> dict[str, float]:
        """Base features and special terms in one mapping."""
        return {**self.features, **self.specials}


Extractor = Callable[[Node], LayerFeatures]
EXTRACTORS: dict[str, Extractor] = {}


register = registrar(EXTRACTORS)  # @register("Conv", ...): the extractor of those op types


def extract(node: Node) -> LayerFeatures:
    """Features of a node; kind UNKNOWN/UNRESOLVED when they cannot be computed."""
    if node.op_type in CONTROL_FLOW:
        return LayerFeatures(UNKNOWN, {}, {})
    extractor = EXTRACTORS.get(f"{node.domain}:{node.op_type}") or EXTRACTORS.get(node.op_type)  # domain-qualified first
    if extractor is None:
        return LayerFeatures(UNKNOWN, {}, {})
    if extractor is not _free and not node.shapes_known:
        return LayerFeatures(UNRESOLVED, {}, {})
    if extractor is not _free and (not node.inputs or node.inputs[0] is None or not node.outputs):
        raise NpowerError(f"node '{node.name}' ({node.op_type}) has no first input or no output "
                          "(an empty tensor name where the operator needs one)")
    try:
        return extractor(node)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise NpowerError(f"node '{node.name}' ({node.op_type}) has inputs or attributes that do not fit "
                          f"its operator ({type(exc).__name__}: {exc})") from exc


def _prod(values) -> int:
    return math.prod(int(v) for v in values)


def _data(node: Node) -> list[Tensor]:
    return [t for t in node.inputs if t is not None and not t.is_weight]


def _weights(node: Node) -> list[Tensor]:
    return [t for t in node.inputs if t is not None and t.is_weight]


def _specials(node: Node, macs: float = 0.0, flops: float | None = None) -> dict[str, float]:
    data, weights = _data(node), _weights(node)
    in_elems = sum(t.elements for t in data)
    w_elems = sum(t.elements for t in weights)
    out_elems = sum(t.elements for t in node.outputs)
    in_bytes = sum(t.elements * t.itemsize for t in data)
    w_bytes = sum(t.elements * t.itemsize for t in weights)
    out_bytes = sum(t.elements * t.itemsize for t in node.outputs)
    return {
        "macs": float(macs),
        "flops": float(2 * macs if flops is None else flops),
        "in_elems": float(in_elems),
        "weight_elems": float(w_elems),
        "out_elems": float(out_elems),
        "in_bytes": float(in_bytes),
        "weight_bytes": float(w_bytes),
        "out_bytes": float(out_bytes),
        "total_bytes": float(in_bytes + w_bytes + out_bytes),
    }


def _dhw(sizes) -> tuple[int, int, int]:
    """Right-align 1-3 spatial sizes into (d, h, w); missing ones are 1."""
    padded = [1] * (3 - len(sizes)) + [int(s) for s in sizes]
    return padded[-3], padded[-2], padded[-1]


def _window(node: Node, in_spatial, out_spatial) -> dict[str, float]:
    kd, kh, kw = _dhw(node.attrs["kernel_shape"])
    _, sh, sw = _dhw(node.attrs["strides"])
    _, dh, dw = _dhw(node.attrs["dilations"])
    pads = node.attrs["pads"]
    half = len(pads) // 2
    begin, end = _dhw(pads[:half]), _dhw(pads[half:])
    in_d, in_h, in_w = _dhw(in_spatial)
    out_d, out_h, out_w = _dhw(out_spatial)
    return {"in_d": in_d, "in_h": in_h, "in_w": in_w, "out_d": out_d, "out_h": out_h, "out_w": out_w,
            "kernel_d": kd, "kernel_h": kh, "kernel_w": kw, "stride_h": sh, "stride_w": sw,
            "pad_h": begin[1] + end[1], "pad_w": begin[2] + end[2], "dilation_h": dh, "dilation_w": dw}


def output_taps(size_in: int, size_out: int, kernel: int, stride: int, dilation: int, pad_begin: int) -> list[int]:
    """For each output position along one spatial axis, how many kernel taps read the input."""
    return [sum(1 for tap in range(kernel) if 0 <= o * stride + tap * dilation - pad_begin < size_in)
            for o in range(size_out)]


def conv_axes(node: Node) -> list[tuple[int, int, int, int, int, int]]:
    """(size_in, size_out, kernel, stride, dilation, pad_begin) along (d, h, w) (a missing axis unpadded)."""
    x, w, y = node.inputs[0].shape, node.inputs[1].shape, node.outputs[0].shape
    begins = [0] * (5 - len(x)) + list(node.attrs["pads"][:len(x) - 2])
    return list(zip(_dhw(x[2:]), _dhw(y[2:]), _dhw(w[2:]), _dhw(node.attrs["strides"]),
                    _dhw(node.attrs["dilations"]), begins))


@register("Conv", "FusedConv")
def _conv(node: Node) -> LayerFeatures:
    x, w, y = node.inputs[0].shape, node.inputs[1].shape, node.outputs[0].shape
    groups = int(node.attrs.get("group", 1))
    window = _window(node, x[2:], y[2:])
    macs = x[0] * _prod(y[2:]) * w[0] * _prod(w[2:]) * w[1]
    pointwise = _prod(w[2:]) == 1
    strided = not all(s == 1 for s in node.attrs["strides"])
    direct = pointwise and not strided and not any(node.attrs["pads"])
    depthwise = groups > 1 and groups == x[1]
    features = {"batch": x[0], "in_channels": x[1], "out_channels": w[0], "groups": groups, **window,
                "depthwise": int(depthwise), "pointwise": int(pointwise),
                **_conv_as_gemm(x, w, y, groups, direct, strided), **_im2col_loops(node, direct)}
    return LayerFeatures(_conv_kind(direct and groups == 1 and len(x) > 3, depthwise), _floats(features),
                         _specials(node, macs))


def _im2col_loops(node: Node, direct: bool) -> dict[str, float]:
    """How MLAS's im2col fills the column buffer: one output row per kernel tap at a time (`im2col_rows`, a loop's
    overhead each, which dominates over tiny maps), copying the row's inside in vectors but writing the taps that
    fall on the left or right padding one element at a time (`im2col_edge`); none for a direct GEMM."""
    if direct:
        return {"im2col_rows": 0, "im2col_edge": 0}
    x, w = node.inputs[0].shape, node.inputs[1].shape
    d_axis, h_axis, w_axis = conv_axes(node)
    planes = x[0] * x[1]
    live_rows = planes * sum(output_taps(*d_axis)) * sum(output_taps(*h_axis))  # rows not on the top/bottom padding
    return {"im2col_rows": planes * _prod(w[2:]) * d_axis[1] * h_axis[1],
            "im2col_edge": live_rows * (w_axis[2] * w_axis[1] - sum(output_taps(*w_axis)))}


def _conv_kind(direct_gemm: bool, depthwise: bool) -> str:
    """CPU runtimes run convolutions with different algorithms, each with its own cost model:
    2-D and 3-D 1x1/stride 1/no pad as one GEMM per image (conv_1x1), depthwise with their own kernels
    (conv_dw), everything else (1-D convs included, which onnxruntime runs outside MLAS's conv with a
    setup cost of their own) through im2col + GEMM (conv)."""
    return "conv_1x1" if direct_gemm else "conv_dw" if depthwise else "conv"


def _conv_as_gemm(x: tuple, w: tuple, y: tuple, groups: int, direct: bool, strided: bool) -> dict[str, float]:
    """The GEMMs an im2col convolution runs: batch*groups calls of (M x K) @ (K x N), the im2col copy (and the
    part of it that gathers with a stride), `window_setup` (1 for the convs that paid a fixed cost of about
    17 us per node on the CPU pack's machine: every 1-D conv, which onnxruntime runs outside MLAS, and every
    conv whose window has more than one tap; 1x1 convs did not, strided or not), and the weight elements
    those calls read (they dominate when N, the output map, is tiny)."""
    out_spatial, kernel = _prod(y[2:]), _prod(w[2:])
    im2col = 0 if direct else x[0] * x[1] * kernel * out_spatial
    return {"gemm_m": w[0] // groups, "gemm_k": w[1] * kernel, "gemm_n": out_spatial, "gemm_calls": x[0] * groups,
            "im2col_elems": im2col, "im2col_strided": im2col if strided else 0,
            "window_setup": int(len(x) == 3 or kernel > 1),
            "weight_traffic": x[0] * _prod(w)}  # each image's GEMMs read all weights again


@register("ConvTranspose")
def _conv_transpose(node: Node) -> LayerFeatures:
    x, w, y = node.inputs[0].shape, node.inputs[1].shape, node.outputs[0].shape
    groups = int(node.attrs.get("group", 1))
    window = _window(node, x[2:], y[2:])
    macs = x[0] * _prod(x[2:]) * w[0] * w[1] * _prod(w[2:])
    # onnxruntime, per image and group: a GEMM of the transposed weights (out channels x kernel taps, in channels)
    # by the input (in channels, pixels) into a column buffer, which col2im then adds into the output
    gemm = {"gemm_m": w[1] * _prod(w[2:]), "gemm_k": w[0] // groups, "gemm_n": _prod(x[2:]),
            "gemm_calls": x[0] * groups}
    features = {"batch": x[0], "in_channels": x[1], "out_channels": y[1], "groups": groups, **window, **gemm,
                "col_elems": gemm["gemm_m"] * gemm["gemm_n"] * gemm["gemm_calls"]}
    return LayerFeatures("conv_transpose", _floats(features), _specials(node, macs))


@register("Gemm", "FusedGemm")
def _gemm(node: Node) -> LayerFeatures:
    a, b = node.inputs[0].shape, node.inputs[1].shape
    trans_a, trans_b = int(node.attrs.get("transA", 0)), int(node.attrs.get("transB", 0))
    m, k = (a[1], a[0]) if trans_a else (a[0], a[1])
    n = b[0] if trans_b else b[1]
    has_bias = len(node.inputs) > 2 and node.inputs[2] is not None
    features = {"batch": 1, "m": m, "k": k, "n": n, "has_bias": int(has_bias), "trans_a": trans_a, "trans_b": trans_b}
    return LayerFeatures("gemm", _floats(features), _specials(node, m * k * n))


@register("MatMul")
def _matmul(node: Node) -> LayerFeatures:
    a, b, y = node.inputs[0].shape, node.inputs[1].shape, node.outputs[0].shape
    k = a[-1]
    m = a[-2] if len(a) > 1 else 1
    n = b[-1] if len(b) > 1 else 1
    matrix_dims = (len(a) > 1) + (len(b) > 1)  # a 1-D operand contributes no dimension to the output
    batch = _prod(y[:len(y) - matrix_dims])
    flattened = len(b) <= 2  # onnxruntime runs A's rows of every batch as one GEMM when B is a matrix
    features = {"batch": batch, "m": m, "k": k, "n": n, "b_is_weight": int(node.inputs[1].is_weight),
                "gemm_m": batch * m if flattened else m, "gemm_calls": 1 if flattened else batch}
    return LayerFeatures("matmul", _floats(features), _specials(node, batch * m * k * n))


def _pool(kind: str) -> Extractor:
    def extractor(node: Node) -> LayerFeatures:
        x, y = node.inputs[0].shape, node.outputs[0].shape
        window = _window(node, x[2:], y[2:])
        features = {"batch": x[0], "channels": x[1], "planes": x[0] * x[1], **window}
        ops = x[0] * x[1] * _prod(y[2:]) * _prod(node.attrs["kernel_shape"])
        return LayerFeatures(kind, _floats(features), _specials(node, 0, ops))
    return extractor


register("MaxPool")(_pool("maxpool"))
register("AveragePool")(_pool("avgpool"))
register("LpPool")(_pool("lppool"))


def _per_channel(kind: str) -> Extractor:
    """Ops over (batch, channels, spatial...): global pooling and normalisations."""
    def extractor(node: Node) -> LayerFeatures:
        x = node.inputs[0].shape
        channels = x[1] if len(x) > 1 else 1
        features = {"batch": x[0], "channels": channels, "planes": x[0] * channels, "spatial": _prod(x[2:])}
        if kind == "lrn":
            features["size"] = node.attrs.get("size", 1)
        return LayerFeatures(kind, _floats(features), _specials(node, 0, 2 * _prod(x)))
    return extractor


register("GlobalAveragePool")(_per_channel("global_avgpool"))
register("GlobalMaxPool")(_per_channel("global_maxpool"))
register("BatchNormalization")(_per_channel("batchnorm"))
register("InstanceNormalization")(_per_channel("instancenorm"))
register("LRN")(_per_channel("lrn"))


def _split_at_axis(shape: tuple, axis: int) -> tuple[int, int, int]:
    axis = axis % len(shape) if shape else 0
    return _prod(shape[:axis]), int(shape[axis]) if shape else 1, _prod(shape[axis + 1:])


@register("LayerNormalization", "SimplifiedLayerNormalization")
def _layernorm(node: Node, kind: str = "layernorm") -> LayerFeatures:
    x = node.inputs[0].shape
    axis = int(node.attrs.get("axis", -1)) % len(x)
    features = {"rows": _prod(x[:axis]), "norm_size": _prod(x[axis:])}
    return LayerFeatures(kind, _floats(features), _specials(node, 0, 5 * _prod(x)))


@register("SkipLayerNormalization")
def _skip_layernorm(node: Node) -> LayerFeatures:
    """onnxruntime's residual Add + LayerNormalization kernel: a kind of its own (its own cost)."""
    return _layernorm(node, "skip_layernorm")


@register("Softmax", "LogSoftmax")
def _softmax(node: Node) -> LayerFeatures:
    x = node.inputs[0].shape
    outer, axis_len, inner = _split_at_axis(x, int(node.attrs.get("axis", -1)))
    features = {"outer": outer, "axis_len": axis_len, "inner": inner}
    return LayerFeatures("softmax", _floats(features), _specials(node, 0, 3 * _prod(x)))


def broadcast_spans(input_shapes: list[tuple], out_shape: tuple) -> int:
    """How many contiguous runs onnxruntime's broadcast loop splits an element-wise op into: it merges output
    axes from the innermost out while every input keeps its state (read along the axis, or broadcast: size 1
    or missing), and calls its inner loop once per run of the shortest input's merged block. A per-channel
    operand of a channels-last tensor ([1, H, W, C] with [C]) makes H x W runs of C elements, each paying a
    call; a per-channel operand of a channels-first one ([1, C, H, W] with [C, 1, 1]), C runs of H x W."""
    elements = _prod(out_shape)
    if not elements:
        return 0
    span = elements
    for shape in input_shapes:
        aligned = (1,) * (len(out_shape) - len(shape)) + tuple(shape)
        run, state = 1, None
        for size, own in zip(reversed(out_shape), reversed(aligned)):
            if size == 1:
                continue
            if state is not None and (own == 1) != state:
                break
            state, run = own == 1, run * size
        span = min(span, run)
    return elements // span


def _elementwise(kind: str, flops_per_element: int = 1) -> Extractor:
    """Element-wise ops: cost follows the output size, how inputs broadcast into it, and how many runs the
    broadcast loop makes (`broadcast_spans`)."""
    def extractor(node: Node) -> LayerFeatures:
        out = node.outputs[0].elements
        inputs = [t for t in node.inputs if t is not None]
        broadcast = int(any(t.elements != out for t in inputs))
        spans = broadcast_spans([t.shape for t in inputs], node.outputs[0].shape) if broadcast else 1
        features = {"elements": out, "inputs": len(inputs), "broadcast": broadcast, "spans": spans}
        return LayerFeatures(kind, _floats(features), _specials(node, 0, flops_per_element * out))
    return extractor


_UNARY = ["Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Erf", "Gelu", "Clip",
          "Elu", "Selu", "Exp", "Log", "Sqrt", "Neg", "Abs", "Reciprocal", "Softplus", "Mish",
          "Floor", "Ceil", "Round", "Sign", "Not", "Cast", "QuickGelu", "FastGelu", "BiasGelu"]
_BINARY = ["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "PRelu", "Equal", "Less", "Greater",
           "And", "Or", "Where", "Sum", "Mean", "Mod", "BiasAdd"]
for _op in _UNARY + _BINARY:
    register(_op)(_elementwise(_op.lower()))


def _movement(kind: str) -> Extractor:
    """Data movement: cost follows the bytes read and written."""
    def extractor(node: Node) -> LayerFeatures:
        data = _data(node)
        features = {"in_elems": sum(t.elements for t in data) or node.inputs[0].elements,
                    "out_elems": sum(t.elements for t in node.outputs),
                    "pieces": max(len(data), len(node.outputs))}
        if kind == "resize":
            mode = str(node.attrs.get("mode", "nearest"))
            features["linear"] = int(mode in ("linear", "bilinear", "trilinear", "cubic"))
        return LayerFeatures(kind, _floats(features), _specials(node, 0, 0))
    return extractor


for _op, _kind in [("Concat", "concat"), ("Split", "split"), ("Slice", "slice"), ("Pad", "pad"),
                   ("Resize", "resize"), ("Upsample", "resize"), ("Transpose", "transpose"),
                   ("Gather", "gather"), ("GatherElements", "gather"), ("Tile", "tile"),
                   ("Expand", "expand"), ("DepthToSpace", "transpose"), ("SpaceToDepth", "transpose")]:
    register(_op)(_movement(_kind))


@register("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
          "ReduceSumSquare", "ReduceLogSumExp", "ArgMax", "ArgMin")
def _reduce(node: Node) -> LayerFeatures:
    in_elems, out_elems = node.inputs[0].elements, node.outputs[0].elements
    features = {"in_elems": in_elems, "out_elems": out_elems}
    return LayerFeatures("reduce", _floats(features), _specials(node, 0, in_elems))


@register("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Shape", "Size",
          "Constant", "ConstantOfShape", "Range")
def _free(node: Node) -> LayerFeatures:
    return LayerFeatures(FREE, {}, {})


def _floats(values: dict) -> dict[str, float]:
    return {name: float(value) for name, value in values.items()}


from . import features_nchwc  # noqa: E402,F401  (onnxruntime's NCHWc kernels)
