"""Profiler and fitter: a tiny real sweep end to end, resume, corrupt rows, runtime binding, CUDA refusals."""
from __future__ import annotations

import importlib.util
import types

import numpy as np
import pytest

from npower import NpowerError, analyze, zoo
from npower.cli import main
from npower.fit import fit_target, rmspe
from npower.pack import find_pack, load_pack
from npower.profile import backends, plan
from npower.profile.store import SampleWriter, read_samples

needs_ort = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None,
                               reason="measuring needs onnxruntime (pip install 'npower[profile]')")
needs_sklearn = pytest.mark.skipif(importlib.util.find_spec("sklearn") is None,
                                   reason="fitting needs scikit-learn (pip install 'npower[profile]')")

TINY = ["--kinds", "relu,maxpool,gemm", "--scale", "0.05", "--max-macs", "2e6", "--min-runs", "3",
        "--min-seconds", "0.005", "--max-seconds", "0.05", "--quiet"]


@needs_ort
@needs_sklearn
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
    assert main(["fit", str(samples), "-o", str(tmp_path / "tiny.yaml"), "--max-degree", "1",
                 "--alias", "tiny-cpu"]) == 0
    out = capsys.readouterr().out
    assert "held-out RMSPE" in out
    pack = load_pack(tmp_path / "tiny.yaml")
    assert set(pack.models) == {"relu", "maxpool", "gemm"}
    assert find_pack("tiny-cpu", [tmp_path]).name == "tiny"  # --alias resolves
    assert pack.provenance["samples_total"] == len(data.samples)
    assert pack.models["gemm"].runtime.fit["heldout_rmspe_pct"] > 0
    report = analyze(zoo.build("resnet18", weights=False), gpu=pack, fusion=False)
    assert report.runtime_ms > 0 and report.power_w is None
    assert {l.source for l in report.layers if l.kind in ("relu", "maxpool", "gemm")} == {"fitted"}
    assert {l.source for l in report.layers if l.kind == "conv"} == {"fallback"}


@needs_ort
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


@needs_ort
@pytest.mark.parametrize("option, change", [(["--threads", "2"], "intra_op_threads 1 -> 2"),
                                            (["--optimization", "basic"], "graph_optimization extended -> basic")])
def test_resume_with_another_runtime_is_refused(tmp_path, capsys, option, change):
    samples = tmp_path / "s.jsonl"
    assert main(["profile", "-o", str(samples), *TINY, "--scale", "0.02"]) == 0
    before = samples.read_text()
    assert main(["profile", "-o", str(samples), *TINY, "--scale", "0.1", *option]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds samples of another runtime" in err[0] and change in err[0]
    assert samples.read_text() == before


@needs_ort
def test_resume_on_another_cpu_generation_is_refused(tmp_path, capsys, monkeypatch):
    # both generations are called 'AMD EPYC' inside a virtual machine: the recorded family and model differ
    import npower.profile.backends as backends
    samples = tmp_path / "s.jsonl"
    monkeypatch.setattr(backends, "cpu_identity", lambda: "family 26 model 2")
    assert main(["profile", "-o", str(samples), *TINY, "--scale", "0.02"]) == 0
    before = samples.read_text()
    monkeypatch.setattr(backends, "cpu_identity", lambda: "family 25 model 17")
    assert main(["profile", "-o", str(samples), *TINY, "--scale", "0.1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CPU family 26 model 2 -> family 25 model 17" in err[0]
    assert samples.read_text() == before


def _relu_run(path, scale: float, threads: int = 1, configs: int = 40, cache_state: str | None = None) -> None:
    """A sample file of Relu configs whose runtimes are `scale` times one linear law."""
    runtime = {"name": "onnxruntime", "version": "1.32.0", "execution_provider": "CPUExecutionProvider",
               "graph_optimization": "all", "intra_op_threads": threads, "precision": "fp32"}
    header = {"created": path.name, "device": {"name": "x", "peak_gflops": 100.0 * scale}, "runtime": runtime,
              **({"cache_state": cache_state} if cache_state else {})}
    with SampleWriter(path, header) as writer:
        rng = np.random.default_rng(0)
        for index in range(configs):
            elements = float(2 ** rng.uniform(8, 22))
            writer.append({"type": "sample", "key": str(index), "kind": "relu",
                           "features": {"elements": elements, "inputs": 1.0, "broadcast": 0.0},
                           "specials": {"in_elems": elements}, "median_ms": scale * (1e-5 * elements + 0.002)})


@needs_sklearn
def test_fit_reports_corrupt_rows_and_keeps_good_ones(tmp_path, capsys):
    samples = tmp_path / "s.jsonl"
    _relu_run(samples, 1.0)
    with open(samples, "a") as handle:
        handle.write("not json\n")
    assert main(["fit", str(samples), "-o", str(tmp_path / "p.yaml")]) == 0
    assert f"{samples}:42: skipped corrupt row" in capsys.readouterr().err
    pack = load_pack(tmp_path / "p.yaml")
    assert pack.models["relu"].runtime.fit["samples"] == 40
    assert "cache_state" not in pack.provenance["fit"]  # the run recorded none


@needs_sklearn
def test_fit_pools_repeated_runs_and_reports_their_noise(tmp_path, capsys):
    """Two profiles of one runtime, the second 4x slower on every config (and with one config more): the second
    run's offset is found from the 40 configs both measured and taken off (+100 % and -50 % against their mean
    state), so the pack fits their geometric mean, 2x the first, also for the config only the second measured
    (4x uncorrected), and the run-to-run noise of one measurement left is nil."""
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    _relu_run(first, 1.0, cache_state="states X")
    _relu_run(second, 4.0, configs=41, cache_state="states X")
    assert main(["fit", str(first), str(second), "-o", str(tmp_path / "p.yaml")]) == 0
    assert "repeat noise" in capsys.readouterr().out
    pack = load_pack(tmp_path / "p.yaml")
    assert pack.provenance["fit"]["cache_state"].startswith("states X; nchwc_conv_dw, conv_dw: the geometric mean")
    assert pack.provenance["samples_files"] == ["a.jsonl", "b.jsonl"]
    assert pack.provenance["run_offsets_pct"] == pytest.approx([-50.0, 100.0])
    assert pack.models["relu"].runtime.fit["samples"] == 41
    assert pack.provenance["repeat_noise_pct"]["relu"] == pytest.approx(0.0, abs=0.01)
    assert pack.device["peak_gflops"] == pytest.approx((100 * 40 + 400 * 41) / 81, abs=0.01)  # weighted by rows
    elements = np.array([1e3, 1e5, 1e6])
    predicted = pack.models["relu"].runtime.predict({"elements": elements, "inputs": np.ones(3),
                                                     "broadcast": np.zeros(3), "in_elems": elements})
    np.testing.assert_allclose(predicted, 2.0 * (1e-5 * elements + 0.002), rtol=0.05)


def test_fit_refuses_to_pool_runs_of_different_runtimes_or_a_run_twice(tmp_path, capsys):
    _relu_run(tmp_path / "a.jsonl", 1.0)
    _relu_run(tmp_path / "b.jsonl", 1.0, threads=2)
    assert main(["fit", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), "-o", str(tmp_path / "p.yaml")]) == 2
    err = capsys.readouterr().err
    assert "b.jsonl measured another runtime than a.jsonl (intra_op_threads 1 -> 2): fit them separately" in err
    assert main(["fit", str(tmp_path / "a.jsonl"), str(tmp_path / "a.jsonl"), "-o", str(tmp_path / "p.yaml")]) == 2
    assert "are the same run" in capsys.readouterr().err
    assert not (tmp_path / "p.yaml").exists()


@needs_sklearn
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


@needs_ort
def test_unknown_device_and_unwritable_output(tmp_path, capsys):
    assert main(["profile", "-o", str(tmp_path / "s.jsonl"), "--device", "tpu", *TINY]) == 2
    assert "unknown device 'tpu'" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["profile", "-o", str(blocker / "s.jsonl"), *TINY]) == 2
    assert "cannot write samples" in capsys.readouterr().err


class FakeOptions:
    """onnxruntime.SessionOptions as the backends use it."""

    def __init__(self):
        self.config: dict[str, str] = {}

    def add_session_config_entry(self, key: str, value: str) -> None:
        self.config[key] = value


def fake_ort(session_class, providers=("CUDAExecutionProvider", "CPUExecutionProvider")):
    """Just enough of the onnxruntime module for the CUDA backend, with `session_class` as InferenceSession."""
    levels = types.SimpleNamespace(ORT_DISABLE_ALL=0, ORT_ENABLE_BASIC=1, ORT_ENABLE_EXTENDED=2, ORT_ENABLE_ALL=99)
    return types.SimpleNamespace(__version__="fake", get_available_providers=lambda: list(providers),
                                 InferenceSession=session_class, SessionOptions=FakeOptions,
                                 GraphOptimizationLevel=levels, ExecutionMode=types.SimpleNamespace(ORT_SEQUENTIAL=0),
                                 OrtValue=types.SimpleNamespace(ortvalue_from_numpy=lambda *a: a))


class FakeMeter:
    """A PowerMeter reading 250 W while its window runs the model twice."""

    @classmethod
    def open(cls, device_id: int = 0) -> "FakeMeter":
        return cls()

    def window(self, run, seconds):
        run()
        run()
        return {"watts": 250.0, "power_method": "fake"}


def cuda_backend(monkeypatch, session_class, providers=("CUDAExecutionProvider", "CPUExecutionProvider")):
    monkeypatch.setattr(backends, "import_onnxruntime", lambda: fake_ort(session_class, providers))
    monkeypatch.setattr(backends, "PowerMeter", FakeMeter)
    policy = backends.TimingPolicy(warmup_runs=1, min_runs=3, min_seconds=0.0, max_seconds=1.0)
    return backends.OrtCudaBackend(policy=policy)


def test_cuda_backend_refuses_silent_cpu_fallback(monkeypatch):
    class CpuOnlySession:
        def __init__(self, model, options, providers):
            pass

        def get_providers(self):
            return ["CPUExecutionProvider"]

    with pytest.raises(NpowerError, match="fell back to CPUExecutionProvider"):
        cuda_backend(monkeypatch, CpuOnlySession).measure(b"model", {})


def test_cuda_backend_refuses_a_single_node_on_the_cpu(monkeypatch):
    """onnxruntime places a node without a CUDA kernel on the CPU and still lists CUDA first; the session
    must be opened with CPU fallback disabled, which makes onnxruntime refuse instead (its message)."""
    class PartlyCpuSession:
        def __init__(self, model, options, providers):
            if options.config.get("session.disable_cpu_ep_fallback") == "1":
                raise RuntimeError("This session contains graph nodes that are assigned to the default CPU EP, "
                                   "but fallback to CPU EP has been explicitly disabled by the user.")

        def get_providers(self):
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]

    with pytest.raises(backends.CpuFallbackError, match="no CUDA kernel"):
        cuda_backend(monkeypatch, PartlyCpuSession).measure(b"model", {})


def test_cuda_measure_binds_inputs_on_the_gpu_and_multiplies_power_by_time(monkeypatch):
    runs, bound = [], []

    class Binding:
        def bind_ortvalue_input(self, name, value):
            bound.append((name, value[1:]))

        def bind_output(self, name, device, index):
            bound.append((name, (device, index)))

    class GpuSession:
        def __init__(self, model, options, providers):
            assert providers == [("CUDAExecutionProvider", {"device_id": 0})]

        def get_providers(self):
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]

        def get_outputs(self):
            return [types.SimpleNamespace(name="y")]

        def io_binding(self):
            return Binding()

        def run_with_iobinding(self, binding):
            runs.append(binding)

    result = cuda_backend(monkeypatch, GpuSession).measure(b"model", {"x": np.zeros(4, np.float32)})
    assert bound == [("x", ("cuda", 0)), ("y", ("cuda", 0))]
    assert len(runs) == 1 + 3 + 2  # warm-up, timed runs, the power loop's runs: all through the binding
    assert result.runs == 3 and result.watts == 250.0
    assert result.energy_mj == pytest.approx(250.0 * result.median_ms)  # W x ms = mJ
    assert result.extra == {"power_method": "fake"}


def test_missing_nvml_and_missing_cuda_are_clear(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "pynvml", None)
    with pytest.raises(NpowerError, match="nvidia-ml-py is not installed"):
        backends.PowerMeter.open()
    monkeypatch.setattr(backends, "import_onnxruntime", lambda: fake_ort(None, providers=["CPUExecutionProvider"]))
    with pytest.raises(NpowerError, match="no CUDAExecutionProvider"):
        backends.OrtCudaBackend()


def test_planning_reads_shapes_without_materialising_weights(monkeypatch):
    from npower.features import extract
    from npower.graph import load_graph
    from npower.profile import build, runner
    built = []
    real = build.build_model
    monkeypatch.setattr(build, "build_model", lambda config, *a, **kw: built.append(real(config, *a, **kw)) or built[-1])
    planned = runner.make_plan(0.05, 0, None, [], runner.Budget())
    assert built and all(len(init.raw_data) <= 64 * 8 for model in built for init in model.graph.initializer)
    for item in planned:  # the features equal those of the graph with its real random weights (not its wrap ops')
        full = extract(next(node for node in load_graph(real(item.config)).nodes if node.op_type == item.config["op"]))
        assert (full.kind, full.features, full.specials) == (item.layer.kind, item.layer.features, item.layer.specials)


def test_a_plan_at_another_seed_measures_part_of_seed_0s_plan_spread_through_it():
    """Anchors: at seed 1 the plan also holds seed 0's first configs (`anchors` x the counts), spread evenly, so
    the run shares configs with the seed-0 runs (`run_offsets`); seed 0's plan is unchanged by the option."""
    from npower.profile import runner
    kinds = ["relu", "softmax"]

    def keys(scale: float, seed: int, **options) -> list[str]:
        return [item.key for item in runner.make_plan(scale, seed, kinds, [], runner.Budget(), **options)]

    seed0, seed1, anchors = keys(0.5, 0), keys(0.5, 1), keys(0.25, 0)
    anchored = keys(0.5, 1, anchors=0.25)
    assert len(anchored) == len(set(anchored)) and set(anchored) == set(seed1) | set(anchors)
    positions = [anchored.index(key) for key in anchors if key not in seed1]
    assert positions[0] == 0 and max(np.diff(positions)) <= 2 * len(anchored) / len(positions)
    assert keys(0.5, 0, anchors=0.25) == seed0
