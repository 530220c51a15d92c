"""Measurement backends: onnxruntime CPU and onnxruntime CUDA (+ NVML power, `power.PowerMeter`).

Every onnxruntime session npower opens is opened here, through one protocol (`Backend`):
`measure` times a model (a single node or a whole network), `profile_kernels` runs the
runtime's own per-kernel profiler. Timing: warm-up, then repeated runs until both a minimum
count and a minimum duration are reached (or a cap); median, p10 and p90 recorded. A PyTorch
backend implements the same protocol.
"""
from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Protocol

import numpy as np
import onnx

from ..errors import NpowerError
from .power import PowerMeter

Feeds = dict[str, np.ndarray]


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


@dataclass(frozen=True)
class KernelTime:
    """One kernel of the runtime's executed graph: its mean time per inference and the tensors it
    reads and writes (names of the runtime's optimised graph; the original graph's where kept)."""

    name: str
    op_type: str
    ms: float
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()


@dataclass
class KernelProfile:
    """Per-kernel times of a whole network, and the mean inference time the profiler measured."""

    kernels: list[KernelTime]
    total_ms: float


class Backend(Protocol):
    """What npower needs from a runtime on a device: timings, a kernel profile, and what it is."""

    policy: TimingPolicy

    def measure(self, model: bytes, feeds: Feeds) -> Measurement:
        """Time whole inferences of a serialized ONNX model (power and energy where measurable)."""

    def profile_kernels(self, model: bytes, feeds: Feeds, runs: int) -> KernelProfile:
        """The runtime's own per-kernel profile over `runs` inferences after the warm-up."""

    def runtime_info(self) -> dict[str, Any]:
        """The runtime as a pack's `runtime` mapping."""

    def device_info(self) -> dict[str, Any]:
        """The device as a pack's `device` mapping."""


class CpuFallbackError(RuntimeError):
    """A node has no kernel on the requested provider: onnxruntime would have run it on the CPU."""


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


def kernel_profile(events: list[dict[str, Any]], executed: onnx.GraphProto, skip: int) -> KernelProfile:
    """Mean per-kernel and per-inference ms from onnxruntime's profile events, ignoring the first
    `skip` inferences; each kernel's tensors come from the optimised graph that ran."""
    durations: dict[str, list[float]] = {}
    ops: dict[str, str] = {}
    runs: list[float] = []
    for event in events:
        name = event.get("name", "")
        if event.get("cat") == "Node" and name.endswith("_kernel_time"):
            kernel = name[: -len("_kernel_time")]
            durations.setdefault(kernel, []).append(event["dur"] / 1000.0)
            ops[kernel] = event.get("args", {}).get("op_name", "")
        elif event.get("cat") == "Session" and name == "model_run":
            runs.append(event["dur"] / 1000.0)
    nodes = {node.name: node for node in executed.node}
    kernels = []
    for kernel, times in durations.items():
        node = nodes.get(kernel)
        kept = times[skip:] or times
        kernels.append(KernelTime(kernel, ops[kernel], float(np.mean(kept)),
                                  tuple(node.input) if node is not None else (),
                                  tuple(node.output) if node is not None else ()))
    kept_runs = runs[skip:] or runs
    return KernelProfile(kernels, float(np.mean(kept_runs)) if kept_runs else float("nan"))


class OrtCpuBackend:
    """onnxruntime on the CPU execution provider."""

    provider = "CPUExecutionProvider"

    def __init__(self, threads: int = 1, optimization: str = "extended", policy: TimingPolicy | None = None):
        self.ort = import_onnxruntime()
        self.threads = threads
        self.optimization = optimization
        self.policy = policy or TimingPolicy()

    def options(self):
        """Session options of this backend's runtime (threads, optimisation level)."""
        return session_options(self.ort, self.threads, self.optimization)

    def session(self, model: bytes, options=None):
        return self.ort.InferenceSession(model, options or self.options(), providers=[self.provider])

    def runner(self, sess, feeds: Feeds) -> Callable[[], None]:
        """One inference of `sess` on `feeds`."""
        return lambda: sess.run(None, feeds)

    def measure(self, model: bytes, feeds: Feeds) -> Measurement:
        run = self.runner(self.session(model), feeds)
        times, _ = time_runs(run, self.policy)
        return self.with_power(summarize(times), run)

    def with_power(self, result: Measurement, run: Callable[[], None]) -> Measurement:
        """Add power and energy to a timing (the CPU provider has no power readings)."""
        return result

    def profile_kernels(self, model: bytes, feeds: Feeds, runs: int = 10) -> KernelProfile:
        """onnxruntime's per-node profile over `runs` inferences after the warm-up."""
        def loop(run: Callable[[], None]) -> None:
            for _ in range(self.policy.warmup_runs + runs):
                run()
        return kernel_profile(*self.trace(model, feeds, loop), self.policy.warmup_runs)

    def trace(self, model: bytes, feeds: Feeds, loop: Callable[[Callable[[], None]], Any]
              ) -> tuple[list[dict[str, Any]], onnx.GraphProto]:
        """onnxruntime's profile events while `loop(run)` runs inferences, and the optimised graph that ran;
        both live in a folder removed on return."""
        with tempfile.TemporaryDirectory(prefix="npower-prof-") as folder:
            options = self.options()
            options.enable_profiling = True
            options.profile_file_prefix = os.path.join(folder, "run")
            options.optimized_model_filepath = os.path.join(folder, "executed.onnx")
            options.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                             "executed.data")
            options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "64")
            sess = self.session(model, options)
            loop(self.runner(sess, feeds))
            with open(sess.end_profiling()) as handle:
                events = json.load(handle)
            executed = onnx.load(os.path.join(folder, "executed.onnx"), load_external_data=False).graph
        return events, executed

    def runtime_info(self) -> dict[str, Any]:
        return {"name": "onnxruntime", "version": self.ort.__version__, "execution_provider": self.provider,
                "intra_op_threads": self.threads, "precision": "fp32", "graph_optimization": self.optimization}

    def device_info(self) -> dict[str, Any]:
        power = "RAPL available" if rapl_available() else "none: no RAPL energy counters readable on this machine"
        return {"name": cpu_name(), "cpu": cpu_identity(), "kind": "cpu", "vendor": cpu_vendor(),
                "cores": os.cpu_count(), "memory_gb": memory_gb(), "power": power}


class OrtCudaBackend(OrtCpuBackend):
    """onnxruntime-gpu on CUDA with I/O binding, NVML energy or power polling. No node may fall back to
    the CPU: the session refuses (`session.disable_cpu_ep_fallback`), so no CPU time is recorded as GPU time."""

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
        self.meter = PowerMeter.open(device_id)

    def options(self):
        options = super().options()
        options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        return options

    def session(self, model: bytes, options=None):
        try:
            sess = self.ort.InferenceSession(model, options or self.options(),
                                             providers=[(self.provider, {"device_id": self.device_id})])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            if "fallback to CPU EP has been explicitly disabled" in str(exc):
                raise CpuFallbackError("a node has no CUDA kernel in this onnxruntime and would run on the CPU") \
                    from exc
            raise
        actual = sess.get_providers()[0]
        if actual != self.provider:
            raise NpowerError(f"onnxruntime fell back to {actual}: the session does not run on CUDA "
                              "(check the CUDA/cuDNN libraries); refusing to record CPU timings as GPU ones")
        return sess

    def runner(self, sess, feeds: Feeds) -> Callable[[], None]:
        binding = sess.io_binding()
        for name, value in feeds.items():
            binding.bind_ortvalue_input(name, self.ort.OrtValue.ortvalue_from_numpy(value, "cuda", self.device_id))
        for output in sess.get_outputs():
            binding.bind_output(output.name, "cuda", self.device_id)
        return lambda: sess.run_with_iobinding(binding)

    def with_power(self, result: Measurement, run: Callable[[], None]) -> Measurement:
        """Average board power while the model loops for `power_seconds`; energy per inference = W x ms."""
        window = self.meter.window(run, self.power_seconds)
        result.watts = window.get("watts")
        result.energy_mj = result.watts * result.median_ms if result.watts is not None else None
        result.extra = {key: value for key, value in window.items() if key != "watts"}
        return result

    def device_info(self) -> dict[str, Any]:
        return {**self.meter.info(), "kind": "gpu", "vendor": "NVIDIA"}


def _cpuinfo_field(field: str) -> str | None:
    """The first processor's `field` in /proc/cpuinfo, or None (no such file or field)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.split(":", 1)[0].strip() == field:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_identity() -> str | None:
    """'family 25 model 17': the CPU generation, which a virtual machine's name ('AMD EPYC') hides; None where
    /proc/cpuinfo does not say."""
    family, model = _cpuinfo_field("cpu family"), _cpuinfo_field("model")
    return f"family {family} model {model}" if family and model else None


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
    """Backend for a --device string ('cpu' or 'cuda' / 'cuda:N'; 'torch-' before one: PyTorch eager)."""
    if device.startswith("torch-"):
        from .torch_backend import make_torch_backend
        return make_torch_backend(device[len("torch-"):], policy)
    name, _, index = device.partition(":")
    if name not in BACKENDS or (index and not index.isdigit()):
        raise NpowerError(f"unknown device '{device}': use one of cpu, cuda, cuda:N, torch-cpu, torch-cuda, torch-cuda:N")
    if name == "cuda":
        return OrtCudaBackend(threads, optimization, policy, device_id=int(index or 0))
    return OrtCpuBackend(threads, optimization, policy)
