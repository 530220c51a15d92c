"""`npower validate`: run whole networks on the pack's device and runtime, compare with predictions.

Accuracy = 1 - |predicted - measured| / measured (the NeuralPower definition). Per layer (--layers),
each predicted kernel (a node and the nodes fused into it) is compared with the runtime's own
profile of the kernels that run its work inside the whole network (npower.kernel_map). Every
session is opened by the pack's backend (npower.profile.backends).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from .coverage import partial_reason
from .errors import NpowerError, first_line
from .graph import load_graph
from .pack import Pack, find_pack
from .predict import LayerPrediction, layer_bytes, predict, roofline_ms
from .features import extract
from .kernel_map import layer_rows
from .profile.backends import Backend, Measurement, TimingPolicy, make_backend
from .profile.store import cpu_change

PALEO_PPP_COMPUTE = 0.62
PALEO_PPP_MEMORY = 0.72


def accuracy(predicted: float, measured: float) -> float:
    return 1.0 - abs(predicted - measured) / measured


@dataclass
class NetworkResult:
    name: str
    batch: int | None
    measured_ms: float
    predicted_ms: float
    paleo_ms: float | None
    measured_w: float | None = None
    predicted_w: float | None = None
    layers: list[dict[str, Any]] = field(default_factory=list)
    profiled_ms: float | None = None  # one inference under the runtime's per-kernel profiler (--layers)
    error: str | None = None
    pass_ms: list[float] = field(default_factory=list)  # each pass's median (--passes); measured_ms: pass_median

    @property
    def spread(self) -> float:
        """How far apart the passes' medians were: (largest - smallest) / their median; 0 with one pass."""
        return pass_spread(self.pass_ms)

    @property
    def accuracy(self) -> float:
        return accuracy(self.predicted_ms, self.measured_ms)

    @property
    def paleo_accuracy(self) -> float | None:
        return None if self.paleo_ms is None else accuracy(self.paleo_ms, self.measured_ms)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(accuracy=self.accuracy, paleo_accuracy=self.paleo_accuracy)
        if self.measured_w and self.predicted_w:
            out["power_accuracy"] = accuracy(self.predicted_w, self.measured_w)
            out["energy_accuracy"] = accuracy(self.predicted_w * self.predicted_ms, self.measured_w * self.measured_ms)
        return out


def load_network(spec: str, batch: int | None) -> tuple[str, onnx.ModelProto]:
    """'zoo:NAME' builds a reference network; anything else is an ONNX file (weights loaded)."""
    if spec.startswith("zoo:"):
        from . import zoo
        return f"{spec[4:]}@b{batch or 1}", zoo.build(spec[4:], batch=batch or 1)
    if not os.path.exists(spec):
        raise NpowerError(f"{spec}: no such file")
    try:
        model = onnx.load(spec)
    except Exception as exc:  # noqa: BLE001 - onnx raises several types for bad files
        raise NpowerError(f"{spec}: cannot load ONNX model ({type(exc).__name__})") from exc
    fill_missing_weights(model)
    return os.path.basename(spec), model


def fill_missing_weights(model: onnx.ModelProto, seed: int = 0) -> None:
    """Give shape-only initializers He-scaled random values so the network can run."""
    rng = np.random.default_rng(seed)
    for index, init in enumerate(model.graph.initializer):
        has_data = init.HasField("raw_data") or len(init.float_data) or len(init.int64_data) or \
            len(init.int32_data) or len(init.double_data) or init.data_location == onnx.TensorProto.EXTERNAL
        count = math.prod(init.dims)
        if has_data or count == 0 or init.data_type != onnx.TensorProto.FLOAT:
            continue
        fan_in = math.prod(init.dims[1:]) if len(init.dims) > 1 else 1
        values = (rng.standard_normal(tuple(init.dims)) * math.sqrt(2.0 / max(fan_in, 1))).astype(np.float32)
        model.graph.initializer[index].CopyFrom(numpy_helper.from_array(values, init.name))


def backend_for(pack: Pack, runs: int) -> Backend:
    """A backend with the pack's execution provider, threads and optimisation level."""
    runtime = pack.runtime
    policy = TimingPolicy(warmup_runs=3, min_runs=runs, min_seconds=0.5, max_seconds=90.0)
    return make_backend(runtime.device, runtime.threads or 1, runtime.optimization, policy)


def mismatch_warnings(pack: Pack, backend: Backend) -> list[str]:
    """Differences between the pack's device/runtime and the one present."""
    warnings = []
    here_runtime, here_device = backend.runtime_info(), backend.device_info()
    if pack.runtime.version != str(here_runtime.get("version")):
        warnings.append(f"pack was measured with onnxruntime {pack.runtime.version}, "
                        f"this is {here_runtime.get('version')}")
    if pack.device.get("name") != here_device.get("name"):
        warnings.append(f"pack is for '{pack.device.get('name')}', this device is '{here_device.get('name')}'")
    elif change := cpu_change(pack.device, here_device):
        warnings.append(f"pack was measured on another CPU generation under the name '{pack.device.get('name')}' "
                        f"({change})")
    return warnings


def machine_state(pack: Pack, backend: Backend) -> dict[str, float] | None:
    """The device's compute and memory speed now, measured as the profiler measured the pack's (a 1024^3 MatMul, a
    128 MiB streaming Add), with the ratios to the pack's: a machine that drifted since it was profiled runs every
    network slower or faster by about as much. None where the pack's peaks were not measured that way (spec-sheet
    or vendor figures of the GPU packs)."""
    if not pack.peak_gflops or not pack.bandwidth_gbs or not pack.device.get("peak_method"):
        return None
    from .profile.runner import measure_peaks
    now = measure_peaks(backend)
    return {"peak_gflops": now["peak_gflops"], "bandwidth_gbs": now["bandwidth_gbs"],
            "compute_ratio": round(now["peak_gflops"] / pack.peak_gflops, 3),
            "memory_ratio": round(now["bandwidth_gbs"] / pack.bandwidth_gbs, 3)}


def measured_machine_state(pack: Pack, backend: Backend) -> dict[str, float] | None:
    """`machine_state`, or None with a warning when measuring fails (the networks still get validated)."""
    try:
        return machine_state(pack, backend)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
        print(f"warning: could not measure the machine's speed: {str(exc).splitlines()[0] if str(exc) else exc!r}",
              file=sys.stderr)
        return None


# A machine's own drift moved its measured compute or memory speed by up to 20 % between profiles; beyond this
# the machine is most likely another CPU than the pack's, and validating the pack on it says little.
DRIFT_LIMIT = 0.25


def format_machine_state(state: dict[str, float], pack: Pack) -> str:
    line = (f"machine now: {state['peak_gflops']:.0f} GFLOP/s and {state['bandwidth_gbs']:.1f} GB/s, "
            f"{state['compute_ratio'] - 1:+.0%} and {state['memory_ratio'] - 1:+.0%} against the pack's "
            f"{pack.peak_gflops:.0f} GFLOP/s and {pack.bandwidth_gbs:.1f} GB/s")
    if max(abs(state["compute_ratio"] - 1), abs(state["memory_ratio"] - 1)) > DRIFT_LIMIT:
        line += (f"; beyond +/-{DRIFT_LIMIT:.0%}, more than this machine's drift: the pack most likely describes "
                 "another CPU (profile this one with `npower profile`)")
    return line


def paleo_ms(graph, pack: Pack) -> float | None:
    """Paleo baseline: FLOPs/(peak*ppp_c) + bytes/(bandwidth*ppp_m) for every costed node, no fusion."""
    if not pack.peak_gflops or not pack.bandwidth_gbs:
        return None
    total = 0.0
    for node in graph.nodes:
        layer = extract(node)
        if layer.kind in ("free", "unknown", "unresolved"):
            continue
        total += roofline_ms(layer.specials.get("flops", 0.0), layer_bytes(layer),
                             pack.peak_gflops * PALEO_PPP_COMPUTE, pack.bandwidth_gbs * PALEO_PPP_MEMORY)
    return total


INTEGER_INPUTS = {"INT64": np.int64, "INT32": np.int32, "INT8": np.int8, "UINT8": np.uint8}
FLOAT_INPUTS = {"FLOAT16": np.float16, "DOUBLE": np.float64}
TOKEN_IDS = 100  # integer inputs (token ids, indices) are drawn below this: valid for any vocabulary


def random_feeds(graph) -> dict[str, np.ndarray]:
    """Values of the network's inputs in their own element types: non-zero floats, small integers."""
    rng = np.random.default_rng(1)
    feeds = {}
    for tensor in graph.inputs:
        if tensor.dtype in INTEGER_INPUTS:
            feeds[tensor.name] = rng.integers(0, TOKEN_IDS, tensor.shape).astype(INTEGER_INPUTS[tensor.dtype])
        elif tensor.dtype == "BOOL":
            feeds[tensor.name] = np.ones(tensor.shape, dtype=bool)
        else:
            values = rng.standard_normal(tensor.shape)
            feeds[tensor.name] = values.astype(FLOAT_INPUTS.get(tensor.dtype, np.float32))
    return feeds


def measure_network(backend: Backend, model: onnx.ModelProto, graph) -> Measurement:
    return backend.measure(model.SerializeToString(), random_feeds(graph))


def measure_in_passes(backend: Backend, networks: list[tuple[onnx.ModelProto, Any]], passes: int) -> list[list[float]]:
    """Each network's median ms in each of `passes` passes over all of them (network by network, then again): a
    slow spell of a noisy machine lands in one pass of a few networks instead of every run of one."""
    medians: list[list[float]] = [[] for _ in networks]
    for _ in range(passes):
        for times, (model, graph) in zip(medians, networks):
            times.append(measure_network(backend, model, graph).median_ms)
    return medians


def pass_median(pass_ms: list[float]) -> float:
    """A network's time from its passes: the median of their medians."""
    return float(np.median(pass_ms))


def pass_spread(pass_ms: list[float]) -> float:
    """(largest - smallest) / median of a network's pass medians (0 with one pass)."""
    median = pass_median(pass_ms)
    return (max(pass_ms) - min(pass_ms)) / median if len(pass_ms) > 1 and median > 0 else 0.0


def profile_layers(backend: Backend, model: onnx.ModelProto, graph, pack: Pack, predicted: list[LayerPrediction],
                   fusion: bool, runs: int = 10) -> tuple[list[dict], float]:
    """Per-kernel ms from the runtime's profiler inside the whole network, next to the prediction of
    that kernel; and the mean inference ms the profiler measured."""
    profile = backend.profile_kernels(model.SerializeToString(), random_feeds(graph), runs)
    fusions = pack.runtime.rules.kernels(graph) if fusion else {}
    return layer_rows(predicted, fusions, profile, graph), profile.total_ms


def validate_network(name: str, model: onnx.ModelProto, graph, pack: Pack, backend: Backend, fusion: bool,
                     predictor: str, layers: bool) -> NetworkResult:
    predicted = predict(graph, pack, fusion=fusion)
    reason = partial_reason(graph, predicted, pack)
    if reason:
        raise NpowerError(f"{reason}: not validated")
    predicted_ms = sum(layer.ms for layer in predicted)
    paleo = paleo_ms(graph, pack)
    if predictor == "paleo":
        if paleo is None:
            raise NpowerError("the pack has no measured peak figures: Paleo baseline unavailable")
        predicted_ms = paleo
    measurement = measure_network(backend, model, graph)
    energy = sum(layer.mj or 0.0 for layer in predicted)
    result = NetworkResult(name, graph.inputs[0].shape[0] if graph.inputs else None, measurement.median_ms,
                           predicted_ms, paleo, measurement.watts,
                           energy / predicted_ms if pack.has_power and predicted_ms > 0 else None,
                           pass_ms=[measurement.median_ms])
    if layers:
        result.layers, result.profiled_ms = profile_layers(backend, model, graph, pack, predicted, fusion)
    return result


def format_results(results: list[NetworkResult]) -> str:
    """The results table; with several passes, a last column gives each network's spread between them."""
    passes = max((len(r.pass_ms) for r in results), default=1)
    lines = [f"{'network':22s} {'measured ms':>12s} {'npower ms':>10s} {'acc':>7s} {'paleo ms':>10s} {'acc':>7s}"
             + (f" {'spread of ' + str(passes) + ' passes':>20s}" if passes > 1 else "")]
    good = [r for r in results if r.error is None]
    for r in results:
        if r.error:
            lines.append(f"{r.name:22s} FAILED: {r.error}")
            continue
        paleo = f"{'-':>10s} {'-':>7s}" if r.paleo_ms is None else f"{r.paleo_ms:10.2f} {r.paleo_accuracy:6.1%}"
        spread = f" {r.spread:20.1%}" if passes > 1 else ""
        lines.append(f"{r.name:22s} {r.measured_ms:12.2f} {r.predicted_ms:10.2f} {r.accuracy:6.1%} {paleo}{spread}")
    if good:
        mean = float(np.mean([r.accuracy for r in good]))
        within = sum(abs(1 - r.accuracy) <= 0.10 for r in good)
        lines.append(f"mean runtime accuracy: {mean:.2%}  within +/-10 %: {within}/{len(good)}")
        paleos = [r.paleo_accuracy for r in good if r.paleo_accuracy is not None]
        if paleos:
            lines.append(f"Paleo mean accuracy: {np.mean(paleos):.2%}  within +/-10 %: "
                         f"{sum(abs(1 - a) <= 0.10 for a in paleos)}/{len(paleos)}")
    return "\n".join(lines)


def format_layers(result: NetworkResult, top: int = 15) -> str:
    """The largest kernels, measured vs predicted; the last line says how much of the profiled
    inference the rows account for."""
    rows = sorted(result.layers, key=lambda r: -max(r["measured_ms"], r["predicted_ms"]))[:top]
    lines = [f"  {'layer':24s} {'op':14s} {'kernel':18s} {'measured':>9s} {'predicted':>9s} {'error':>9s}"]
    for row in rows:
        name = row["name"] + (f" +{len(row['fused'])}" if row["fused"] else "")
        lines.append(f"  {name[:24]:24s} {row['op_type'][:14]:14s} {'+'.join(row['kernels'])[:18]:18s} "
                     f"{row['measured_ms']:9.3f} {row['predicted_ms']:9.3f} {_layer_error(row):>9s}")
    measured = sum(row["measured_ms"] for row in result.layers)
    if result.profiled_ms:
        lines.append(f"  {len(result.layers)} kernels' measured times sum to {measured:.3f} ms of the profiled "
                     f"{result.profiled_ms:.3f} ms per inference ({measured / result.profiled_ms:.1%}); "
                     "+N: nodes fused into the layer")
    return "\n".join(lines)


def _layer_error(row: dict[str, Any]) -> str:
    if row["measured_ms"] <= 0:
        return "no kernel"
    if row["predicted_ms"] <= 0:
        return row["source"]
    return f"{(row['predicted_ms'] - row['measured_ms']) / row['measured_ms']:+.1%}"


def cmd_validate(args: argparse.Namespace) -> int:
    if args.label:  # compare with a recorded label instead of measuring
        from .labels import cmd_validate_label
        return cmd_validate_label(args)
    if args.passes < 1:
        raise NpowerError(f"--passes {args.passes}: must be at least 1")
    pack = find_pack(args.gpu, args.profiles)
    backend = backend_for(pack, args.runs)
    for warning in mismatch_warnings(pack, backend):
        print(f"warning: {warning}", file=sys.stderr)
    state = measured_machine_state(pack, backend)
    if state is not None:
        print(f"note: {format_machine_state(state, pack)}", file=sys.stderr)
    results, measured = [], []
    for spec in args.models:
        try:
            name, model = load_network(spec, args.batch)
            graph = load_graph(model)
            result = validate_network(name, model, graph, pack, backend, not args.no_fusion, args.predictor,
                                      args.layers)
            result.batch = result.batch or args.batch
            if args.passes > 1:  # kept for the later passes
                measured.append((result, (model, graph)))
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types; one model must not stop the rest
            message = first_line(exc)
            print(f"warning: {spec}: {message}; continuing", file=sys.stderr)
            result = NetworkResult(spec, args.batch, math.nan, math.nan, None, error=message)
        results.append(result)
        if result.layers and args.format == "table":
            print(f"{result.name}: largest layers, onnxruntime profile vs prediction")
            print(format_layers(result))
    try:
        more = measure_in_passes(backend, [network for _, network in measured], args.passes - 1)
    except Exception as exc:  # noqa: BLE001 - a later pass failing keeps the first pass's results
        message = first_line(exc)
        print(f"warning: a later pass failed ({message}); reporting the first pass", file=sys.stderr)
        more = [[] for _ in measured]
    for (result, _), times in zip(measured, more):
        result.pass_ms += times
        result.measured_ms = pass_median(result.pass_ms)  # the power stays the first pass's reading
    good = [r for r in results if r.error is None]
    if args.format == "json":
        text = json.dumps({"schema_version": 1, "pack": pack.name, "results": [r.to_dict() for r in results]}, indent=2)
    else:
        text = format_results(results)
    if args.output:
        with open(args.output, "w") as handle:
            handle.write(text + "\n")
    print(text)
    if args.record and good and pack.path is not None:
        record_validation(pack, good, backend, state)
        print(f"recorded validation in {pack.path}", file=sys.stderr)
    return 0 if good else 2


def record_validation(pack: Pack, results: list[NetworkResult], backend: Backend,
                      state: dict[str, float] | None = None) -> None:
    """Write the validation figures (and the machine's speed against the pack's, when measured) into the pack's
    provenance and save it."""
    pack.provenance["validation"] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "runtime": backend.runtime_info(),
        "mean_runtime_accuracy": float(np.mean([r.accuracy for r in results])),
        "within_10pct": f"{sum(abs(1 - r.accuracy) <= 0.10 for r in results)}/{len(results)}",
        "passes": max(len(r.pass_ms) for r in results),
        "networks": {r.name: {"measured_ms": round(r.measured_ms, 4), "predicted_ms": round(r.predicted_ms, 4),
                              "accuracy": round(r.accuracy, 4),
                              "paleo_ms": None if r.paleo_ms is None else round(r.paleo_ms, 4)} for r in results},
    }
    if state is not None:
        pack.provenance["validation"]["machine_state"] = state
    pack.save(pack.path)
