"""Whole-network accuracy benchmark: measured vs npower (with and without fusion awareness) vs Paleo.

Every zoo network, at batch 1 and a larger batch, runs for real on the pack's device with the
pack's runtime settings; the device's compute and memory speed are measured first, against the
pack's. None of these networks is in the pack's fitting data (the profiler
samples random single layers). Every network is measured in `--passes` passes over them all (the median of >=
`--runs` runs each time), and its time is the median of its passes' medians: a slow spell of a noisy machine lands
in one pass of a few networks. Prints a Markdown table (with each network's spread between passes) plus means and
+/-10 % counts.
Run: python benchmarks/accuracy.py --gpu PACK [--batches 1 4] [--runs 20] [--passes 3] [--networks a b]
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
from npower.validate import (accuracy, backend_for, format_machine_state, load_network, measure_in_passes,
                             measured_machine_state, mismatch_warnings, paleo_ms, pass_median, pass_spread)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", required=True)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--passes", type=int, default=3,
                        help="passes over all the networks; a network's time is the median of its passes' medians")
    parser.add_argument("--networks", nargs="+", default=list(zoo.NETWORKS))
    args = parser.parse_args()
    if args.passes < 1:
        parser.error("--passes must be at least 1")
    pack = find_pack(args.gpu)
    backend = backend_for(pack, args.runs)
    for warning in mismatch_warnings(pack, backend):
        print(f"warning: {warning}", file=sys.stderr)
    runtime = backend.runtime_info()
    print(f"# {dt.date.today()} | {backend.device_info()['name']} | onnxruntime {runtime['version']} "
          f"{runtime['execution_provider']} x{runtime['intra_op_threads']} ({runtime['graph_optimization']}) | "
          f"pack {pack.name} | Python {platform.python_version()} | median of {args.passes} passes' medians of >= "
          f"{args.runs} runs\n")
    state = measured_machine_state(pack, backend)
    if state is not None:
        print(f"{format_machine_state(state, pack)}\n")
    networks = [(name, batch, *_built(name, batch)) for batch in args.batches for name in args.networks]
    times = measure_in_passes(backend, [(model, graph) for _, _, model, graph in networks], args.passes)
    print("| network | batch | measured ms | spread | npower ms | acc | npower no-fusion ms | acc | Paleo ms | acc |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    acc = {"npower": [], "nofusion": [], "paleo": []}
    for (name, batch, model, graph), pass_ms in zip(networks, times):
        fused = sum(layer.ms for layer in predict(graph, pack, fusion=True))
        plain = sum(layer.ms for layer in predict(graph, pack, fusion=False))
        paleo = paleo_ms(graph, pack)
        measured = pass_median(pass_ms)
        row = {"npower": accuracy(fused, measured), "nofusion": accuracy(plain, measured),
               "paleo": accuracy(paleo, measured)}
        for key, value in row.items():
            acc[key].append(value)
        print(f"| {name} | {batch} | {measured:.2f} | {pass_spread(pass_ms):.1%} | {fused:.2f} | {row['npower']:.1%} | "
              f"{plain:.2f} | {row['nofusion']:.1%} | {paleo:.2f} | {row['paleo']:.1%} |")
    print()
    for key, label in (("npower", "npower (fusion-aware)"), ("nofusion", "npower without fusion"), ("paleo", "Paleo")):
        values = np.array(acc[key])
        print(f"- {label}: mean accuracy {values.mean():.2%}, mean abs. error {np.mean(np.abs(1 - values)):.2%}, "
              f"within +/-10 %: {int(np.sum(np.abs(1 - values) <= 0.10))}/{len(values)}")
    ratio = np.mean(np.abs(1 - np.array(acc["npower"]))) / np.mean(np.abs(1 - np.array(acc["paleo"])))
    print(f"- npower mean error / Paleo mean error: {ratio:.2f} (target <= 0.33)")


def _built(name: str, batch: int) -> tuple:
    """(model, graph) of a zoo network at a batch size."""
    _, model = load_network(f"zoo:{name}", batch)
    return model, load_graph(model)


if __name__ == "__main__":
    main()
