"""Speed benchmark: cold `npower analyze` of ResNet-50 vs onnx shape inference alone (the floor).

Prints a table. Cold = a fresh Python process per run (imports included), median of N runs,
measured side by side in one session so the ratio is meaningful on a noisy machine.
Run: python benchmarks/analyze_speed.py [--runs 7] [--gpu PACK]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx

from npower import zoo
from npower.api import resolve_pack
from npower.graph import load_graph
from npower.predict import predict

SHAPE_INFERENCE_ONLY = ("import onnx, sys; m = onnx.load(sys.argv[1]); "
                        "onnx.shape_inference.infer_shapes(m, data_prop=True)")


def cold(args: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--gpu", default="amd-epyc-cpu-ort1.32-fp32-extended")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="npower-bench-"))
    files = {}
    for label, weights in (("stripped", False), ("with weights", True)):
        path = folder / f"resnet50_{'w' if weights else 'nw'}.onnx"
        onnx.save(zoo.build("resnet50", weights=weights), str(path))
        files[label] = path
    rows = []
    for label, path in files.items():
        analyze = cold([sys.executable, "-m", "npower.cli", "analyze", str(path), "--gpu", args.gpu,
                        "--format", "json"], args.runs)
        floor = cold([sys.executable, "-c", SHAPE_INFERENCE_ONLY, str(path)], args.runs)
        rows.append((f"ResNet-50 {label} ({path.stat().st_size / 1e6:.1f} MB)", analyze, floor))
    imports = cold([sys.executable, "-c", "import npower.cli"], args.runs)
    graph = load_graph(str(files["stripped"]))
    pack = resolve_pack(args.gpu)
    predict(graph, pack)
    steps = []
    for _ in range(50):
        start = time.perf_counter()
        predict(graph, pack)
        steps.append(time.perf_counter() - start)
    print(f"{'case':36s} {'npower analyze (cold)':>22s} {'shape inference only':>21s} {'ratio':>6s} {'target':>8s}")
    for name, analyze, floor in rows:
        print(f"{name:36s} {analyze * 1e3:19.0f} ms {floor * 1e3:18.0f} ms {analyze / floor:6.2f} {'<= 500 ms':>8s}")
    print(f"{'import npower.cli (cold)':36s} {imports * 1e3:19.0f} ms")
    print(f"{'prediction step (fusion + models)':36s} {statistics.median(steps) * 1e3:19.2f} ms {'':21s} {'':6s} "
          f"{'<= 5 ms':>8s}")


if __name__ == "__main__":
    main()
