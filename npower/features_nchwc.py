"""Extractors of onnxruntime's NCHWc kernels (domain com.microsoft.nchwc, CPU, level 'all').

onnxruntime's NCHWc layout keeps channels in blocks of `BLOCK` (MLAS's block: 16 with AVX-512, 8
with AVX2; 16 on the machine the CPU pack is made on, read from onnxruntime's optimised models).
Its kernels are registered here under their qualified name (`com.microsoft.nchwc:Conv`): they
run other algorithms than the ONNX ops of the same name, so they have kinds of their own. The
convolution picks one of four MLAS algorithms, as MLAS does: depthwise, NCHW input (fewer input
channels than a block), pointwise (1x1, no padding) and the general blocked one.
"""
from __future__ import annotations

from .features import LayerFeatures, _conv, _floats, _movement, _per_channel, _pool, _prod, _specials, register
from .graph import Node

NCHWC = "com.microsoft.nchwc"
BLOCK = 16


def qualified(op_type: str) -> str:
    """The registry key of an NCHWc op."""
    return f"{NCHWC}:{op_type}"


@register(qualified("Conv"))
def _nchwc_conv(node: Node) -> LayerFeatures:
    plain = _conv(node)
    w = node.inputs[1].shape
    groups = int(node.attrs.get("group", 1))
    pointwise = _prod(w[2:]) == 1 and not any(node.attrs["pads"])
    kind = "nchwc_conv_dw" if groups > 1 and w[1] == 1 else "nchwc_conv_nchw" if groups == 1 and w[1] < BLOCK \
        else "nchwc_conv_1x1" if pointwise else "nchwc_conv"
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
