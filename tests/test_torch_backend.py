"""PyTorch eager backend: agreement with onnxruntime per op kind, NVML power arithmetic, GPU campaign."""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.frameworks  # PyTorch stays in memory: runs last (see conftest)
ort = pytest.importorskip("onnxruntime")

from conftest import need_shared  # noqa: E402
from npower import zoo  # noqa: E402
from npower.profile.backends import TimingPolicy  # noqa: E402
from npower.profile.build import build_model, make_feeds  # noqa: E402
from npower.profile.plan import PLANS, generate  # noqa: E402
from npower.profile.power import PowerMeter  # noqa: E402
from npower.profile.store import read_samples  # noqa: E402
from npower.profile.torch_backend import TorchBackend, TorchGraph  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_campaign  # noqa: E402

FAST = TimingPolicy(warmup_runs=1, min_runs=3, min_seconds=0.002, max_seconds=0.05)


def _small(config) -> bool:
    return sum(math.prod(spec["shape"]) for spec in config["inputs"]) <= 2e5


def _ort(model, feeds):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def _torch(model, feeds):
    with torch.inference_mode():
        return [t.numpy() for t in TorchGraph(model, "cpu").run({k: torch.from_numpy(v) for k, v in feeds.items()})]


def _assert_close(expected, got, what):
    assert len(expected) == len(got), what
    for e, g in zip(expected, got):
        assert e.shape == g.shape, what
        np.testing.assert_allclose(g, e, rtol=1e-3, atol=1e-4 * max(1.0, float(np.abs(e).max())), err_msg=what)


def test_every_plan_kind_matches_onnxruntime():
    checked = set()
    for kind in PLANS:
        for seed in (0, 1):
            for _, config in generate([kind], 1e-9, seed, _small, max_tries=500):
                model, feeds = build_model(config, seed), make_feeds(config, seed)
                what = f"{kind}: {config['attrs']} {[s['shape'] for s in config['inputs']]}"
                _assert_close(_ort(model, feeds), _torch(model, feeds), what)
                out = TorchBackend("cpu", FAST).prepare_config(config, seed)()
                first = out[0] if isinstance(out, (tuple, list)) else out
                assert list(first.shape) == list(_ort(model, feeds)[0].shape), what
                checked.add(kind)
    assert checked == set(PLANS)


@pytest.mark.parametrize("name", ["squeezenet", "alexnet", next(n for n in zoo.NETWORKS if n.startswith("vit"))])
def test_zoo_network_node_by_node_matches_onnxruntime(name):
    model = zoo.build(name, 1)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    feeds = {model.graph.input[0].name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    _assert_close(_ort(model, feeds), _torch(model, feeds), name)


def test_unsupported_op_is_an_ordinary_error_not_npower_error():
    from npower.profile.torch_ops import NodeSpec, make_op
    with pytest.raises(NotImplementedError, match="NonMaxSuppression"):
        make_op(NodeSpec("NonMaxSuppression", {}, ()))


class FakeNvml:
    """The pynvml functions PowerMeter calls. Board power is `watts`; the energy counter (if any)
    integrates it and updates only every `tick` seconds, like NVML's."""

    NVML_TEMPERATURE_GPU, NVML_CLOCK_SM, NVML_CLOCK_MEM = 0, 1, 2

    class NVMLError(Exception):
        pass

    def __init__(self, watts: float = 200.0, counter: bool = True, tick: float = 0.05):
        self.watts, self.counter, self.tick = watts, counter, tick
        self.energy_j, self.last = 1000.0, time.perf_counter()

    def _advance(self) -> None:
        now = time.perf_counter()
        self.energy_j += self.watts * (now - self.last)
        self.last = now

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if not self.counter:
            raise self.NVMLError("Not Supported")
        self._advance()
        ticks = math.floor(self.last / self.tick)  # the value as of the last update
        return int((self.energy_j - self.watts * (self.last - ticks * self.tick)) * 1000)

    def nvmlDeviceGetPowerUsage(self, handle):
        return int(self.watts * 1000)

    def nvmlDeviceGetTemperature(self, handle, sensor):
        return 55

    def nvmlDeviceGetClockInfo(self, handle, clock):
        return 1980 if clock == self.NVML_CLOCK_SM else 2619

    nvmlDeviceGetMaxClockInfo = nvmlDeviceGetClockInfo

    def nvmlDeviceGetName(self, handle):
        return b"Fake H100"

    def nvmlSystemGetDriverVersion(self):
        return "580.0"

    def nvmlDeviceGetMemoryInfo(self, handle):
        return type("Memory", (), {"total": 80 * 2 ** 30})()

    def nvmlDeviceGetPowerManagementLimit(self, handle):
        return 700000


def test_energy_counter_window_is_edge_aligned():
    meter = PowerMeter(FakeNvml(200.0, tick=0.05), handle=0)
    assert meter.has_energy
    window = meter.window(lambda: time.sleep(0.001), 0.3, poll=True)
    assert window["power_method"] == "energy_counter"
    assert window["watts"] == pytest.approx(200.0, rel=0.05)  # unaligned reads could be off by a whole tick (~17 %)
    assert window["polled_w"] == pytest.approx(200.0)
    assert window["counter_j"] == pytest.approx(window["polled_j"], rel=0.1)
    assert window["temperature_c"] == 55 and window["sm_clock_mhz"] == 1980 and window["window_calls"] > 0


def test_polling_window_without_counter_drops_the_settling_second():
    meter = PowerMeter(FakeNvml(150.0, counter=False), handle=0, settle_s=0.05)
    assert not meter.has_energy
    window = meter.window(lambda: time.sleep(0.001), 0.1)
    assert window["power_method"] == "polling" and window["watts"] == pytest.approx(150.0)
    assert window["polled_n"] >= 3 and window["window_s"] >= 0.15
    assert "polling" in meter.info()["power_source"]


@pytest.mark.parametrize("counter", [True, False])
def test_measure_gives_power_energy_per_call_and_idle_subtraction(counter):
    nvml = FakeNvml(40.0, counter=counter)
    backend = TorchBackend("cpu", FAST, PowerMeter(nvml, 0, settle_s=0.02), power_seconds=0.15)
    backend.meter.idle = lambda seconds: PowerMeter.idle(backend.meter, seconds, rest_s=0.0)
    assert backend.measure_idle(0.12)["watts"] == pytest.approx(40.0, rel=0.05)
    nvml.watts = 240.0
    config = {"op": "Relu", "attrs": {}, "inputs": [{"shape": [64, 256], "weight": False}]}
    result = backend.measure(build_model(config).SerializeToString(), make_feeds(config))
    assert result.watts == pytest.approx(240.0, rel=0.05)
    assert result.energy_mj == pytest.approx(result.watts * result.median_ms)
    assert result.extra["idle_w"] == pytest.approx(40.0, rel=0.05)
    assert result.extra["dynamic_energy_mj"] == pytest.approx((result.watts - result.extra["idle_w"]) * result.median_ms)
    assert backend.runtime_info() == {"name": "torch", "version": torch.__version__, "device": "cpu",
                                      "graph_optimization": "eager", "precision": "fp32"}


def test_profile_kernels_times_every_node():
    model = zoo.build("squeezenet", 1)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    feeds = {model.graph.input[0].name: np.ones(shape, np.float32)}
    profile = TorchBackend("cpu", FAST).profile_kernels(model.SerializeToString(), feeds, runs=2)
    assert [k.name for k in profile.kernels] == [n.name for n in model.graph.node]
    assert all(k.ms >= 0 for k in profile.kernels) and profile.total_ms == pytest.approx(sum(k.ms for k in profile.kernels))


# the network power window spans five 50 ms counter updates: a 50 ms one is off by 12 % on a loaded machine
TINY = ["--device", "cpu", "--scale", "1e-9", "--kinds", "relu,conv,gemm", "--networks", "squeezenet", "--batches", "1",
        "--transformers", "", "--warmup-s", "0.1", "--check-s", "0.1", "--power-s", "0.05", "--net-power-s", "0.25",
        "--min-seconds", "0.002", "--budget-s", "120"]


def _rows(path: Path) -> list[dict]:
    return read_samples(path).samples


def test_campaign_end_to_end_on_cpu_resumes_and_merges(tmp_path, monkeypatch):
    monkeypatch.setattr(PowerMeter, "idle", lambda self, seconds, rest_s=0.0: self.window(lambda: time.sleep(0.002), 0.05))
    out = tmp_path / "out"
    args = gpu_campaign.parse_args(["--out", str(out), *TINY])
    backend = TorchBackend("cpu", FAST, PowerMeter(FakeNvml(300.0), 0), power_seconds=args.power_s)
    gpu_campaign.campaign(args, backend)
    events = [row["kind"] for row in _rows(out / "campaign.jsonl")]
    assert events[:5] == ["check", "idle_cold", "warmup", "idle_warm", "power_check"] and events[-1] == "end"
    check = _rows(out / "campaign.jsonl")[4]["loads"]
    assert set(check) == {"matmul", "copy", "add_1k"} and check["add_1k"]["counter_interval_ms"] > 0
    (network,) = _rows(out / "networks.jsonl")
    assert network["key"] == "zoo:squeezenet@1" and network["median_ms"] > 0 and network["watts"] == pytest.approx(300, rel=0.1)
    samples, powered = _rows(out / "samples.jsonl"), _rows(out / "power.jsonl")
    assert sorted(row["kind"] for row in samples) == ["conv", "gemm", "relu"]
    assert all(row.get("watts") is None and not row.get("error") for row in samples)
    assert [row["key"] for row in powered] == [row["key"] for row in samples] and all(row["watts"] > 0 for row in powered)
    assert read_samples(out / "samples.jsonl").header["runtime"]["name"] == "torch"

    again = tmp_path / "again"  # a second call resumes from the first call's files: nothing to redo
    gpu_campaign.campaign(gpu_campaign.parse_args(["--out", str(again), "--resume-from", str(out), *TINY]), backend)
    assert len(_rows(again / "samples.jsonl")) == 3 and len(_rows(again / "networks.jsonl")) == 1
    assert [row["kind"] for row in _rows(again / "campaign.jsonl")].count("power_check") == 1

    assert gpu_campaign.main(["--merge", str(again), "-o", str(tmp_path / "merged.jsonl")]) == 0
    merged = read_samples(tmp_path / "merged.jsonl")
    assert len(merged.samples) == 3 and all(row["watts"] > 0 for row in merged.samples)


def test_campaign_budget_stops_before_samples(tmp_path):
    out = tmp_path / "out"
    args = gpu_campaign.parse_args(["--out", str(out), *TINY[:-1], "0"])
    gpu_campaign.campaign(args, TorchBackend("cpu", FAST))
    assert not (out / "samples.jsonl").exists()
    assert any(row["kind"] == "stopped" for row in _rows(out / "campaign.jsonl"))


def test_campaign_transformer_path(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    configs = need_shared("data", "neusight", "models").parent
    monkeypatch.setattr(gpu_campaign, "TRANSFORMERS", {"bert_large": (16, (1,))})
    out = tmp_path / "out"
    args = gpu_campaign.parse_args(["--out", str(out), *TINY, "--networks", "", "--transformers", "bert_large",
                                    "--hf-layers", "1", "--kinds", "relu", "--hf-configs", str(configs)])
    gpu_campaign.campaign(args, TorchBackend("cpu", FAST))
    (row,) = _rows(out / "networks.jsonl")
    assert row["key"] == "hf:bert_large@1x16" and row["layers"] == 1 and row["median_ms"] > 0, row.get("error")


def test_dry_run_and_bad_device(capsys, tmp_path):
    assert gpu_campaign.main(["--dry-run", "--scale", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "samples: runtime" in out and "GPU time planned" in out
    if not torch.cuda.is_available():
        assert gpu_campaign.main(["--out", str(tmp_path), "--device", "cuda"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("npower: error:") and len(err.strip().splitlines()) == 1
