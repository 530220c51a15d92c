"""Extractors of onnxruntime's NCHWc kernels (domain com.microsoft.nchwc, CPU, level 'all').

onnxruntime's NCHWc layout keeps channels in blocks of `BLOCK` (MLAS's block: 16 with AVX-512, 8
with AVX2; 16 on the machine the CPU pack is made on, read from onnxruntime's optimised models).
Its kernels are registered here under their qualified name (`com.microsoft.nchwc:Conv`): they
run other algorithms than the ONNX ops of the same name, so they have kinds of their own. The
convolution picks one of four MLAS algorithms, as MLAS does: depthwise, NCHW input (fewer input
channels than a block), pointwise (1x1, no padding) and the general blocked one. MLAS skips the
kernel taps that fall on the zero padding, so these kinds also see `valid_macs`, the multiply-adds
that read the input (a 3x3 kernel over a 1-pixel-high map does a third of its nominal work),
`weight_touched`, the weights those taps load (what bounds a conv whose output is a few pixels), the
output width its kernels vectorise over and `row_calls`, how many times the row kernel is called. The
non-depthwise kinds also see `kernel_steps`: the kernel's work split the way MLAS computes it (groups of
outputs, padded outputs one by one, filter blocks per set) and the weight bytes it re-reads per row.
"""
from __future__ import annotations

import math

from .features import LayerFeatures, _conv, _dhw, _floats, _movement, _per_channel, _pool, _prod, _specials, register
from .graph import Node

NCHWC = "com.microsoft.nchwc"
BLOCK = 16


def qualified(op_type: str) -> str:
    """The registry key of an NCHWc op."""
    return f"{NCHWC}:{op_type}"


def tap_reads(size_in: int, size_out: int, kernel: int, stride: int, dilation: int, pad_begin: int) -> list[int]:
    """For each kernel tap along one spatial axis, how many output positions read the input through it
    (the others read the zero padding)."""
    reads = []
    for tap in range(kernel):
        offset = tap * dilation - pad_begin  # output o reads input o * stride + offset
        first, last = max(0, -(offset // stride)), min(size_out - 1, (size_in - 1 - offset) // stride)
        reads.append(max(0, last - first + 1))
    return reads


def output_taps(size_in: int, size_out: int, kernel: int, stride: int, dilation: int, pad_begin: int) -> list[int]:
    """For each output position along one spatial axis, how many kernel taps read the input."""
    return [sum(1 for tap in range(kernel) if 0 <= o * stride + tap * dilation - pad_begin < size_in)
            for o in range(size_out)]


def _axes(node: Node) -> list[tuple[int, int, int, int, int, int]]:
    """(size_in, size_out, kernel, stride, dilation, pad_begin) along (d, h, w) (a missing axis unpadded)."""
    x, w, y = node.inputs[0].shape, node.inputs[1].shape, node.outputs[0].shape
    begins = [0] * (5 - len(x)) + list(node.attrs["pads"][:len(x) - 2])
    return list(zip(_dhw(x[2:]), _dhw(y[2:]), _dhw(w[2:]), _dhw(node.attrs["strides"]),
                    _dhw(node.attrs["dilations"]), begins))


def _axes_reads(node: Node) -> list[list[int]]:
    """tap_reads along (d, h, w) of a convolution."""
    return [tap_reads(*axis) for axis in _axes(node)]


def valid_macs(node: Node) -> float:
    """Multiply-adds of a convolution that read the input (taps on the zero padding left out)."""
    x, w = node.inputs[0].shape, node.inputs[1].shape
    return float(x[0] * w[0] * w[1] * _prod([sum(reads) for reads in _axes_reads(node)]))


def weight_touched(node: Node) -> float:
    """Weights of a convolution that some output reads: a tap that only ever falls on the padding is
    skipped, so its weights are never loaded (an 11x11 kernel over a 2x2 map reads 2x2 of its taps)."""
    w = node.inputs[1].shape
    return float(w[0] * w[1] * _prod([sum(1 for count in reads if count) for reads in _axes_reads(node)]))


def row_calls(x: tuple, w: tuple, y: tuple, groups: int) -> int:
    """Calls of MLAS's NCHWc kernel: it computes one output row at a time, for a set of up to 4 output
    channel blocks (one block when depthwise), per input channel block and kernel row."""
    out_rows = y[0] * _prod(y[2:-1])
    if groups > 1:
        return out_rows * -(-w[0] // BLOCK) * _prod(w[2:-1])
    return out_rows * -(-w[0] // (4 * BLOCK)) * -(-w[1] // BLOCK) * _prod(w[2:-1])


# Output widths of MLAS's blocked conv kernel: interior outputs go in groups of this many (AVX-512), the rest of
# the interior in smaller groups, and outputs whose taps reach the padding one by one, checking every tap.
OUTPUT_GROUP = 6
FILTER_SET = 4  # output channel blocks one kernel call computes
# Weight reads by the size of the weight block a kernel call re-reads for every output row: bands by size,
# where they fit in a core's L2 (<= 1 MiB), in a shared L3 (<= 16 MiB) or stream from memory.
WEIGHT_BANDS = (("near", 2 ** 20), ("mid", 2 ** 24), ("far", math.inf))


def kernel_steps(node: Node, groups: int) -> dict[str, float]:
    """The work of MLAS's blocked (and NCHW-input) conv kernel by how it is computed. A step is one input channel
    times one kernel tap for a group of outputs: it costs a filter-set load plus one multiply-add per output and
    filter block, so time depends on the group (6 interior outputs, the interior remainder, padded outputs
    one at a time) and on the filter blocks per set (1-4), not on the multiply-adds alone. `*_steps` count
    steps, `*_fmas` steps times filter blocks (vector multiply-adds per output); weight and input reads count
    the bytes the row calls load."""
    x, w = node.inputs[0].shape, node.inputs[1].shape
    d_axis, h_axis, w_axis = _axes(node)
    _, out_w, kernel_w, *_ = w_axis
    rows = x[0] * sum(output_taps(*d_axis)) * sum(output_taps(*h_axis))  # output rows x kernel rows they read
    per_output = output_taps(*w_axis)
    left = next((i for i, taps in enumerate(per_output) if taps == kernel_w), out_w)
    right = next((i for i, taps in enumerate(reversed(per_output)) if taps == kernel_w), out_w)
    interior = max(0, out_w - left - right)
    padded_taps = sum(per_output) - interior * kernel_w
    lanes = w[1] if w[1] < BLOCK else -(-w[1] // BLOCK) * BLOCK  # NCHW input reads its channels unblocked
    blocks = -(-w[0] // groups // BLOCK)  # per group
    sets = groups * ([FILTER_SET] * (blocks // FILTER_SET) + ([blocks % FILTER_SET] if blocks % FILTER_SET else []))
    per_set = {"main": interior // OUTPUT_GROUP * kernel_w, "rest": interior % OUTPUT_GROUP * kernel_w,
               "padded": padded_taps}
    features = {}
    for group, steps in per_set.items():
        features[f"{group}_steps"] = float(rows * lanes * steps * len(sets))
        features[f"{group}_fmas"] = float(rows * lanes * steps * sum(sets))
    row_weights = 4.0 * w[0] * w[1] * sum(1 for taps in tap_reads(*w_axis) if taps)  # one kernel row's, touched
    set_block = 4.0 * weight_touched(node) * min(w[0] // groups, FILTER_SET * BLOCK) / w[0]  # a set is in one group
    features.update({f"weight_reads_{band}": 0.0 for band, _ in WEIGHT_BANDS})
    band = next(name for name, limit in WEIGHT_BANDS if set_block <= limit)
    features[f"weight_reads_{band}"] = rows * row_weights
    _, _, kernel_h, stride_h, *_ = h_axis
    features["input_read"] = 4.0 * x[0] * lanes * _prod(x[2:]) * min(1.0, kernel_h / stride_h)  # rows it reads
    return features


@register(qualified("Conv"))
def _nchwc_conv(node: Node) -> LayerFeatures:
    plain = _conv(node)
    plain.features["valid_macs"] = valid_macs(node)
    plain.features["weight_touched"] = weight_touched(node)
    w = node.inputs[1].shape
    groups = int(node.attrs.get("group", 1))
    plain.features["row_calls"] = float(row_calls(node.inputs[0].shape, w, node.outputs[0].shape, groups))
    pointwise = _prod(w[2:]) == 1 and not any(node.attrs["pads"])
    kind = "nchwc_conv_dw" if groups > 1 and w[1] == 1 else "nchwc_conv_nchw" if groups == 1 and w[1] < BLOCK \
        else "nchwc_conv_1x1" if pointwise else "nchwc_conv"
    if kind != "nchwc_conv_dw":
        plain.features.update(kernel_steps(node, groups))
    return LayerFeatures(kind, plain.features, plain.specials)


register(qualified("MaxPool"))(_pool("nchwc_maxpool"))
register(qualified("AveragePool"))(_pool("nchwc_avgpool"))
register(qualified("GlobalAveragePool"))(_per_channel("nchwc_global_avgpool"))
register(qualified("GlobalMaxPool"))(_per_channel("nchwc_global_maxpool"))
register(qualified("Upsample"))(_movement("nchwc_upsample"))


def _reorder(kind: str):
    """ReorderInput/ReorderOutput: a copy between the plain and the blocked layout of one tensor."""
    def extractor(node: Node) -> LayerFeatures:
        plain = node.inputs[0].shape if kind == "reorder_input" else node.outputs[0].shape
        features = {"batch": plain[0], "channels": plain[1], "spatial": _prod(plain[2:]),
                    "elements": _prod(plain)}
        return LayerFeatures(kind, _floats(features), _specials(node))
    return extractor


register(qualified("ReorderInput"))(_reorder("reorder_input"))
register(qualified("ReorderOutput"))(_reorder("reorder_output"))
