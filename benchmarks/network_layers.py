"""Packs scored against the layers of whole networks, each layer timed alone as the profiler times a sample.

A whole network's measured time moves with the machine's state. On the shared build machine, the same
network moved by up to 20 % within half an hour, which is as much as the targets' margin. So comparing two
fits on whole networks mostly measures the round. Here the convolution, Gemm and MatMul layers of the zoo
networks (batch 1 and 4), and of any ONNX files given, are profiled once. `npower profile --scale 0
--from-models` runs each as a single-node graph, in the pack's cache states. Every pack is then scored
against the same times, per kind:
- bias: the geometric mean of predicted / measured. It holds the machine's state and the model's level.
- spread: the RMS of log(predicted / measured) with the bias removed, in %. A slow or fast round moves
  every layer alike, so the spread is what a change of model changes.
- RMSPE, and the error of the kind's total time.

None of these layers is in the packs' fitting data (the plan draws random layers). An existing `--samples` file
is resumed (layers already timed are kept), so a run can be stopped and continued, and packs fitted later can be
scored against the same times.
Run: python benchmarks/network_layers.py --packs PACK [PACK ...] [--samples FILE] [--models ONNX ...]
     [--batches 1 4]
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

from npower import zoo
from npower.cli import main as npower_main
from npower.errors import NpowerError
from npower.fit import current_layer
from npower.pack import Pack, find_pack
from npower.predict import model_columns
from npower.profile.repeats import pool_runs
from npower.profile.store import read_samples

KINDS = ("nchwc_conv", "nchwc_conv_1x1", "nchwc_conv_dw", "nchwc_conv_dw_1x1", "nchwc_conv_nchw", "conv", "conv_1x1",
         "conv_dw", "gemm", "matmul")
MIN_LAYERS = 5


def profile_layers(samples: Path, pack: Pack, models: list[str], batches: list[int]) -> None:
    """Time every layer of the zoo networks (at `batches`) and of `models`, with the pack's runtime settings (a
    sample file that exists is resumed)."""
    if pack.runtime.name != "onnxruntime":
        raise NpowerError(f"pack '{pack.name}' models {pack.runtime.name}: this benchmark times layers with "
                          "onnxruntime")
    with tempfile.TemporaryDirectory(prefix="npower-layers-") as folder:
        paths = []
        for name in zoo.NETWORKS:
            for batch in batches:
                path = Path(folder) / f"{name}_b{batch}.onnx"
                onnx.save(zoo.build(name, batch=batch, weights=False), str(path))
                paths.append(str(path))
        code = npower_main(["profile", "-o", str(samples), "--device", pack.runtime.device or "cpu",
                            "--threads", str(pack.runtime.threads or 1), "--optimization",
                            pack.runtime.optimization or "all", "--scale", "0", "--kinds", ",".join(KINDS),
                            "--from-models", *paths, *models, "--quiet"])
    if code:
        sys.exit(code)


def measured_layers(samples: Path) -> dict[str, list[tuple[dict[str, float], float]]]:
    """Per kind, each distinct kernel's features and its time in the cache state of a network, less the trace
    overhead (as `npower fit` pools a run)."""
    by_kind: dict[str, list[tuple[dict[str, float], float]]] = {}
    for sample in pool_runs([(samples.name, read_samples(samples))]):
        kind, values = current_layer(sample.row)
        by_kind.setdefault(kind, []).append((values, sample.runtime_ms))
    return by_kind


def statistics(predicted: np.ndarray, measured: np.ndarray) -> tuple[float, float, float, float]:
    """(bias, spread %, RMSPE %, total-time error %) of predictions against measurements."""
    logs = np.log(predicted / measured)
    spread = (math.exp(float(np.sqrt(np.mean((logs - logs.mean()) ** 2)))) - 1) * 100
    rmspe = float(np.sqrt(np.mean(((predicted - measured) / measured) ** 2))) * 100
    return math.exp(float(logs.mean())), spread, rmspe, (predicted.sum() - measured.sum()) / measured.sum() * 100


def score(pack: Pack, kind: str, layers: list[tuple[dict[str, float], float]]) -> str:
    """The pack's model of `kind` on the layers, as a table cell."""
    if kind not in pack.models:
        return f"{'no model':>30s}"
    measured = np.array([ms for _, ms in layers])
    predicted = np.broadcast_to(pack.models[kind].runtime.predict(model_columns(pack, kind, [v for v, _ in layers])),
                                measured.shape)
    bias, spread, rmspe, total = statistics(predicted, measured)
    return f"{bias:6.3f} {spread:6.1f}% {rmspe:6.1f}% {total:+6.1f}%"


def label(name: str) -> str:
    """A pack argument as a column title: the name, or a YAML file's name without its extension."""
    path = Path(name)
    return (path.stem if path.suffix in (".yaml", ".yml") else name)[-30:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packs", nargs="+", required=True, help="pack names or YAML files (the first one's "
                                                                  "runtime settings time the layers)")
    parser.add_argument("--samples", type=Path, help="sample file of the layers: reused if it exists, else "
                                                     "written (default: a temporary file)")
    parser.add_argument("--models", nargs="*", default=[], help="ONNX files whose layers are timed too")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4], help="batch sizes of the zoo networks")
    args = parser.parse_args()
    packs = [find_pack(name) for name in args.packs]
    with tempfile.TemporaryDirectory(prefix="npower-layers-") as folder:
        samples = args.samples or Path(folder) / "layers.samples.jsonl"
        profile_layers(samples, packs[0], args.models, args.batches)
        by_kind = measured_layers(samples)
        print(f"layers: {samples}" + ("" if args.samples else " (temporary: --samples keeps it)") + "\n")
    print(f"{'kind':16s} {'layers':>6s} {'measured ms':>11s}" + "".join(f" | {label(name):30s}" for name in args.packs))
    print(f"{'':16s} {'':6s} {'':11s}" + f" | {'bias':>6s} {'spread':>7s} {'RMSPE':>7s} {'total':>7s}" * len(packs))
    for kind in sorted(by_kind):
        layers = by_kind[kind]
        if kind in KINDS and len(layers) >= MIN_LAYERS:
            measured = sum(ms for _, ms in layers)
            print(f"{kind:16s} {len(layers):6d} {measured:11.2f}" + "".join(f" | {score(p, kind, layers)}"
                                                                             for p in packs))


if __name__ == "__main__":
    main()
