"""Measurement backends: onnxruntime CPU and onnxruntime CUDA (+ NVML power).

One interface: Backend.measure(model_bytes, feeds) -> Measurement. Timing: warm-up, then
repeated runs until both a minimum count and a minimum duration are reached (or a cap);
median, p10 and p90 recorded.
"""
from __future__ import annotations

import os
import platform
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import NpowerError


@dataclass
class TimingPolicy:
    warmup_runs: int = 3
    min_runs: int = 15
    min_seconds: float = 0.15
    max_seconds: float = 2.0


@dataclass
class Measurement:
    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    runs: int
    watts: float | None = None
    energy_mj: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def time_runs(run: Callable[[], None], policy: TimingPolicy) -> tuple[list[float], float]:
    """Run warm-ups, then timed runs; return per-run seconds and total timed wall seconds."""
    for _ in range(policy.warmup_runs):
        run()
    times: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
        if (len(times) >= policy.min_runs and elapsed >= policy.min_seconds) or \
                (elapsed >= policy.max_seconds and len(times) >= 3):
            return times, elapsed


def summarize(times: list[float]) -> Measurement:
    ms = np.array(times) * 1e3
    return Measurement(float(np.median(ms)), float(np.percentile(ms, 10)), float(np.percentile(ms, 90)),
                       float(ms.mean()), len(ms))


def import_onnxruntime():
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    try:
        import onnxruntime
    except ImportError:
        raise NpowerError("onnxruntime is not installed: pip install 'npower[profile]' "
                          "(or onnxruntime-gpu for CUDA)") from None
    return onnxruntime


def session_options(ort, threads: int, optimization: str):
    levels = {"disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = levels[optimization]
    options.log_severity_level = 3
    return options


class OrtCpuBackend:
    """onnxruntime on the CPU execution provider."""

    provider = "CPUExecutionProvider"

    def __init__(self, threads: int = 1, optimization: str = "extended", policy: TimingPolicy | None = None):
        self.ort = import_onnxruntime()
        self.threads = threads
        self.optimization = optimization
        self.policy = policy or TimingPolicy()

    def session(self, model_bytes: bytes):
        options = session_options(self.ort, self.threads, self.optimization)
        return self.ort.InferenceSession(model_bytes, options, providers=[self.provider])

    def measure(self, model_bytes: bytes, feeds: dict[str, np.ndarray]) -> Measurement:
        sess = self.session(model_bytes)
        times, _ = time_runs(lambda: sess.run(None, feeds), self.policy)
        return summarize(times)

    def runtime_info(self) -> dict[str, Any]:
        return {"name": "onnxruntime", "version": self.ort.__version__, "execution_provider": self.provider,
                "intra_op_threads": self.threads, "precision": "fp32", "graph_optimization": self.optimization}

    def device_info(self) -> dict[str, Any]:
        return {"name": cpu_name(), "kind": "cpu", "vendor": cpu_vendor(), "cores": os.cpu_count(),
                "memory_gb": memory_gb(), "power": "none: no RAPL energy counters readable on this machine"
                if not rapl_available() else "RAPL available"}


class OrtCudaBackend(OrtCpuBackend):
    """onnxruntime-gpu on CUDA with I/O binding, NVML energy or power polling."""

    provider = "CUDAExecutionProvider"

    def __init__(self, threads: int = 1, optimization: str = "extended", policy: TimingPolicy | None = None,
                 device_id: int = 0, power_seconds: float = 1.0):
        super().__init__(threads, optimization, policy)
        if hasattr(self.ort, "preload_dlls"):
            try:
                self.ort.preload_dlls()
            except Exception:  # noqa: BLE001 - CUDA libraries may come from the system instead
                pass
        if self.provider not in self.ort.get_available_providers():
            raise NpowerError("onnxruntime has no CUDAExecutionProvider: install onnxruntime-gpu (not onnxruntime)")
        self.device_id = device_id
        self.power_seconds = power_seconds
        self.nvml = Nvml(device_id)

    def session(self, model_bytes: bytes):
        options = session_options(self.ort, self.threads, self.optimization)
        sess = self.ort.InferenceSession(model_bytes, options,
                                         providers=[(self.provider, {"device_id": self.device_id})])
        actual = sess.get_providers()[0]
        if actual != self.provider:
            raise NpowerError(f"onnxruntime fell back to {actual}: the session does not run on CUDA "
                              "(check the CUDA/cuDNN libraries); refusing to record CPU timings as GPU ones")
        return sess

    def measure(self, model_bytes: bytes, feeds: dict[str, np.ndarray]) -> Measurement:
        sess = self.session(model_bytes)
        binding = sess.io_binding()
        for name, value in feeds.items():
            binding.bind_ortvalue_input(name, self.ort.OrtValue.ortvalue_from_numpy(value, "cuda", self.device_id))
        for output in sess.get_outputs():
            binding.bind_output(output.name, "cuda", self.device_id)

        def run() -> None:
            sess.run_with_iobinding(binding)

        times, _ = time_runs(run, self.policy)
        result = summarize(times)
        result.watts, result.extra = self.nvml.average_power(run, self.power_seconds)
        result.energy_mj = result.watts * result.median_ms if result.watts is not None else None
        return result

    def device_info(self) -> dict[str, Any]:
        return {**self.nvml.info(), "kind": "gpu", "vendor": "NVIDIA"}


class Nvml:
    """NVML through nvidia-ml-py: energy counter where present, else <= 10 ms power polling."""

    def __init__(self, device_id: int = 0):
        try:
            import pynvml
        except ImportError:
            raise NpowerError("nvidia-ml-py is not installed (pip install nvidia-ml-py): no GPU power readings") from None
        try:
            pynvml.nvmlInit()
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(device_id)
        except pynvml.NVMLError as exc:
            raise NpowerError(f"NVML unavailable ({exc}): is the NVIDIA driver installed?") from exc
        self.nv = pynvml
        self.has_energy = self._probe_energy()

    def _probe_energy(self) -> bool:
        try:
            self.nv.nvmlDeviceGetTotalEnergyConsumption(self.handle)
            return True
        except self.nv.NVMLError:
            return False

    def info(self) -> dict[str, Any]:
        nv, h = self.nv, self.handle
        name = nv.nvmlDeviceGetName(h)
        memory = nv.nvmlDeviceGetMemoryInfo(h).total / 2 ** 30
        return {"name": name.decode() if isinstance(name, bytes) else name,
                "driver": _text(nv.nvmlSystemGetDriverVersion()),
                "memory_gb": round(memory, 1),
                "power_limit_w": nv.nvmlDeviceGetPowerManagementLimit(h) / 1000.0,
                "sm_clock_max_mhz": nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_SM),
                "mem_clock_max_mhz": nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_MEM),
                "idle_power_w": nv.nvmlDeviceGetPowerUsage(h) / 1000.0,
                "power_source": "nvml total energy counter" if self.has_energy else "nvml power polling (10 ms)"}

    def state(self) -> dict[str, Any]:
        nv, h = self.nv, self.handle
        return {"temperature_c": nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU),
                "sm_clock_mhz": nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)}

    def average_power(self, run: Callable[[], None], seconds: float) -> tuple[float | None, dict[str, Any]]:
        """Average board power (W) while `run` loops for `seconds`."""
        if self.has_energy:
            start_mj = self.nv.nvmlDeviceGetTotalEnergyConsumption(self.handle)
            start = time.perf_counter()
            while time.perf_counter() - start < seconds:
                run()
            elapsed = time.perf_counter() - start
            delta_mj = self.nv.nvmlDeviceGetTotalEnergyConsumption(self.handle) - start_mj
            return delta_mj / 1000.0 / elapsed, {**self.state(), "power_method": "energy_counter"}
        samples: list[float] = []
        stop = threading.Event()

        def poll() -> None:
            while not stop.is_set():
                samples.append(self.nv.nvmlDeviceGetPowerUsage(self.handle) / 1000.0)
                stop.wait(0.01)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            run()
        stop.set()
        poller.join()
        watts = float(np.mean(samples)) if samples else None
        return watts, {**self.state(), "power_method": "polling_10ms", "power_samples": len(samples)}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_vendor() -> str:
    name = cpu_name().upper()
    return "AMD" if "AMD" in name else "Intel" if "INTEL" in name else "unknown"


def memory_gb() -> float | None:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        return round(pages * size / 2 ** 30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def rapl_available() -> bool:
    return os.access("/sys/class/powercap/intel-rapl:0/energy_uj", os.R_OK)


BACKENDS = {"cpu": OrtCpuBackend, "cuda": OrtCudaBackend}


def make_backend(device: str, threads: int, optimization: str, policy: TimingPolicy):
    """Backend for a --device string ('cpu' or 'cuda' / 'cuda:N')."""
    name, _, index = device.partition(":")
    if name not in BACKENDS or (index and not index.isdigit()):
        raise NpowerError(f"unknown device '{device}': use one of cpu, cuda, cuda:N")
    if name == "cuda":
        return OrtCudaBackend(threads, optimization, policy, device_id=int(index or 0))
    return OrtCpuBackend(threads, optimization, policy)
