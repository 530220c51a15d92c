"""The Python API: npower.analyze(model, gpu=...) -> Report."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from .frontend import to_onnx
from .graph import Graph, load_graph
from .pack import Pack, find_pack
from .predict import predict
from .report import Report


def resolve_pack(gpu: str | Pack, profiles: Iterable[str | os.PathLike] = ()) -> Pack:
    """A Pack object as given, or the pack that --gpu names (file path, name or unique prefix)."""
    return gpu if isinstance(gpu, Pack) else find_pack(gpu, profiles)


def analyze(model: Any, gpu: str | Pack, batch: int | None = None,
            input_shapes: Mapping[str, tuple[int, ...]] | None = None,
            profiles: Iterable[str | os.PathLike] = (), fusion: bool = True, frontend: str | None = None) -> Report:
    """Predict per-layer and total runtime, power and energy of a model on a pack's device.

    `model` is an ONNX file, bytes or ModelProto, or anything a frontend reads (a .prototxt,
    a TorchScript file, a Keras model, an nn.Module...), converted in memory.
    """
    pack = resolve_pack(gpu, profiles)
    onnx_model = to_onnx(model, batch=batch, input_shapes=input_shapes, frontend=frontend)
    graph = load_graph(onnx_model, batch=batch, input_shapes=input_shapes if onnx_model is model else None)
    name = Path(model).name if isinstance(model, (str, os.PathLike)) else (graph.name or "model")
    return report_for(graph, pack, name, fusion, batch)


def report_for(graph: Graph, pack: Pack, name: str, fusion: bool = True, batch: int | None = None) -> Report:
    """The Report of a loaded (batch-bound, shape-inferred) graph on a pack."""
    layers = predict(graph, pack, fusion=fusion)
    warnings = []
    if graph.unknown_tensors:
        shown = ", ".join(graph.unknown_tensors[:5])
        more = f" and {len(graph.unknown_tensors) - 5} more" if len(graph.unknown_tensors) > 5 else ""
        warnings.append(f"shape inference left {len(graph.unknown_tensors)} tensor(s) unknown: {shown}{more}")
    batch_used = graph.inputs[0].shape[0] if graph.inputs and graph.inputs[0].shape else batch
    return Report(name, pack.name, pack.device.get("name", "?"), pack.runtime.label, layers, batch_used, warnings)
