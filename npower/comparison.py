"""Compare models (from any frontend) x packs x batch sizes: latency, throughput, power, energy, EPR.

Each model is converted and stripped once; each batch size is then bound on the converted ONNX
graph and shape-inferred again (cheap), and the graph is predicted on every pack. A converted
graph that fixes its batch size (e.g. a Reshape to 1x800 written by an exporter) is detected by
its outputs not following the bound batch: such a model is converted again for that batch.

Energy-precision ratio (NeuralPower, Cai et al. ACML 2017): EPR = error^alpha * energy per
inference, lower is better; error is the error rate (1 - top-1 accuracy) as a fraction.
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import onnx

from .api import report_for
from .errors import NpowerError
from .graph import Graph, load_graph
from .modelio import load_model
from .pack import Pack
from .report import Report

COMPARE_SCHEMA_VERSION = 1
EPR_ALPHA = 1.0
EPR_FORMULA = "EPR = error_rate^alpha * energy per inference (mJ); NeuralPower, Cai et al., ACML 2017"
SORT_COLUMNS = {"energy": "energy_mj_per_inference", "latency": "latency_ms", "epr": "epr_mj"}
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}


@dataclass
class Row:
    """One model on one pack at one batch size."""

    model: str
    pack: str
    device: str
    runtime: str
    batch: int
    latency_ms: float
    throughput_inf_per_s: float | None
    power_w: float | None
    energy_mj_per_inference: float | None
    macs_per_inference: float
    params: int
    fitted_share: float
    error_rate: float | None = None
    epr_mj: float | None = None
    by_kind: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


CSV_COLUMNS = [name for name in Row.__dataclass_fields__ if name not in ("by_kind", "warnings")]


@dataclass
class Comparison:
    """All rows, ordered by pack, batch and the sort key; rank 1 is the best within a pack and batch."""

    rows: list[Row]
    sort: str = "energy"
    alpha: float = EPR_ALPHA

    def ranked(self) -> list[tuple[int, Row]]:
        """(rank within its pack and batch, row), in display order."""
        out, group, rank = [], None, 0
        for row in self.rows:
            rank = rank + 1 if (row.pack, row.batch) == group else 1
            group = (row.pack, row.batch)
            out.append((rank, row))
        return out

    @property
    def has_accuracy(self) -> bool:
        return any(row.error_rate is not None for row in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": COMPARE_SCHEMA_VERSION, "sort": self.sort, "epr_alpha": self.alpha,
                "epr_formula": EPR_FORMULA,
                "rows": [{"rank": rank, **asdict(row)} for rank, row in self.ranked()]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["rank", *CSV_COLUMNS])
        for rank, row in self.ranked():
            values = asdict(row)
            writer.writerow([rank, *("" if values[c] is None else values[c] for c in CSV_COLUMNS)])
        return buffer.getvalue()

    def table_rows(self) -> tuple[list[str], list[list[str]]]:
        """Header and cells of the terminal/HTML table (missing values as n/a)."""
        header = ["#", "model", "pack", "batch", "latency ms", "inf/s", "power W", "mJ/inf", "GMACs/inf",
                  "params M", "fitted"]
        if self.has_accuracy:
            header += ["error %", f"EPR mJ (a={self.alpha:g})"]
        cells = []
        for rank, row in self.ranked():
            line = [str(rank), row.model, row.pack, str(row.batch), f"{row.latency_ms:.3f}",
                    _num(row.throughput_inf_per_s, ".1f"), _num(row.power_w, ".1f"),
                    _num(row.energy_mj_per_inference, ".3f"), f"{row.macs_per_inference / 1e9:.3f}",
                    f"{row.params / 1e6:.2f}", f"{row.fitted_share:.1%}"]
            if self.has_accuracy:
                line += [_num(None if row.error_rate is None else row.error_rate * 100, ".1f"), _num(row.epr_mj, ".4f")]
            cells.append(line)
        return header, cells

    @property
    def order_note(self) -> str:
        """How the rows are ranked, saying so when the sort column is n/a everywhere (latency decides)."""
        missing = all(getattr(row, SORT_COLUMNS[self.sort]) is None for row in self.rows)
        order = f"latency ({self.sort} is n/a for every row)" if missing else self.sort
        return f"ranked by {order} within each pack and batch"

    def to_table(self) -> str:
        from .report import _table
        header, cells = self.table_rows()
        notes = [self.order_note + ("; n/a: the pack has no power model" if any(r.power_w is None for r in self.rows)
                                    else "")]
        if self.has_accuracy:
            notes.append(f"{EPR_FORMULA}; alpha = {self.alpha:g}")
        warnings = [f"warning: {row.model} batch {row.batch}: {w}" for row in self.rows for w in row.warnings]
        return "\n".join(_table(header, cells) + [""] + notes + sorted(set(warnings))) + "\n"

    def render(self, fmt: str) -> str:
        renderers: dict[str, Callable[[], str]] = {"table": self.to_table, "json": self.to_json, "csv": self.to_csv,
                                                   "html": self.to_html}
        return renderers[fmt]()

    def to_html(self) -> str:
        from .html_report import render_comparison
        return render_comparison(self)


def _num(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


@dataclass
class _Model:
    """A model converted once: its label, stripped ONNX graph and how to convert it again."""

    label: str
    proto: onnx.ModelProto
    convert: Callable[[int], onnx.ModelProto] | None  # None for ONNX sources
    params: int


def load_models(sources: Sequence[Any], batch: int, input_shapes: Mapping[str, tuple[int, ...]],
                frontend: str | None) -> list[_Model]:
    """Convert each source once (at `batch`) and strip its weights."""
    from .frontend import is_onnx, to_onnx
    models, labels = [], set()
    for source in sources:
        def convert(b: int, source: Any = source) -> onnx.ModelProto:
            return load_model(to_onnx(source, batch=b, input_shapes=_with_batch(input_shapes, b), frontend=frontend))
        native = frontend is None and is_onnx(source)
        proto = load_model(source) if native else convert(batch)
        label = _unique(_label(source, proto), labels)
        models.append(_Model(label, proto, None if native else convert, count_params(proto)))
    return models


def _label(source: Any, proto: onnx.ModelProto) -> str:
    if isinstance(source, (str, os.PathLike)):
        return Path(source).name
    return proto.graph.name or type(source).__name__


def _unique(label: str, taken: set[str]) -> str:
    candidate, index = label, 1
    while candidate in taken:
        index += 1
        candidate = f"{label}#{index}"
    taken.add(candidate)
    return candidate


def _with_batch(shapes: Mapping[str, tuple[int, ...]], batch: int) -> dict[str, tuple[int, ...]]:
    return {name: (batch, *shape[1:]) for name, shape in shapes.items()}


def count_params(model: onnx.ModelProto) -> int:
    """Floating-point weight elements: initializers and Constant nodes (shape tensors are integers)."""
    total = 0
    tensors = list(model.graph.initializer) + [attr.t for node in model.graph.node if node.op_type == "Constant"
                                               for attr in node.attribute if attr.name == "value"]
    for tensor in tensors:
        if tensor.data_type in _FLOAT_TYPES:
            count = 1
            for dim in tensor.dims:
                count *= dim
            total += count
    return total


def _output_batches(graph: Graph) -> dict[str, int | None]:
    """First dimension of each graph output (tensors that no node reads)."""
    read = graph.consumers()
    return {t.name: (t.shape[0] if t.shape else None) for node in graph.nodes for t in node.outputs
            if t.name not in read}


def _follows_batch(reference: dict[str, int | None], first: int, graph: Graph, batch: int) -> bool:
    """Outputs that had the first batch as leading dimension have `batch` now."""
    now = _output_batches(graph)
    return all(now.get(name) == batch for name, dim in reference.items() if dim == first)


def _model_input_shapes(model: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]],
                        batch: int) -> dict[str, tuple[int, ...]]:
    names = {vi.name for vi in model.graph.input}
    return {name: shape for name, shape in _with_batch(shapes, batch).items() if name in names}


def graphs_by_batch(model: _Model, batches: Sequence[int],
                    shapes: Mapping[str, tuple[int, ...]]) -> Iterable[tuple[int, Graph, list[str]]]:
    """(batch, bound graph, warnings) per batch size, from the once-converted model."""
    reference: dict[str, int | None] = {}
    for index, batch in enumerate(batches):
        graph = load_graph(model.proto, batch=batch, input_shapes=_model_input_shapes(model.proto, shapes, batch))
        warnings = []
        if index == 0:
            reference = _output_batches(graph)
        elif not _follows_batch(reference, batches[0], graph, batch):
            if model.convert is None:
                warnings.append(f"outputs do not follow batch {batch}: the ONNX graph fixes its batch size "
                                f"(e.g. in a Reshape), so this row is not a batch-{batch} prediction")
            else:
                proto = model.convert(batch)
                graph = load_graph(proto, batch=batch, input_shapes=_model_input_shapes(proto, shapes, batch))
        yield batch, graph, warnings


def make_row(report: Report, params: int, batch: int, error_rate: float | None, alpha: float,
             warnings: list[str]) -> Row:
    """A comparison row from an analyze Report of one batch."""
    ms = report.runtime_ms
    energy = None if report.energy_mj is None else report.energy_mj / batch
    epr = None if error_rate is None or energy is None else error_rate ** alpha * energy
    return Row(report.model, report.pack, report.device, report.runtime, batch, ms,
               batch / ms * 1e3 if ms > 0 else None, report.power_w, energy,
               sum(layer.macs for layer in report.layers) / batch, params, report.fitted_share,
               error_rate, epr, report.by_kind(), report.warnings + warnings)


def error_rates(accuracies: Mapping[str, float], labels: Sequence[str]) -> dict[str, float]:
    """Error rate (fraction) per model label, from top-1 accuracies in percent keyed by file name or stem."""
    rates = {}
    for name, accuracy in accuracies.items():
        matches = [label for label in labels if name in (label, Path(label).stem)]
        if not matches:
            raise NpowerError(f"--accuracy {name}: no model is named '{name}' (models: {', '.join(labels)})")
        if not 0 < accuracy <= 100:
            raise NpowerError(f"--accuracy {name}={accuracy:g}: give top-1 accuracy in percent, in (0, 100]")
        for label in matches:
            rates[label] = (100.0 - accuracy) / 100.0
    return rates


def sort_rows(rows: list[Row], sort: str, packs: Sequence[str], batches: Sequence[int]) -> list[Row]:
    """Group by pack and batch (in the order given), best first by `sort`; missing values last."""
    if sort not in SORT_COLUMNS:
        raise NpowerError(f"--sort must be one of {', '.join(SORT_COLUMNS)}, got '{sort}'")
    column = SORT_COLUMNS[sort]

    def key(row: Row) -> tuple:
        value = getattr(row, column)
        return packs.index(row.pack), batches.index(row.batch), value is None, value or 0.0, row.latency_ms, row.model
    return sorted(rows, key=key)


def run_comparison(sources: Sequence[Any], packs: Sequence[Pack], batches: Sequence[int],
                   accuracies: Mapping[str, float], alpha: float, input_shapes: Mapping[str, tuple[int, ...]],
                   fusion: bool, frontend: str | None, sort: str) -> Comparison:
    """Every model x pack x batch, each model converted once."""
    if not sources:
        raise NpowerError("compare needs at least one model")
    if not batches or any(b <= 0 for b in batches):
        raise NpowerError("--batch sizes must be positive integers")
    batches = list(dict.fromkeys(batches))
    models = load_models(sources, batches[0], input_shapes, frontend)
    inputs = {vi.name for model in models for vi in model.proto.graph.input}
    unmatched = sorted(set(input_shapes) - inputs)
    if unmatched:
        raise NpowerError(f"--input-shape names '{unmatched[0]}', which no model has as an input")
    rates = error_rates(accuracies, [model.label for model in models])
    rows = []
    for model in models:
        for batch, graph, warnings in graphs_by_batch(model, batches, input_shapes):
            for pack in packs:
                report = report_for(graph, pack, model.label, fusion, batch)
                rows.append(make_row(report, model.params, batch, rates.get(model.label), alpha, warnings))
    return Comparison(sort_rows(rows, sort, [pack.name for pack in packs], batches), sort, alpha)
