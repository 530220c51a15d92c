"""`npower fit`: raw samples -> sparse polynomial models (scikit-learn LassoCV) -> Pack.

Runtimes span four orders of magnitude, so runtime models minimise relative error: either a
polynomial in log2 features fitted on log2(runtime), or the published linear form over raw
and log2 features with every row divided by its measured time. Power models use the published
form with a plain squared error. The form and degree are chosen by held-out error: an outer
k-fold split that the inner LassoCV never sees.
"""
from __future__ import annotations

import datetime as dt
import itertools
import math
import sys
import warnings
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from . import __version__
from .errors import NpowerError
from .pack import Pack, KindModels
from .polynomial import SparsePolynomial, design_matrix
from .profile.store import read_samples

MIN_SAMPLES = 8
MAX_TERMS = 600
# Kinds with many features: the variables the polynomial may combine (others: all that vary).
_CONV_FEATURES = ["batch", "groups", "gemm_m", "gemm_k", "gemm_n", "gemm_calls", "im2col_elems", "kernel_h",
                  "stride_h", "dilation_h", "depthwise", "pointwise", "macs", "in_elems", "weight_elems", "out_elems",
                  "total_bytes", "weight_traffic"]
FIT_FEATURES = {
    "conv": _CONV_FEATURES,
    "conv_1x1": _CONV_FEATURES,
    "conv_dw": _CONV_FEATURES,
    "conv_transpose": ["batch", "in_channels", "out_channels", "groups", "in_h", "out_h", "kernel_h", "stride_h",
                       "macs", "in_elems", "weight_elems", "out_elems"],
    "maxpool": ["batch", "channels", "planes", "in_h", "out_h", "kernel_h", "stride_h", "pad_h", "in_elems",
                "out_elems", "flops"],
    "avgpool": ["batch", "channels", "planes", "in_h", "out_h", "kernel_h", "stride_h", "pad_h", "in_elems",
                "out_elems", "flops"],
}
# Variables that measure amounts of work (most important first), for the work x rate form.
SIZE_FEATURES = ("macs", "flops", "elements", "in_elems", "out_elems", "im2col_elems", "weight_traffic",
                 "weight_elems", "total_bytes", "gemm_calls", "planes")
# Hinges on log2(total bytes) at 1, 4, 16 and 64 MiB: the slope may change where data leaves a cache level.
CACHE_KNOTS = (20, 22, 24, 26)


def rmspe(predicted: np.ndarray, measured: np.ndarray) -> float:
    """Root mean square percentage error, in %."""
    return float(np.sqrt(np.mean(((predicted - measured) / measured) ** 2)) * 100)


def choose_variables(kind: str, columns: dict[str, np.ndarray], log: bool) -> list[str]:
    """Variables that vary: binary features raw, others log2 (log) or raw and log2 (linear targets)."""
    names = FIT_FEATURES.get(kind, list(columns))
    chosen, kept = [], []
    for name in names:
        values = columns.get(name)
        if values is None or np.ptp(values) == 0 or any(_proportional(values, columns[k]) for k in kept):
            continue  # constant, or a fixed multiple of a kept feature (flops = 2 macs, bytes = 4 elements)
        kept.append(name)
        if set(np.unique(values)) <= {0.0, 1.0}:
            chosen.append(name)
        else:
            chosen.append(f"log2({name})")
            if not log:
                chosen.append(name)
    if "total_bytes" in columns:
        top = np.log2(np.maximum(columns["total_bytes"].max(), 1.0))
        chosen += [f"log2over{k}(total_bytes)" for k in CACHE_KNOTS if top > k + 1]
    return chosen


def _proportional(a: np.ndarray, b: np.ndarray) -> bool:
    ratio = a / np.where(b == 0, np.nan, b)
    return bool(np.all(np.isfinite(ratio)) and np.ptp(ratio) <= 1e-9 * abs(ratio[0]))


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
    return variable in ("has_bias", "b_is_weight", "broadcast", "linear", "depthwise", "pointwise")


class _Fitter:
    """Fits one target of one kind with LassoCV on standardised terms; coefficients mapped back.

    target "log2": least squares on log2(y) (relative error by construction).
    target "linear": the published form; with relative=True each row is divided by its measured
    value, so the squared error minimised is the squared relative error.
    """

    def __init__(self, target: str, relative: bool, seed: int):
        self.target, self.relative, self.seed = target, relative, seed

    def _lasso(self, X: np.ndarray, y: np.ndarray, intercept: bool):
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LassoCV
        inner = max(2, min(5, len(y) // 4))
        model = LassoCV(alphas=40, cv=inner, max_iter=20000, tol=1e-4, random_state=self.seed, n_jobs=1,
                        fit_intercept=intercept)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # weakest alphas on the path; CV discards them
            model.fit(X, y)
        return model

    def fit(self, X: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray, float]:
        if self.target == "linear" and self.relative:
            scaled = np.hstack([np.ones((len(y), 1)), X]) / y[:, None]
            std = scaled.std(axis=0)
            std[std == 0] = 1.0
            model = self._lasso(scaled / std, np.ones_like(y), intercept=False)
            coefs = model.coef_ / std
            return float(coefs[0]), coefs[1:], float(model.alpha_)
        mean, std = X.mean(axis=0), X.std(axis=0)
        std[std == 0] = 1.0
        model = self._lasso((X - mean) / std, np.log2(y) if self.target == "log2" else y, intercept=True)
        coefs = model.coef_ / std
        return float(model.intercept_ - np.dot(coefs, mean)), coefs, float(model.alpha_)

    def predict(self, X: np.ndarray, intercept: float, coefs: np.ndarray) -> np.ndarray:
        value = intercept + X @ coefs
        return np.exp2(np.clip(value, -60, 60)) if self.target == "log2" else np.maximum(value, 0.0)

    def heldout_rmspe(self, X: np.ndarray, y: np.ndarray, folds: int) -> float:
        order = np.random.default_rng(self.seed).permutation(len(y))
        predicted = np.empty_like(y)
        for fold in np.array_split(order, folds):
            train = np.setdiff1d(order, fold)
            intercept, coefs, _ = self.fit(X[train], y[train])
            predicted[fold] = self.predict(X[fold], intercept, coefs)
        return rmspe(predicted, y)


def rate_terms(variables: list[str], degree: int) -> list[dict[str, int]]:
    """Work x rate: every size variable alone and times each modulator (log feature, flag, hinge);
    with degree 2 the dominant size also takes the degree-2 monomials of the modulators.
    T = sum_s size_s * (a_s + sum_m b_sm * m + ...): time is work times a cost per unit of work
    that depends on the layer's shape."""
    sizes = [v for v in SIZE_FEATURES if v in variables]
    modulators = [v for v in variables if v.startswith("log2") or _is_flag(v)]
    terms = [{size: 1} for size in sizes] + [{size: 1, mod: 1} for size in sizes for mod in modulators]
    if degree > 1 and sizes:
        terms += [{sizes[0]: 1, **m} for m in monomials(modulators, degree) if sum(m.values()) == degree]
    return terms


def _candidates(kind: str, columns: dict[str, np.ndarray], log_target: bool, max_degree: int):
    """(label, target, relative, degree, terms) model forms to compare by held-out error."""
    forms = []
    raw = choose_variables(kind, columns, log=False)
    if log_target:
        variables = choose_variables(kind, columns, log=True)
        forms += [(f"log2-poly-{d}", "log2", False, d, monomials(variables, d)) for d in range(1, max_degree + 1)]
        forms += [(f"linear-rel-{d}", "linear", True, d, monomials(raw, d)) for d in range(1, min(2, max_degree) + 1)]
        forms += [(f"rate-{d}", "linear", True, d, rate_terms(raw, d)) for d in range(1, min(2, max_degree) + 1)]
    else:
        forms += [(f"linear-{d}", "linear", False, d, monomials(raw, d)) for d in range(1, min(2, max_degree) + 1)]
    for label, target, relative, degree, terms in forms:
        if terms and len(terms) <= MAX_TERMS:
            yield label, target, relative, degree, terms


def fit_target(kind: str, rows: list[dict], y: np.ndarray, log_target: bool, unit: str, folds: int,
               max_degree: int, seed: int) -> SparsePolynomial:
    """Choose the model form and degree by held-out RMSPE, refit on everything, return the model."""
    columns = {name: np.array([row[name] for row in rows], dtype=float) for name in rows[0]}
    folds = max(2, min(folds, len(y) // 3))
    best = None
    tried = {}
    for label, target, relative, degree, terms in _candidates(kind, columns, log_target, max_degree):
        fitter = _Fitter(target, relative, seed)
        error = fitter.heldout_rmspe(design_matrix(terms, columns), y, folds)
        tried[label] = round(error, 2)
        if best is None or error < best[0]:
            best = (error, label, fitter, degree, terms)
    if best is None:
        raise NpowerError(f"{kind}: no usable features to fit")
    error, label, fitter, degree, terms = best
    X = design_matrix(terms, columns)
    intercept, coefs, alpha = fitter.fit(X, y)
    kept = [(float(c), t) for c, t in zip(coefs, terms) if c != 0.0]
    in_sample = rmspe(fitter.predict(X, intercept, coefs), y)
    fit_info = {"form": label, "degree": degree, "heldout_rmspe_pct": round(error, 2),
                "insample_rmspe_pct": round(in_sample, 2),
                "heldout_method": f"{folds}-fold cross-validation (outer), LassoCV inside", "samples": len(y),
                "model_size": len(kept) + 1, "alpha": alpha, "forms_tried": tried}
    return SparsePolynomial(fitter.target, unit, intercept, kept, fit_info)


def current_layer(row: dict[str, Any]) -> tuple[str, dict[str, float]]:
    """A sample's op kind and features from its config with today's extractors (stored ones if it no longer builds)."""
    from .features import FREE, UNKNOWN, UNRESOLVED, extract
    from .graph import load_graph
    from .profile.build import build_model
    try:
        layer = extract(load_graph(build_model(row["config"])).nodes[0])
        if layer.kind not in (FREE, UNKNOWN, UNRESOLVED):
            return layer.kind, layer.values()
    except (NpowerError, KeyError, TypeError, ValueError):
        pass
    return row["kind"], {**row["features"], **row["specials"]}


def fit_pack(samples_path: str, name: str, folds: int = 5, max_degree: int = 3, seed: int = 0,
             log: TextIO = sys.stderr) -> tuple[Pack, list[dict[str, Any]]]:
    """Fit every kind in a sample file into a Pack; returns the pack and a per-kind summary table."""
    data = read_samples(samples_path)
    for number, reason in data.bad_rows:
        print(f"warning: {samples_path}:{number}: skipped corrupt row ({reason})", file=log)
    if not data.header:
        raise NpowerError(f"{samples_path}: no header row (not written by `npower profile`?)")
    by_kind: dict[str, list[tuple[dict[str, Any], dict[str, float]]]] = {}
    for row in data.samples:
        if not row.get("error"):
            kind, values = current_layer(row)
            by_kind.setdefault(kind, []).append((row, values))
    models: dict[str, KindModels] = {}
    table, counts, ranges = [], {}, {}
    for kind in sorted(by_kind):
        good = [row for row, _ in by_kind[kind]]
        rows = [values for _, values in by_kind[kind]]
        counts[kind] = len(good)
        if len(good) < MIN_SAMPLES:
            print(f"warning: {kind}: only {len(good)} good samples, not fitted", file=log)
            continue
        runtime = fit_target(kind, rows, np.array([row["median_ms"] for row in good]), True, "ms",
                             folds, max_degree, seed)
        power = None
        watts = [row.get("watts") for row in good]
        if all(w is not None and w > 0 for w in watts):
            power = fit_target(kind, rows, np.array(watts, dtype=float), False, "W", folds, min(2, max_degree), seed)
        models[kind] = KindModels(runtime, power)
        ranges[kind] = {f: [min(r[f] for r in rows), max(r[f] for r in rows)] for f in rows[0]}
        table.append({"kind": kind, "samples": len(good), "form": runtime.fit["form"],
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
    lines = [f"{'kind':16s} {'samples':>7s} {'form':>13s} {'size':>4s} {'held-out RMSPE':>15s} {'in-sample':>9s} "
             f"{'power':>7s}"]
    for row in table:
        power = "-" if row["power_heldout"] is None else f"{row['power_heldout']:.1f}%"
        lines.append(f"{row['kind']:16s} {row['samples']:7d} {row['form']:>13s} {row['size']:4d} "
                     f"{row['heldout']:14.1f}% {row['insample']:8.1f}% {power:>7s}")
    weights = [row["samples"] for row in table]
    if weights:
        mean = math.fsum(r["heldout"] * r["samples"] for r in table) / sum(weights)
        lines.append(f"{'all (weighted)':16s} {sum(weights):7d} {'':13s} {'':4s} {mean:14.1f}%")
    return "\n".join(lines)
