"""Per-layer predictions from a Graph and a Pack.

Sources: "fitted" (the pack's model for the op kind), "fallback" (roofline from the pack's
measured peak compute and bandwidth, flagged), "fused" (the runtime merges the node into
another one at no cost), "free" (views, Identity, Dropout), "unknown" (no extractor, or
control flow) and "unresolved" (shapes unknown). Only fitted and fallback layers cost time;
a merged node whose work remains (a CPU FusedConv's activation pass) keeps its fitted cost
and says which kernel it runs inside.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .device_features import derive as derive_device_features
from .errors import NpowerError
from .features import FREE, UNKNOWN, UNRESOLVED, LayerFeatures, extract
from .features_nchwc import BROADER_KIND
from .graph import Graph, Node
from .pack import Pack
from .profile.cache_state import base_kind, graph_input_kind, steady_kind
from .runtimes import Fusion


@dataclass
class LayerPrediction:
    """One layer's predicted cost and where the figure came from."""

    name: str
    op_type: str
    kind: str
    output_shape: tuple | None
    macs: float
    flops: float
    ms: float
    watts: float | None
    source: str
    note: str = ""

    @property
    def mj(self) -> float | None:
        return None if self.watts is None else self.watts * self.ms


MAX_LAYER_MS = 1e12  # 30 years: a larger per-layer figure is an overflow, not a prediction
MAX_LAYER_WATTS = 1e7


def roofline_ms(flops: float, total_bytes: float, peak_gflops: float, bandwidth_gbs: float) -> float:
    """Paleo-style time: compute time plus memory time, in ms."""
    return (flops / (peak_gflops * 1e9) + total_bytes / (bandwidth_gbs * 1e9)) * 1e3


def layer_bytes(layer: LayerFeatures) -> float:
    """Bytes read and written: inputs (as stored, unpadded), weights and outputs."""
    return layer.specials.get("total_bytes", 0.0)


def predict(graph: Graph, pack: Pack, fusion: bool = True) -> list[LayerPrediction]:
    """Predict every node of the graph with the pack."""
    fused, added = pack.runtime.rules.plan(graph) if fusion else ({}, [])
    nodes = graph.nodes + added  # + runtime-added kernels (layout reorders)
    layers = [_kernel_features(node, fused.get(node.name)) for node in nodes]
    rows = [_row(node, layer, fused.get(node.name)) for node, layer in zip(nodes, layers)]
    first_readers = _first_graph_input_readers(graph, nodes, rows)
    by_kind: dict[str, list[int]] = {}
    for index, (row, layer) in enumerate(zip(rows, layers)):
        if row.source == "pending":
            in_epilogue = _in_host_epilogue(fused.get(nodes[index].name))
            by_kind.setdefault(_model_kind(pack, layer, index in first_readers, in_epilogue), []).append(index)
    for kind, indices in by_kind.items():
        _predict_kind(pack, kind, [layers[i] for i in indices], [rows[i] for i in indices])
    _fill_missing_power(pack, rows)
    return rows


def _first_graph_input_readers(graph: Graph, nodes: list[Node], rows: list[LayerPrediction]) -> set[int]:
    """Indices of the nodes that read a graph input first, directly or through free views (Reshape, Flatten,
    Identity: they move no data): that read comes from memory, later reads of the same tensor find it in cache.
    Runtime-added kernels (layout reorders, listed after the graph's nodes) run right before the node they feed,
    so one reading a graph input is its first reader."""
    root_of = {tensor.name: tensor.name for tensor in graph.inputs}
    readers: dict[str, int] = {}
    added = range(len(graph.nodes), len(nodes))
    for index in [*added, *range(len(graph.nodes))]:
        roots = {root_of[t.name] for t in nodes[index].inputs if t is not None and t.name in root_of}
        if rows[index].source == "free":
            root_of.update((t.name, root) for t in nodes[index].outputs for root in roots)
            continue
        for root in roots:
            readers.setdefault(root, index)
    return set(readers.values())


def _in_host_epilogue(fusion: Fusion | None) -> bool:
    """Does the node run inside another node's kernel as a pass over the output that kernel just wrote (an
    activation in a convolution's epilogue)?"""
    return fusion is not None and fusion.host is not None and fusion.costs


def _model_kind(pack: Pack, layer: LayerFeatures, reads_graph_input: bool, in_epilogue: bool) -> str:
    """The pack's model for a node: a variant of its kind where the pack fitted one and the layer lies inside what
    its samples covered: the graph-input variant where the node is the first to read a graph input (from memory, one
    inference after it was written; fitted on images' first convs only), the steady variant where it runs in a host
    kernel's epilogue (on data in cache); else the kind's own, or where the pack has none and the kind was split off a
    broader one (`BROADER_KIND`), the broader kind's."""
    variants = [graph_input_kind(layer.kind)] if reads_graph_input else []
    variants += [steady_kind(layer.kind)] if in_epilogue else []
    for variant in variants:
        if variant in pack.models and _inside_samples(pack, variant, layer.values()):
            return variant
    if layer.kind not in pack.models and BROADER_KIND.get(layer.kind) in pack.models:
        return BROADER_KIND[layer.kind]
    return layer.kind


def _inside_samples(pack: Pack, kind: str, values: dict[str, float]) -> bool:
    """Does every feature the kind's models read lie inside the range of the kind's samples?"""
    ranges = pack.provenance.get("sampled_ranges", {}).get(kind, {})
    return all(name in ranges and name in values and ranges[name][0] <= values[name] <= ranges[name][1]
               for name in _needed(pack.models[kind]))


def _kernel_features(node: Node, fusion: Fusion | None) -> LayerFeatures:
    """Features of the kernel the runtime runs for node: a fused host is costed as the synthesized kernel."""
    if fusion is not None and fusion.kernel is not None:
        return extract(fusion.kernel)
    return extract(node)


def _row(node: Node, layer: LayerFeatures, fusion: Fusion | None) -> LayerPrediction:
    shape = node.outputs[0].shape if node.outputs else None
    specials = layer.specials
    row = LayerPrediction(node.name, node.op_type, layer.kind, shape, specials.get("macs", 0.0),
                          specials.get("flops", 0.0), 0.0, None, "pending")
    if fusion is not None and fusion.host is not None and fusion.costs:
        row.note = f"runs inside {fusion.host}'s kernel"
    elif fusion is not None and fusion.kernel is not None:
        row.note = f"runs as {fusion.kernel.op_type}"
    elif fusion is not None and fusion.host is not None:
        row.source, row.note = "fused", f"fused into {fusion.host}"
    elif fusion is not None and fusion.free:
        row.source, row.note = "free", fusion.why
    elif layer.kind == FREE:
        row.source = "free"
    elif layer.kind == UNKNOWN:
        row.source, row.note = "unknown", f"no cost model for op type {node.domain + '.' if node.domain else ''}{node.op_type}"
    elif layer.kind == UNRESOLVED:
        row.source, row.note = "unresolved", "shapes unknown after inference"
    return row


def model_columns(pack: Pack, kind: str, values: list[dict[str, float]]) -> dict[str, np.ndarray]:
    """The feature columns the pack's `kind` models read for layers with these feature values (device features
    added); a clear error when the models use a feature this npower does not compute."""
    columns = {name: np.array([v[name] for v in values]) for name in values[0]}
    columns.update(derive_device_features(base_kind(kind), columns, pack.device))  # GPU tiles and waves
    missing = [name for name in _needed(pack.models[kind]) if name not in columns]
    if missing:
        raise NpowerError(f"pack '{pack.name}': the '{kind}' model uses feature(s) {', '.join(missing)} that "
                          "this npower does not compute (pack made by another version?)")
    return columns


def _predict_kind(pack: Pack, kind: str, layers: list[LayerFeatures], rows: list[LayerPrediction]) -> None:
    models = pack.models.get(kind)
    if models is not None:
        columns = model_columns(pack, kind, [layer.values() for layer in layers])
        shape = (len(rows),)  # an intercept-only model predicts one scalar for all
        runtimes = np.broadcast_to(models.runtime.predict(columns), shape)
        _check_range(runtimes, MAX_LAYER_MS, "ms", f"models.{kind}.runtime", rows)
        powers = np.broadcast_to(models.power.predict(columns), shape) if models.power is not None else None
        if powers is not None:
            _check_range(powers, MAX_LAYER_WATTS, "W", f"models.{kind}.power", rows)
        for index, row in enumerate(rows):
            row.ms = float(runtimes[index])
            row.source = "fitted"
            if powers is not None:
                row.watts = float(powers[index])
        return
    peak, bandwidth = pack.peak_gflops, pack.bandwidth_gbs
    for layer, row in zip(layers, rows):
        row.source = "fallback"
        if peak and bandwidth:
            row.ms = roofline_ms(layer.specials.get("flops", 0.0), layer_bytes(layer), peak, bandwidth)
            _check_range(np.array([row.ms]), MAX_LAYER_MS, "ms", "device.peak_gflops/bandwidth_gbs (roofline)", [row])
            row.note = f"no '{kind}' model in pack: roofline estimate"
        else:
            row.note = f"no '{kind}' model in pack and no peak figures: not costed"


def _check_range(values: np.ndarray, limit: float, unit: str, field: str, rows: list[LayerPrediction]) -> None:
    """A prediction that is not finite, negative or absurd is an error naming the pack field and the layer."""
    bad = np.flatnonzero(~(np.isfinite(values) & (values >= 0) & (values <= limit)))
    if bad.size:
        index = int(bad[0])
        raise NpowerError(f"pack field {field} predicts {float(values[index]):.3g} {unit} for layer "
                          f"'{rows[index].name}' (valid: 0 to {limit:g} {unit}): coefficients out of range for a "
                          f"layer of {rows[index].macs:.3g} MACs")


def _needed(models) -> list[str]:
    names = set(models.runtime.features)
    if models.power is not None:
        names |= set(models.power.features)
    return sorted(names)


def _fill_missing_power(pack: Pack, rows: list[LayerPrediction]) -> None:
    """Where the pack has power models, layers without one get the time-weighted mean (flagged)."""
    if not pack.has_power:
        return
    powered = [r for r in rows if r.watts is not None and r.ms > 0]
    total_ms = sum(r.ms for r in powered)
    if total_ms <= 0:
        return
    mean_watts = sum(r.watts * r.ms for r in powered) / total_ms
    for row in rows:
        if row.watts is None and row.ms > 0:
            row.watts = mean_watts
            row.note = (row.note + "; " if row.note else "") + "power estimated (network mean)"
