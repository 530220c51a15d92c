"""`npower fit`: raw samples -> sparse polynomial models (scikit-learn LassoCV) -> Pack.

Runtimes span four orders of magnitude, so runtime models minimise relative error: either a
polynomial in log2 features fitted on log2(runtime), or the published linear form over raw
and log2 features with every row divided by its measured time. Power models use the published
form with a plain squared error. The form and degree are chosen by k-fold cross-validation
(LassoCV, or RidgeCV for dense forms over many terms, inside each fold). The reported held-out
error is nested: every outer fold chooses the form again on its training part only, so the
figure is the error of the whole procedure on data it never saw, not of the winner on the folds
that chose it. Kinds that run as GEMMs on a GPU also see device features (tiles, waves) derived
from the device block by `npower.device_features`, the same function predict uses.
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
from .device_features import derive as derive_device_features, names as device_feature_names
from .errors import NpowerError
from .features_nchwc import BANDS, TRAFFIC
from .pack import Pack, KindModels
from .polynomial import RateEnvelope, SparsePolynomial, design_matrix, variable_feature, variable_values
from .profile.cache_state import (BETWEEN_STATES_KINDS, GRAPH_EDGE_KINDS, GRAPH_INPUT, STEADY, base_kind,
                                  graph_input_kind, steady_kind, steady_state_kinds)
from .profile.repeats import (PooledSample, check_poolable, pool_with_offsets, pooled_device, repeat_noise_pct,
                              sample_identity, trace_overheads)
from .profile.run_offsets import MIN_SHARED
from .profile.store import SampleFile, read_samples

MIN_SAMPLES = 8
MAX_TERMS = 600        # LassoCV forms
RIDGE_MAX_TERMS = 1000  # dense RidgeCV forms (closed form: cheap with many terms)
MAX_SELECT = 2000      # rows used to choose the form and to measure the nested held-out error
INNER_FOLDS = 3
# Kinds with many features: the variables the polynomial may combine (others: all that vary).
_CONV_FEATURES = ["batch", "groups", "gemm_m", "gemm_k", "gemm_n", "gemm_calls", "im2col_elems", "kernel_h",
                  "stride_h", "dilation_h", "depthwise", "pointwise", "macs", "in_elems", "weight_elems", "out_elems",
                  "total_bytes", "weight_traffic"]
# the plain (im2col) convolution's strided gather, fixed setup cost (features._conv_as_gemm) and row loop with its
# element-wise padding (features._im2col_loops)
_IM2COL_FEATURES = ["im2col_strided", "window_setup", "im2col_rows", "im2col_edge"]
# MLAS's blocked conv kernel (features_nchwc.kernel_steps; absent from the depthwise kinds)
_MLAS_FEATURES = [f"{group}_{unit}" for group in ("main", "rest", "padded") for unit in ("steps", "fmas")] + \
    [f"{name}_{band}" for name in TRAFFIC for band, _ in BANDS] + ["input_read"]
# where the input's first read comes from: the pointwise kernel, a few multiply-adds per input byte, streams it
_FIRST_READS = [f"input_read_{band}" for band, _ in BANDS]
_NCHWC_FEATURES = ["valid_macs", "weight_touched", "row_calls", "out_w"] + _MLAS_FEATURES + _CONV_FEATURES
_GEMM_FEATURES = ["batch", "m", "k", "n", "has_bias", "b_is_weight", "total_bytes"]
FIT_FEATURES = {
    "conv": _CONV_FEATURES + _IM2COL_FEATURES + device_feature_names("conv"),
    "gemm": _GEMM_FEATURES + device_feature_names("gemm"),
    "matmul": _GEMM_FEATURES + device_feature_names("matmul"),
    "conv_1x1": _CONV_FEATURES + ["window_setup"] + device_feature_names("conv_1x1"),  # nothing gathered: no stride
    # depthwise: MACs are the column elements times the channel multiplier (nearly always 1; direct 1x1
    # aside) and the weights a few KB; with them the sum-of-work form split one cost between two names
    "conv_dw": [f for f in _CONV_FEATURES if f not in ("macs", "weight_elems", "weight_traffic")] + _IM2COL_FEATURES,
    **dict.fromkeys(("nchwc_conv", "nchwc_conv_dw", "nchwc_conv_nchw"), _NCHWC_FEATURES),
    # a per-channel scale in the blocked layout: a stream over the tensor, a kernel call per row of 16 channels
    "nchwc_conv_dw_1x1": ["batch", "groups", "out_w", "stride_h", "row_calls", "in_elems", "out_elems", "total_bytes"],
    "nchwc_conv_1x1": [f for f in _NCHWC_FEATURES if f != "input_read"] + _FIRST_READS,  # input_read: their sum
    # onnxruntime's GEMM into a column buffer and col2im's adds from it (features._conv_transpose); of the SGEMM's
    # paths its panels only: the GEMV flag (a 1x1 input map, a few samples) let one outer fold's form blow up
    "conv_transpose": ["batch", "in_channels", "out_channels", "groups", "in_h", "out_h", "kernel_h", "stride_h",
                       "macs", "in_elems", "weight_elems", "out_elems", "gemm_m", "gemm_k", "gemm_n", "gemm_calls",
                       "col_elems", "sgemm_macs"],
    "maxpool": ["batch", "channels", "planes", "in_h", "out_h", "kernel_h", "stride_h", "pad_h", "in_elems",
                "out_elems", "flops"],
    "avgpool": ["batch", "channels", "planes", "in_h", "out_h", "kernel_h", "stride_h", "pad_h", "in_elems",
                "out_elems", "flops"],
}
# Variables that measure amounts of work (most important first), for the work x rate form.
SIZE_FEATURES = ("valid_macs", "macs", "flops", "elements", "in_elems", "out_elems", "im2col_elems", "col_elems",
                 "weight_traffic", "weight_elems", "total_bytes", "gemm_calls", "row_calls", "planes", "sgemm_macs")
# Amounts a sum-of-work form may charge a time for: the sizes, the kernels' own counts of steps and reads,
# and per-call or per-piece counts (flags add a fixed cost); not shapes (a kernel height is no amount of work).
WORK_AMOUNTS = SIZE_FEATURES + ("im2col_strided", "im2col_rows", "im2col_edge", "weight_touched", "rows", "outer",
                                "pieces", "inputs", "spans", *_MLAS_FEATURES, *_FIRST_READS)
# Hinges on log2(total bytes) at 1, 4, 16 and 64 MiB: the slope may change where data leaves a cache level.
CACHE_KNOTS = (20, 22, 24, 26)


def rmspe(predicted: np.ndarray, measured: np.ndarray) -> float:
    """Root mean square percentage error, in %."""
    return float(np.sqrt(np.mean(((predicted - measured) / measured) ** 2)) * 100)


def choose_variables(kind: str, columns: dict[str, np.ndarray], log: bool) -> list[str]:
    """Variables that vary: flags raw, others log2 (log) or raw and log2 (linear targets).
    With log=True a feature whose log2 is a sum of kept ones' (macs = m n k) adds nothing and is left out.
    A count that is only 0 or 1 in the samples (weight_elems of a scalar operand) is left out too: its log2 is
    constant, and taken raw it would extrapolate wildly to a model's count (a 1024 x 1024 mask operand)."""
    names = FIT_FEATURES.get(base_kind(kind), list(columns))
    chosen, kept, logs = [], [], []
    for name in names:
        values = columns.get(name)
        if values is None or np.ptp(values) == 0 or any(_proportional(values, columns[k]) for k in kept):
            continue  # constant, or a fixed multiple of a kept feature (flops = 2 macs, bytes = 4 elements)
        binary = set(np.unique(values)) <= {0.0, 1.0}
        if binary and not _is_flag(name):
            continue
        if log and not binary and _log_combination(values, logs):
            continue
        kept.append(name)
        if binary:
            chosen.append(name)
        else:
            logs.append(np.log2(np.maximum(values, 1.0)))
            chosen.append(f"log2({name})")
            if not log:
                chosen.append(name)
    if "total_bytes" in columns:
        top = np.log2(np.maximum(columns["total_bytes"].max(), 1.0))
        chosen += [f"log2over{k}(total_bytes)" for k in CACHE_KNOTS if top > k + 1]
    return chosen


def _log_combination(values: np.ndarray, logs: list[np.ndarray]) -> bool:
    """Is log2(values) an affine combination of the given log columns?"""
    if not logs:
        return False
    A = np.column_stack([np.ones(len(values)), *logs])
    target = np.log2(np.maximum(values, 1.0))
    solution = np.linalg.lstsq(A, target, rcond=None)[0]
    return bool(np.max(np.abs(A @ solution - target)) < 1e-6)


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
    return variable in ("has_bias", "b_is_weight", "broadcast", "linear", "depthwise", "pointwise", "window_setup",
                        "gemm_single_row", "gemm_single_column")


class _RidgeGCV:
    """Ridge regression with an intercept, the penalty chosen by generalised cross-validation: one eigen-
    decomposition of X'X serves every penalty (cheap for thousands of rows and up to ~1000 terms)."""

    ALPHAS = np.logspace(-2, 3, 6)

    def __init__(self, X: np.ndarray, y: np.ndarray):
        x_mean, y_mean = X.mean(axis=0), y.mean()
        Xc, yc = X - x_mean, y - y_mean
        values, vectors = np.linalg.eigh(Xc.T @ Xc)
        values = np.maximum(values, 0.0)
        projected = vectors.T @ (Xc.T @ yc)
        best = None
        for alpha in self.ALPHAS:
            coef = vectors @ (projected / (values + alpha))
            dof = float(np.sum(values / (values + alpha)))
            gcv = float(np.mean((yc - Xc @ coef) ** 2)) / max(1.0 - dof / len(y), 1e-9) ** 2
            if best is None or gcv < best[0]:
                best = (gcv, alpha, coef)
        _, self.alpha_, self.coef_ = best
        self.intercept_ = float(y_mean - x_mean @ self.coef_)


class _Fitter:
    """Fits one target of one kind with LassoCV on standardised terms; coefficients mapped back.

    target "log2": least squares on log2(y) (relative error by construction).
    target "linear": the published form; with relative=True each row is divided by its measured
    value, so the squared error minimised is the squared relative error.
    """

    def __init__(self, target: str, relative: bool, seed: int, solver: str = "lasso"):
        self.target, self.relative, self.seed, self.solver = target, relative, seed, solver

    def _regression(self, X: np.ndarray, y: np.ndarray, intercept: bool):
        if self.solver == "ridge":
            return _RidgeGCV(X, y)
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LassoCV
        inner = max(2, min(5, len(y) // 4))
        model = LassoCV(alphas=40, cv=inner, max_iter=20000, tol=1e-4, random_state=self.seed, n_jobs=1,
                        fit_intercept=intercept, positive=self.solver == "non-negative")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # weakest alphas on the path; CV discards them
            model.fit(X, y)
        return model

    def fit(self, X: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray, float]:
        if self.target == "linear" and self.relative:
            scaled = np.hstack([np.ones((len(y), 1)), X]) / y[:, None]
            std = scaled.std(axis=0)
            std[std == 0] = 1.0
            model = self._regression(scaled / std, np.ones_like(y), intercept=False)
            coefs = model.coef_ / std
            return float(coefs[0]), coefs[1:], float(model.alpha_)
        mean, std = X.mean(axis=0), X.std(axis=0)
        std[std == 0] = 1.0
        model = self._regression((X - mean) / std, np.log2(y) if self.target == "log2" else y, intercept=True)
        coefs = model.coef_ / std
        return float(model.intercept_ - np.dot(coefs, mean)), coefs, float(model.alpha_)

    @property
    def method(self) -> str:
        return {"ridge": "ridge (GCV)", "non-negative": "LassoCV (non-negative)"}.get(self.solver, "LassoCV")

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


FAMILIES = ("lasso", "ridge")


def _candidates(kind: str, columns: dict[str, np.ndarray], log_target: bool, max_degree: int,
                family: str = "lasso"):
    """(label, fitter, degree, terms) model forms to compare by held-out error.

    family "lasso": sparse forms (log2 polynomial, published linear form with relative error, work x rate, and a
    sum of amounts of work each costing a non-negative time: a kernel's parts add up and none saves time);
    family "ridge": dense log2 polynomials up to `max_degree` (for large data sets whose time depends on
    interactions of many shape features, such as GPU GEMMs)."""
    forms = []
    raw = choose_variables(kind, columns, log=False)
    if family == "ridge" and log_target:
        variables = choose_variables(kind, columns, log=True)
        forms += [(f"log2-ridge-{d}", "log2", False, d, monomials(variables, d), "ridge", RIDGE_MAX_TERMS)
                  for d in range(1, max_degree + 1)]
    elif log_target:
        variables = choose_variables(kind, columns, log=True)
        forms += [(f"log2-poly-{d}", "log2", False, d, monomials(variables, d)) for d in range(1, max_degree + 1)]
        forms += [(f"linear-rel-{d}", "linear", True, d, monomials(raw, d)) for d in range(1, min(2, max_degree) + 1)]
        forms += [(f"rate-{d}", "linear", True, d, rate_terms(raw, d)) for d in range(1, min(2, max_degree) + 1)]
        amounts = [v for v in raw if v in WORK_AMOUNTS or _is_flag(v)]
        forms.append(("work-1", "linear", True, 1, monomials(amounts, 1), "non-negative", MAX_TERMS))
    else:
        forms += [(f"linear-{d}", "linear", False, d, monomials(raw, d)) for d in range(1, min(2, max_degree) + 1)]
    for label, target, relative, degree, terms, *solver in forms:
        name, limit = solver if solver else ("lasso", MAX_TERMS)
        if terms and len(terms) <= limit:
            yield label, _Fitter(target, relative, 0, name), degree, terms


def _design(terms: list[dict[str, int]], columns: dict[str, np.ndarray], rows: np.ndarray,
            bounds: dict[str, tuple[float, float]] | None = None) -> np.ndarray:
    """Design matrix of the given rows (the values `SparsePolynomial` evaluates, within `bounds`)."""
    features = {variable_feature(v) for powers in terms for v in powers}
    return design_matrix(terms, {f: columns[f][rows] for f in features}, bounds)


def log_bounds(fitter: "_Fitter", terms: list[dict[str, int]], columns: dict[str, np.ndarray],
               rows: np.ndarray) -> dict[str, tuple[float, float]]:
    """For a linear-target form, each log variable's range over the rows it is fitted on: beyond them the model
    keeps the shape effects at the edge of what was measured (`SparsePolynomial.bounds`); none for log2 targets,
    whose log variables are the sizes that scale the time."""
    if fitter.target != "linear":
        return {}
    variables = {v for powers in terms for v in powers if v.startswith("log2")}
    values = {v: variable_values(v, {variable_feature(v): columns[variable_feature(v)][rows]}) for v in variables}
    return {v: (float(array.min()), float(array.max())) for v, array in values.items()}


def _select(forms: list, columns: dict[str, np.ndarray], y: np.ndarray, rows: np.ndarray, folds: int,
            seed: int) -> tuple[tuple, dict[str, float]]:
    """The form with the lowest k-fold RMSPE on `rows`, and every form's error."""
    tried, best = {}, None
    for form in forms:
        label, fitter, _, terms = form
        fitter.seed = seed
        error = fitter.heldout_rmspe(_design(terms, columns, rows), y[rows], folds)
        tried[label] = round(error, 2)
        if best is None or error < best[0]:
            best = (error, form)
    if best is None:
        raise NpowerError("no usable features to fit")
    return best[1], tried


def work_feature(columns: dict[str, np.ndarray]) -> str | None:
    """The first amount of work (`SIZE_FEATURES`) every row has some of: what a runtime model's rates are per."""
    return next((name for name in SIZE_FEATURES if name in columns and np.all(columns[name] > 0)), None)


def rate_bounds(feature: str | None, columns: dict[str, np.ndarray], y: np.ndarray,
                rows: np.ndarray) -> RateEnvelope | None:
    """The rows' time per unit of the feature by size band (`SparsePolynomial.rates`); None without a feature."""
    return None if feature is None else RateEnvelope.fitted(feature, columns[feature][rows], y[rows])


def nested_heldout(forms: list, columns: dict[str, np.ndarray], y: np.ndarray, rows: np.ndarray, folds: int,
                   seed: int, work: str | None = None) -> float:
    """Held-out RMSPE of the whole procedure (choose the form by inner CV, fit it, bound it: `log_bounds`, and with a
    `work` feature `rate_bounds`) on outer folds it never saw."""
    order = np.random.default_rng(seed + 1).permutation(rows)
    predicted = np.empty(len(y))
    for fold in np.array_split(order, folds):
        train = np.setdiff1d(order, fold)
        (_, fitter, _, terms), _ = _select(forms, columns, y, train, INNER_FOLDS, seed)
        intercept, coefs, _ = fitter.fit(_design(terms, columns, train), y[train])
        bounds = log_bounds(fitter, terms, columns, train)
        predicted[fold] = fitter.predict(_design(terms, columns, fold, bounds), intercept, coefs)
        rates = rate_bounds(work, columns, y, train)
        if rates is not None:
            predicted[fold] = rates.clip(predicted[fold], {work: columns[work][fold]})
    return rmspe(predicted[order], y[order])


def fit_target(kind: str, rows: list[dict], y: np.ndarray, log_target: bool, unit: str, folds: int,
               max_degree: int, seed: int, family: str = "lasso") -> SparsePolynomial:
    """Choose the model form by k-fold RMSPE, measure the procedure's error by nested CV, refit on everything.

    Choice and nested error use at most MAX_SELECT rows (a seeded subsample); the final model sees all rows."""
    columns = {name: np.array([row[name] for row in rows], dtype=float) for name in rows[0]}
    every = np.arange(len(y))
    subset = np.sort(np.random.default_rng(seed).permutation(every)[:MAX_SELECT])
    folds = max(2, min(folds, len(subset) // 3))
    forms = list(_candidates(kind, columns, log_target, max_degree, family))
    try:
        (label, fitter, degree, terms), tried = _select(forms, columns, y, subset, folds, seed)
    except NpowerError:
        raise NpowerError(f"{kind}: no usable features to fit") from None
    work = work_feature(columns) if log_target else None  # runtime models only: watts are no rate of work
    error = nested_heldout(forms, columns, y, subset, folds, seed, work)
    X = _design(terms, columns, every)
    intercept, coefs, alpha = fitter.fit(X, y)
    kept = [(float(c), t) for c, t in zip(coefs, terms) if c != 0.0]
    rates = rate_bounds(work, columns, y, every)
    fitted = fitter.predict(X, intercept, coefs)
    in_sample = rmspe(fitted if rates is None else rates.clip(fitted, columns), y)
    fit_info = {"form": label, "degree": degree, "heldout_rmspe_pct": round(error, 2),
                "insample_rmspe_pct": round(in_sample, 2),
                "heldout_method": f"nested cross-validation: {folds} outer folds over {len(subset)} rows, the form "
                                  f"chosen again in each by {INNER_FOLDS}-fold CV on its training part only"
                                  + (" and its log variables bounded to that part's range" if fitter.target == "linear"
                                     else "")
                                  + (f" and its time within {RateEnvelope.MARGIN:g}x of that part's rates per {work} "
                                     "by size band" if work else ""),
                "fitted": f"{label} by {fitter.method} on log2({unit})" if fitter.target == "log2" else
                          f"{label} by {fitter.method} on {unit}" + (" (relative error)" if fitter.relative else ""),
                "samples": len(y), "model_size": len(kept) + 1, "alpha": alpha,
                "forms_tried": {"selection_rmspe_pct": tried, "rows": len(subset), "folds": folds}}
    bounds = log_bounds(fitter, [powers for _, powers in kept], columns, every)
    return SparsePolynomial(fitter.target, unit, intercept, kept, fit_info, bounds, rates)


def current_layer(row: dict[str, Any]) -> tuple[str, dict[str, float]]:
    """A sample's op kind and features from its config with today's extractors (stored ones if it no longer builds);
    a kernel timed reading a graph input from memory has its kind's graph-input variant, one timed in a steady loop its
    steady variant (`cache_state`)."""
    kind, values = _extracted_layer(row)
    if row.get("graph_input"):
        kind = graph_input_kind(kind)
    return (steady_kind(kind) if row.get("cache_state") == "steady" else kind), values


def _extracted_layer(row: dict[str, Any]) -> tuple[str, dict[str, float]]:
    from .features import FREE, UNKNOWN, UNRESOLVED, extract
    from .profile.build import configured_node
    try:
        layer = extract(configured_node(row["config"]))
        if layer.kind not in (FREE, UNKNOWN, UNRESOLVED):
            return layer.kind, layer.values()
    except (NpowerError, KeyError, TypeError, ValueError):
        pass
    return row["kind"], {**row["features"], **row["specials"]}


def fit_pack(samples_paths: list[str], name: str, folds: int = 5, max_degree: int = 3, seed: int = 0,
             log: TextIO = sys.stderr, family: str = "lasso") -> tuple[Pack, list[dict[str, Any]]]:
    """Fit every kind of one or more sample files (repeated profiles of one runtime, pooled) into a Pack;
    returns the pack and a per-kind summary table."""
    runs = []
    for path in samples_paths:
        data = read_samples(path)
        for number, reason in data.bad_rows:
            print(f"warning: {path}:{number}: skipped corrupt row ({reason})", file=log)
        if not data.header:
            raise NpowerError(f"{path}: no header row (not written by `npower profile`?)")
        runs.append((Path(path).name, data))
    return fit_samples(runs, name, folds, max_degree, seed, log, family)


def fit_samples(runs: list[tuple[str, SampleFile]], name: str, folds: int = 5, max_degree: int = 3, seed: int = 0,
                log: TextIO = sys.stderr, family: str = "lasso") -> tuple[Pack, list[dict[str, Any]]]:
    """Fit every kind of parsed sample files, named, into a Pack (device features from the device block)."""
    check_poolable(runs)
    header = runs[0][1].header
    device = pooled_device(runs)
    by_kind: dict[str, list[tuple[PooledSample, dict[str, float]]]] = {}
    samples, offsets_pct = pool_with_offsets(runs)
    for sample in samples:
        kind, values = current_layer(sample.row)
        by_kind.setdefault(kind, []).append((sample, values))
    inside = inside_graph_only(by_kind)
    models: dict[str, KindModels] = {}
    table, counts, ranges, noise = [], {}, {}, {}
    for kind in sorted(by_kind):
        good = [sample for sample, _ in by_kind[kind]]
        rows = _with_device_features(kind, [values for _, values in by_kind[kind]], device)
        counts[kind] = len(good)
        if len(good) < MIN_SAMPLES:
            print(f"warning: {kind}: only {len(good)} good samples, not fitted", file=log)
            continue
        runtime = fit_target(kind, rows, np.array([sample.runtime_ms for sample in good]), True, "ms",
                             folds, max_degree, seed, family)
        power = None
        powered = [(values, sample.mean_watts) for sample, values in zip(good, rows) if sample.mean_watts]
        if len(powered) >= MIN_SAMPLES:  # power may be measured on a subset of the samples (GPU campaign)
            power = fit_target(kind, [v for v, _ in powered], np.array([w for _, w in powered], dtype=float), False,
                               "W", folds, min(2, max_degree), seed)
        models[kind] = KindModels(runtime, power)
        ranges[kind] = {f: [min(r[f] for r in rows), max(r[f] for r in rows)] for f in rows[0]}
        repeat = repeat_noise_pct(good) if len(runs) > 1 else None  # (a run's duplicate configs are too few)
        if repeat is not None:
            noise[kind] = round(repeat, 2)
        table.append({"kind": kind, "samples": len(good), "form": runtime.fit["form"],
                      "size": runtime.fit["model_size"], "heldout": runtime.fit["heldout_rmspe_pct"],
                      "insample": runtime.fit["insample_rmspe_pct"], "repeat": repeat,
                      "power_heldout": power.fit["heldout_rmspe_pct"] if power else None,
                      "power_size": power.fit["model_size"] if power else None})
        print(f"fitted {kind}: {len(good)} samples, nested held-out RMSPE {runtime.fit['heldout_rmspe_pct']:.1f} %",
              file=log)
    forms = (f"log2 polynomials of degree 1-{max_degree} by ridge regression (GCV penalty)" if family == "ridge" else
             "log2 polynomials, the published linear form (relative error), work x rate and a non-negative sum of work "
             "amounts, by LassoCV")
    provenance = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "tool": f"npower {__version__} (npower fit)",
        **_runs_provenance(runs, noise, offsets_pct),
        "samples_total": sum(counts.values()),
        "failed_samples": len({sample_identity(row) for _, run in runs for row in run.samples if row.get("error")}),
        "sample_counts": counts,
        "heldout_rmspe_pct": {row["kind"]: row["heldout"] for row in table},
        "sampled_ranges": ranges,
        "timing": header.get("timing"),
        **_overhead_provenance(runs),
        "source_kind": "measured",
        "fit": {"runtime": f"per kind, the form with the lowest {folds}-fold RMSPE among {forms}; "
                           "each model's `fit` says which form won",
                "heldout": "nested cross-validation (the form chosen again inside each outer fold)",
                "sample_time": "each sample's mean over its timed runs (the median where only that was recorded)",
                "power": "LassoCV on W over raw and log2 features (published form)", "folds": folds, "seed": seed},
    }
    if header.get("cache_state"):
        provenance["fit"]["cache_state"] = (f"{header['cache_state']}; {', '.join(BETWEEN_STATES_KINDS)}: the "
                                            "geometric mean of the evicted and hot states; kinds ending "
                                            f"{GRAPH_INPUT}: kernels reading a graph input, evicted without "
                                            "reading it back")
    steady = sorted(steady_state_kinds(row for _, run in runs for row in run.samples))
    if steady:
        provenance["fit"]["steady_state"] = (f"kinds ending {STEADY} ({', '.join(steady)}): fitted on their samples "
                                             "timed in a steady loop (no eviction between runs), for an activation a "
                                             "host kernel applies to the output it just wrote")
    if inside:
        provenance["fit"]["mid_graph"] = {kind: f"fitted on the {kept} of {total} samples timed between two plain "
                                                f"kernels (a single-node graph's read the input or write the output)"
                                          for kind, (kept, total) in inside.items()}
    pack = Pack(name, device, header.get("runtime", {}), models, provenance)
    return pack, table


def inside_graph_only(by_kind: dict[str, list[tuple[PooledSample, dict[str, float]]]]) -> dict[str, tuple[int, int]]:
    """Keep only the samples timed inside a graph (`mid_graph`) of the `GRAPH_EDGE_KINDS` that have some, in place;
    returns kind -> (samples kept, samples before)."""
    kept = {}
    for kind in GRAPH_EDGE_KINDS:
        entries = by_kind.get(kind, [])
        inside = [(sample, values) for sample, values in entries if sample.row.get("mid_graph")]
        if inside:
            kept[kind] = (len(inside), len(entries))
            by_kind[kind] = inside
    return kept


def _runs_provenance(runs: list[tuple[str, SampleFile]], noise: dict[str, float],
                     offsets_pct: list[float]) -> dict[str, Any]:
    """When the samples were measured and in which file(s); for pooled runs, how and their noise per kind."""
    if len(runs) == 1:
        name, run = runs[0]
        return {"measured": run.header.get("created"), "samples_file": name}
    return {"measured": [run.header.get("created") for _, run in runs],
            "samples_files": [name for name, _ in runs],
            "repeats": "the runs were pooled: each config's runtime is the geometric mean over the runs that "
                       "measured it, each run's speed offset taken off; device numbers are the runs' mean, weighted "
                       "by the rows each measured",
            "run_offsets_pct": offsets_pct,
            "run_offsets": "each run's time against the runs it shares configs with, in %, over all kinds (per kind "
                           f"where that is as precise as an offset from {MIN_SHARED} shared configs); estimated by a "
                           "least-squares two-way fit, log2 time = config + run, over the shared configs and taken "
                           "off before pooling; 0 for a run that shares none",
            "repeat_noise_pct": noise,
            "repeat_noise": "run-to-run noise of one measurement, in %: (2^sd - 1) x 100, sd the pooled standard "
                            "deviation of log2 runtime once the runs' offsets are taken off"}


def _overhead_provenance(runs: list[tuple[str, SampleFile]]) -> dict[str, Any]:
    """The trace overhead taken off the rows (nothing when no run measured one)."""
    overheads = trace_overheads(runs)
    if not any(overheads):
        return {}
    if len(runs) == 1:
        return {"trace_overhead_ms": overheads[0],
                "trace_overhead": "taken off each kernel timed from onnxruntime's profiler trace before fitting"}
    return {"trace_overhead_ms": overheads,
            "trace_overhead": "taken off each kernel timed from onnxruntime's profiler trace before fitting; per "
                              "run, as measured by it, or by the runs that measured it where a run predates the "
                              "measurement"}


def _with_device_features(kind: str, rows: list[dict[str, float]], device: dict[str, Any]) -> list[dict[str, float]]:
    """Rows extended with the kind's device features (the function predict uses)."""
    columns = {name: np.array([row[name] for row in rows], dtype=float) for name in rows[0]}
    extra = derive_device_features(base_kind(kind), columns, device)
    return [{**row, **{name: float(values[i]) for name, values in extra.items()}} for i, row in enumerate(rows)]


def format_fit_table(table: list[dict[str, Any]]) -> str:
    """Per-kind fit summary: samples, form, model size, held-out and in-sample RMSPE, power; with pooled
    runs, the run-to-run noise of one measurement."""
    repeats = any(row.get("repeat") is not None for row in table)
    width = max([16, *(len(row["kind"]) for row in table)])
    lines = [f"{'kind':{width}s} {'samples':>7s} {'form':>13s} {'size':>4s} {'held-out RMSPE':>15s} {'in-sample':>9s} "
             f"{'power':>7s}" + (f" {'repeat noise':>12s}" if repeats else "")]
    for row in table:
        power = "-" if row["power_heldout"] is None else f"{row['power_heldout']:.1f}%"
        repeat = "" if not repeats else " " + ("-" if row.get("repeat") is None else f"{row['repeat']:.1f}%").rjust(12)
        lines.append(f"{row['kind']:{width}s} {row['samples']:7d} {row['form']:>13s} {row['size']:4d} "
                     f"{row['heldout']:14.1f}% {row['insample']:8.1f}% {power:>7s}{repeat}")
    weights = [row["samples"] for row in table]
    if weights:
        mean = math.fsum(r["heldout"] * r["samples"] for r in table) / sum(weights)
        lines.append(f"{'all (weighted)':{width}s} {sum(weights):7d} {'':13s} {'':4s} {mean:14.1f}%")
    return "\n".join(lines)
