"""GPU spec sheets: every shipped figure has a source, peaks agree with core counts, names resolve."""
from __future__ import annotations

import json

import pytest
import yaml

from conftest import need_shared
from npower.errors import NpowerError
from npower.specs import FIGURES, available_specs, find_spec, load_spec, normalise

REQUIRED = ["titanx", "gtx1070", "gtx1080ti", "titanxp", "rtx2080ti", "rtx3090", "rtx4090", "t4", "p4", "p100",
            "v100", "a10", "a100", "a100-80gb", "a100-sxm4-40gb", "a100-sxm4-80gb", "l4", "l40s", "h100",
            "h100-pcie", "h200"]


def test_required_gpus_ship_with_sources_and_consistent_peaks():
    specs = available_specs()
    assert set(REQUIRED) <= set(specs)
    for spec in specs.values():
        assert set(spec.sources) == set(FIGURES) and all(spec.sources.values()), spec.id
        computed = 2 * spec.sms * spec.cores_per_sm * spec.boost_clock_mhz / 1e3
        assert abs(computed / spec.fp32_peak_gflops - 1) < 0.015, spec.id


def test_names_are_unambiguous():
    owners = {}
    for spec in available_specs().values():
        for name in spec.names:
            assert name not in owners, f"{name} names both {owners.get(name)} and {spec.id}"
            owners[name] = spec.id
    assert find_spec("Tesla V100-PCIE-32GB").id == "v100"
    assert find_spec("NVIDIA H100 80GB HBM3").id == "h100"
    assert find_spec("GTX Titan X").id == "titanx"
    with pytest.raises(NpowerError, match="no GPU spec named 'gtx9999'"):
        find_spec("gtx9999")


def _write(tmp_path, **changes):
    data = yaml.safe_load(find_spec("t4").path.read_text())
    data.update(changes)
    path = tmp_path / "gpu.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_bad_specs_name_the_problem(tmp_path):
    with pytest.raises(NpowerError, match="disagrees with 2 x sms"):
        load_spec(_write(tmp_path, fp32_peak_gflops=9000))
    with pytest.raises(NpowerError, match="no source given for tdp_w"):
        data = yaml.safe_load(find_spec("t4").path.read_text())
        del data["sources"]["tdp_w"]
        load_spec(_write(tmp_path, sources=data["sources"]))
    with pytest.raises(NpowerError, match="field 'sms' must be a positive number"):
        load_spec(_write(tmp_path, sms=-1))


def test_figures_match_neusight_device_files_or_say_why():
    devices = need_shared("data", "neusight", "devices")
    checked = 0
    for spec in available_specs().values():
        if not spec.neusight_device:
            continue
        info = json.loads((devices / f"{spec.neusight_device.replace(' ', '_')}.json").read_text())
        assert normalise(info["Device"]) in spec.names
        for theirs, ours in (("SingleFLOPs", spec.fp32_peak_gflops), ("Mem_Bw", spec.bandwidth_gbs),
                             ("Num_Sm", spec.sms), ("Freq", spec.boost_clock_mhz)):
            if abs(info[theirs] / ours - 1) > 0.015:  # a difference from NeuSight's figure must be explained
                assert "NeuSight" in spec.notes, f"{spec.id}: {theirs} {info[theirs]} vs {ours}, no note"
        checked += 1
    assert checked >= 7
