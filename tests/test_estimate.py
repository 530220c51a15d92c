"""Estimated packs: partial evaluation, the transfer methods on synthetic GPUs, pack labelling, CLI errors."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from npower.api import analyze
from npower.cli import main
from npower.estimate import (AUTO, SCALING, method_set, Source, estimate_pack, fit_regression, rmspe, scale_model, scaling_factor,
                             specialise)
from npower.importers.neusight import MAPPERS, config_layer
from npower.pack import load_pack
from npower.polynomial import SparsePolynomial
from npower.specs import find_spec

SOURCES = ["p100", "v100", "a100", "t4", "a100-80gb"]


def _gemm_rows(count: int, seed: int) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Feature columns of `count` random nn.Linear calls, as the importer maps them."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(count):
        b, m, n, k = (int(x) for x in (1, *2 ** rng.uniform(4, 12, 3).round()))
        _, features, specials = config_layer(MAPPERS["linear"]({"B": str(b), "M": str(m), "N": str(n), "K": str(k)}))
        values.append({**features, **specials})
    return {name: np.array([v[name] for v in values]) for name in values[0]}, values


def _truth(columns: dict[str, np.ndarray], spec) -> np.ndarray:
    """A roofline device: 70 % of the fp32 peak, 80 % of the bandwidth, 5 us launch."""
    return 1e3 * (columns["flops"] / (0.7e9 * spec.fp32_peak_gflops)
                  + columns["total_bytes"] / (0.8e9 * spec.bandwidth_gbs)) + 0.005


@pytest.fixture(scope="module")
def synthetic():
    columns, _ = _gemm_rows(150, 0)
    sources = [Source(find_spec(g), {"gemm": (columns, _truth(columns, find_spec(g)))}) for g in SOURCES]
    return columns, sources


def test_partial_evaluation_equals_full_model(synthetic):
    columns, sources = synthetic
    model = fit_regression("gemm", sources, ("dev_bandwidth_gbs", "dev_peak_gflops"))
    h100 = find_spec("h100")
    full = model.predict({**columns, "dev_bandwidth_gbs": np.full(150, h100.bandwidth_gbs),
                          "dev_peak_gflops": np.full(150, h100.fp32_peak_gflops)})
    special = specialise(model, h100)
    assert not any(v.startswith("log2(dev_") for v in special.variables)
    np.testing.assert_allclose(special.predict(columns), full, rtol=1e-9)


@pytest.mark.parametrize("gpu, limit", [("v100-sxm2", 10), ("h100", 25)])  # inside / far outside the sources
def test_regression_transfers_to_an_unseen_gpu(synthetic, gpu, limit):
    columns, sources = synthetic
    target = find_spec(gpu)
    model = specialise(fit_regression("gemm", sources, ("dev_bandwidth_gbs", "dev_peak_gflops")), target)
    held_out, _ = _gemm_rows(60, 1)
    assert rmspe(model.predict(held_out), _truth(held_out, target)) < limit


def test_scaling_multiplies_both_model_forms():
    log_model = SparsePolynomial("log2", "ms", 1.0, [(0.5, {"log2(flops)": 1})])
    linear = SparsePolynomial("linear", "ms", 0.1, [(2e-9, {"flops": 1})])
    features = {"flops": np.array([1e6, 1e9])}
    for model in (log_model, linear):
        np.testing.assert_allclose(scale_model(model, 0.25).predict(features), 0.25 * model.predict(features))
    assert scaling_factor("gemm", find_spec("v100"), find_spec("a100")) == pytest.approx(14131 / 19492)
    assert scaling_factor("add", find_spec("v100"), find_spec("a100")) == pytest.approx(900 / 1555)


def test_estimated_pack_is_labelled_and_chooses_by_left_out_error(synthetic, tmp_path):
    columns, sources = synthetic
    pack = estimate_pack(find_spec("titanx"), sources, methods=method_set(AUTO))
    choice = pack.provenance["per_kind"]["gemm"]
    assert pack.estimated and not pack.has_power and "power" in pack.provenance
    candidates = choice["candidates_mean_loo_weighted_error_pct"]
    assert choice["mean_loo_weighted_error_pct"] == min(candidates.values()) == candidates[choice["method"]]
    assert f"{SCALING}:nearest-1" in candidates
    assert set(choice["loo_rmspe_pct"]) == set(SOURCES)
    path = pack.save(tmp_path / "titanx-est.yaml")
    assert load_pack(path).estimated
    onnx_path = tmp_path / "fc.onnx"
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in
              (("x", [64, 1024]), ("w", [4096, 1024]), ("b", [4096]))]
    graph = helper.make_graph([helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)], "fc", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 4096])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), onnx_path)
    report = analyze(str(onnx_path), gpu=str(path))
    assert report.estimated.startswith("ESTIMATED pack") and "ESTIMATED" in report.to_table()
    assert report.to_dict()["estimated"] is True


def test_cli_errors_are_one_line(capsys):
    assert main(["estimate", "titanx"]) == 2
    assert capsys.readouterr().err.strip() == "npower: error: --data DIR is required: the measured operator rows to estimate from"
    assert main(["estimate", "gtx9999", "--data", "."]) == 2
    assert "no GPU spec named 'gtx9999'" in capsys.readouterr().err
    assert main(["estimate", "titanx", "--data", ".", "--method", "magic"]) == 2
    assert "unknown estimate method 'magic'" in capsys.readouterr().err
