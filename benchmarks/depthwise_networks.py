"""Packs' depthwise models against the depthwise convolutions of random inverted-residual networks.

The zoo and the third-party networks are the accuracy benchmarks, so they should not choose how the profiler
samples or how the fit treats a kind. These networks do: random stacks of MobileNetV2-style blocks (1x1 expand,
depthwise kxk, 1x1 project, residual Add) over random batch, image size, channels, expansion, kernel and
stride, seeded, none of them a published network. For each network, onnxruntime's profile gives the time
of every depthwise kernel inside the network (at the first pack's level and threads). Each pack's model of
the layer's kind is scored against it, per band of activation size (input + output bytes), as:
- bias: the geometric mean of predicted / in-network, in %;
- RMS of log(predicted / in-network), in %;
- total: the predicted sum over the in-network sum.
With `--single-node`, the same layers are also timed alone in the two cache states the profiler uses
(`npower.profile.cache_state`); each state and the weighted geometric mean the fit takes are scored like a pack,
and the weight of the evicted state that would leave no bias over all layers is printed.
Run: python benchmarks/depthwise_networks.py --packs PACK [PACK ...] [--seeds 100 150] [--single-node]
"""
from __future__ import annotations

import argparse
import math
import random

import numpy as np
import onnx

from npower.graph import load_graph
from npower.netbuilder import NetBuilder
from npower.pack import Pack, find_pack
from npower.predict import predict
from npower.profile.backends import OrtCpuBackend, TimingPolicy
from npower.profile.cache_state import BETWEEN_STATES_KINDS, EVICTED_WEIGHT, between_states_ms, reads_weight_matrix
from npower.profile.harvest import node_config
from npower.validate import profile_layers
from npower.zoo import _conv_bn_relu

from cache_state import single_node_ms

BANDS_MB = ((0, 1), (1, 4), (4, 16), (16, math.inf))


def network(seed: int) -> onnx.ModelProto:
    """A random stack of 3-6 inverted-residual blocks after a 3x3/2 stem, with a pooled classifier."""
    r = random.Random(seed)
    size = r.choice([56, 64, 96, 112, 128, 160])
    b = NetBuilder(f"inverted_residual_{seed}", (r.choice([1, 1, 2, 4, 8]), 3, size, size), seed=seed)
    x = _conv_bn_relu(b, "input", r.choice([16, 32, 48]), 3, 2, act="relu6")
    cin = b.shapes[x][1]
    for _ in range(r.randint(3, 6)):
        expand, cout = r.choice([1, 3, 4, 6]), r.choice([16, 24, 32, 48, 64, 96, 128, 160])
        kernel, stride = r.choice([3, 3, 5, 7]), r.choice([1, 1, 2]) if b.shapes[x][2] >= 8 else 1
        y = _conv_bn_relu(b, x, cin * expand, 1, act="relu6") if expand != 1 else x
        y = _conv_bn_relu(b, y, cin * expand, kernel, stride, groups=cin * expand, act=r.choice(["relu6", "swish"]))
        y = _conv_bn_relu(b, y, cout, 1, act="none")
        x = b.add(y, x) if stride == 1 and cin == cout else y
        cin = cout
    return b.model(b.gemm(b.flatten(b.gap(x)), 100))


def depthwise_layers(seed: int, packs: list[Pack], backend: OrtCpuBackend, single_node: bool) -> list[dict]:
    """The network's depthwise kernels: activation MB, in-network ms, each pack's ms (and single-node states)."""
    model = network(seed)
    graph = load_graph(model)
    predictions = [{row.name: row for row in predict(graph, pack)} for pack in packs]
    rows, _ = profile_layers(backend, model, graph, packs[0], list(predictions[0].values()), fusion=True, runs=20)
    nodes = {node.name: node for node in graph.nodes if node.op_type == "Conv" and reads_weight_matrix(node)}
    layers = []
    for row in rows:
        node = nodes.get(row["name"])
        if node is None or row["kind"] not in BETWEEN_STATES_KINDS or not row["measured_ms"]:
            continue
        layer = {"mb": 4 * (node.inputs[0].elements + node.outputs[0].elements) / 2 ** 20,
                 "in_network": row["measured_ms"],
                 "packs": [by_name[row["name"]].ms for by_name in predictions]}
        if single_node:
            config = node_config(node, {})
            layer["hot"], layer["evicted"] = (single_node_ms(backend, config, evicted=state) for state in (False, True))
        layers.append(layer)
    return layers


def score(layers: list[dict], predicted) -> list[str]:
    """Per band and over all: 'bias% rms% total' of predicted(layer) against the in-network ms."""
    cells = []
    for low, high in (*BANDS_MB, (0, math.inf)):
        chosen = [layer for layer in layers if low <= layer["mb"] < high]
        if not chosen:
            cells.append(f"{'-':>22s}")
            continue
        logs = np.log([predicted(layer) / layer["in_network"] for layer in chosen])
        total = sum(predicted(layer) for layer in chosen) / sum(layer["in_network"] for layer in chosen)
        cells.append(f"{np.mean(logs) * 100:+6.1f}% {np.sqrt(np.mean(logs ** 2)) * 100:5.1f}% {total:5.2f}")
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packs", nargs="+", required=True, help="pack names or YAML files (onnxruntime CPU; the "
                                                                  "first one's runtime settings time the networks)")
    parser.add_argument("--seeds", type=int, nargs=2, default=[100, 150], help="networks seeds FROM TO (TO excluded)")
    parser.add_argument("--single-node", action="store_true", help="also time each layer alone in both states")
    args = parser.parse_args()
    packs = [find_pack(name) for name in args.packs]
    runtime = packs[0].runtime
    if (runtime.name, runtime.device) != ("onnxruntime", "cpu"):
        parser.error(f"{args.packs[0]}: not an onnxruntime CPU pack")
    backend = OrtCpuBackend(runtime.threads or 1, runtime.optimization, TimingPolicy(3, 15, 0.1, 1.0))
    layers = [layer for seed in range(*args.seeds)
              for layer in depthwise_layers(seed, packs, backend, args.single_node)]
    bands = [f"{low:g}-{high:g} MB" if high < math.inf else f">{low:g} MB" for low, high in BANDS_MB] + ["all"]
    counts = [sum(low <= layer["mb"] < high for layer in layers) for low, high in (*BANDS_MB, (0, math.inf))]
    print(f"{len(layers)} depthwise layers of {args.seeds[1] - args.seeds[0]} networks; per band: bias, RMS of "
          "log error, predicted / in-network total")
    print(f"{'':32s} " + " ".join(f"{f'{band} ({count})':>22s}" for band, count in zip(bands, counts)))
    scored = [(name[-32:], lambda layer, i=i: layer["packs"][i]) for i, name in enumerate(args.packs)]
    if args.single_node:
        scored += [("single node, hot", lambda layer: layer["hot"]),
                   ("single node, evicted", lambda layer: layer["evicted"]),
                   (f"single node, between ({EVICTED_WEIGHT:g} ev.)",
                    lambda layer: between_states_ms(layer["evicted"], layer["hot"]))]
    for name, predicted in scored:
        print(f"{name:32s} " + " ".join(score(layers, predicted)))
    if args.single_node:
        hot, evicted = (np.mean([math.log(layer[state] / layer["in_network"]) for layer in layers])
                        for state in ("hot", "evicted"))
        print(f"evicted weight that leaves no bias over all layers: {hot / (hot - evicted):.2f}")


if __name__ == "__main__":
    main()
