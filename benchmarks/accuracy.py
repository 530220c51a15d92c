"""Whole-network accuracy benchmark: measured vs npower (with and without fusion awareness) vs Paleo.

Every zoo network, at batch 1 and a larger batch, runs for real on the pack's device with the
pack's runtime settings; the device's compute and memory speed are measured first, against the
pack's. None of these networks is in the pack's fitting data (the profiler
samples random single layers). Prints a Markdown table plus means and +/-10 % counts.
Run: python benchmarks/accuracy.py --gpu PACK [--batches 1 4] [--runs 20] [--networks a b]
"""
from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys

import numpy as np

from npower import zoo
from npower.graph import load_graph
from npower.pack import find_pack
from npower.predict import predict
from npower.validate import (accuracy, backend_for, format_machine_state, load_network, measure_network,
                             measured_machine_state, mismatch_warnings, paleo_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", required=True)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--networks", nargs="+", default=list(zoo.NETWORKS))
    args = parser.parse_args()
    pack = find_pack(args.gpu)
    backend = backend_for(pack, args.runs)
    for warning in mismatch_warnings(pack, backend):
        print(f"warning: {warning}", file=sys.stderr)
    runtime = backend.runtime_info()
    print(f"# {dt.date.today()} | {backend.device_info()['name']} | onnxruntime {runtime['version']} "
          f"{runtime['execution_provider']} x{runtime['intra_op_threads']} ({runtime['graph_optimization']}) | "
          f"pack {pack.name} | Python {platform.python_version()} | median of >= {args.runs} runs\n")
    state = measured_machine_state(pack, backend)
    if state is not None:
        print(f"{format_machine_state(state, pack)}\n")
    print("| network | batch | measured ms | npower ms | acc | npower no-fusion ms | acc | Paleo ms | acc |")
    print("|---|---|---|---|---|---|---|---|---|")
    acc = {"npower": [], "nofusion": [], "paleo": []}
    for batch in args.batches:
        for name in args.networks:
            _, model = load_network(f"zoo:{name}", batch)
            graph = load_graph(model)
            fused = sum(layer.ms for layer in predict(graph, pack, fusion=True))
            plain = sum(layer.ms for layer in predict(graph, pack, fusion=False))
            paleo = paleo_ms(graph, pack)
            measured = measure_network(backend, model, graph).median_ms
            row = {"npower": accuracy(fused, measured), "nofusion": accuracy(plain, measured),
                   "paleo": accuracy(paleo, measured)}
            for key, value in row.items():
                acc[key].append(value)
            print(f"| {name} | {batch} | {measured:.2f} | {fused:.2f} | {row['npower']:.1%} | {plain:.2f} | "
                  f"{row['nofusion']:.1%} | {paleo:.2f} | {row['paleo']:.1%} |", flush=True)
    print()
    for key, label in (("npower", "npower (fusion-aware)"), ("nofusion", "npower without fusion"), ("paleo", "Paleo")):
        values = np.array(acc[key])
        print(f"- {label}: mean accuracy {values.mean():.2%}, mean abs. error {np.mean(np.abs(1 - values)):.2%}, "
              f"within +/-10 %: {int(np.sum(np.abs(1 - values) <= 0.10))}/{len(values)}")
    ratio = np.mean(np.abs(1 - np.array(acc["npower"]))) / np.mean(np.abs(1 - np.array(acc["paleo"])))
    print(f"- npower mean error / Paleo mean error: {ratio:.2f} (target <= 0.33)")


if __name__ == "__main__":
    main()
