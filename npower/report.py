"""Network report: totals (T = sum T_i, E = sum P_i*T_i, P = E/T), breakdown, bottlenecks, output formats."""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

from .predict import LayerPrediction

REPORT_SCHEMA_VERSION = 1
COSTED = ("fitted", "fallback")
RUNS_NOTE = "runs "  # predict's note on a merged node that keeps its cost: "runs inside X's kernel", "runs as Y"


@dataclass
class Report:
    """Predicted cost of one network on one pack."""

    model: str
    pack: str
    device: str
    runtime: str
    layers: list[LayerPrediction]
    batch: int | None = None
    warnings: list[str] = field(default_factory=list)
    partial: bool = False  # most of the runtime could not be costed (analyze(allow_partial=True))
    estimated: str = ""    # non-empty for an estimated pack: what it came from and how good such estimates were

    @property
    def runtime_ms(self) -> float:
        return sum(layer.ms for layer in self.layers)

    @property
    def energy_mj(self) -> float | None:
        if not any(layer.watts is not None for layer in self.layers):
            return None
        return sum(layer.mj or 0.0 for layer in self.layers)

    @property
    def power_w(self) -> float | None:
        energy, total = self.energy_mj, self.runtime_ms
        return None if energy is None or total <= 0 else energy / total

    @property
    def fitted_share(self) -> float:
        """Share of the predicted runtime that came from fitted models."""
        total = self.runtime_ms
        fitted = sum(layer.ms for layer in self.layers if layer.source == "fitted")
        return fitted / total if total > 0 else 0.0

    @property
    def ms_per_inference(self) -> float | None:
        """Runtime of one input of the batch (None when the batch size is unknown)."""
        return self.runtime_ms / self.batch if self.batch else None

    @property
    def inferences_per_s(self) -> float | None:
        return 1e3 * self.batch / self.runtime_ms if self.batch and self.runtime_ms > 0 else None

    @property
    def energy_mj_per_inference(self) -> float | None:
        return self.energy_mj / self.batch if self.batch and self.energy_mj is not None else None

    def flagged(self, source: str) -> list[LayerPrediction]:
        return [layer for layer in self.layers if layer.source == source]

    def by_kind(self) -> list[dict[str, Any]]:
        """Per op kind: layer count, ms, share, energy; most expensive first."""
        total = self.runtime_ms or 1.0
        groups: dict[str, dict[str, Any]] = {}
        for layer in self.layers:
            if layer.source not in COSTED:
                continue
            group = groups.setdefault(layer.kind, {"kind": layer.kind, "layers": 0, "ms": 0.0, "mj": None})
            group["layers"] += 1
            group["ms"] += layer.ms
            if layer.mj is not None:
                group["mj"] = (group["mj"] or 0.0) + layer.mj
        for group in groups.values():
            group["share"] = group["ms"] / total
        return sorted(groups.values(), key=lambda g: -g["ms"])

    def bottlenecks(self, top: int = 5) -> list[LayerPrediction]:
        return sorted((layer for layer in self.layers if layer.ms > 0), key=lambda layer: -layer.ms)[:top]

    def to_dict(self, top: int = 5) -> dict[str, Any]:
        return {
            "schema_version": REPORT_SCHEMA_VERSION,
            "model": self.model, "pack": self.pack, "device": self.device, "runtime": self.runtime,
            "batch": self.batch, "estimated": bool(self.estimated), "estimate_note": self.estimated or None,
            "totals": {"runtime_ms": self.runtime_ms, "energy_mj": self.energy_mj, "power_w": self.power_w,
                       "ms_per_inference": self.ms_per_inference, "inferences_per_s": self.inferences_per_s,
                       "energy_mj_per_inference": self.energy_mj_per_inference, "fitted_share": self.fitted_share, "layers": len(self.layers),
                       "costed_layers": sum(1 for layer in self.layers if layer.source in COSTED)},
            "by_kind": self.by_kind(),
            "bottlenecks": [layer.name for layer in self.bottlenecks(top)],
            "unknown_ops": sorted({layer.op_type for layer in self.flagged("unknown")}),
            "warnings": self.warnings, "partial": self.partial,
            "layers": [_layer_dict(layer) for layer in self.layers],
        }

    def to_json(self, top: int = 5) -> str:
        return json.dumps(self.to_dict(top), indent=2)

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(_COLUMNS)
        for layer in self.layers:
            row = _layer_dict(layer)
            writer.writerow([_csv_cell(row[c]) for c in _COLUMNS])
        for row in self._csv_totals():
            writer.writerow([_csv_cell(row.get(c)) for c in _COLUMNS])
        return buffer.getvalue()

    def _csv_totals(self) -> list[dict[str, Any]]:
        """Closing rows (source "total" and, for a batch > 1, "per inference"): filter on source to drop them."""
        macs, flops = sum(layer.macs for layer in self.layers), sum(layer.flops for layer in self.layers)
        rows = [{"name": "total", "macs": round(macs), "flops": round(flops), "ms": self.runtime_ms,
                 "watts": self.power_w, "mj": self.energy_mj, "source": "total",
                 "note": f"{self.fitted_share:.1%} of runtime from fitted models"}]
        if self.batch and self.batch > 1:
            rows.append({"name": "per inference", "macs": round(macs / self.batch), "flops": round(flops / self.batch),
                         "ms": self.ms_per_inference, "watts": self.power_w, "mj": self.energy_mj_per_inference,
                         "source": "per inference",
                         "note": f"batch {self.batch}: {self.inferences_per_s:.2f} inferences/s"})
        return rows

    def summary_lines(self) -> list[str]:
        power = "n/a (pack has no power model)" if self.power_w is None else f"{self.power_w:.1f} W"
        energy = "n/a" if self.energy_mj is None else f"{self.energy_mj:.2f} mJ"
        lines = [f"total: {self.runtime_ms:.3f} ms   avg power: {power}   energy: {energy}",
                 f"{self.fitted_share:.1%} of predicted runtime from fitted models"]
        if self.batch and self.batch > 1 and self.runtime_ms > 0:
            energy = "" if self.energy_mj_per_inference is None else f", {self.energy_mj_per_inference:.3f} mJ"
            lines.insert(1, f"per inference (batch {self.batch}): {self.ms_per_inference:.3f} ms{energy}, "
                            f"{self.inferences_per_s:.2f} inferences/s")
        for source, label in (("fallback", "roofline fallback"), ("unknown", "not costed (unknown op)"),
                              ("unresolved", "not costed (unknown shapes)")):
            flagged = self.flagged(source)
            if flagged:
                ops = ", ".join(sorted({layer.op_type for layer in flagged}))
                lines.append(f"{len(flagged)} layer(s) {label}: {ops}")
        return lines + [f"warning: {w}" for w in self.warnings]

    def to_table(self, top: int = 5, all_layers: bool = True) -> str:
        lines = [f"npower: {self.model} on {self.pack} ({self.device}, {self.runtime})"
                 + (f", batch {self.batch}" if self.batch else "")]
        lines += [self.estimated, ""] if self.estimated else [""]
        if all_layers:
            lines += _table(["layer", "op", "output", "MACs", "ms", "W", "mJ", "share", "source"],
                            [_table_row(layer, self.runtime_ms) for layer in self.layers if layer.source != "free"])
            lines.append("")
        lines.append("by op kind:")
        lines += _table(["kind", "layers", "ms", "share", "mJ"],
                        [[g["kind"], str(g["layers"]), f"{g['ms']:.3f}", f"{g['share']:.1%}",
                          "-" if g["mj"] is None else f"{g['mj']:.2f}"] for g in self.by_kind()])
        lines += ["", f"top {top} bottlenecks:"]
        lines += _table(["layer", "op", "ms", "share"],
                        [[b.name, b.op_type, f"{b.ms:.3f}", f"{b.ms / (self.runtime_ms or 1):.1%}"]
                         for b in self.bottlenecks(top)])
        return "\n".join(lines + [""] + self.summary_lines()) + "\n"

    def to_html(self, top: int = 5) -> str:
        from .html_report import render_report
        return render_report(self, top)

    def render(self, fmt: str, top: int = 5) -> str:
        return {"table": lambda: self.to_table(top), "json": lambda: self.to_json(top) + "\n",
                "csv": self.to_csv, "html": lambda: self.to_html(top)}[fmt]()


_COLUMNS = ["name", "op_type", "kind", "output_shape", "macs", "flops", "ms", "watts", "mj", "source", "note"]


def _layer_dict(layer: LayerPrediction) -> dict[str, Any]:
    return {"name": layer.name, "op_type": layer.op_type, "kind": layer.kind,
            "output_shape": list(layer.output_shape) if layer.output_shape else None,
            "macs": round(layer.macs), "flops": round(layer.flops), "ms": layer.ms, "watts": layer.watts, "mj": layer.mj,
            "source": layer.source, "note": layer.note}


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return "x".join(str(v) for v in value)
    return str(value)


def _table_row(layer: LayerPrediction, total_ms: float) -> list[str]:
    shape = "x".join(str(d) for d in layer.output_shape) if layer.output_shape else "?"
    return [layer.name, layer.op_type, shape, _si(layer.macs), f"{layer.ms:.3f}",
            "-" if layer.watts is None else f"{layer.watts:.1f}", "-" if layer.mj is None else f"{layer.mj:.3f}",
            f"{layer.ms / total_ms:.1%}" if total_ms > 0 else "-", _source_cell(layer)]


def _source_cell(layer: LayerPrediction) -> str:
    """The source, plus where a merged layer runs ("fitted (runs inside conv_3's kernel)"): it still costs time."""
    return f"{layer.source} ({layer.note})" if layer.note.startswith(RUNS_NOTE) else layer.source


def _si(value: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if value >= scale:
            return f"{value / scale:.2f}{suffix}"
    return f"{value:.0f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    fmt = "  ".join("{:<%d}" % w if i < 3 else "{:>%d}" % w for i, w in enumerate(widths))
    return [fmt.format(*header), fmt.format(*["-" * w for w in widths])] + [fmt.format(*row) for row in rows]
