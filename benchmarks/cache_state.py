"""Single-node kernel times under the profiler's two cache states against the same kernels inside a network.

For each zoo network (onnxruntime CPU at the CPU pack's level and threads), two groups of layers: those that
read a weight matrix (Conv/Gemm/MatMul) and weightless ones that run as the same kernel inside and
outside a network (pooling, Concat, Softmax, Transpose). For each group: the sum of the kernels'
times inside the network (onnxruntime's profile), and the same layers run one by one as single-node
graphs, timed hot (looped, as profilers usually do) and from the evicted state
(`npower.profile.cache_state`). The profiler takes the first group from the evicted state and the
second hot. A third group, the depthwise convs the pack costs with its depthwise kinds and the
profiler times from the evicted state (those reading a weight matrix), is timed the same way: inside
networks they run between the two states, and the fit takes their geometric mean
(`cache_state.in_network_ms`; its column here). Reorders are left out (a single node pays its own; a
network only at region boundaries). Prints a table.
Run: python benchmarks/cache_state.py [--gpu PACK] [--batch N] [NETWORK ...]
"""
from __future__ import annotations

import argparse
import collections
import math
from typing import Iterable

from npower import zoo
from npower.graph import Node, load_graph
from npower.pack import find_pack
from npower.predict import predict
from npower.profile.backends import OrtCpuBackend, TimingPolicy, summarize, time_runs
from npower.profile.build import build_model, make_feeds
from npower.profile.cache_state import BETWEEN_STATES_KINDS, in_network_cache_state, reads_weight_matrix
from npower.profile.harvest import node_config
from npower.profile.ort_trace import kernel_runs
from npower.validate import profile_layers, random_feeds

GROUPS = {"weight matrix": ("Conv", "Gemm", "MatMul"),
          "weightless": ("MaxPool", "AveragePool", "GlobalAveragePool", "Concat", "Softmax", "Transpose")}


def single_node_ms(backend: OrtCpuBackend, config: dict, evicted: bool) -> float:
    """Median ms of the config's main kernels (reorders left out) in a single-node graph."""
    feeds = make_feeds(config)
    state = in_network_cache_state()

    def loop(run) -> None:
        time_runs(state.around(run, feeds) if evicted else run, backend.policy)

    events, executed = backend.trace(build_model(config).SerializeToString(), feeds, loop)
    runs = kernel_runs(events, executed, backend.policy.warmup_runs).values()
    return sum(summarize(times).median_ms for op, times in runs if "Reorder" not in op)


def single_node_totals(backend: OrtCpuBackend, nodes: Iterable[Node]) -> tuple[float, float]:
    """(hot, evicted) ms of the nodes run one by one as single-node graphs (each distinct config timed once)."""
    configs: dict[str, dict] = {}
    counts: collections.Counter = collections.Counter()
    for node in nodes:
        config = node_config(node, {})
        configs.setdefault(repr(config), config)
        counts[repr(config)] += 1
    hot = evicted = 0.0
    for key, config in configs.items():
        hot += counts[key] * single_node_ms(backend, config, evicted=False)
        evicted += counts[key] * single_node_ms(backend, config, evicted=True)
    return hot, evicted


def group_row(backend: OrtCpuBackend, name: str, batch: int, ops: tuple[str, ...]) -> tuple[float, float, float]:
    """(in-network, single-node hot, single-node evicted) ms of the network's kernels of `ops`."""
    model = zoo.build(name, batch=batch)
    graph = load_graph(model)
    profile = backend.profile_kernels(model.SerializeToString(), random_feeds(graph), runs=20)
    inside = sum(k.ms for k in profile.kernels if k.op_type.split(":")[-1].removeprefix("Fused") in ops)  # FusedGemm
    return (inside, *single_node_totals(backend, (node for node in graph.nodes if node.op_type in ops)))


def depthwise_row(backend: OrtCpuBackend, pack, name: str, batch: int) -> tuple[float, float, float]:
    """(in-network, single-node hot, single-node evicted) ms of the network's depthwise convs: the kernels
    hosting the layers the pack costs with a depthwise kind and that read a weight matrix."""
    model = zoo.build(name, batch=batch)
    graph = load_graph(model)
    rows, _ = profile_layers(backend, model, graph, pack, predict(graph, pack), fusion=True, runs=20)
    nodes = {node.name: node for node in graph.nodes if node.op_type == "Conv" and reads_weight_matrix(node)}
    chosen = [row for row in rows if row["kind"] in BETWEEN_STATES_KINDS and row["name"] in nodes]
    inside = sum(row["measured_ms"] for row in chosen)
    return (inside, *single_node_totals(backend, (nodes[row["name"]] for row in chosen)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("networks", nargs="*",
                        default=["mobilenet_v2", "efficientnet_b0", "resnet18", "squeezenet", "vit_s_depth6"])
    parser.add_argument("--gpu", default="amd-epyc", help="CPU pack: its runtime level, and its depthwise kinds")
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    pack = find_pack(args.gpu)
    if (pack.runtime.name, pack.runtime.device) != ("onnxruntime", "cpu"):
        parser.error(f"{args.gpu}: not an onnxruntime CPU pack")
    backend = OrtCpuBackend(pack.runtime.threads or 1, pack.runtime.optimization, TimingPolicy(3, 15, 0.1, 1.0))
    print(f"{'network':14s} {'layers':14s} {'in network ms':>14s} {'hot ms':>8s} {'ratio':>6s} "
          f"{'evicted ms':>11s} {'ratio':>6s} {'geo. mean':>10s} {'ratio':>6s}")
    for name in args.networks:
        groups = [(group, group_row(backend, name, args.batch, ops)) for group, ops in GROUPS.items()]
        for group, (inside, hot, evicted) in groups + [("depthwise", depthwise_row(backend, pack, name, args.batch))]:
            if inside > 0:
                between = math.sqrt(hot * evicted)
                print(f"{name:14s} {group:14s} {inside:14.3f} {hot:8.3f} {hot / inside:6.2f} "
                      f"{evicted:11.3f} {evicted / inside:6.2f} {between:10.3f} {between / inside:6.2f}")


if __name__ == "__main__":
    main()
