"""ONNX attribute defaults, and auto_pad turned into explicit pads for windowed ops."""
from __future__ import annotations

import math
from typing import Any

# Defaults from the ONNX operator specification for the attributes the extractors read.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "Conv": {"group": 1, "auto_pad": "NOTSET"},
    "ConvTranspose": {"group": 1, "auto_pad": "NOTSET"},
    "MaxPool": {"auto_pad": "NOTSET", "ceil_mode": 0, "storage_order": 0},
    "AveragePool": {"auto_pad": "NOTSET", "ceil_mode": 0, "count_include_pad": 0},
    "LpPool": {"auto_pad": "NOTSET", "ceil_mode": 0, "p": 2},
    "Gemm": {"transA": 0, "transB": 0, "alpha": 1.0, "beta": 1.0},
    "BatchNormalization": {"epsilon": 1e-5, "momentum": 0.9},
    "InstanceNormalization": {"epsilon": 1e-5},
    "LayerNormalization": {"axis": -1, "epsilon": 1e-5, "stash_type": 1},
    "LRN": {"alpha": 1e-4, "beta": 0.75, "bias": 1.0},
    "Softmax": {"axis": -1},
    "LogSoftmax": {"axis": -1},
    "Concat": {},
    "Split": {"axis": 0},
    "Flatten": {"axis": 1},
    "LeakyRelu": {"alpha": 0.01},
    "Elu": {"alpha": 1.0},
    "HardSigmoid": {"alpha": 0.2, "beta": 0.5},
    "Gelu": {"approximate": "none"},
    "Resize": {"mode": "nearest"},
    "Upsample": {"mode": "nearest"},
    "Pad": {"mode": "constant"},
    "Gather": {"axis": 0},
}
_REDUCE_DEFAULTS = {"keepdims": 1, "noop_with_empty_axes": 0}
_WINDOWED = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool"}


def with_defaults(op_type: str, attrs: dict[str, Any]) -> dict[str, Any]:
    """Return attrs with the specification's defaults filled in (input attrs win)."""
    defaults = _REDUCE_DEFAULTS if op_type.startswith("Reduce") else _DEFAULTS.get(op_type, {})
    return {**defaults, **attrs}


def resolve_window(op_type: str, attrs: dict[str, Any], x_shape: tuple, w_shape: tuple | None,
                   out_shape: tuple | None) -> dict[str, Any]:
    """Fill kernel_shape, strides, dilations and explicit pads for Conv/ConvTranspose/pooling."""
    if op_type not in _WINDOWED:
        return attrs
    spatial = len(x_shape) - 2
    out = dict(attrs)
    if "kernel_shape" not in out and w_shape is not None:
        out["kernel_shape"] = list(w_shape[2:])
    kernel = list(out.get("kernel_shape", [1] * spatial))
    out["kernel_shape"] = kernel
    out["strides"] = list(out.get("strides") or [1] * spatial)
    out["dilations"] = list(out.get("dilations") or [1] * spatial)
    auto_pad = out.get("auto_pad", "NOTSET")
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out["pads"] = _same_pads(op_type, x_shape[2:], kernel, out["strides"], out["dilations"],
                                 out.get("output_padding"), auto_pad == "SAME_UPPER")
    elif auto_pad == "VALID":
        out["pads"] = [0] * (2 * spatial)
    else:
        out["pads"] = list(out.get("pads") or [0] * (2 * spatial))
    out["auto_pad"] = "NOTSET"
    return out


def _same_pads(op_type: str, in_sizes, kernel, strides, dilations, output_padding, upper: bool) -> list[int]:
    begins, ends = [], []
    for axis, size in enumerate(in_sizes):
        effective = (kernel[axis] - 1) * dilations[axis] + 1
        if op_type == "ConvTranspose":
            extra = (output_padding or [0] * len(in_sizes))[axis]
            total = max(strides[axis] * (size - 1) + extra + effective - size * strides[axis], 0)
        else:
            out_size = math.ceil(size / strides[axis])
            total = max((out_size - 1) * strides[axis] + effective - size, 0)
        small, large = total // 2, total - total // 2
        begins.append(small if upper else large)
        ends.append(large if upper else small)
    return begins + ends
