"""`npower fit`: raw samples -> sparse polynomial models (scikit-learn LassoCV) -> Pack.

Runtime models are fitted on log2(runtime) over log2-transformed features, so a squared
error fit minimises relative error (runtimes span four orders of magnitude). Power models
use the published form: linear target over raw and log2 features. The polynomial degree is
chosen by held-out error: an outer k-fold split that the inner LassoCV never sees.
"""
from __future__ import annotations

import datetime as dt
import itertools
import math
import sys
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from . import __version__
from .errors import NpowerError
from .pack import Pack, KindModels
from .polynomial import SparsePolynomial, design_matrix
from .profile.store import iter_kind, read_samples

MIN_SAMPLES = 8
MAX_TERMS = 600
# Kinds with many features: the variables the polynomial may combine (others: all that vary).
FIT_FEATURES = {
    "conv": ["batch", "in_channels", "out_channels", "groups", "in_h", "out_h", "out_w", "kernel_h", "stride_h",
             "dilation_h", "macs", "in_elems", "weight_elems", "out_elems"],
    "conv_transpose": ["batch", "in_channels", "out_channels", "groups", "in_h", "out_h", "kernel_h", "stride_h",
                       "macs", "in_elems", "weight_elems", "out_elems"],
    "maxpool": ["batch", "channels", "in_h", "out_h", "kernel_h", "stride_h", "pad_h", "in_elems", "out_elems"],
    "avgpool": ["batch", "channels", "in_h", "out_h", "kernel_h", "stride_h", "pad_h", "in_elems", "out_elems"],
}
REDUNDANT = {"flops", "in_bytes", "weight_bytes", "out_bytes"}  # fixed multiples of macs/elements at one dtype


def rmspe(predicted: np.ndarray, measured: np.ndarray) -> float:
    """Root mean square percentage error, in %."""
    return float(np.sqrt(np.mean(((predicted - measured) / measured) ** 2)) * 100)


def choose_variables(kind: str, columns: dict[str, np.ndarray], log: bool) -> list[str]:
    """Variables that vary: binary features raw, others log2 (and raw too for linear targets)."""
    names = FIT_FEATURES.get(kind, [n for n in columns if n not in REDUNDANT])
    chosen = []
    for name in names:
        values = columns.get(name)
        if values is None or np.ptp(values) == 0:
            continue
        if set(np.unique(values)) <= {0.0, 1.0}:
            chosen.append(name)
        else:
            chosen.append(f"log2({name})")
            if not log:
                chosen.append(name)
    return chosen


def monomials(variables: list[str], degree: int) -> list[dict[str, int]]:
    """All monomials up to `degree` (binary variables only to the first power)."""
    terms = []
    for d in range(1, degree + 1):
        for combo in itertools.combinations_with_replacement(variables, d):
            powers: dict[str, int] = {}
            for v in combo:
                powers[v] = powers.get(v, 0) + 1
            if any(p > 1 and not v.startswith("log2(") and _is_flag(v) for v, p in powers.items()):
                continue
            terms.append(powers)
    return terms


def _is_flag(variable: str) -> bool:
    return variable in ("has_bias", "b_is_weight", "broadcast", "linear")


class _Fitter:
    """Fits one target of one kind: standardised LassoCV, coefficients mapped back to raw terms."""

    def __init__(self, terms: list[dict[str, int]], log_target: bool, seed: int):
        self.terms, self.log_target, self.seed = terms, log_target, seed

    def _lasso(self, X: np.ndarray, y: np.ndarray):
        from sklearn.linear_model import LassoCV
        inner = max(2, min(5, len(y) // 4))
        model = LassoCV(alphas=40, cv=inner, max_iter=20000, tol=1e-4, random_state=self.seed, n_jobs=1)
        model.fit(X, y)
        return model

    def fit(self, X: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray, float]:
        mean, std = X.mean(axis=0), X.std(axis=0)
        std[std == 0] = 1.0
        model = self._lasso((X - mean) / std, self._target(y))
        coefs = model.coef_ / std
        return float(model.intercept_ - np.dot(coefs, mean)), coefs, float(model.alpha_)

    def _target(self, y: np.ndarray) -> np.ndarray:
        return np.log2(y) if self.log_target else y

    def predict(self, X: np.ndarray, intercept: float, coefs: np.ndarray) -> np.ndarray:
        value = intercept + X @ coefs
        return np.exp2(np.clip(value, -60, 60)) if self.log_target else np.maximum(value, 0.0)

    def heldout_rmspe(self, X: np.ndarray, y: np.ndarray, folds: int) -> float:
        order = np.random.default_rng(self.seed).permutation(len(y))
        predicted = np.empty_like(y)
        for fold in np.array_split(order, folds):
            train = np.setdiff1d(order, fold)
            intercept, coefs, _ = self.fit(X[train], y[train])
            predicted[fold] = self.predict(X[fold], intercept, coefs)
        return rmspe(predicted, y)


def fit_target(kind: str, rows: list[dict], y: np.ndarray, log_target: bool, unit: str, folds: int,
               max_degree: int, seed: int) -> SparsePolynomial:
    """Choose the degree by held-out RMSPE, refit on everything, return the sparse model."""
    columns = {name: np.array([row[name] for row in rows], dtype=float) for name in rows[0]}
    variables = choose_variables(kind, columns, log_target)
    folds = max(2, min(folds, len(y) // 3))
    best: tuple[float, int, list] | None = None
    tried = {}
    for degree in range(1, max_degree + 1):
        terms = monomials(variables, degree)
        if not terms or len(terms) > MAX_TERMS:
            break
        fitter = _Fitter(terms, log_target, seed)
        X = design_matrix(terms, columns)
        error = fitter.heldout_rmspe(X, y, folds)
        tried[degree] = round(error, 2)
        if best is None or error < best[0] - 0.25:
            best = (error, degree, terms)
    if best is None:
        raise NpowerError(f"{kind}: no usable features to fit")
    error, degree, terms = best
    fitter = _Fitter(terms, log_target, seed)
    X = design_matrix(terms, columns)
    intercept, coefs, alpha = fitter.fit(X, y)
    kept = [(float(c), t) for c, t in zip(coefs, terms) if c != 0.0]
    in_sample = rmspe(fitter.predict(X, intercept, coefs), y)
    fit_info = {"degree": degree, "heldout_rmspe_pct": round(error, 2), "insample_rmspe_pct": round(in_sample, 2),
                "heldout_method": f"{folds}-fold cross-validation (outer), LassoCV inside", "samples": len(y),
                "model_size": len(kept) + 1, "alpha": alpha, "degrees_tried": tried}
    return SparsePolynomial("log2" if log_target else "linear", unit, intercept, kept, fit_info)


def fit_pack(samples_path: str, name: str, folds: int = 5, max_degree: int = 3, seed: int = 0,
             log: TextIO = sys.stderr) -> tuple[Pack, list[dict[str, Any]]]:
    """Fit every kind in a sample file into a Pack; returns the pack and a per-kind summary table."""
    data = read_samples(samples_path)
    for number, reason in data.bad_rows:
        print(f"warning: {samples_path}:{number}: skipped corrupt row ({reason})", file=log)
    if not data.header:
        raise NpowerError(f"{samples_path}: no header row (not written by `npower profile`?)")
    kinds = sorted({row["kind"] for row in data.samples})
    models: dict[str, KindModels] = {}
    table, counts, ranges = [], {}, {}
    for kind in kinds:
        good = list(iter_kind(data.samples, kind))
        counts[kind] = len(good)
        if len(good) < MIN_SAMPLES:
            print(f"warning: {kind}: only {len(good)} good samples, not fitted", file=log)
            continue
        rows = [{**row["features"], **row["specials"]} for row in good]
        runtime = fit_target(kind, rows, np.array([row["median_ms"] for row in good]), True, "ms",
                             folds, max_degree, seed)
        power = None
        watts = [row.get("watts") for row in good]
        if all(w is not None and w > 0 for w in watts):
            power = fit_target(kind, rows, np.array(watts, dtype=float), False, "W", folds, min(2, max_degree), seed)
        models[kind] = KindModels(runtime, power)
        ranges[kind] = {f: [min(r["features"][f] for r in good), max(r["features"][f] for r in good)]
                        for f in good[0]["features"]}
        table.append({"kind": kind, "samples": len(good), "degree": runtime.fit["degree"],
                      "size": runtime.fit["model_size"], "heldout": runtime.fit["heldout_rmspe_pct"],
                      "insample": runtime.fit["insample_rmspe_pct"],
                      "power_heldout": power.fit["heldout_rmspe_pct"] if power else None,
                      "power_size": power.fit["model_size"] if power else None})
        print(f"fitted {kind}: {len(good)} samples, held-out RMSPE {runtime.fit['heldout_rmspe_pct']:.1f} %", file=log)
    header = data.header
    provenance = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "tool": f"npower {__version__} (npower profile + npower fit)",
        "measured": header.get("created"),
        "samples_file": Path(samples_path).name,
        "samples_total": sum(counts.values()),
        "failed_samples": sum(1 for row in data.samples if row.get("error")),
        "sample_counts": counts,
        "sampled_ranges": ranges,
        "timing": header.get("timing"),
        "fit": {"runtime": "LassoCV on log2(ms) over log2 features, degree by held-out RMSPE",
                "power": "LassoCV on W over raw and log2 features (published form)", "folds": folds, "seed": seed},
    }
    device = {k: v for k, v in header.get("device", {}).items()}
    pack = Pack(name, device, header.get("runtime", {}), models, provenance)
    return pack, table


def format_fit_table(table: list[dict[str, Any]]) -> str:
    """Per-kind fit summary: samples, degree, model size, held-out and in-sample RMSPE."""
    lines = [f"{'kind':16s} {'samples':>7s} {'deg':>3s} {'size':>4s} {'held-out RMSPE':>15s} {'in-sample':>9s} {'power':>7s}"]
    for row in table:
        power = "-" if row["power_heldout"] is None else f"{row['power_heldout']:.1f}%"
        lines.append(f"{row['kind']:16s} {row['samples']:7d} {row['degree']:3d} {row['size']:4d} "
                     f"{row['heldout']:14.1f}% {row['insample']:8.1f}% {power:>7s}")
    weights = [row["samples"] for row in table]
    if weights:
        mean = math.fsum(r["heldout"] * r["samples"] for r in table) / sum(weights)
        lines.append(f"{'all (weighted)':16s} {sum(weights):7d} {'':3s} {'':4s} {mean:14.1f}%")
    return "\n".join(lines)
