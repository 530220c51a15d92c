"""EfficientNet-B0 and four variants of it, measured against npower: where its over-prediction comes from.

The variants drop its squeeze-and-excitation blocks, replace its Swish (a kernel of its own after each conv,
onnxruntime's QuickGelu) with ReLU6 (fused into the conv), or both, or drop the blocks and every activation (against
"no SE, Swish": what the Swish kernels cost inside the network); everything else (widths, 3x3 and 5x5 depthwise
convs, strides) stays. Each network is measured `--rounds` times, alternated, with onnxruntime at the pack's level and
threads (`npower validate`'s measurement, 20 runs), and predicted with the pack. Prints a table. None of the variants
is in any pack's fitting data.
Run: python benchmarks/efficientnet_ablation.py [--gpu PACK] [--batch N] [--rounds N]
"""
from __future__ import annotations

import argparse
import functools

from npower.graph import load_graph
from npower.netbuilder import NetBuilder
from npower.pack import find_pack
from npower.predict import predict
from npower.validate import backend_for, measure_in_passes, pass_median
from npower.zoo import efficientnet_b0

VARIANTS = {"SE + Swish (EfficientNet-B0)": {}, "no SE, Swish": {"squeeze_excite": False},
            "SE, ReLU6": {"act": "relu6"}, "no SE, ReLU6": {"squeeze_excite": False, "act": "relu6"},
            "no SE, no activation": {"squeeze_excite": False, "act": "none"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", default="amd-epyc", help="pack: its runtime measures the networks")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    pack = find_pack(args.gpu)
    backend = backend_for(pack, runs=20)
    networks = {}
    for name, switches in VARIANTS.items():
        builder = NetBuilder("efficientnet_variant", (args.batch, 3, 224, 224))
        model = builder.model(functools.partial(efficientnet_b0, **switches)(builder))
        graph = load_graph(model)
        networks[name] = (model, graph, sum(layer.ms for layer in predict(graph, pack)))
    passes = measure_in_passes(backend, [(model, graph) for model, graph, _ in networks.values()], args.rounds)
    measured = {name: pass_median(times) for name, times in zip(networks, passes)}
    predicted = {name: ms for name, (_, _, ms) in networks.items()}
    print(f"{'network (batch ' + str(args.batch) + ')':30s} {'measured ms':>12s} {'npower ms':>10s} {'error':>7s}")
    for name in networks:
        print(f"{name:30s} {measured[name]:12.2f} {predicted[name]:10.2f} {predicted[name] / measured[name] - 1:+7.1%}")
    swish, none = "no SE, Swish", "no SE, no activation"
    print(f"the Swish kernels (\"{swish}\" less \"{none}\"): {measured[swish] - measured[none]:.2f} ms measured, "
          f"{predicted[swish] - predicted[none]:.2f} ms predicted")


if __name__ == "__main__":
    main()
