"""Sparse polynomial models over named features, evaluated with numpy only.

A model is  value = intercept + sum_j coef_j * prod_v var_v ** power_jv,  where each variable is a
named feature, raw ("macs"), log-transformed ("log2(macs)", meaning log2(max(x, 1))) or a hinge
on the log ("log2over22(total_bytes)", meaning max(0, log2(max(x, 1)) - 22): zero until the
feature passes 2**22, which lets a model change slope where data spills out of a cache).
With target "linear" the prediction is the value itself (the published NeuralPower form);
with target "log2" it is 2 ** value, which makes a squared-error fit a relative-error fit.
A model may bound log variables to the range it was fitted on (`bounds`): a linear-target model's
raw sizes still scale its time, while the shape effects its log terms carry stay at the edge of what
was measured instead of growing as a polynomial beyond it. A runtime model may also bound its time per unit of
work (`rates`, a `RateEnvelope`): within 10x of the rates (and times) its samples of about the same amount of work
had, so a polynomial that extrapolates wildly beyond its samples (a product of two sizes, a count times a hinge)
stays near what kernels of that size were measured at.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from .errors import NpowerError

TARGETS = ("linear", "log2")
MAX_POWER = 16  # fitted forms use degree 3 by default (npower fit --max-degree); beyond this, overflow


_TRANSFORMED = re.compile(r"^log2(?:over(\d+))?\((\w+)\)$")


def variable_values(variable: str, features: Mapping[str, Any]) -> np.ndarray:
    """Values of one variable ("name", "log2(name)", "log2overK(name)") from feature arrays."""
    match = _TRANSFORMED.match(variable)
    if match is None:
        return np.asarray(features[variable], dtype=float)
    logs = np.log2(np.maximum(np.asarray(features[match.group(2)], dtype=float), 1.0))
    return logs if match.group(1) is None else np.maximum(logs - int(match.group(1)), 0.0)


def variable_feature(variable: str) -> str:
    """The feature a variable reads."""
    match = _TRANSFORMED.match(variable)
    return variable if match is None else match.group(2)


def bounded_values(variable: str, features: Mapping[str, Any],
                   bounds: Mapping[str, tuple[float, float]] | None = None) -> np.ndarray:
    """`variable_values`, kept within the variable's bounds where it has some."""
    values = variable_values(variable, features)
    if bounds and variable in bounds:
        low, high = bounds[variable]
        values = np.clip(values, low, high)
    return values


def design_matrix(term_powers: list[Mapping[str, int]], features: Mapping[str, Any],
                  bounds: Mapping[str, tuple[float, float]] | None = None) -> np.ndarray:
    """Matrix of monomial values, one row per sample and one column per term (variables within `bounds`)."""
    variables = list(dict.fromkeys(v for powers in term_powers for v in powers))
    if not variables:
        return np.ones((1, len(term_powers)))
    columns = np.stack([np.atleast_1d(bounded_values(v, features, bounds)) for v in variables], axis=-1)
    index = {v: i for i, v in enumerate(variables)}
    matrix = np.ones((columns.shape[0], len(term_powers)))
    for j, powers in enumerate(term_powers):  # term by term: no rows x terms x variables temporary
        for variable, power in powers.items():
            matrix[:, j] *= columns[:, index[variable]] ** power
    return matrix


@dataclass
class RateEnvelope:
    """Time per unit of a size feature, by size band: samples sorted by the feature, cut into bands of equal
    counts; a band's limits are the lowest rate in it and the bands beside it divided by MARGIN, and the highest rate
    times MARGIN or MARGIN times their longest time, whichever is more (a kernel smaller than its band's pays the
    same fixed costs over less work: a higher rate, not a longer time). The first and last band also cover smaller
    and larger layers. A guard against a polynomial running away (a prediction 1,200x the time of any sample of its
    size), not a model: a layer's rate may differ from its band's samples by shape (a depthwise conv against a dense
    one of as many MACs), and the margin leaves such predictions alone."""

    feature: str
    log2_edges: list[float]  # log2 of the feature where each band after the first begins
    low: list[float]
    high: list[float]
    longest: list[float]  # MARGIN x the longest time in the band and the bands beside it

    MIN_BAND = 10  # samples per band at least
    MAX_BANDS = 8
    MARGIN = 10.0  # beyond the band's limits, each way (2 clipped good predictions: conv_dw 14.4 -> 17.6 %)

    @classmethod
    def fitted(cls, feature: str, work: np.ndarray, times: np.ndarray) -> "RateEnvelope":
        """The envelope of samples with positive work; samples of equal work always share a band."""
        chunks = np.array_split(np.sort(work), max(1, min(cls.MAX_BANDS, len(work) // cls.MIN_BAND)))
        edges = sorted({float(np.log2(chunk[0])) for chunk in chunks[1:]} - {float(np.log2(work.min()))})
        band = cls._band(edges, work)
        members = [band == i for i in range(len(edges) + 1)]
        near = [np.any(members[max(i - 1, 0):i + 2], axis=0) for i in range(len(members))]
        rates = times / work
        return cls(feature, edges, [float(rates[m].min()) / cls.MARGIN for m in near],
                   [float(rates[m].max()) * cls.MARGIN for m in near],
                   [float(times[m].max()) * cls.MARGIN for m in near])

    @staticmethod
    def _band(log2_edges: list[float], work: np.ndarray) -> np.ndarray:
        return np.searchsorted(log2_edges, np.log2(np.maximum(work, 1e-300)), side="right")

    def clip(self, predicted: np.ndarray, features: Mapping[str, Any]) -> np.ndarray:
        """Predictions kept within their band's rates times the work, where the layer has some work."""
        work = np.asarray(features[self.feature], dtype=float)
        band = self._band(self.log2_edges, work)
        low, high, longest = (np.asarray(limits)[band] for limits in (self.low, self.high, self.longest))
        return np.where(work > 0, np.clip(predicted, low * work, np.maximum(high * work, longest)), predicted)

    def scaled(self, factor: float) -> "RateEnvelope":
        return RateEnvelope(self.feature, list(self.log2_edges), *([v * factor for v in limits]
                                                                    for limits in (self.low, self.high, self.longest)))

    def to_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "log2_edges": [float(e) for e in self.log2_edges],
                **{name: [float(v) for v in getattr(self, name)] for name in ("low", "high", "longest")}}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "RateEnvelope":
        """Build from plain data, naming the first bad field: one more band than edges, edges increasing,
        0 <= low <= high in every band."""
        if not isinstance(data, dict):
            raise NpowerError(f"{where}: expected a mapping with feature, log2_edges, low, high and longest")
        feature = _field(data, "feature", str, where)
        edges, low, high, longest = (
            [_number(v, f"{where}.{name}[{i}]") for i, v in enumerate(_field(data, name, list, where))]
            for name in ("log2_edges", "low", "high", "longest"))
        if not len(low) == len(high) == len(longest) == len(edges) + 1:
            raise NpowerError(f"{where}: expected one more band (low, high, longest) than log2_edges")
        if any(b < a for a, b in zip(edges, edges[1:])):
            raise NpowerError(f"{where}.log2_edges: must not decrease")
        if not all(0 <= a <= b for a, b in zip(low, high)) or min(longest) < 0:
            raise NpowerError(f"{where}: expected 0 <= low <= high and longest >= 0 in every band")
        return cls(feature, edges, low, high, longest)


@dataclass
class SparsePolynomial:
    """A fitted model: intercept plus sparse monomial terms, and what it predicts."""

    target: str
    unit: str
    intercept: float
    terms: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    fit: dict[str, Any] = field(default_factory=dict)
    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)  # log variable -> fitted range
    rates: RateEnvelope | None = None  # time per unit of work, by size band (runtime models fitted since 12-08)

    @property
    def variables(self) -> list[str]:
        seen: dict[str, None] = {}
        for _, powers in self.terms:
            for variable in powers:
                seen.setdefault(variable, None)
        return list(seen)

    @property
    def features(self) -> list[str]:
        return sorted({variable_feature(v) for v in self.variables} | ({self.rates.feature} if self.rates else set()))

    def raw_value(self, features: Mapping[str, Any]) -> np.ndarray:
        """The polynomial's value before the target transform, for arrays or scalars."""
        if not self.terms:
            return np.asarray(self.intercept, dtype=float)
        coefs = np.array([coef for coef, _ in self.terms])
        with np.errstate(over="ignore", invalid="ignore"):  # overflow gives inf: the caller checks finiteness
            return self.intercept + design_matrix([powers for _, powers in self.terms], features, self.bounds) @ coefs

    def predict(self, features: Mapping[str, Any]) -> np.ndarray:
        """Predicted quantity in `unit` (never negative)."""
        value = self.raw_value(features)
        predicted = np.exp2(np.clip(value, -60.0, 60.0)) if self.target == "log2" else np.maximum(value, 0.0)
        return predicted if self.rates is None else self.rates.clip(predicted, features)

    def partial(self, values: Mapping[str, float]) -> "SparsePolynomial":
        """The model with the features in `values` fixed: a polynomial in the remaining variables
        (e.g. a cross-device model specialised to one device). Terms that become equal are merged."""
        merged: dict[tuple, float] = {}
        intercept = self.intercept
        for coef, powers in self.terms:
            rest = {v: p for v, p in powers.items() if variable_feature(v) not in values}
            factor = math.prod(float(bounded_values(v, values, self.bounds)) ** p for v, p in powers.items()
                               if v not in rest)
            if rest:
                key = tuple(sorted(rest.items()))
                merged[key] = merged.get(key, 0.0) + coef * factor
            else:
                intercept += coef * factor
        terms = [(coef, dict(key)) for key, coef in merged.items() if coef != 0.0]
        rates = self.rates if self.rates is None or self.rates.feature not in values else None  # work fixed: unbound
        return SparsePolynomial(self.target, self.unit, intercept, terms, dict(self.fit), dict(self.bounds), rates)

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML-ready form; from_dict(to_dict()) is exact."""
        out: dict[str, Any] = {
            "target": self.target,
            "unit": self.unit,
            "intercept": float(self.intercept),
            "terms": [{"coef": float(coef), "powers": {v: int(p) for v, p in powers.items()}}
                      for coef, powers in self.terms],
        }
        if self.bounds:
            out["bounds"] = {variable: [float(low), float(high)] for variable, (low, high) in self.bounds.items()}
        if self.rates:
            out["rates"] = self.rates.to_dict()
        if self.fit:
            out["fit"] = self.fit
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "model") -> "SparsePolynomial":
        """Build from plain data, naming the first bad field."""
        if not isinstance(data, dict):
            raise NpowerError(f"{where}: expected a mapping, got {type(data).__name__}")
        target = _field(data, "target", str, where)
        if target not in TARGETS:
            raise NpowerError(f"{where}.target: must be one of {', '.join(TARGETS)}, got '{target}'")
        unit = _field(data, "unit", str, where)
        intercept = _number(data.get("intercept"), f"{where}.intercept")
        raw_terms = _field(data, "terms", list, where)
        terms = []
        for index, term in enumerate(raw_terms):
            here = f"{where}.terms[{index}]"
            if not isinstance(term, dict):
                raise NpowerError(f"{here}: expected a mapping with coef and powers")
            coef = _number(term.get("coef"), f"{here}.coef")
            powers = term.get("powers")
            if not isinstance(powers, dict):
                raise NpowerError(f"{here}.powers: expected a mapping variable -> exponent")
            for variable, power in powers.items():
                if not isinstance(variable, str) or not variable:
                    raise NpowerError(f"{here}.powers: variable names must be strings")
                if isinstance(power, bool) or not isinstance(power, int) or not 1 <= power <= MAX_POWER:
                    raise NpowerError(f"{here}.powers.{variable}: exponent must be an integer from 1 to {MAX_POWER}")
            terms.append((coef, dict(powers)))
        fit = data.get("fit", {})
        if not isinstance(fit, dict):
            raise NpowerError(f"{where}.fit: expected a mapping")
        return cls(target, unit, intercept, terms, fit, _bounds(data.get("bounds", {}), f"{where}.bounds"),
                   None if data.get("rates") is None else RateEnvelope.from_dict(data["rates"], f"{where}.rates"))


def _bounds(data: Any, where: str) -> dict[str, tuple[float, float]]:
    """Variable -> (low, high), both finite, low <= high."""
    if not isinstance(data, dict):
        raise NpowerError(f"{where}: expected a mapping variable -> [low, high]")
    bounds = {}
    for variable, pair in data.items():
        if not isinstance(variable, str) or not isinstance(pair, list) or len(pair) != 2:
            raise NpowerError(f"{where}.{variable}: expected [low, high]")
        low, high = (_number(value, f"{where}.{variable}") for value in pair)
        if low > high:
            raise NpowerError(f"{where}.{variable}: low {low} is above high {high}")
        bounds[variable] = (low, high)
    return bounds


def _field(data: dict, name: str, kind: type, where: str) -> Any:
    if name not in data:
        raise NpowerError(f"{where}: missing field '{name}'")
    value = data[name]
    if not isinstance(value, kind):
        raise NpowerError(f"{where}.{name}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def _number(value: Any, where: str) -> float:
    """A finite float (an integer too large for a float is refused, not overflowed)."""
    try:
        number = float(value) if not isinstance(value, bool) and isinstance(value, (int, float)) else math.nan
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise NpowerError(f"{where}: expected a finite number, got {value!r}"[:200])
    return number
