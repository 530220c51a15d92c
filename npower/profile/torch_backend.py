"""PyTorch eager backend: ONNX graphs run node by node as PyTorch ops, on CUDA (or the CPU).

The same single-node graphs the onnxruntime backends time (and whole networks) are executed
with the `torch_ops` registry, so a pack measured here is a PyTorch-eager pack. Timing: warm-up,
then repetitions of a loop of calls (enough calls per repetition for >= `rep_ms`), each timed with
CUDA events (time.perf_counter on the CPU); the median per-call time is the sample. Power: NVML
(`power.PowerMeter`) over a looped window of `power_seconds`, after the timing.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from ..errors import NpowerError
from ..runtimes import Runtime
from .backends import (KernelProfile, KernelTime, Measurement, TimingPolicy, cpu_identity, cpu_name, memory_gb,
                       summarize)
from .build import _weight_values
from .plan import Config
from .power import PowerMeter
from .torch_ops import NodeSpec, make_op

Feeds = dict[str, np.ndarray]


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    values = {}
    for attribute in node.attribute:
        value = helper.get_attribute_value(attribute)
        values[attribute.name] = value.decode() if isinstance(value, bytes) else value
    return values


class TorchGraph:
    """An ONNX graph compiled to a list of PyTorch calls; weights live on `device`."""

    def __init__(self, model: onnx.ModelProto, device: str):
        graph = model.graph
        consts = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant":
                consts[node.output[0]] = numpy_helper.to_array(_attrs(node)["value"])
        self.weights = {name: torch.from_numpy(np.array(value)).to(device) for name, value in consts.items()}
        self.steps = []
        for node in graph.node:
            if node.op_type == "Constant":
                continue
            spec = NodeSpec(node.op_type, _attrs(node), tuple(consts.get(name) for name in node.input),
                            len(node.output))
            self.steps.append((node, make_op(spec)))
        self.inputs = [i.name for i in graph.input if i.name not in consts]
        self.outputs = [o.name for o in graph.output]

    def run(self, feeds: dict[str, torch.Tensor], hook: Callable[[int], None] | None = None) -> list:
        """The graph's outputs; `hook(i)` is called before step i and once more after the last."""
        env = {**self.weights, **feeds}
        for index, (node, fn) in enumerate(self.steps):
            if hook:
                hook(index)
            out = fn(*(env[name] if name else None for name in node.input))
            if isinstance(out, (tuple, list)):
                env.update(zip(node.output, out))
            else:
                env[node.output[0]] = out
        if hook:
            hook(len(self.steps))
        return [env[name] for name in self.outputs]


class TorchBackend:
    """PyTorch eager on `device` ('cuda', 'cuda:N' or 'cpu'); power from `meter` where given."""

    def __init__(self, device: str = "cuda", policy: TimingPolicy | None = None, meter: PowerMeter | None = None,
                 power_seconds: float = 0.5, rep_ms: float = 2.0):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        if self.cuda and not torch.cuda.is_available():
            raise NpowerError("PyTorch sees no CUDA device: refusing to record CPU timings as GPU ones")
        if self.cuda:  # the pack says fp32: no TF32 in convolutions (PyTorch's default) nor matmuls
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self.policy = policy or TimingPolicy()
        self.meter, self.power_seconds, self.rep_ms = meter, power_seconds, rep_ms
        self.idle: dict[str, Any] | None = None

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def empty_cache(self) -> None:
        """Give cached device memory back (after an out-of-memory sample)."""
        if self.cuda:
            torch.cuda.empty_cache()

    def _rep_seconds(self, run: Callable[[], Any], calls: int) -> float:
        """Seconds per call over one loop of `calls` calls."""
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(calls):
                run()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1000.0 / calls
        t0 = time.perf_counter()
        for _ in range(calls):
            run()
        return (time.perf_counter() - t0) / calls

    def time_calls(self, run: Callable[[], Any]) -> tuple[list[float], int]:
        """Per-call seconds of each repetition, and the calls per repetition."""
        policy = self.policy
        for _ in range(policy.warmup_runs):
            run()
        self.sync()
        single = self._rep_seconds(run, 1)
        calls = max(1, min(1000, math.ceil(self.rep_ms / 1000.0 / max(single, 1e-7))))
        times: list[float] = []
        start = time.perf_counter()
        while True:
            times.append(self._rep_seconds(run, calls))
            elapsed = time.perf_counter() - start
            if (len(times) >= policy.min_runs and elapsed >= policy.min_seconds) or \
                    (elapsed >= policy.max_seconds and len(times) >= 3):
                return times, calls

    def measure_idle(self, seconds: float = 2.0) -> dict[str, Any] | None:
        """Idle power now (nothing queued); later measurements subtract it for dynamic energy."""
        if self.meter is None:
            return None
        self.sync()
        self.idle = self.meter.idle(seconds)
        return self.idle

    def measure_run(self, run: Callable[[], Any], power: bool = True, power_seconds: float | None = None,
                    poll: bool = False) -> Measurement:
        """Time `run` (one inference) and, with a power meter, its average power and energy per call."""
        with torch.inference_mode():
            times, calls = self.time_calls(run)
            result = summarize(times)
            result.extra["calls_per_rep"] = calls
            if power and self.meter is not None:
                window = self.meter.window(run, power_seconds or self.power_seconds, self.sync, poll)
                add_power(result, window, self.idle)
        return result

    def prepare(self, model: bytes | onnx.ModelProto, feeds: Feeds) -> Callable[[], Any]:
        """One inference of the model on device-resident copies of `feeds`."""
        proto = onnx.load_from_string(model) if isinstance(model, bytes) else model
        graph = TorchGraph(proto, str(self.device))
        tensors = {name: torch.from_numpy(value).to(self.device) for name, value in feeds.items()}
        return lambda: graph.run(tensors)

    def prepare_config(self, config: Config, seed: int = 0) -> Callable[[], Any]:
        """One call of a plan config's node, its tensors drawn on the device (as `build_model` draws
        them: He-scaled weights, positive variances, given constants), without building ONNX."""
        generator = torch.Generator(self.device).manual_seed(seed)
        consts, tensors = [], []
        for spec in config["inputs"]:
            shape = spec["shape"]
            if "value" in spec:
                value = _weight_values(spec, np.random.default_rng(seed))
                consts.append(value)
                tensors.append(torch.from_numpy(value).to(self.device))
                continue
            consts.append(None)
            if spec["weight"] and spec.get("init") == "positive":
                tensor = torch.rand(shape, generator=generator, device=self.device) + 0.5
            else:
                scale = math.sqrt(2.0 / max(math.prod(shape[1:]), 1)) if spec["weight"] and len(shape) > 1 else 1.0
                tensor = torch.randn(shape, generator=generator, device=self.device) * scale
            tensors.append(tensor)
        fn = make_op(NodeSpec(config["op"], config.get("attrs", {}), tuple(consts), config.get("outputs", 1)))
        return lambda: fn(*tensors)

    def measure(self, model: bytes, feeds: Feeds) -> Measurement:
        return self.measure_run(self.prepare(model, feeds))

    def profile_kernels(self, model: bytes, feeds: Feeds, runs: int = 10) -> KernelProfile:
        """Per-node times (each node timed alone between two markers), and the mean inference time."""
        proto = onnx.load_from_string(model)
        graph = TorchGraph(proto, str(self.device))
        tensors = {name: torch.from_numpy(value).to(self.device) for name, value in feeds.items()}
        marks: list[list[Any]] = []

        def mark(_index: int) -> None:
            if self.cuda:
                event = torch.cuda.Event(enable_timing=True)
                event.record()
                marks[-1].append(event)
            else:
                marks[-1].append(time.perf_counter())

        with torch.inference_mode():
            for run in range(self.policy.warmup_runs + runs):
                marks.append([])
                graph.run(tensors, mark)
                self.sync()
        marks = marks[self.policy.warmup_runs:]
        gaps = np.array([[_ms(a, b, self.cuda) for a, b in zip(row, row[1:])] for row in marks])
        kernels = [KernelTime(node.name, node.op_type, float(gaps[:, i].mean()), tuple(node.input), tuple(node.output))
                   for i, (node, _) in enumerate(graph.steps)]
        return KernelProfile(kernels, float(gaps.sum(axis=1).mean()))

    def runtime_info(self) -> dict[str, Any]:
        return Runtime("torch", torch.__version__, self.device.type, "eager").to_dict()

    def device_info(self) -> dict[str, Any]:
        flags = {"cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                 "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                 "cudnn_benchmark": torch.backends.cudnn.benchmark}
        if not self.cuda:
            return {"name": cpu_name(), "cpu": cpu_identity(), "kind": "cpu", "cores": torch.get_num_threads(),
                    "memory_gb": memory_gb(), "torch_flags": flags,
                    "power": "none" if self.meter is None else self.meter.info()["power_source"]}
        props = torch.cuda.get_device_properties(self.device)
        info = {"name": props.name, "memory_gb": round(props.total_memory / 2 ** 30, 1)}
        if self.meter is not None:
            info.update(self.meter.info())
        return {**info, "kind": "gpu", "vendor": "NVIDIA", "multiprocessors": props.multi_processor_count,
                "cuda": torch.version.cuda, "torch_flags": flags}


def _ms(a: Any, b: Any, cuda: bool) -> float:
    return a.elapsed_time(b) if cuda else (b - a) * 1e3


def add_power(result: Measurement, window: dict[str, Any], idle: dict[str, Any] | None) -> None:
    """Average power, energy per call (total and above idle) from a power window, into `result`."""
    watts = window.get("watts")
    result.watts = watts
    result.energy_mj = watts * result.median_ms if watts is not None else None
    idle_w = idle.get("watts") if idle else None
    result.extra.update({f"power_{k}": v for k, v in window.items() if k != "watts"})
    result.extra["idle_w"] = idle_w
    if watts is not None and idle_w is not None:
        result.extra["dynamic_energy_mj"] = (watts - idle_w) * result.median_ms
    if window.get("counter_j") and window.get("window_calls"):
        result.extra["counter_mj_per_call"] = window["counter_j"] * 1000.0 / window["window_calls"]


def make_torch_backend(device: str, policy: TimingPolicy, power_seconds: float = 0.5) -> TorchBackend:
    """The backend of a device string 'cpu', 'cuda' or 'cuda:N' (NVML power on CUDA)."""
    name, _, index = device.partition(":")
    if name not in ("cpu", "cuda") or (index and not index.isdigit()) or (name == "cpu" and index):
        raise NpowerError(f"unknown device 'torch-{device}': use one of torch-cpu, torch-cuda, torch-cuda:N")
    meter = PowerMeter.open(int(index or 0)) if name == "cuda" else None
    return TorchBackend(device, policy, meter, power_seconds)
