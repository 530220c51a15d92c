"""Extractors of onnxruntime's NCHWc kernels (domain com.microsoft.nchwc, CPU, level 'all').

onnxruntime's NCHWc layout keeps channels in blocks of `BLOCK` (MLAS's block: 16 with AVX-512, 8
with AVX2; 16 on the machine the CPU pack is made on, read from onnxruntime's optimised models).
Its kernels are registered here under their qualified name (`com.microsoft.nchwc:Conv`): they
run other algorithms than the ONNX ops of the same name, so they have kinds of their own. The
convolution picks one of four MLAS algorithms, as MLAS does: depthwise, NCHW input (fewer input
channels than a block), pointwise (1x1, no padding) and the general blocked one. A 1x1 depthwise conv
(a BatchNormalization or per-channel Mul inside a blocked region) runs MLAS's depthwise kernel but is a
stream over memory, with no window: it has a kind of its own (`nchwc_conv_dw_1x1`); a pack fitted before
that kind existed costs it with its broader kind's model (`BROADER_KIND`). MLAS skips the
kernel taps that fall on the zero padding, so these kinds also see `valid_macs`, the multiply-adds
that read the input (a 3x3 kernel over a 1-pixel-high map does a third of its nominal work),
`weight_touched`, the weights those taps load (what bounds a conv whose output is a few pixels), the
output width its kernels vectorise over and `row_calls`, how many times the row kernel is called. The
non-depthwise kinds also see `kernel_steps`: the kernel's work split the way MLAS computes it (groups of
outputs, padded outputs one by one, filter blocks per set) and the weight bytes it re-reads per row.
"""
from __future__ import annotations

import math

from .features import (LayerFeatures, _conv, _dhw, _floats, _movement, _per_channel, _pool, _prod, _specials, conv_axes,
                       output_taps, register)
from .graph import Node

NCHWC = "com.microsoft.nchwc"
BLOCK = 16
# kinds split off a broader one: a pack without the narrower kind's model costs it with the broader kind's
BROADER_KIND = {"nchwc_conv_dw_1x1": "nchwc_conv_dw"}


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


def _axes_reads(node: Node) -> list[list[int]]:
    """tap_reads along (d, h, w) of a convolution."""
    return [tap_reads(*axis) for axis in conv_axes(node)]


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
# Cache levels by the bytes a block of data occupies: a core's L2 (<= 1 MiB), the shared L3 (<= 16 MiB), memory.
BANDS = (("near", 2 ** 20), ("mid", 2 ** 24), ("far", math.inf))
TRAFFIC = ("weight_reads", "input_rereads", "output_rereads")
POINTWISE_CHANNEL_BATCH = 128  # input channels MLAS's pointwise kernel sums per pass over a stride-1 output plane


def _band(size_bytes: float) -> str:
    return next(name for name, limit in BANDS if size_bytes <= limit)


def kernel_steps(node: Node, groups: int) -> dict[str, float]:
    """The work of MLAS's blocked (and NCHW-input) conv kernel by how it is computed. A step is one input channel
    times one kernel tap for a group of outputs: it costs a filter-set load plus one multiply-add per output and
    filter block, so time depends on the group (6 interior outputs, the interior remainder, padded outputs
    one at a time) and on the filter blocks per set (1-4), not on the multiply-adds alone. `*_steps` count
    steps, `*_fmas` steps times filter blocks (vector multiply-adds per output); `memory_traffic` the bytes
    the kernel moves."""
    x, w = node.inputs[0].shape, node.inputs[1].shape
    d_axis, h_axis, w_axis = conv_axes(node)
    _, out_w, kernel_w, *_ = w_axis
    rows = x[0] * sum(output_taps(*d_axis)) * sum(output_taps(*h_axis))  # output rows x kernel rows they read
    per_output = output_taps(*w_axis)
    left = next((i for i, taps in enumerate(per_output) if taps == kernel_w), out_w)
    right = next((i for i, taps in enumerate(reversed(per_output)) if taps == kernel_w), out_w)
    interior = max(0, out_w - left - right)
    padded_taps = sum(per_output) - interior * kernel_w
    lanes = _lanes(w[1])
    sets = groups * _filter_sets(-(-w[0] // groups // BLOCK))
    per_set = {"main": interior // OUTPUT_GROUP * kernel_w, "rest": interior % OUTPUT_GROUP * kernel_w,
               "padded": padded_taps}
    features = {}
    for group, steps in per_set.items():
        features[f"{group}_steps"] = float(rows * lanes * steps * len(sets))
        features[f"{group}_fmas"] = float(rows * lanes * steps * sum(sets))
    return {**features, **memory_traffic(node, groups, rows)}


def _lanes(channels: int) -> int:
    """Input channels a kernel step covers: NCHW input (fewer channels than a block) is read unblocked."""
    return channels if channels < BLOCK else -(-channels // BLOCK) * BLOCK


def _filter_sets(blocks: int) -> list[int]:
    """Filter blocks per kernel call: sets of up to FILTER_SET blocks."""
    return [FILTER_SET] * (blocks // FILTER_SET) + ([blocks % FILTER_SET] if blocks % FILTER_SET else [])


def memory_traffic(node: Node, groups: int, rows: int) -> dict[str, float]:
    """Bytes MLAS's NCHWc conv moves, by the cache level they come from (`BANDS`). For each image and filter set
    it loops over input channel blocks and, inside, over output rows, so:
    - weight_reads: a (filter set, input block) block of weights is read for every output row and kernel row
      (`rows`). An image's first read of each comes from where the whole (touched) weights fit, the first image's
      from memory (other layers evicted them since the last inference); the re-reads from a core's cache;
    - input_read: the input rows the kernel reads once (`input_read_<band>`: the same, by where the whole input fits:
      the layer before wrote all of it); input_rereads: every further filter set of a group reads the image's input
      again (band: one image's input of a group);
    - output_rereads: every input pass after the first reads the set's output back (band: one image's output of
      a set): a pass is an input block, or for the pointwise kernel at stride 1 up to 128 input channels (at a
      larger stride it finishes one output row at a time, in cache)."""
    x, w, y = node.inputs[0].shape, node.inputs[1].shape, node.outputs[0].shape
    _, h_axis, w_axis = conv_axes(node)
    lanes = _lanes(w[1])
    sets_per_group = len(_filter_sets(-(-w[0] // groups // BLOCK)))
    traffic = {f"{name}_{band}": 0.0 for name in TRAFFIC for band, _ in BANDS}
    whole = 4.0 * weight_touched(node)
    all_reads = rows * 4.0 * w[0] * w[1] * sum(1 for taps in tap_reads(*w_axis) if taps)  # each row's touched
    traffic["weight_reads_far"] += whole
    traffic[f"weight_reads_{_band(whole)}"] += (x[0] - 1) * whole
    traffic["weight_reads_near"] += all_reads - x[0] * whole
    _, _, kernel_h, stride_h, *_ = h_axis
    group_input = 4.0 * lanes * _prod(x[2:]) * min(1.0, kernel_h / stride_h)  # the rows it reads, one image
    input_read = x[0] * groups * group_input
    traffic[f"input_rereads_{_band(group_input)}"] += input_read * (sets_per_group - 1)
    pointwise = _prod(w[2:]) == 1 and not any(node.attrs["pads"])
    strided = any(s != 1 for s in node.attrs["strides"])
    passes = 1 if pointwise and strided else -(-lanes // (POINTWISE_CHANNEL_BATCH if pointwise else BLOCK))
    set_output = 4.0 * _prod(y[2:]) * min(w[0] // groups, FILTER_SET * BLOCK)
    traffic[f"output_rereads_{_band(set_output)}"] += 4.0 * x[0] * _prod(y[1:]) * (passes - 1)
    first_reads = {f"input_read_{band}": 0.0 for band, _ in BANDS}
    first_reads[f"input_read_{_band(input_read)}"] = input_read
    return {"input_read": input_read, **first_reads, **traffic}


@register(qualified("Conv"))
def _nchwc_conv(node: Node) -> LayerFeatures:
    plain = _conv(node)
    plain.features["valid_macs"] = valid_macs(node)
    plain.features["weight_touched"] = weight_touched(node)
    w = node.inputs[1].shape
    groups = int(node.attrs.get("group", 1))
    plain.features["row_calls"] = float(row_calls(node.inputs[0].shape, w, node.outputs[0].shape, groups))
    pointwise = _prod(w[2:]) == 1 and not any(node.attrs["pads"])
    if groups > 1 and w[1] == 1:  # depthwise: no kernel_steps (another MLAS kernel)
        kind = "nchwc_conv_dw_1x1" if pointwise else "nchwc_conv_dw"
    else:
        kind = "nchwc_conv_nchw" if groups == 1 and w[1] < BLOCK else "nchwc_conv_1x1" if pointwise else "nchwc_conv"
        plain.features.update(kernel_steps(node, groups))
    return LayerFeatures(kind, plain.features, plain.specials)


register(qualified("MaxPool"))(_pool("nchwc_maxpool"))
register(qualified("AveragePool"))(_pool("nchwc_avgpool"))
register(qualified("GlobalAveragePool"))(_per_channel("nchwc_global_avgpool"))
register(qualified("GlobalMaxPool"))(_per_channel("nchwc_global_maxpool"))
register(qualified("Upsample"))(_movement("nchwc_upsample"))


def _reorder(kind: str):
    """ReorderInput/ReorderOutput: a copy between the plain (NCHW, or NHWC with `channels_last`) and the
    blocked layout of one tensor."""
    def extractor(node: Node) -> LayerFeatures:
        plain = node.inputs[0].shape if kind == "reorder_input" else node.outputs[0].shape
        channels, spatial = (plain[-1], plain[1:-1]) if node.attrs.get("channels_last") else (plain[1], plain[2:])
        features = {"batch": plain[0], "channels": channels, "spatial": _prod(spatial), "elements": _prod(plain)}
        return LayerFeatures(kind, _floats(features), _specials(node))
    return extractor


register(qualified("ReorderInput"))(_reorder("reorder_input"))
register(qualified("ReorderOutput"))(_reorder("reorder_output"))
