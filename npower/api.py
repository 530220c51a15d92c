"""The Python API: npower.analyze(model, gpu=...) -> Report; npower.compare(models, gpu=...) -> Comparison."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from .coverage import missing_data_cause, partial_reason
from .errors import NpowerError
from .frontend import to_onnx
from .graph import Graph, load_graph
from .pack import Pack, find_pack
from .predict import predict
from .report import Report

if TYPE_CHECKING:
    from .comparison import Comparison


def resolve_pack(gpu: str | Pack, profiles: Iterable[str | os.PathLike] = ()) -> Pack:
    """A Pack object as given, or the pack that --gpu names (file path, name or unique prefix)."""
    return gpu if isinstance(gpu, Pack) else find_pack(gpu, profiles)


def analyze(model: Any, gpu: str | Pack, batch: int | None = None,
            input_shapes: Mapping[str, tuple[int, ...]] | None = None,
            profiles: Iterable[str | os.PathLike] = (), fusion: bool = True, frontend: str | None = None,
            allow_partial: bool = False) -> Report:
    """Predict per-layer and total runtime, power and energy of a model on a pack's device.

    `model` is an ONNX file, bytes or ModelProto, or anything a frontend reads (a .prototxt,
    a TorchScript file, a Keras model, an nn.Module...), converted in memory. When most of the
    runtime cannot be costed, NpowerError names the cause; `allow_partial` reports it as partial.
    """
    pack = resolve_pack(gpu, profiles)
    onnx_model = to_onnx(model, batch=batch, input_shapes=input_shapes, frontend=frontend)
    graph = load_graph(onnx_model, batch=batch, input_shapes=input_shapes if onnx_model is model else None)
    name = Path(model).name if isinstance(model, (str, os.PathLike)) else (graph.name or "model")
    report = report_for(graph, pack, name, fusion, batch)
    reason = partial_reason(graph, report.layers, pack)
    if reason is not None:
        reason += missing_data_cause(model) if onnx_model is model else ""
        if not allow_partial:
            raise NpowerError(f"{name}: {reason} (--allow-partial reports the costed part)")
        report.partial = True
        report.warnings.append(f"PARTIAL: {reason}; the totals leave them out")
    return report


def report_for(graph: Graph, pack: Pack, name: str, fusion: bool = True, batch: int | None = None) -> Report:
    """The Report of a loaded (batch-bound, shape-inferred) graph on a pack."""
    layers = predict(graph, pack, fusion=fusion)
    warnings = []
    if graph.unknown_tensors:
        shown = ", ".join(graph.unknown_tensors[:5])
        more = f" and {len(graph.unknown_tensors) - 5} more" if len(graph.unknown_tensors) > 5 else ""
        warnings.append(f"shape inference left {len(graph.unknown_tensors)} tensor(s) unknown: {shown}{more}")
    batch_used = graph.inputs[0].shape[0] if graph.inputs and graph.inputs[0].shape else batch
    report = Report(name, pack.name, pack.device_label, pack.runtime.label, layers, batch_used, warnings)
    if pack.estimated:
        from .estimate import estimate_note
        report.estimated = estimate_note(pack)
    return report


def compare(models: Sequence[Any], gpu: str | Pack | Sequence[str | Pack], batch: int | Sequence[int] = 1,
            accuracy: Mapping[str, float] | None = None, alpha: float | None = None,
            input_shapes: Mapping[str, tuple[int, ...]] | None = None, profiles: Iterable[str | os.PathLike] = (),
            fusion: bool = True, frontend: str | None = None, sort: str = "energy") -> Comparison:
    """Predict every model x pack x batch size (models from any frontend, each converted once).

    `accuracy` maps a model's file name or stem to its top-1 accuracy in percent; it adds the error
    rate and the energy-precision ratio EPR = error^alpha * energy per inference (alpha default 1).
    """
    from .comparison import EPR_ALPHA, run_comparison
    gpus = [gpu] if isinstance(gpu, (str, Pack)) else list(gpu)
    packs = list({pack.name: pack for pack in (resolve_pack(g, profiles) for g in gpus)}.values())
    batches = [batch] if isinstance(batch, int) else list(batch)
    return run_comparison(list(models), packs, batches, dict(accuracy or {}), EPR_ALPHA if alpha is None else alpha,
                          dict(input_shapes or {}), fusion, frontend, sort)
