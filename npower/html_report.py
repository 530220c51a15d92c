"""Self-contained HTML reports (analyze and compare): tables always, interactive plots with plotly.

plotly.js is embedded in the page (no network needed to view it). Without the optional `plotly`
package (pip install 'npower[html]') the page keeps its tables and says how to get the plots.
"""
from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from .comparison import Comparison, Row
    from .report import Report

PLOTS_HINT = "plots need the plotly package: pip install 'npower[html]'"
PALETTE = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#EECA3B", "#B279A2", "#FF9DA6",
           "#9D755D", "#BAB0AC", "#1F77B4", "#8C564B", "#17BECF", "#BCBD22", "#7F7F7F", "#D62728"]
_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px 32px;color:#222;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
p.meta{color:#555;margin:2px 0} p.note{background:#fff4d6;border:1px solid #e8c96a;padding:8px 12px;border-radius:4px}
table{border-collapse:collapse;font-size:13px;margin:6px 0} th,td{padding:3px 10px;border-bottom:1px solid #eee;text-align:right}
th{background:#f4f6f8;position:sticky;top:0} td:nth-child(-n+3),th:nth-child(-n+3){text-align:left}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:12px}
.plot{min-height:380px;border:1px solid #eee;border-radius:4px} .plot.wide{grid-column:1/-1}
"""


def plots_missing() -> str | None:
    """None when plots can be drawn, else the line saying how to get them."""
    return None if _plotly_js() is not None else PLOTS_HINT


def _plotly_js() -> str | None:
    try:
        from plotly.offline import get_plotlyjs
    except ImportError:
        return None
    return get_plotlyjs()


def kind_colors(kinds: Sequence[str]) -> dict[str, str]:
    """One colour per op kind, stable for a set of kinds (alphabetical order)."""
    return {kind: PALETTE[index % len(PALETTE)] for index, kind in enumerate(sorted(set(kinds)))}


def _esc(text: Any) -> str:
    return html.escape(str(text))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_esc(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(div_id: str, data: list[dict[str, Any]], layout: dict[str, Any], wide: bool = False) -> tuple[str, str]:
    """(div, script drawing it); the scripts run after every div exists, so widths are final."""
    layout = {"margin": {"l": 60, "r": 20, "t": 64, "b": 60}, "font": {"size": 12}, "height": 400, **layout}
    for axis in ("xaxis", "yaxis"):
        layout[axis] = {"automargin": True, **layout.get(axis, {})}
    # the title sits just above the plot area, below the mode bar (zoom, PNG download)
    layout["title"] = {"x": 0.02, "xref": "container", "y": 1, "yref": "paper", "yanchor": "bottom", "pad": {"b": 8},
                       **layout.get("title", {})}
    config = {"responsive": True, "displaylogo": False, "displayModeBar": "hover"}
    payload = json.dumps([data, layout, config]).replace("</", "<\\/")
    return f"<div class='plot{' wide' if wide else ''}' id='{div_id}'></div>", f"Plotly.newPlot('{div_id}', ...{payload});"


def _page(title: str, meta: Sequence[str], figures: Sequence[tuple[str, str]],
          sections: Sequence[tuple[str, str]]) -> str:
    script = _plotly_js()
    plots = (f"<script>{script}</script><div class='plots'>{''.join(div for div, _ in figures)}</div>"
             f"<script>{''.join(draw for _, draw in figures)}</script>" if script is not None
             else f"<p class='note'>{_esc(PLOTS_HINT)}</p>")
    meta_html = "".join(f"<p class='meta'>{_esc(line)}</p>" for line in meta)
    body = "".join(f"<h2>{_esc(heading)}</h2>{content}" for heading, content in sections)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{_esc(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{_esc(title)}</h1>{meta_html}{plots}{body}</body></html>\n")


# --- analyze --------------------------------------------------------------------------------------

def render_report(report: Report, top: int = 5) -> str:
    """One network on one pack: per-layer bars coloured by kind, per-kind breakdown, tables."""
    from .report import COSTED, _table_row
    costed = [layer for layer in report.layers if layer.source in COSTED]
    colors = kind_colors([layer.kind for layer in costed])
    per_layer = [{"type": "bar", "name": kind, "marker": {"color": color},
                  "x": [layer.name for layer in costed if layer.kind == kind],
                  "y": [layer.ms for layer in costed if layer.kind == kind],
                  "customdata": [layer.op_type for layer in costed if layer.kind == kind],
                  "hovertemplate": "%{x} (%{customdata})<br>%{y:.4f} ms<extra>" + kind + "</extra>"}
                 for kind, color in colors.items()]
    order = [layer.name for layer in costed]
    kinds = report.by_kind()
    figures = [
        _figure("plot-layers", per_layer, {"title": {"text": "Predicted time per layer (ms), by op kind"},
                                           "barmode": "relative", "xaxis": {"categoryorder": "array",
                                           "categoryarray": order, "showticklabels": len(order) <= 60},
                                           "yaxis": {"title": {"text": "ms"}}}, wide=True),
        _figure("plot-kinds", [{"type": "bar", "orientation": "h", "y": [g["kind"] for g in kinds][::-1],
                                "x": [g["ms"] for g in kinds][::-1],
                                "marker": {"color": [colors[g["kind"]] for g in kinds][::-1]},
                                "text": [f"{g['share']:.1%}" for g in kinds][::-1], "textposition": "auto"}],
                {"title": {"text": "Predicted time per op kind (ms)"}, "xaxis": {"title": {"text": "ms"}}}),
    ]
    kind_rows = [[g["kind"], str(g["layers"]), f"{g['ms']:.3f}", f"{g['share']:.1%}",
                  "n/a" if g["mj"] is None else f"{g['mj']:.2f}"] for g in kinds]
    layer_rows = [_table_row(layer, report.runtime_ms) for layer in report.layers if layer.source != "free"]
    sections = [("By op kind", _table(["kind", "layers", "ms", "share", "mJ"], kind_rows)),
                (f"Top {top} bottlenecks", _table(["layer", "op", "ms", "share"],
                 [[b.name, b.op_type, f"{b.ms:.3f}", f"{b.ms / (report.runtime_ms or 1):.1%}"]
                  for b in report.bottlenecks(top)])),
                ("Layers", _table(["layer", "op", "output", "MACs", "ms", "W", "mJ", "share", "source"], layer_rows))]
    title = f"npower: {report.model} on {report.pack}"
    meta = [f"{report.device}, {report.runtime}" + (f", batch {report.batch}" if report.batch else ""),
            *report.summary_lines()]
    return _page(title, meta, figures, sections)


# --- compare --------------------------------------------------------------------------------------

def _series_label(row: Row, packs: int) -> str:
    return row.model if packs == 1 else f"{row.model} @ {row.pack}"


def _by_series(comparison: Comparison) -> dict[str, list[Row]]:
    packs = len({row.pack for row in comparison.rows})
    series: dict[str, list[Row]] = {}
    for row in comparison.rows:
        series.setdefault(_series_label(row, packs), []).append(row)
    return {label: sorted(rows, key=lambda r: r.batch) for label, rows in series.items()}


def _versus_batch(div_id: str, comparison: Comparison, column: str, title: str, unit: str) -> tuple[str, str]:
    data = [{"type": "scatter", "mode": "lines+markers", "name": label, "x": [r.batch for r in rows],
             "y": [getattr(r, column) for r in rows]} for label, rows in _by_series(comparison).items()]
    batches = sorted({row.batch for row in comparison.rows})
    return _figure(div_id, data, {"title": {"text": title}, "yaxis": {"title": {"text": unit}, "type": "log"},
                                  "xaxis": {"title": {"text": "batch size"}, "type": "log", "tickvals": batches}})


def _kind_breakdown(comparison: Comparison) -> tuple[str, str]:
    first_batch = comparison.rows[0].batch
    rows = {row.model: row for row in comparison.rows if row.batch == first_batch and row.pack == comparison.rows[0].pack}
    colors = kind_colors([g["kind"] for row in rows.values() for g in row.by_kind])
    models = list(rows)
    data = [{"type": "bar", "orientation": "h", "name": kind, "marker": {"color": color}, "y": models,
             "x": [next((g["share"] * 100 for g in rows[m].by_kind if g["kind"] == kind), 0.0) for m in models],
             "hovertemplate": "%{y}: %{x:.1f} %<extra>" + kind + "</extra>"} for kind, color in colors.items()]
    return _figure("plot-kinds", data, {"title": {"text": f"Time share per op kind (batch {first_batch}"
                                                          f"{_pack_note(comparison)})"},
                                        "barmode": "stack", "xaxis": {"title": {"text": "% of runtime"}}})


def _pack_note(comparison: Comparison) -> str:
    """', PACK' naming the pack a single-pack plot shows, when the comparison has several."""
    packs = {row.pack for row in comparison.rows}
    return f", {comparison.rows[0].pack}" if len(packs) > 1 else ""


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats on both coordinates (lower is better), by x."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(ox <= x and oy <= y and (ox, oy) != (x, y) for ox, oy in points)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i])


def _pareto(comparison: Comparison) -> tuple[str, str]:
    batch, pack = comparison.rows[0].batch, comparison.rows[0].pack
    rows = [r for r in comparison.rows if r.batch == batch and r.pack == pack and r.error_rate is not None]
    with_energy = all(r.energy_mj_per_inference is not None for r in rows)
    column, unit = (("energy_mj_per_inference", "energy per inference (mJ)") if with_energy
                    else ("latency_ms", "latency per inference (ms; this pack has no power model)"))
    points = [(getattr(r, column) / (1 if with_energy else r.batch), r.error_rate * 100) for r in rows]
    front = pareto_front(points)
    data = [{"type": "scatter", "mode": "markers+text", "name": "models", "x": [p[0] for p in points],
             "y": [p[1] for p in points], "text": [r.model for r in rows], "textposition": "top center", "cliponaxis": False,
             "marker": {"size": 11, "color": "#4C78A8"}},
            {"type": "scatter", "mode": "lines+markers", "name": "Pareto front", "x": [points[i][0] for i in front],
             "y": [points[i][1] for i in front], "line": {"color": "#E45756", "dash": "dash"},
             "marker": {"size": 15, "color": "rgba(0,0,0,0)", "line": {"color": "#E45756", "width": 2}}}]
    what = "energy" if with_energy else "latency per inference"
    return _figure("plot-pareto", data, {"title": {"text": f"Error vs {what} (batch {batch}{_pack_note(comparison)})"},
                                         "xaxis": {"title": {"text": unit}}, "yaxis": {"title": {"text": "error %"}}})


def render_comparison(comparison: Comparison) -> str:
    """Models x packs x batch sizes: plots vs batch, per-kind breakdown, Pareto front, the table."""
    from .comparison import EPR_FORMULA
    has_energy = any(row.energy_mj_per_inference is not None for row in comparison.rows)
    figures = [_versus_batch("plot-latency", comparison, "latency_ms", "Latency vs batch size", "ms per batch")]
    if has_energy:
        figures.append(_versus_batch("plot-energy", comparison, "energy_mj_per_inference",
                                     "Energy per inference vs batch size", "mJ per inference"))
    else:
        figures.append(_versus_batch("plot-throughput", comparison, "throughput_inf_per_s",
                                     "Throughput vs batch size (energy: n/a, no power model)", "inferences/s"))
    figures.append(_kind_breakdown(comparison))
    if comparison.has_accuracy:
        figures.append(_pareto(comparison))
    header, cells = comparison.table_rows()
    meta = [f"{len({r.model for r in comparison.rows})} model(s), packs: "
            + ", ".join(dict.fromkeys(r.pack for r in comparison.rows))
            + "; batch sizes: " + ", ".join(str(b) for b in dict.fromkeys(r.batch for r in comparison.rows)),
            f"{comparison.order_note}; n/a = not available (never 0)"]
    if comparison.has_accuracy:
        meta.append(f"{EPR_FORMULA}; alpha = {comparison.alpha:g}")
    return _page("npower compare", meta, figures, [("All rows", _table(header, cells))])
