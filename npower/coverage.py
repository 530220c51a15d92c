"""Is enough of a network costed to report its runtime?

Layers npower cannot cost (unknown ops, shapes unknown after inference) add nothing to the
predicted total. When a roofline lower bound of those layers exceeds everything that was costed,
most of the runtime is missing and the total would be silently wrong (a ViT whose shape tensors
live in an absent external-data file predicts 1.24 ms instead of 64 ms): the analysis is refused,
or, when asked, reported as partial.
"""
from __future__ import annotations

import os
from typing import Any

from .errors import NpowerError
from .features import UNKNOWN, UNRESOLVED
from .graph import Graph, Node
from .modelio import missing_data_files
from .pack import Pack
from .predict import LayerPrediction, roofline_ms

UNCOSTED = (UNKNOWN, UNRESOLVED)


def uncosted(layers: list[LayerPrediction]) -> list[LayerPrediction]:
    """Layers that cost time the prediction does not hold."""
    return [layer for layer in layers if layer.source in UNCOSTED or (layer.source == "fallback" and layer.ms == 0)]


def lower_bound_ms(node: Node, pack: Pack) -> float:
    """Roofline time from what is known of a node: its known tensors are read or written once, and
    every weight of a weight matrix or filter takes part in at least one multiply-add."""
    tensors = [t for t in [*node.inputs, *node.outputs] if t is not None and t.known]
    total_bytes = sum(t.elements * t.itemsize for t in tensors)
    flops = sum(2.0 * t.elements for t in node.inputs if t is not None and t.is_weight and t.known
                and len(t.shape) >= 2)
    return roofline_ms(flops, total_bytes, pack.peak_gflops, pack.bandwidth_gbs)


def missing_share(graph: Graph, layers: list[LayerPrediction], pack: Pack) -> float:
    """Lower bound of the share of the runtime that the uncosted layers take (by layer count when the
    pack has no peak figures to estimate their time with)."""
    missing = {layer.name for layer in uncosted(layers)}
    if not missing:
        return 0.0
    if not pack.peak_gflops or not pack.bandwidth_gbs:
        costed = sum(1 for layer in layers if layer.ms > 0)
        return len(missing) / (len(missing) + costed)
    estimate = sum(lower_bound_ms(node, pack) for node in graph.nodes if node.name in missing)
    total = estimate + sum(layer.ms for layer in layers)
    return estimate / total if total > 0 else 1.0


_WHY = {"unresolved": "shapes unknown after inference", "unknown": "no cost model", "fallback": "no estimate"}


def partial_reason(graph: Graph, layers: list[LayerPrediction], pack: Pack) -> str | None:
    """Why most of the runtime cannot be costed, or None when it can."""
    share = missing_share(graph, layers, pack)
    if share <= 0.5:
        return None
    missing = uncosted(layers)
    causes = []
    for source, why in _WHY.items():
        ops = sorted({layer.op_type for layer in missing if layer.source == source})
        if ops:
            count = sum(layer.source == source for layer in missing)
            causes.append(f"{count} {why}: {', '.join(ops[:6])}{'...' if len(ops) > 6 else ''}")
    return (f"{len(missing)} of {len(layers)} layers cannot be costed ({'; '.join(causes)}), at least "
            f"{share:.0%} of the runtime")


def missing_data_cause(source: Any) -> str:
    """': ...' naming the absent external-data files of an ONNX file source ('' when none is absent)."""
    if not isinstance(source, (str, os.PathLike)):
        return ""
    try:
        files = missing_data_files(source)
    except NpowerError:
        return ""
    return f": the external data file(s) {', '.join(files)} beside the model are missing" if files else ""
