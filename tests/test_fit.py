"""`npower fit`: honest (nested) held-out error, what was fitted, device features shared with predict."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import linear_pack, single_node_model
from npower import fit
from npower.profile.cache_state import MIN_STEADY_ROWS, STEADY
from npower.profile.repeats import PooledSample, pool_runs, pooled_device, runtime_target_ms, trace_overheads
from npower.profile.store import SampleFile
from npower.device_features import derive
from npower.graph import load_graph
from npower.pack import KindModels
from npower.polynomial import RateEnvelope, SparsePolynomial
from npower.predict import predict


def _noise_rows(n: int = 120, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows = [{"elements": float(e), "inputs": 1.0, "broadcast": 0.0, "total_bytes": float(8 * e)}
            for e in rng.integers(1_000, 1_000_000, n)]
    return rows, np.exp2(rng.uniform(-2, 2, n))  # time independent of the features


def test_outer_folds_are_never_seen_by_model_selection(monkeypatch):
    rows, y = _noise_rows()
    seen = []
    original = fit._select

    def spy(forms, columns, target, subset, folds, seed):
        seen.append(set(subset.tolist()))
        return original(forms, columns, target, subset, folds, seed)

    monkeypatch.setattr(fit, "_select", spy)
    columns = {name: np.array([r[name] for r in rows]) for name in rows[0]}
    forms = list(fit._candidates("relu", columns, True, 2, "ridge"))
    every = np.arange(len(y))
    error = fit.nested_heldout(forms, columns, y, every, 4, seed=0)
    assert len(seen) == 4 and all(len(s) < len(y) for s in seen)
    assert set.union(*[set(every.tolist()) - s for s in seen]) == set(every.tolist())  # each row held out once
    assert error > 30  # pure noise: the honest error stays large (the chosen form's in-fold figure is lower)


def test_reported_error_is_nested_and_the_description_says_what_was_fitted():
    rows, _ = _noise_rows(200, seed=1)
    y = np.array([1e-5 * r["elements"] + 0.01 for r in rows])
    model = fit.fit_target("relu", rows, y, True, "ms", folds=4, max_degree=2, seed=0, family="ridge")
    assert model.fit["heldout_method"].startswith("nested cross-validation")
    assert model.fit["form"] in model.fit["fitted"] and "ridge" in model.fit["fitted"]
    assert model.fit["form"] in model.fit["forms_tried"]["selection_rmspe_pct"]
    assert model.fit["heldout_rmspe_pct"] < 5


def test_a_linear_form_is_bounded_to_the_log_ranges_of_its_samples_and_a_log2_form_is_not():
    rng = np.random.default_rng(0)
    columns = {"elements": rng.integers(1_000, 1_000_000, 50).astype(float)}
    terms, rows = [{"elements": 1, "log2(elements)": 2}], np.arange(50)
    low, high = np.log2(columns["elements"].min()), np.log2(columns["elements"].max())
    bounds = fit.log_bounds(fit._Fitter("linear", True, 0), terms, columns, rows)
    assert bounds == {"log2(elements)": pytest.approx((low, high))}
    assert fit.log_bounds(fit._Fitter("log2", False, 0), terms, columns, rows) == {}
    samples, _ = _noise_rows(200, seed=1)
    y = np.array([1e-5 * r["elements"] + 0.01 for r in samples])
    model = fit.fit_target("relu", samples, y, True, "ms", folds=4, max_degree=2, seed=0)
    logs = {v for v in model.variables if v.startswith("log2")}
    assert set(model.bounds) == (logs if model.target == "linear" else set())


def test_a_runtime_model_bounds_its_rate_by_size_band_and_never_clips_a_sample_it_was_fitted_on():
    samples, _ = _noise_rows(200, seed=2)
    y = np.array([1e-5 * r["elements"] + 0.01 for r in samples])
    model = fit.fit_target("relu", samples, y, True, "ms", folds=4, max_degree=2, seed=0)
    assert model.rates.feature == "elements" and "rates per elements" in model.fit["heldout_method"]
    work = np.array([r["elements"] for r in samples])
    assert np.all(model.rates.clip(y, {"elements": work}) == y)
    repeated = np.array([8.0] * 30 + [100.0] * 20)  # samples of one size always share a band
    times = np.where(repeated == 8, 8e3, 1e2)
    envelope = RateEnvelope.fitted("elements", repeated, times)
    assert np.all(envelope.clip(times, {"elements": repeated}) == times)
    power = fit.fit_target("relu", samples, np.full(200, 50.0), False, "W", folds=4, max_degree=1, seed=0)
    assert power.rates is None  # watts are no rate of work


def test_log_features_that_are_products_of_kept_ones_are_dropped():
    rng = np.random.default_rng(0)
    m, n, k = (rng.integers(2, 500, 50).astype(float) for _ in range(3))
    columns = {"m": m, "n": n, "k": k, "macs": m * n * k, "batch": np.ones(50)}
    assert fit.choose_variables("x", columns, log=True) == ["log2(m)", "log2(n)", "log2(k)"]
    assert "log2(macs)" in fit.choose_variables("x", columns, log=False)


def test_device_features_are_the_same_at_fit_and_predict_time():
    device = {"name": "gpu", "sms": 80, "peak_gflops": 1000.0, "bandwidth_gbs": 100.0}
    # 129 x 128 output: 5 x 4 tiles of 32 = 20 tiles (1 wave of 80 SMs); 3 x 2 of 64; 2 x 1 of 128
    features = derive("gemm", {"m": np.array([129.0]), "n": np.array([128.0]), "batch": np.array([1.0])}, device)
    assert [features[f"tiles{t}"][0] for t in (32, 64, 128)] == [20, 6, 2]
    assert derive("gemm", {"m": np.array([129.0]), "n": np.array([128.0]), "batch": np.array([1.0])}, {}) == {}
    pack = linear_pack()
    pack.device = device
    pack.models["gemm"] = KindModels(SparsePolynomial("linear", "ms", 0.0, [(0.5, {"tiles32": 1})]))
    graph = load_graph(single_node_model("Gemm", [("x", [129, 64])], weights=[("w", [64, 128])]))
    assert predict(graph, pack)[0].ms == 10.0


def test_a_count_that_is_only_0_or_1_in_the_samples_is_not_a_variable():
    # NeuSight's element-wise rows: weight_elems is 1 (a scalar operand) or 0; GPT-2 adds a 1024 x 1024 mask
    rng = np.random.default_rng(0)
    columns = {"elements": rng.integers(1_000, 10**6, 40).astype(float), "weight_elems": np.tile([0.0, 1.0], 20),
               "broadcast": np.tile([0.0, 1.0], 20)}
    for log in (True, False):
        chosen = fit.choose_variables("add", columns, log=log)
        assert "broadcast" in chosen and not any("weight_elems" in v for v in chosen)



def test_the_profilers_per_kernel_overhead_comes_off_trace_timed_samples_only():
    """onnxruntime's profiler adds about 1 us to each kernel it traces, which a network run without it does
    not pay: `npower fit` takes the header's measured overhead off the rows timed from a trace."""
    assert runtime_target_ms({"median_ms": 0.0500, "kernel": "Relu"}, 0.001) == pytest.approx(0.049)
    assert runtime_target_ms({"median_ms": 0.0500}, 0.001) == 0.05  # timed by the wall clock
    assert runtime_target_ms({"median_ms": 0.0005, "kernel": "Relu"}, 0.001) == pytest.approx(0.00005)


def test_a_run_from_before_the_overhead_was_measured_takes_the_measuring_runs_mean():
    runs = [(name, SampleFile({} if value is None else {"trace_overhead_ms": value}, []))
            for name, value in (("a", None), ("b", 0.001), ("c", 0.002))]
    assert trace_overheads(runs) == pytest.approx([0.0015, 0.001, 0.002])
    assert trace_overheads(runs[:1]) == [0.0]  # nobody measured it: nothing is taken off


def test_pooled_runs_device_numbers_are_weighted_by_the_rows_each_measured():
    """A whole-plan run of 30 rows at 100 GFLOP/s and a short run of 10 at 200: 125, not their mean 150;
    numbers a run lacks and non-float fields are left to the runs that have them."""
    def run(peak: float | None, rows: int) -> SampleFile:
        device = {"name": "cpu", "cores": 2, **({} if peak is None else {"peak_gflops": peak})}
        return SampleFile({"device": device}, [{"key": str(i)} for i in range(rows)])
    device = pooled_device([("a", run(100.0, 30)), ("b", run(200.0, 10)), ("c", run(None, 50))])
    assert device == {"name": "cpu", "cores": 2, "peak_gflops": 125.0}


def test_runs_pool_a_config_in_each_state_its_kind_is_fitted_from():
    """A config profiled hot only in an older run and hot and steady in a newer one: its kind, steady in enough rows,
    pools both runs' hot times into one sample and the newer run's steady time alone into another (the older run has
    none to average in); the two runs' speeds are compared in the state both timed, hot, so an older run a third slower
    there moves the pooled scale to halfway (in log2) between the two runs."""
    def row(key: str, states: dict) -> dict:
        state = "steady" if "steady" in states else "hot"
        return {"key": key, "kind": "relu", "kernel": "Relu", "cache_state": state, "states": states, "features": {},
                "specials": {}, **states[state]}
    newer = SampleFile({}, [row(str(i), {"hot": {"mean_ms": 0.06}, "steady": {"mean_ms": 0.04}})
                            for i in range(MIN_STEADY_ROWS)])
    for older_hot_ms in (0.06, 0.08):
        older = SampleFile({}, [row(str(i), {"hot": {"mean_ms": older_hot_ms}}) for i in range(MIN_STEADY_ROWS)])
        pooled = pool_runs([("older", older), ("newer", newer)])
        scale = (older_hot_ms / 0.06) ** 0.5
        steady = [s for s in pooled if s.row["cache_state"] == "steady"]
        hot = [s for s in pooled if s.row["cache_state"] == "hot"]
        assert (len(steady), len(hot)) == (MIN_STEADY_ROWS, MIN_STEADY_ROWS)
        assert all(len(s.log2_ms) == 1 and s.runtime_ms == pytest.approx(0.04 * scale) for s in steady)
        assert all(len(s.log2_ms) == 2 and s.runtime_ms == pytest.approx(0.06 * scale) for s in hot)
        assert {fit.current_layer(s.row)[0] for s in steady} == {"relu" + STEADY}


def test_reorders_are_fitted_on_samples_timed_inside_a_graph_where_there_are_some():
    """A reorder kind with samples timed between two plain kernels keeps only those; one without keeps all; other
    kinds keep all (their single-node samples meet a network's state)."""
    def entries(flags: list[bool]) -> list:
        return [(PooledSample({"key": str(i), **({"mid_graph": True} if flag else {})}, [0.0]), {})
                for i, flag in enumerate(flags)]
    by_kind = {"reorder_input": entries([False, True, False, True]), "reorder_output": entries([False, False]),
               "nchwc_conv_dw_1x1": entries([True, False])}
    assert fit.inside_graph_only(by_kind) == {"reorder_input": (2, 4)}
    assert [sample.row["key"] for sample, _ in by_kind["reorder_input"]] == ["1", "3"]
    assert (len(by_kind["reorder_output"]), len(by_kind["nchwc_conv_dw_1x1"])) == (2, 2)


def test_work_form_is_a_non_negative_sum_of_amounts_of_work():
    # time = overhead + a cost per unit of two kinds of work; a third amount lowers the time (a cache effect
    # fitted elsewhere): the work form keeps the two costs and gives the third none, never a negative one.
    # A shape (kernel height) is no amount of work: the form leaves it out, a flag (a fixed cost) it keeps.
    rng = np.random.default_rng(3)
    a, b, c = (np.exp2(rng.uniform(8, 20, 300)) for _ in range(3))
    y = (0.004 + 2e-8 * a + 5e-8 * b) * np.exp2(rng.normal(0, 0.03, 300)) * (1 - 0.2 * (c > 2 ** 14))
    columns = {"macs": a, "out_elems": b, "in_elems": c, "kernel_h": rng.integers(1, 8, 300).astype(float),
               "window_setup": (rng.uniform(size=300) < 0.5).astype(float)}
    (label, fitter, _, terms), = [form for form in fit._candidates("x", columns, True, 2) if form[0] == "work-1"]
    assert terms == [{"macs": 1}, {"out_elems": 1}, {"in_elems": 1}, {"window_setup": 1}]
    assert fitter.method == "LassoCV (non-negative)"
    terms = terms[:3]
    intercept, coefs, _ = fitter.fit(fit._design(terms, columns, np.arange(300)), y)
    assert intercept > 0 and coefs.min() >= 0.0 and coefs[2] == 0.0
    assert coefs[0] == pytest.approx(2e-8 * 0.9, rel=0.2) and coefs[1] == pytest.approx(5e-8 * 0.9, rel=0.2)


def test_fit_table_columns_stay_aligned_with_long_kind_names():
    from npower.fit import format_fit_table
    row = {"samples": 80, "form": "log2-linear", "size": 12, "heldout": 22.3, "insample": 15.0, "power_heldout": None}
    lines = format_fit_table([{**row, "kind": "nchwc_conv_nchw@graph_input"}, {**row, "kind": "relu"}]).splitlines()
    assert len({line.index("%") for line in lines[1:]}) == 1  # every held-out figure in one column
