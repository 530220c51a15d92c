"""Per-layer validation rows: a runtime's executed kernels mapped back to the layers npower costs.

The runtime renames what it fuses and adds kernels of its own (the Reshapes around a 3-D Gemm). A kernel
runs the work of the node it is named after (onnxruntime keeps the name, or prefixes it: `fused gemm_29`,
suffixes it: `matmul_11/MatMulAddFusion`; node names may hold slashes themselves, as Keras's
`model/block_1/conv`), or after the tensor it writes (NCHWc kernels: `relu_8_nchwc`,
`batchnormalization_14_bn_nchwc`, `mul_3_mul_nchwc`); failing that,
of the node that wrote the original tensor it writes (the `Gelu_token_210` kernel writes the last Mul's
output); failing that, it belongs with the kernels that read what it writes. An NCHWc reorder belongs to the
reorder row npower adds for the plain tensor it reads or writes.
Each row is one predicted kernel: a host node with the nodes fused into it.
"""
from __future__ import annotations

from typing import Any, Mapping

from .graph import Graph
from .predict import LayerPrediction
from .profile.backends import KernelProfile, KernelTime
from .runtimes import Fusion
from .runtimes.ort_layout import reorder_name

RUNTIME_ROW = "(runtime-added)"
# onnxruntime's names for the NCHWc kernels it makes of a Conv, a BatchNormalization and a per-channel Mul
NCHWC_SUFFIXES = ("_nchwc", "_bn_nchwc", "_mul_nchwc")


def kernel_nodes(profile: KernelProfile, graph: Graph) -> dict[str, str]:
    """Kernel name -> the graph node whose work it runs ('' for a kernel the runtime added)."""
    producer = {t.name: node.name for node in graph.nodes for t in node.outputs}
    names = {node.name for node in graph.nodes}
    readers: dict[str, list[KernelTime]] = {}
    for kernel in profile.kernels:
        for tensor in kernel.inputs:
            readers.setdefault(tensor, []).append(kernel)

    def node_of(kernel: KernelTime, seen: set[str]) -> str:
        if kernel.op_type in ("ReorderInput", "ReorderOutput"):  # NCHWc layout: the reorder row npower adds
            plain = kernel.inputs if kernel.op_type == "ReorderInput" else kernel.outputs
            return reorder_name(kernel.op_type, plain[0])
        parts = kernel.name.removeprefix("fused ").split("/")
        for named in ("/".join(parts[:end]) for end in range(len(parts), 0, -1)):  # longest first: Keras names
            for candidate in (named, *(named.removesuffix(suffix) for suffix in NCHWC_SUFFIXES)):
                if candidate in names:
                    return candidate
                if candidate in producer:  # an NCHWc kernel is named after the tensor it writes
                    return producer[candidate]
        written = [producer[t] for t in kernel.outputs if t in producer]
        if written:
            return written[0]
        for tensor in kernel.outputs:
            for reader in readers.get(tensor, []):
                if reader.name not in seen:
                    seen.add(reader.name)
                    found = node_of(reader, seen)
                    if found:
                        return found
        return ""

    return {kernel.name: node_of(kernel, {kernel.name}) for kernel in profile.kernels}


def layer_rows(predicted: list[LayerPrediction], fusions: Mapping[str, Fusion], profile: KernelProfile,
               graph: Graph) -> list[dict[str, Any]]:
    """One row per predicted kernel (host + fused nodes) with its predicted and measured ms; kernels
    the runtime added that run no graph node's work make one more row."""
    host = {row.name: fusions[row.name].host if row.name in fusions and fusions[row.name].host else row.name
            for row in predicted}
    by_name = {row.name: row for row in predicted}
    rows: dict[str, dict[str, Any]] = {}
    for layer in predicted:
        row = rows.setdefault(host[layer.name], _row(by_name[host[layer.name]]))
        row["predicted_ms"] += layer.ms
        if host[layer.name] != layer.name:
            row["fused"].append(layer.name)
    nodes = kernel_nodes(profile, graph)
    for kernel in profile.kernels:
        node = nodes.get(kernel.name, "")
        key = host.get(node, RUNTIME_ROW) if node else RUNTIME_ROW
        row = rows.setdefault(key, {"name": RUNTIME_ROW, "op_type": "", "kind": "", "source": "runtime",
                                    "predicted_ms": 0.0, "measured_ms": 0.0, "kernels": [], "fused": []})
        row["measured_ms"] += kernel.ms
        if kernel.op_type not in row["kernels"]:
            row["kernels"].append(kernel.op_type)
    return [row for row in rows.values() if row["predicted_ms"] > 0 or row["measured_ms"] > 0]


def _row(layer: LayerPrediction) -> dict[str, Any]:
    return {"name": layer.name, "op_type": layer.op_type, "kind": layer.kind, "source": layer.source,
            "predicted_ms": 0.0, "measured_ms": 0.0, "kernels": [], "fused": []}
