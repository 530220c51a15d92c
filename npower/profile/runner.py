"""`npower profile`: run the sampling plan on a backend, appending each measurement durably."""
from __future__ import annotations

import datetime as dt
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .. import __version__
from ..errors import NpowerError
from ..features import LayerFeatures, extract
from .backends import Backend
from .build import build_model, configured_node, make_feeds
from .cache_state import STEADY_STATE, InNetworkCacheState
from .harvest import harvest
from .ort_trace import kernel_rows, trace_overhead_ms, traces_kernels
from .plan import Config, config_key, generate
from .store import SampleWriter, read_samples


@dataclass
class Budget:
    """Configs above these are skipped up front (too slow for the sweep or too big for memory)."""

    max_macs: float = 3e9
    max_bytes: float = 1.5e9
    max_elements: float = 1.5e8


@dataclass
class Planned:
    kind: str
    config: Config
    key: str
    layer: LayerFeatures


def _layer(config: Config) -> LayerFeatures | None:
    try:
        node = configured_node(config)
    except NpowerError:
        return None
    return extract(node)


def _fits(layer: LayerFeatures, budget: Budget) -> bool:
    s = layer.specials
    total_bytes = s.get("in_bytes", 0) + s.get("weight_bytes", 0) + s.get("out_bytes", 0)
    return s.get("macs", 0) <= budget.max_macs and total_bytes <= budget.max_bytes and \
        s.get("out_elems", 0) <= budget.max_elements and s.get("flops", 0) <= 2 * budget.max_macs


# Share of seed 0's plan a run at another seed measures too: configs it shares with the seed-0 runs, from which
# `npower fit` estimates its speed offset against them (`run_offsets`).
ANCHOR_SCALE = 0.1


def make_plan(scale: float, seed: int, kinds: list[str] | None, models: Iterable[str],
              budget: Budget, anchors: float = 0.0) -> list[Planned]:
    """The full ordered plan, each config once: harvested model layers first, then the random plan; at a seed other
    than 0, with seed 0's plan at scale `anchors` spread evenly through it."""
    planned: list[Planned] = []
    cache: dict[str, LayerFeatures | None] = {}

    def accept(config: Config) -> bool:
        key = config_key(config)
        if key not in cache:
            cache[key] = _layer(config)
        layer = cache[key]
        return layer is not None and layer.kind not in ("free", "unknown", "unresolved") and _fits(layer, budget)

    for kind, config in harvest(models):
        if (kinds is None or kind in kinds) and accept(config):
            key = config_key(config)
            planned.append(Planned(kind, config, key, cache[key]))
    drawn = list(generate(kinds, scale, seed, accept)) if scale > 0 else []
    if anchors > 0 and seed != 0:
        drawn = spread(drawn, list(generate(kinds, anchors, 0, accept)))
    keys = {item.key for item in planned}
    for kind, config in drawn:
        key = config_key(config)
        if key not in keys:
            keys.add(key)
            planned.append(Planned(kind, config, key, cache[key]))
    return planned


def spread(items: list, extra: list) -> list:
    """`items` with `extra` inserted at even intervals (the first before the first item)."""
    step = (len(items) + 1) / max(len(extra), 1)
    merged, placed = [], 0
    for index, item in enumerate(items):
        while placed < len(extra) and placed * step <= index:
            merged.append(extra[placed])
            placed += 1
        merged.append(item)
    return merged + extra[placed:]


def untraced_plan(plan: list[Planned]) -> list[Planned]:
    """The plan less the configs only a backend that traces kernels times right (`ort_trace.kernel_rows`):
    graph-input configs (`first_conv`), whose input it times from memory, and wrapped ones (`mid_graph_reorders`),
    whose node's kernels it times apart from the ops around them. Another would time the first as ordinary convs
    and the second with the wrap ops in."""
    return [item for item in plan if not (item.config.get("graph_input") or item.config.get("wrap"))]


def estimate_seconds(layer: LayerFeatures, policy) -> float:
    """Rough wall time of one sample on a CPU (for --dry-run and ETA before any measurement)."""
    s = layer.specials
    run = s.get("flops", 0) / 40e9 + (s.get("in_bytes", 0) + s.get("out_bytes", 0) + s.get("weight_bytes", 0)) / 4e9 + 2e-5
    timed = min(max(policy.min_runs * run, policy.min_seconds), max(policy.max_seconds, 3 * run))
    return 0.03 + policy.warmup_runs * run + timed


def dry_run(plan: list[Planned], policy, out=None) -> None:
    out = out or sys.stdout
    counts: dict[str, list[float]] = {}
    for item in plan:
        counts.setdefault(item.kind, []).append(estimate_seconds(item.layer, policy))
    total = sum(sum(v) for v in counts.values())
    print(f"{'kind':16s} {'samples':>8s} {'est. minutes':>13s}", file=out)
    for kind, times in counts.items():
        print(f"{kind:16s} {len(times):8d} {sum(times) / 60:13.1f}", file=out)
    print(f"{'total':16s} {len(plan):8d} {total / 60:13.1f}  (estimate for a CPU; real time varies)", file=out)


def measure_peaks(backend: Backend) -> dict[str, float]:
    """Peak compute (large GEMM) and memory bandwidth (large streaming op) of the device."""
    gemm = {"op": "MatMul", "attrs": {}, "inputs": [{"shape": [1024, 1024], "weight": False},
                                                   {"shape": [1024, 1024], "weight": True}]}
    stream = {"op": "Add", "attrs": {}, "inputs": [{"shape": [1 << 25], "weight": False},
                                                  {"shape": [], "weight": True, "value": 1.0}]}
    gemm_ms = backend.measure(build_model(gemm).SerializeToString(), make_feeds(gemm)).median_ms
    stream_ms = backend.measure(build_model(stream).SerializeToString(), make_feeds(stream)).median_ms
    return {"peak_gflops": round(2 * 1024 ** 3 / (gemm_ms * 1e-3) / 1e9, 2),
            "bandwidth_gbs": round(2 * 4 * (1 << 25) / (stream_ms * 1e-3) / 1e9, 2),
            "peak_method": "MatMul 1024x1024x1024 fp32; bandwidth: Add-scalar over 128 MiB (read + write)"}


class Progress:
    """One-line progress bar with ETA on stderr."""

    def __init__(self, total: int, enabled: bool = True):
        self.total, self.enabled, self.done, self.start = total, enabled, 0, time.time()

    def step(self, kind: str) -> None:
        self.done += 1
        if not self.enabled:
            return
        elapsed = time.time() - self.start
        eta = elapsed / self.done * (self.total - self.done)
        width = 30
        filled = int(width * self.done / max(self.total, 1))
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                         f"{kind:14s} {self.done / max(elapsed, 1e-9) * 60:6.1f}/min ETA {eta / 60:5.1f} min ")
        sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def run_profile(out_path: str, backend: Backend, plan: list[Planned], seed: int, progress: bool = True,
                anchors: float = 0.0) -> dict[str, Any]:
    """Measure every planned config not yet in the sample file (`anchors`: the share of seed 0's plan in it, for
    the header). Returns a summary."""
    existing = read_samples(out_path).keys if _exists(out_path) else set()
    todo = [item for item in plan if item.key not in existing]
    header = {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "npower_version": __version__, "seed": seed, "device": backend.device_info(),
              "runtime": backend.runtime_info(), "timing": vars(backend.policy)}
    if anchors > 0 and seed != 0:
        header["anchor_scale"] = anchors
    if traces_kernels(backend):
        header["cache_state"] = InNetworkCacheState.description
        header["steady_state"] = STEADY_STATE
        if not existing:
            header["trace_overhead_ms"] = trace_overhead_ms(backend)
    if not existing and todo:
        header["device"].update(measure_peaks(backend))
    bar = Progress(len(todo), progress)
    measured = failed = 0
    started = time.time()
    with SampleWriter(out_path, header) as writer:
        try:
            for item in todo:
                for row in _measure(backend, item, seed):
                    writer.append(row)
                    failed += bool(row.get("error"))
                measured += 1
                bar.step(item.kind)
        except KeyboardInterrupt:
            bar.finish()
            print(f"stopped: {measured} new samples saved in {out_path}; run the same command to resume",
                  file=sys.stderr)
            raise
    bar.finish()
    minutes = (time.time() - started) / 60
    return {"planned": len(plan), "already": len(plan) - len(todo), "measured": measured, "failed": failed,
            "minutes": minutes, "per_minute": measured / minutes if minutes > 0 else 0.0}


def _exists(path: str) -> bool:
    return Path(path).exists() and Path(path).stat().st_size > 0


def _measure(backend: Backend, item: Planned, seed: int) -> list[dict[str, Any]]:
    """The sample row of a planned config; one per kernel where the runtime splits it (ort_trace)."""
    row: dict[str, Any] = {"type": "sample", "key": item.key, "kind": item.kind, "config": item.config,
                           "features": item.layer.features, "specials": item.layer.specials}
    try:
        if traces_kernels(backend):
            return kernel_rows(backend, item.config, seed, row)
        model = build_model(item.config, seed).SerializeToString()
        measurement = backend.measure(model, make_feeds(item.config, seed))
        row.update(measurement.to_dict())
    except NpowerError:
        raise  # the backend refused (e.g. CUDA fell back to CPU): stop, nothing measured is wrong
    except Exception as exc:  # noqa: BLE001 - OOM, unsupported config, no CUDA kernel: recorded in the row
        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
    if not np.isfinite(row.get("median_ms", 0.0)):
        row["error"] = "non-finite timing"
    return [row]
