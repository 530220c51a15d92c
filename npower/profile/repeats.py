"""Repeated profiles of one device and runtime, pooled for fitting.

A machine's speed drifts between runs (shared caches and memory bandwidth, clocks), so one profile's
timings carry that run's state. Profiling again at another time and pooling the runs averages it out:
each config's runtime is the geometric mean of the runs that measured it. The runs' spread is also
the measurement noise a per-layer model cannot beat; `repeat_noise_pct` reports it per kind.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import NpowerError
from .cache_state import fitted_states, in_network_ms, steady_state_kinds
from .run_offsets import ALL_KINDS, offset_for, run_offsets
from .store import SampleFile, runtime_differences


@dataclass
class PooledSample:
    """One config's measurements over the runs that measured it without error."""

    row: dict[str, Any]  # the first run's row: config, kind, stored features
    log2_ms: list[float] = field(default_factory=list)
    watts: list[float] = field(default_factory=list)

    @property
    def runtime_ms(self) -> float:
        return 2 ** (math.fsum(self.log2_ms) / len(self.log2_ms))

    @property
    def mean_watts(self) -> float | None:
        return math.fsum(self.watts) / len(self.watts) if self.watts else None


def runtime_target_ms(row: dict[str, Any], trace_overhead_ms: float) -> float:
    """A sample's runtime to fit: its time in the cache state of a network (`cache_state.in_network_ms`),
    less the time onnxruntime's profiler added to it where the kernel was timed from the profiler's trace
    (rows with a `kernel`), kept to at least a tenth of it."""
    return in_network_ms(row, trace_overhead_ms if "kernel" in row else 0.0)


def check_poolable(runs: list[tuple[str, SampleFile]]) -> None:
    """Runs pool only when they are different runs (header times differ) that measured the same runtime,
    device and cache state."""
    if not runs:
        raise NpowerError("fit: no sample file given")
    first_name, first = runs[0]
    started: dict[Any, str] = {}
    for name, run in runs:
        created = run.header.get("created")
        if created is not None and created in started:
            raise NpowerError(f"{name} and {started[created]} are the same run (both started {created}): "
                              "give each run once")
        started[created] = name
    for name, run in runs[1:]:
        changed = runtime_differences(first.header, run.header)
        if changed:
            raise NpowerError(f"{name} measured another runtime than {first_name} ({', '.join(changed)}): "
                              "fit them separately")


def trace_overheads(runs: list[tuple[str, SampleFile]]) -> list[float]:
    """Each run's measured per-kernel trace overhead (ms); a run from before the profiler measured it takes
    the mean of the runs that did (same runtime and device), or 0 when none did."""
    measured = [run.header.get("trace_overhead_ms") for _, run in runs]
    known = [float(value) for value in measured if value is not None]
    fallback = math.fsum(known) / len(known) if known else 0.0
    return [fallback if value is None else float(value) for value in measured]


def sample_identity(row: dict[str, Any]) -> str:
    """What one measured kernel is: the plan's config key, and for the kernels a single-node session runs
    (a blocked conv and its reorders share the config key) the kernel and its own config; its steady state is
    another sample of it (`cache_state.fitted_states`)."""
    steady = ["steady"] if row.get("cache_state") == "steady" else []
    return json.dumps([row["key"], row.get("kernel"), row.get("config"), *steady], sort_keys=True)


def pool_runs(runs: list[tuple[str, SampleFile]]) -> list[PooledSample]:
    """`pool_with_offsets`' pooled samples."""
    return pool_with_offsets(runs)[0]


def pool_with_offsets(runs: list[tuple[str, SampleFile]]) -> tuple[list[PooledSample], list[float]]:
    """Good samples of every run grouped by `sample_identity` (first-seen order); each run's trace overhead
    (`trace_overheads`) is taken off its rows and its speed offset (`run_offsets`) off their log2 times. A config
    a plan drew twice (or harvested from two models) is one sample too, measured once per run (the mean of the
    run's log2 times). Also each run's offset over all kinds, in % of time (+: the run was slower). Call
    `check_poolable` first."""
    measured, offsets = _measured_with_offsets(runs)
    pooled: dict[str, PooledSample] = {}
    for run, run_offset in zip(measured, offsets):
        for identity, (row, value) in run.items():
            sample = pooled.setdefault(identity, PooledSample(row))
            sample.log2_ms.append(value - offset_for(run_offset, row["kind"]))
            if (row.get("watts") or 0) > 0:
                sample.watts.append(float(row["watts"]))
    return list(pooled.values()), [round((2 ** offset[ALL_KINDS] - 1) * 100, 2) for offset in offsets]


Measured = dict[str, tuple[dict[str, Any], float]]


def _measured_with_offsets(runs: list[tuple[str, SampleFile]]) -> tuple[list[Measured], list[dict[str, float]]]:
    """Every run's log2 targets (`_log2_targets`) and speed offsets (`run_offsets`). The offsets compare the runs in
    the states every run timed (a steady row in its alternating hot state only), so that runs profiled before the
    steady state and after it stay on one scale through the configs both measured."""
    overheads = trace_overheads(runs)
    steady_kinds = steady_state_kinds(row for _, run in runs for row in run.samples)
    measured = [_log2_targets(run, overhead, steady_kinds) for (_, run), overhead in zip(runs, overheads)]
    comparable = measured if not steady_kinds else [_log2_targets(run, overhead, set())
                                                    for (_, run), overhead in zip(runs, overheads)]
    kinds = {identity: row["kind"] for run in comparable for identity, (row, _) in run.items()}
    return measured, run_offsets([{identity: value for identity, (_, value) in run.items()} for run in comparable],
                                 kinds)


def _log2_targets(run: SampleFile, overhead_ms: float, steady_kinds: set[str]) -> Measured:
    """A run's good rows by `sample_identity`, each with its log2 runtime target, in every state its kind is fitted
    from (`cache_state.fitted_states`); a config measured twice in one run keeps its first row and the mean of its
    log2 times."""
    values: dict[str, tuple[dict[str, Any], list[float]]] = {}
    for row in (state for row in run.samples for state in fitted_states(row, steady_kinds)):
        target = 0.0 if row.get("error") else runtime_target_ms(row, overhead_ms)
        if target > 0:  # not failed, nor a zero time: something to fit
            values.setdefault(sample_identity(row), (row, []))[1].append(math.log2(target))
    return {identity: (row, math.fsum(logs) / len(logs)) for identity, (row, logs) in values.items()}


def pooled_device(runs: list[tuple[str, SampleFile]]) -> dict[str, Any]:
    """The first run's device block; with several runs, its measured float numbers (peak, bandwidth)
    averaged over the runs that have them, each weighted by the rows it measured: a short run of a few
    configs moves the machine's reference no more than it moves the fit."""
    device = dict(runs[0][1].header.get("device", {}))
    if len(runs) == 1:
        return device
    for key, value in device.items():
        if not isinstance(value, float):
            continue
        pairs = [(run.header.get("device", {}).get(key), max(len(run.samples), 1)) for _, run in runs]
        numbers = [(float(v), rows) for v, rows in pairs if isinstance(v, (int, float)) and not isinstance(v, bool)]
        device[key] = round(math.fsum(v * rows for v, rows in numbers) / math.fsum(rows for _, rows in numbers), 2)
    return device


def repeat_noise_pct(samples: list[PooledSample]) -> float | None:
    """Run-to-run noise of one measurement, in %: (2^sd - 1) x 100, sd the pooled standard deviation of
    log2 runtime over the configs measured more than once (None when none was)."""
    squares, freedom = 0.0, 0
    for sample in samples:
        if len(sample.log2_ms) > 1:
            mean = math.fsum(sample.log2_ms) / len(sample.log2_ms)
            squares += math.fsum((v - mean) ** 2 for v in sample.log2_ms)
            freedom += len(sample.log2_ms) - 1
    return (2 ** math.sqrt(squares / freedom) - 1) * 100 if freedom else None
