"""Speed benchmark: cold `npower compare` of 5 zoo models x 4 batch sizes on one pack (target <= 3 s).

Prints a table: the cold compare (fresh process, median of N runs) against the same 20 predictions
as 20 cold `npower analyze` processes, then the comparison itself.
Run: python benchmarks/compare_speed.py [--runs 5] [--gpu PACK]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx

from analyze_speed import cold
from npower import zoo

MODELS = ("alexnet", "resnet50", "mobilenet_v2", "googlenet", "squeezenet")
BATCHES = ("1", "8", "32", "128")
TARGET_S = 3.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--gpu", default="amd-epyc-cpu-ort1.32-fp32-extended")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="npower-compare-bench-"))
    files = []
    for name in MODELS:
        path = folder / f"{name}.onnx"
        onnx.save(zoo.build(name, weights=False, symbolic_batch=True), str(path))
        files.append(str(path))
    npower = [sys.executable, "-m", "npower.cli"]
    command = [*npower, "compare", *files, "--gpu", args.gpu, "--batch", *BATCHES]
    compare_s = cold(command, args.runs)
    start = time.perf_counter()
    for path in files:
        for batch in BATCHES:
            subprocess.run([*npower, "analyze", path, "--gpu", args.gpu, "--batch", batch],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    analyze_s = time.perf_counter() - start
    cases = len(MODELS) * len(BATCHES)
    print(f"{'case':46s} {'wall (cold)':>12s}  target")
    print(f"{f'npower compare, {len(MODELS)} models x {len(BATCHES)} batches':46s} {compare_s:11.2f}s  "
          f"<= {TARGET_S:.0f} s ({'met' if compare_s <= TARGET_S else 'MISSED'}), median of {args.runs}")
    print(f"{f'{cases} separate cold npower analyze runs':46s} {analyze_s:11.2f}s  (reference, one pass)")
    print()
    print(subprocess.run(command, check=True, capture_output=True, text=True).stdout, end="")


if __name__ == "__main__":
    main()
