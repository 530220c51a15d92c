"""Network report: totals (T = sum T_i, E = sum P_i*T_i, P = E/T), breakdown, bottlenecks, output formats."""
from __future__ import annotations

import csv
import html
import io
import json
from dataclasses import dataclass, field
from typing import Any

from .predict import LayerPrediction

REPORT_SCHEMA_VERSION = 1
COSTED = ("fitted", "fallback")


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
            "batch": self.batch,
            "totals": {"runtime_ms": self.runtime_ms, "energy_mj": self.energy_mj, "power_w": self.power_w,
                       "fitted_share": self.fitted_share, "layers": len(self.layers),
                       "costed_layers": sum(1 for layer in self.layers if layer.source in COSTED)},
            "by_kind": self.by_kind(),
            "bottlenecks": [layer.name for layer in self.bottlenecks(top)],
            "unknown_ops": sorted({layer.op_type for layer in self.flagged("unknown")}),
            "warnings": self.warnings,
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
        return buffer.getvalue()

    def summary_lines(self) -> list[str]:
        power = "n/a (pack has no power model)" if self.power_w is None else f"{self.power_w:.1f} W"
        energy = "n/a" if self.energy_mj is None else f"{self.energy_mj:.2f} mJ"
        lines = [f"total: {self.runtime_ms:.3f} ms   avg power: {power}   energy: {energy}",
                 f"{self.fitted_share:.1%} of predicted runtime from fitted models"]
        for source, label in (("fallback", "roofline fallback"), ("unknown", "not costed (unknown op)"),
                              ("unresolved", "not costed (unknown shapes)")):
            flagged = self.flagged(source)
            if flagged:
                ops = ", ".join(sorted({layer.op_type for layer in flagged}))
                lines.append(f"{len(flagged)} layer(s) {label}: {ops}")
        return lines + [f"warning: {w}" for w in self.warnings]

    def to_table(self, top: int = 5, all_layers: bool = True) -> str:
        lines = [f"npower: {self.model} on {self.pack} ({self.device}, {self.runtime})"
                 + (f", batch {self.batch}" if self.batch else ""), ""]
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
        rows = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in _table_row(layer, self.runtime_ms))
                       + "</tr>" for layer in self.layers if layer.source != "free")
        head = "".join(f"<th>{h}</th>" for h in ["layer", "op", "output", "MACs", "ms", "W", "mJ", "share", "source"])
        summary = "".join(f"<p>{html.escape(line)}</p>" for line in self.summary_lines())
        title = html.escape(f"npower: {self.model} on {self.pack}")
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head><body>"
                f"<h1>{title}</h1>{summary}<table border='1'><tr>{head}</tr>{rows}</table></body></html>\n")

    def render(self, fmt: str, top: int = 5) -> str:
        return {"table": lambda: self.to_table(top), "json": lambda: self.to_json(top) + "\n",
                "csv": self.to_csv, "html": lambda: self.to_html(top)}[fmt]()


_COLUMNS = ["name", "op_type", "kind", "output_shape", "macs", "flops", "ms", "watts", "mj", "source", "note"]


def _layer_dict(layer: LayerPrediction) -> dict[str, Any]:
    return {"name": layer.name, "op_type": layer.op_type, "kind": layer.kind,
            "output_shape": list(layer.output_shape) if layer.output_shape else None,
            "macs": layer.macs, "flops": layer.flops, "ms": layer.ms, "watts": layer.watts, "mj": layer.mj,
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
            f"{layer.ms / total_ms:.1%}" if total_ms > 0 else "-", layer.source]


def _si(value: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if value >= scale:
            return f"{value / scale:.2f}{suffix}"
    return f"{value:.0f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    fmt = "  ".join("{:<%d}" % w if i < 3 else "{:>%d}" % w for i, w in enumerate(widths))
    return [fmt.format(*header), fmt.format(*["-" * w for w in widths])] + [fmt.format(*row) for row in rows]
