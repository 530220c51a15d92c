"""Profiler and fitter: a tiny real sweep end to end, resume, corrupt rows, CUDA refusals."""
from __future__ import annotations

import types

import numpy as np
import pytest

from npower import NpowerError, analyze, zoo
from npower.cli import main
from npower.fit import fit_target, rmspe
from npower.pack import load_pack
from npower.profile import plan
from npower.profile.store import SampleWriter, read_samples

pytest.importorskip("onnxruntime")
pytest.importorskip("sklearn")

TINY = ["--kinds", "relu,maxpool,gemm", "--scale", "0.05", "--max-macs", "2e6", "--min-runs", "3",
        "--min-seconds", "0.005", "--max-seconds", "0.05", "--quiet"]


def test_tiny_sweep_profile_fit_analyze(tmp_path, capsys):
    samples = tmp_path / "s.jsonl"
    assert main(["profile", "-o", str(samples), *TINY, "--scale", "0.3"]) == 0
    data = read_samples(samples)
    assert data.header["runtime"]["intra_op_threads"] == 1
    assert data.header["device"]["peak_gflops"] > 0
    kinds = {row["kind"] for row in data.samples}
    assert kinds == {"relu", "maxpool", "gemm"}
    assert all(row["median_ms"] > 0 and row["p10_ms"] <= row["median_ms"] <= row["p90_ms"]
               for row in data.samples if not row.get("error"))
    assert main(["fit", str(samples), "-o", str(tmp_path / "tiny.yaml"), "--max-degree", "1"]) == 0
    out = capsys.readouterr().out
    assert "held-out RMSPE" in out
    pack = load_pack(tmp_path / "tiny.yaml")
    assert set(pack.models) == {"relu", "maxpool", "gemm"}
    assert pack.provenance["samples_total"] == len(data.samples)
    assert pack.models["gemm"].runtime.fit["heldout_rmspe_pct"] > 0
    report = analyze(zoo.build("resnet18", weights=False), gpu=pack, fusion=False)
    assert report.runtime_ms > 0 and report.power_w is None
    assert {l.source for l in report.layers if l.kind in ("relu", "maxpool", "gemm")} == {"fitted"}
    assert {l.source for l in report.layers if l.kind == "conv"} == {"fallback"}


def test_resume_after_kill_keeps_rows_and_skips_done(tmp_path):
    samples = tmp_path / "s.jsonl"
    assert main(["profile", "-o", str(samples), *TINY]) == 0
    done = read_samples(samples)
    with open(samples, "a") as handle:  # a kill in the middle of writing a row
        handle.write('{"type": "sample", "kind": "co')
    assert main(["profile", "-o", str(samples), *TINY]) == 0
    again = read_samples(samples)
    assert len(again.samples) == len(done.samples)  # nothing re-measured, nothing lost
    assert len(again.bad_rows) == 1
    assert main(["profile", "-o", str(samples), *TINY, "--scale", "0.1"]) == 0
    grown = read_samples(samples)
    assert len(grown.samples) > len(done.samples)
    assert {r["key"] for r in done.samples} <= grown.keys


def test_fit_reports_corrupt_rows_and_keeps_good_ones(tmp_path, capsys):
    samples = tmp_path / "s.jsonl"
    with SampleWriter(samples, {"device": {"name": "x"}, "runtime": {}}) as writer:
        rng = np.random.default_rng(0)
        for index in range(40):
            elements = float(2 ** rng.uniform(8, 22))
            writer.append({"type": "sample", "key": str(index), "kind": "relu",
                           "features": {"elements": elements, "inputs": 1.0, "broadcast": 0.0},
                           "specials": {"in_elems": elements}, "median_ms": 1e-5 * elements + 0.002})
    with open(samples, "a") as handle:
        handle.write("not json\n")
    assert main(["fit", str(samples), "-o", str(tmp_path / "p.yaml")]) == 0
    assert f"{samples}:42: skipped corrupt row" in capsys.readouterr().err
    assert load_pack(tmp_path / "p.yaml").models["relu"].runtime.fit["samples"] == 40


def test_log_target_fit_is_relative_error_and_held_out():
    rng = np.random.default_rng(1)
    macs = 2 ** rng.uniform(10, 32, size=300)
    batch = 2 ** rng.integers(0, 8, size=300)
    measured = (macs / 5e7 + 0.01 * batch + 0.004) * rng.lognormal(0, 0.03, size=300)
    rows = [{"macs": m, "batch": b} for m, b in zip(macs, batch)]
    model = fit_target("conv_test", rows, measured, True, "ms", folds=5, max_degree=2, seed=0)
    assert model.fit["heldout_rmspe_pct"] < 10
    assert model.fit["heldout_rmspe_pct"] >= model.fit["insample_rmspe_pct"] * 0.8
    assert rmspe(model.predict({"macs": macs, "batch": batch}), measured) < 10


def test_plan_is_seeded_and_covers_every_kind():
    first = list(plan.generate(scale=0.01, seed=3))
    assert first == list(plan.generate(scale=0.01, seed=3))
    assert {kind for kind, _ in first} == set(plan.PLANS)
    assert first != list(plan.generate(scale=0.01, seed=4))


def test_dry_run_prints_plan(capsys):
    assert main(["profile", "-o", "unused.jsonl", "--kinds", "conv", "--scale", "0.01", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "conv" in out and "est. minutes" in out


def test_unknown_device_and_unwritable_output(tmp_path, capsys):
    assert main(["profile", "-o", str(tmp_path / "s.jsonl"), "--device", "tpu", *TINY]) == 2
    assert "unknown device 'tpu'" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["profile", "-o", str(blocker / "s.jsonl"), *TINY]) == 2
    assert "cannot write samples" in capsys.readouterr().err


def test_cuda_backend_refuses_silent_cpu_fallback(monkeypatch):
    from npower.profile import backends

    class FakeSession:
        def __init__(self, *args, **kwargs):
            pass

        def get_providers(self):
            return ["CPUExecutionProvider"]

    fake_ort = types.SimpleNamespace(get_available_providers=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"],
                                     InferenceSession=FakeSession, __version__="fake")
    backend = backends.OrtCudaBackend.__new__(backends.OrtCudaBackend)
    backend.ort, backend.threads, backend.optimization, backend.device_id = fake_ort, 1, "extended", 0
    monkeypatch.setattr(backends, "session_options", lambda *a: None)
    with pytest.raises(NpowerError, match="fell back to CPUExecutionProvider"):
        backend.session(b"model")


def test_missing_nvml_and_missing_cuda_are_clear(monkeypatch):
    import sys
    from npower.profile import backends
    monkeypatch.setitem(sys.modules, "pynvml", None)
    with pytest.raises(NpowerError, match="nvidia-ml-py is not installed"):
        backends.Nvml()
    with pytest.raises(NpowerError, match="no CUDAExecutionProvider"):
        backends.OrtCudaBackend()


def test_nvml_energy_counter_gives_average_power():
    from npower.profile import backends
    clock = {"mj": 0}

    class FakeNvml:
        NVMLError = RuntimeError
        NVML_TEMPERATURE_GPU = NVML_CLOCK_SM = 0

        @staticmethod
        def nvmlDeviceGetTotalEnergyConsumption(handle):
            return clock["mj"]

        @staticmethod
        def nvmlDeviceGetTemperature(handle, sensor):
            return 50

        @staticmethod
        def nvmlDeviceGetClockInfo(handle, clock_type):
            return 1500

    nvml = backends.Nvml.__new__(backends.Nvml)
    nvml.nv, nvml.handle, nvml.has_energy = FakeNvml, None, True

    def run():  # each run: 1 ms of wall time at 250 W = 250 mJ per second
        import time
        start = time.perf_counter()
        while time.perf_counter() - start < 1e-3:
            pass
        clock["mj"] += 250

    watts, extra = nvml.average_power(run, 0.05)
    assert 150 < watts <= 250 and extra["power_method"] == "energy_counter"
