"""Sparse polynomials and packs: evaluation, exact round trip, validation naming the bad field."""
from __future__ import annotations

import numpy as np
import pytest
import yaml

from npower import NpowerError
from npower.pack import find_pack, load_pack, pack_from_dict
from npower.polynomial import RateEnvelope, SparsePolynomial

from conftest import linear_pack


def test_polynomial_evaluates_published_and_log_forms():
    published = SparsePolynomial("linear", "ms", 0.5, [(2.0, {"batch": 1, "macs": 1}), (0.25, {"log2(macs)": 2})])
    value = published.predict({"batch": 4.0, "macs": 8.0})
    assert value == pytest.approx(0.5 + 2.0 * 4 * 8 + 0.25 * 9)
    log_model = SparsePolynomial("log2", "ms", -3.0, [(1.0, {"log2(macs)": 1})])
    assert log_model.predict({"macs": np.array([8.0, 1024.0])}) == pytest.approx([1.0, 128.0])
    assert log_model.features == ["macs"]


def test_a_bounded_log_variable_stays_in_its_range_while_raw_sizes_still_scale():
    """rate form: time = macs x (1 + 0.5 log2(batch)^2); fitted with log2(batch) in [0, 3], a batch of 1024 is
    costed at the rate of batch 8 (log2 = 3), not at the quadratic's 51x, and its MACs still count in full."""
    rate = [(1.0, {"macs": 1}), (0.5, {"macs": 1, "log2(batch)": 2})]
    bounded = SparsePolynomial("linear", "ms", 0.0, rate, bounds={"log2(batch)": (0.0, 3.0)})
    free = SparsePolynomial("linear", "ms", 0.0, rate)
    inside = {"batch": np.array([4.0]), "macs": np.array([10.0])}
    assert bounded.predict(inside) == pytest.approx([10.0 * 3])
    assert free.predict(inside) == pytest.approx([10.0 * 3])
    beyond = {"batch": np.array([1024.0]), "macs": np.array([1000.0])}
    assert bounded.predict(beyond) == pytest.approx([1000.0 * 5.5])
    assert free.predict(beyond) == pytest.approx([1000.0 * 51])
    assert bounded.partial({"batch": 1024.0}).predict({"macs": np.array([1000.0])}) == pytest.approx([5500.0])
    assert SparsePolynomial.from_dict(bounded.to_dict()) == bounded
    with pytest.raises(NpowerError, match=r"bounds.log2\(batch\): low 3.0 is above high 0.0"):
        SparsePolynomial.from_dict({**bounded.to_dict(), "bounds": {"log2(batch)": [3.0, 0.0]}})


def test_a_rate_envelope_keeps_a_runaway_polynomial_at_the_rates_of_samples_of_its_size():
    """Samples of 10-10,000 elements, small ones at 1 ms per element (overhead), large ones at 0.01: a product of
    two sizes fitted on them may predict anything at 10^6 elements; the envelope keeps it within MARGIN times the
    large samples' rates, while a small layer may still cost the small ones' rate."""
    work = np.array([10.0] * 10 + [100.0] * 10 + [1000.0] * 10 + [10000.0] * 10)
    times = work * np.repeat([1.0, 0.5, 0.02, 0.01], 10) * np.tile(np.linspace(0.9, 1.1, 10), 4)
    envelope = RateEnvelope.fitted("elements", work, times)
    assert len(envelope.low) == 4 and envelope.log2_edges == pytest.approx(np.log2([100.0, 1000.0, 10000.0]))
    runaway = SparsePolynomial("linear", "ms", 0.0, [(1.0, {"elements": 2})], rates=envelope)
    big, small = {"elements": np.array([1e6])}, {"elements": np.array([12.0])}
    margin = RateEnvelope.MARGIN
    assert runaway.predict(big) == pytest.approx([1e6 * 0.02 * 1.1 * margin])  # from the last two bands' highest
    assert SparsePolynomial("linear", "ms", 0.0, [(1.0, {"elements": 2})]).predict(big) == pytest.approx([1e12])
    tiny = SparsePolynomial("linear", "ms", 0.0, [(1e-4, {"elements": 1})], rates=envelope)
    assert tiny.predict(small) == pytest.approx([12.0 * 0.45 / margin])  # from the first two bands' lowest
    modest = SparsePolynomial("linear", "ms", 0.0, [(0.3, {"elements": 1})], rates=envelope)
    assert modest.predict(small) == pytest.approx([12.0 * 0.3])  # within its size band's rates: left alone
    assert SparsePolynomial.from_dict(runaway.to_dict()) == runaway
    assert runaway.partial({"elements": 1e6}).rates is None  # the work fixed: a constant, nothing to bound
    assert envelope.scaled(3.0).high == pytest.approx([3 * h for h in envelope.high])  # an estimate for another GPU
    bad = {**runaway.to_dict(), "rates": {**envelope.to_dict(), "low": [0.5, 0.2, 0.01, 2.0]}}
    with pytest.raises(NpowerError, match="rates: expected 0 <= low <= high and longest >= 0 in every band"):
        SparsePolynomial.from_dict(bad)
    with pytest.raises(NpowerError, match="one more band"):
        SparsePolynomial.from_dict({**runaway.to_dict(), "rates": {**envelope.to_dict(), "log2_edges": [1.0]}})


def test_pack_round_trip_is_exact(tmp_path):
    pack = linear_pack()
    pack.models["conv"].runtime.terms.append((0.1 + 0.2, {"log2(batch)": 2, "macs": 1}))
    pack.models["conv"].runtime.intercept = 1 / 3
    path = pack.save(tmp_path / "p.yaml")
    loaded = load_pack(path)
    assert loaded.to_dict() == pack.to_dict()
    assert loaded.models["conv"].runtime.terms[-1][0] == 0.1 + 0.2
    assert load_pack(loaded.save(tmp_path / "q.yaml")).to_dict() == pack.to_dict()


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d.pop("models"), "missing field 'models'"),
    (lambda d: d.update(schema_version=99), "schema_version"),
    (lambda d: d["models"]["conv"]["runtime"].update(target="cubic"), r"models.conv.runtime.target"),
    (lambda d: d["models"]["conv"]["runtime"]["terms"][0].update(coef="x"), r"models.conv.runtime.terms\[0\].coef"),
    (lambda d: d["models"]["conv"]["runtime"]["terms"][0]["powers"].update(macs=-1), "exponent"),
    (lambda d: d["device"].update(peak_gflops=-5), "device.peak_gflops"),
])
def test_invalid_pack_names_the_field(mutate, message):
    data = linear_pack().to_dict()
    mutate(data)
    with pytest.raises(NpowerError, match=message):
        pack_from_dict(data)


def test_invalid_yaml_and_unknown_pack(tmp_path, pack_dir):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(NpowerError, match="invalid YAML at line"):
        load_pack(bad)
    with pytest.raises(NpowerError, match="available packs: .*testpack"):
        find_pack("nosuchdevice", [pack_dir])
    assert find_pack("testp", [pack_dir]).name == "testpack"


def test_safe_load_only(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("!!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(NpowerError, match="invalid YAML"):
        load_pack(evil)


def test_environment_folder_is_searched(tmp_path, pack_dir, monkeypatch):
    monkeypatch.setenv("NPOWER_PROFILES", str(pack_dir))
    assert find_pack("testpack").device["name"] == "Test Device"
    assert yaml.safe_load((pack_dir / "testpack.yaml").read_text())["name"] == "testpack"


def test_pack_using_an_unknown_feature_is_a_clear_error():
    from npower import analyze, zoo
    pack = linear_pack()
    pack.models["conv"].runtime.terms = [(1.0, {"log2(flux_capacity)": 1})]
    with pytest.raises(NpowerError, match="feature\\(s\\) flux_capacity"):
        analyze(zoo.build("alexnet", weights=False), gpu=pack)
