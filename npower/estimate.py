"""Estimated packs: a GPU nobody measured, from its spec sheet and the GPUs that were measured.

Transfer methods (the default, DEFAULT_METHOD, for every op kind; `auto` chooses per kind by
leave-one-GPU-out kernel error over the measured GPUs):

- `device-regression`: one regression per kind over the pooled samples of all measured GPUs,
  log2(ms) = a polynomial in the layer's log2 features (degree 2) + the device's log2 figures
  (bandwidth, fp32 peak, optionally L2 / board power / a low-power flag) + products of each device figure with each
  layer variable. Substituting the target's figures (`SparsePolynomial.partial`) leaves a
  polynomial in the layer features alone: an ordinary pack model.
- `roofline-scaling:nearest-k` (Habitat's idea, one ratio per kind): the k most similar measured
  GPUs' own models (same architecture, then power class first, then closest bandwidth and peak), each times its fp32
  peak over the target's (GEMM-like kinds) or its bandwidth over the target's (memory-bound kinds),
  averaged in log2.

The measured transfer error of the chosen method (RMSPE and time-weighted error on each left-out
GPU's own samples) is recorded in the pack. An estimated pack predicts no power: no measured pack
with power exists for any GPU here, and power does not transfer across architectures.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, TextIO

import numpy as np

from . import __version__
from .errors import NpowerError
from .fit import choose_variables, monomials, rmspe
from .pack import ESTIMATED, KindModels, Pack
from .polynomial import SparsePolynomial, design_matrix
from .specs import Spec, find_spec

REGRESSION, SCALING = "device-regression", "roofline-scaling"
# Device figures a regression may use, by the name they take as a feature while fitting.
DEVICE_FEATURES = {"dev_bandwidth_gbs": "bandwidth_gbs", "dev_peak_gflops": "fp32_peak_gflops",
                   "dev_l2_mb": "l2_mb", "dev_tdp_w": "tdp_w"}
# Boards powered by the PCIe slot alone (<= 75 W: P4, T4, L4) run far below their boost clock under
# sustained GEMM load: 21-39 % of the fp32 peak in the NeuSight rows, against 61-89 % for 250-700 W boards.
LOW_POWER_W = 75.0
DEVICE_FLAGS = {"dev_low_power": lambda spec: float(spec.tdp_w <= LOW_POWER_W)}
DEVICE_SETS = {"bw+peak": ("dev_bandwidth_gbs", "dev_peak_gflops"),
               "bw+peak+l2": ("dev_bandwidth_gbs", "dev_peak_gflops", "dev_l2_mb"),
               "bw+peak+tdp": ("dev_bandwidth_gbs", "dev_peak_gflops", "dev_tdp_w"),
               "bw+peak+lowpower": ("dev_bandwidth_gbs", "dev_peak_gflops", "dev_low_power")}
COMPUTE_BOUND = frozenset({"gemm", "matmul", "conv", "conv_1x1", "conv_dw", "conv_transpose"})
AUTO = "auto"  # per op kind, the candidate with the lowest leave-one-GPU-out kernel error
# The default: one method for every kind. On whole models it had the lowest leave-one-GPU-out error of the
# candidates and of AUTO (benchmarks/estimate_loo.py, BENCHMARKS.md): kernel-row errors of random shapes
# choose per kind badly. That comparison was made on the same 27 cases it reports: a selection, said so.
DEFAULT_METHOD = "device-regression:bw+peak"
ROWS_PER_GPU = 2500   # samples per kind and GPU used in a fit (seeded subsample): keeps fits CPU-cheap
RIDGE = 1e-3          # ridge strength per row, on standardised columns


@dataclass
class Source:
    """A measured GPU: its spec, its samples per kind (feature columns, ms), its own fitted models."""

    spec: Spec
    rows: dict[str, tuple[dict[str, np.ndarray], np.ndarray]] = field(default_factory=dict)
    origin: str = ""
    own: dict[str, SparsePolynomial] = field(default_factory=dict)


def source_from_samples(spec: Spec, samples: Iterable[Mapping[str, Any]], origin: str = "",
                        limit: int = ROWS_PER_GPU, seed: int = 0) -> Source:
    """Group sample rows (npower sample-file rows: kind, features, specials, median_ms) by kind;
    at most `limit` rows per kind, drawn with a fixed seed."""
    by_kind: dict[str, list[Mapping[str, Any]]] = {}
    for row in samples:
        if not row.get("error") and row.get("median_ms", 0) > 0:
            by_kind.setdefault(row["kind"], []).append(row)
    rng = np.random.default_rng(seed)
    rows = {}
    for kind, items in sorted(by_kind.items()):
        if len(items) > limit:
            items = [items[i] for i in sorted(rng.choice(len(items), limit, replace=False))]
        values = [{**row["features"], **row["specials"]} for row in items]
        names = set.intersection(*(set(v) for v in values))
        rows[kind] = ({n: np.array([v[n] for v in values], dtype=float) for n in sorted(names)},
                      np.array([row["median_ms"] for row in items], dtype=float))
    return Source(spec, rows, origin or spec.id)


def neusight_sources(root: str | Path, cache: Path | None = None, log: TextIO = sys.stderr) -> list[Source]:
    """Every GPU of the NeuSight data that has a spec and operator rows, as a Source. Imported samples are cached as JSON lines (importing one GPU
    takes about a minute); the cache key covers the data folder, the importer's and the extractors' code."""
    from . import features
    from .importers import neusight
    layout = neusight.resolve_layout(root)
    code = b"".join(Path(m.__file__).read_bytes() for m in (neusight, features))  # samples depend on both
    key = hashlib.sha256(str(layout.root.resolve()).encode() + code).hexdigest()[:12]
    folder = cache or Path(tempfile.gettempdir()) / f"npower-neusight-{key}"
    sources = []
    for path in sorted(layout.devices.glob("*.json")):
        try:
            spec = find_spec(path.stem)
        except NpowerError:
            continue  # no spec for this device (AMD, a tensor-parallel pair): not a source
        cached = folder / f"{path.stem}.jsonl"
        if not cached.is_file():
            try:
                neusight.write_samples(neusight.import_neusight(layout.root, path.stem), cached)
            except NpowerError as exc:
                print(f"{path.stem}: not a source ({exc})", file=log)
                cached.write_text("")  # remembered: this device has no operator rows
        rows = [json.loads(line) for line in cached.read_text().splitlines()[1:]]
        if not rows:
            continue
        sources.append(source_from_samples(spec, rows, f"NeuSight {path.stem}"))
    return sources


def device_values(spec: Spec) -> dict[str, float]:
    """A spec's figures (and flags) under their fitting names."""
    values = {name: float(spec.figures[key]) for name, key in DEVICE_FEATURES.items()}
    return {**values, **{name: flag(spec) for name, flag in DEVICE_FLAGS.items()}}


# ---- device regression ---------------------------------------------------------------------------

def _regression_terms(layer: list[str], devices: Sequence[str]) -> list[dict[str, int]]:
    device_vars = [d if d in DEVICE_FLAGS else f"log2({d})" for d in devices]
    smooth = [v for v in layer if v.startswith("log2(")]  # hinges enter linearly: squared, they explode outside the data
    return (monomials(smooth, 2) + [{v: 1} for v in layer if v not in smooth] + [{d: 1} for d in device_vars]
            + [{d: 1, v: 1} for d in device_vars for v in layer])


def fit_regression(kind: str, sources: Sequence[Source], devices: Sequence[str]) -> SparsePolynomial:
    """One log2(ms) model of `kind` over layer and device variables, from the pooled sources
    (each GPU weighs the same), ridge-regularised least squares on standardised columns."""
    pooled = [s for s in sources if kind in s.rows]
    if len(pooled) < (2 if devices else 1):
        raise NpowerError(f"{kind}: a device regression needs samples from 2 or more GPUs, got {len(pooled)}")
    shared = set.intersection(*(set(s.rows[kind][0]) for s in pooled))
    columns = {n: np.concatenate([s.rows[kind][0][n] for s in pooled]) for n in sorted(shared)}
    layer = choose_variables(kind, columns, log=True)  # leaves out raw 0/1 counts that are not flags
    for name in devices:
        columns[name] = np.concatenate([np.full(len(s.rows[kind][1]), device_values(s.spec)[name]) for s in pooled])
    y = np.log2(np.concatenate([s.rows[kind][1] for s in pooled]))
    weights = np.concatenate([np.full(len(s.rows[kind][1]), 1.0 / len(s.rows[kind][1])) for s in pooled])
    weights *= len(y) / weights.sum()
    terms = _regression_terms(layer, devices)
    X = design_matrix(terms, columns)
    mean = np.average(X, axis=0, weights=weights)
    std = np.sqrt(np.average((X - mean) ** 2, axis=0, weights=weights))
    keep = std > 1e-12
    Z = (X[:, keep] - mean[keep]) / std[keep]
    y_mean = np.average(y, weights=weights)
    gram = (Z * weights[:, None]).T @ Z + RIDGE * len(y) * np.eye(Z.shape[1])
    beta = np.linalg.solve(gram, (Z * weights[:, None]).T @ (y - y_mean))
    coefs = np.zeros(len(terms))
    coefs[keep] = beta / std[keep]
    intercept = float(y_mean - coefs @ mean)
    kept = [(float(c), t) for c, t in zip(coefs, terms) if c != 0.0]
    info = {"method": REGRESSION, "device_variables": list(devices), "layer_variables": layer,
            "samples": int(len(y)), "gpus": [s.spec.id for s in pooled], "ridge": RIDGE}
    return SparsePolynomial("log2", "ms", intercept, kept, info)


def specialise(model: SparsePolynomial, spec: Spec) -> SparsePolynomial:
    """A device regression with the target's figures substituted: a model in layer features only."""
    return model.partial(device_values(spec))


# ---- roofline scaling ----------------------------------------------------------------------------

def scaling_factor(kind: str, source: Spec, target: Spec) -> float:
    """Time on target / time on source for one kind: the fp32 peak ratio (GEMM-like kinds) or the
    bandwidth ratio (memory-bound kinds)."""
    key = "fp32_peak_gflops" if kind in COMPUTE_BOUND else "bandwidth_gbs"
    return source.figures[key] / target.figures[key]


def scale_model(model: SparsePolynomial, factor: float) -> SparsePolynomial:
    """The same model predicting `factor` times the time."""
    info = {**model.fit, "scaled_by": factor}
    rates = None if model.rates is None else model.rates.scaled(factor)
    if model.target == "log2":
        return SparsePolynomial("log2", model.unit, model.intercept + math.log2(factor), list(model.terms), info,
                                dict(model.bounds), rates)
    return SparsePolynomial(model.target, model.unit, model.intercept * factor,
                            [(c * factor, p) for c, p in model.terms], info, dict(model.bounds), rates)


def distance(source: Spec, target: Spec) -> tuple[bool, bool, float]:
    """How unlike two GPUs are: other architecture first, other power class (LOW_POWER_W) next, then
    the log2 distance of bandwidth and fp32 peak."""
    low_power = DEVICE_FLAGS["dev_low_power"]
    return (source.architecture != target.architecture, low_power(source) != low_power(target),
            abs(math.log2(source.bandwidth_gbs / target.bandwidth_gbs))
            + abs(math.log2(source.fp32_peak_gflops / target.fp32_peak_gflops)))


def own_model(kind: str, source: Source) -> SparsePolynomial:
    """A measured GPU's own model of `kind`: the same regression on its samples alone (fitted once)."""
    if kind not in source.own:
        source.own[kind] = fit_regression(kind, [source], ())
    return source.own[kind]


def scaled_model(kind: str, target: Spec, sources: Sequence[Source], nearest: int = 1) -> SparsePolynomial:
    """Roofline scaling of the `nearest` most similar measured GPUs' own models, averaged in log2."""
    having = sorted((s for s in sources if kind in s.rows), key=lambda s: distance(s.spec, target))[:nearest]
    if not having:
        raise NpowerError(f"{kind}: no measured GPU has samples to scale")
    models = [scale_model(own_model(kind, s), scaling_factor(kind, s.spec, target)) for s in having]
    merged: dict[tuple, float] = {}
    for model in models:
        for coef, powers in model.terms:
            key = tuple(sorted(powers.items()))
            merged[key] = merged.get(key, 0.0) + coef / len(models)
    info = {"method": SCALING, "from_gpus": [s.spec.id for s in having],
            "scaled_by": [round(m.fit["scaled_by"], 4) for m in models]}
    return SparsePolynomial("log2", "ms", sum(m.intercept for m in models) / len(models),
                            [(c, dict(k)) for k, c in merged.items()], info)


# ---- choosing by leave-one-GPU-out error ----------------------------------------------------------

Candidate = Callable[[str, Spec, Sequence[Source]], SparsePolynomial]


def candidates() -> dict[str, Candidate]:
    """Transfer methods by label: each builds a kind's model for a target from other GPUs only."""
    out: dict[str, Candidate] = {
        f"{REGRESSION}:{label}": (lambda kind, target, sources, devices=devices:
                                  specialise(fit_regression(kind, sources, devices), target))
        for label, devices in DEVICE_SETS.items()}
    for count in (1, 2):
        out[f"{SCALING}:nearest-{count}"] = (lambda kind, target, sources, count=count:
                                             scaled_model(kind, target, sources, count))
    return out


def weighted_error(predicted: np.ndarray, measured: np.ndarray) -> float:
    """Time-weighted mean absolute percentage error, in %: sum |predicted - measured| / sum measured.
    Long kernels weigh most, as they do in a whole model; RMSPE weighs the many launch-bound ones."""
    return float(np.abs(predicted - measured).sum() / measured.sum() * 100)


METRICS = {"rmspe": rmspe, "weighted": weighted_error}
CHOICE_METRIC = "weighted"


def method_set(name: str) -> dict[str, Candidate]:
    """The candidates a method name allows: all of them for AUTO, else the one named."""
    every = candidates()
    if name == AUTO:
        return every
    if name not in every:
        raise NpowerError(f"unknown estimate method '{name}'; known: {AUTO}, {', '.join(every)}")
    return {name: every[name]}


def leave_one_out(kind: str, sources: Sequence[Source], methods: Mapping[str, Candidate]) -> dict[str, dict[str, dict[str, float]]]:
    """metric ("rmspe", "weighted") -> method -> left-out GPU id -> error (%) on that GPU's samples,
    predicted from the other GPUs only."""
    errors: dict[str, dict[str, dict[str, float]]] = {metric: {} for metric in METRICS}
    for held in sources:
        if kind not in held.rows:
            continue
        others = [s for s in sources if s is not held and s.spec.id != held.spec.id]
        columns, ms = held.rows[kind]
        for label, method in methods.items():
            try:
                predicted = method(kind, held.spec, others).predict(columns)
            except NpowerError:
                continue
            for metric, function in METRICS.items():
                errors[metric].setdefault(label, {})[held.spec.id] = round(function(predicted, ms), 2)
    return errors


def choose(errors: Mapping[str, Mapping[str, float]]) -> str | None:
    """The method with the lowest mean left-out error, among those evaluated on the most GPUs."""
    if not errors:
        return None
    most = max(len(e) for e in errors.values())
    complete = {m: e for m, e in errors.items() if len(e) == most}
    return min(complete, key=lambda m: sum(complete[m].values()) / most)


def _mean(per_gpu: Mapping[str, float]) -> float:
    return round(sum(per_gpu.values()) / len(per_gpu), 2)


def estimate_pack(target: Spec, sources: Sequence[Source], name: str | None = None,
                  kinds: Iterable[str] | None = None, methods: Mapping[str, Candidate] | None = None,
                  errors: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None) -> Pack:
    """An estimated pack for `target` from measured GPUs (none of them the target itself).
    `errors` (kind -> leave_one_out's table) reuses a leave-one-out table already computed;
    the target's own entries in it are ignored."""
    sources = [s for s in sources if s.spec.id != target.id]
    if not sources:
        raise NpowerError(f"{target.id}: no measured GPU other than the target to estimate from")
    methods = dict(methods or method_set(DEFAULT_METHOD))
    all_kinds = sorted(set(kinds) if kinds is not None else {k for s in sources for k in s.rows})
    models: dict[str, KindModels] = {}
    chosen: dict[str, Any] = {}
    for kind in all_kinds:
        found = errors[kind] if errors is not None and kind in errors else leave_one_out(kind, sources, methods)
        tables = {metric: {m: {g: e for g, e in per_gpu.items() if g != target.id}
                           for m, per_gpu in table.items() if m in methods} for metric, table in found.items()}
        table = {m: per_gpu for m, per_gpu in tables[CHOICE_METRIC].items() if per_gpu}
        best = choose(table)
        if best is None:
            chosen[kind] = {"method": None, "why": "no method could be evaluated on a left-out GPU"}
            continue
        model = methods[best](kind, target, sources)
        rmspes = tables["rmspe"][best]
        model.fit = {**model.fit, "heldout_rmspe_pct": _mean(rmspes),
                     "heldout_method": "leave-one-GPU-out over the measured GPUs (mean RMSPE of the left-out GPUs)"}
        models[kind] = KindModels(model)
        chosen[kind] = {"method": best, "loo_rmspe_pct": dict(rmspes), "mean_loo_rmspe_pct": _mean(rmspes),
                        "loo_weighted_error_pct": dict(table[best]), "mean_loo_weighted_error_pct": _mean(table[best]),
                        "candidates_mean_loo_weighted_error_pct": {m: _mean(e) for m, e in table.items()}}
    runtime = _default_runtime()
    provenance = {
        "source_kind": ESTIMATED,
        "aliases": list(dict.fromkeys([target.id, *target.aliases, target.name])),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "tool": f"npower {__version__} (npower estimate)",
        "spec": f"gpu_specs/{target.id}.yaml", "estimated_from": [s.origin for s in sources],
        "source_gpus": [s.spec.id for s in sources],
        "method": "per op kind, the transfer method with the lowest mean leave-one-GPU-out time-weighted error "
                  f"(sum |predicted - measured| / sum measured over the left-out GPU's samples) among {', '.join(methods)}",
        "per_kind": chosen,
        "power": "none: an estimated pack predicts power only from a measured pack with power of the same "
                 f"architecture ({target.architecture}), and no such pack exists",
    }
    return Pack(name or f"{target.id}-torch2.1-cuda-fp32-estimated", target.device_block(), runtime, models,
                provenance)


def _default_runtime() -> dict[str, Any]:
    """The runtime of the measured rows (PyTorch 2.1 eager, CUDA, fp32: the NeuSight data's)."""
    from .importers.neusight import RUNTIME
    return dict(RUNTIME)


def loo_figures(pack: Pack) -> dict[str, Any]:
    """The whole-model leave-one-GPU-out figures recorded in an estimated pack (empty when none)."""
    validation = pack.provenance.get("validation")
    figures = validation.get("leave_one_gpu_out_whole_model") if isinstance(validation, dict) else None
    return figures if isinstance(figures, dict) else {}


def estimate_note(pack: Pack) -> str:
    """One line for reports: what an estimated pack was made from and how good such estimates were."""
    provenance = pack.provenance
    gpus = provenance.get("source_gpus") or []
    line = (f"ESTIMATED pack (no measurement of this GPU): from its spec sheet and {len(gpus)} measured GPUs "
            f"({', '.join(gpus)})")
    figures = loo_figures(pack)
    if "mean_abs_error_pct" in figures:
        line += (f"; such estimates of left-out GPUs missed whole-model latency by {figures['mean_abs_error_pct']}% "
                 f"on average, {figures.get('max_abs_error_pct')}% at worst ({figures.get('cases')} cases)")
    return line
