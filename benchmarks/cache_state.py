"""Single-node kernel times under the profiler's cache states against the same kernels inside a network.

For each zoo network (onnxruntime CPU at a given level, 1 thread): the sum of every Conv/Gemm/MatMul
kernel's time inside the network (onnxruntime's profile), and the same layers run one by one as
single-node graphs, timed hot (looped, as profilers usually do) and from the in-network state
(`npower.profile.cache_state`). Reorders are left out (a single node pays its own; a network only
at region boundaries). Prints a table. Run: python benchmarks/cache_state.py [--level all] [NETWORK ...]
"""
from __future__ import annotations

import argparse
import collections

from npower import zoo
from npower.graph import load_graph
from npower.profile.backends import OrtCpuBackend, TimingPolicy, summarize, time_runs
from npower.profile.build import build_model, make_feeds
from npower.profile.cache_state import in_network_cache_state
from npower.profile.harvest import node_config
from npower.profile.ort_trace import kernel_runs
from npower.validate import random_feeds

COSTLY = ("Conv", "Gemm", "MatMul")


def single_node_ms(backend: OrtCpuBackend, config: dict, in_network: bool) -> float:
    """Median ms of the config's main kernels (reorders left out) in a single-node graph."""
    feeds = make_feeds(config)
    state = in_network_cache_state()

    def loop(run) -> None:
        time_runs(state.around(run, feeds) if in_network else run, backend.policy)

    events, executed = backend.trace(build_model(config).SerializeToString(), feeds, loop)
    runs = kernel_runs(events, executed, backend.policy.warmup_runs).values()
    return sum(summarize(times).median_ms for op, times in runs if "Reorder" not in op)


def network_row(backend: OrtCpuBackend, name: str) -> tuple[float, float, float]:
    """(in-network, single-node hot, single-node in-network state) ms of the network's costly kernels."""
    model = zoo.build(name)
    graph = load_graph(model)
    profile = backend.profile_kernels(model.SerializeToString(), random_feeds(graph), runs=20)
    inside = sum(k.ms for k in profile.kernels if k.op_type.split(":")[-1] in COSTLY)
    configs: dict[str, dict] = {}
    counts: collections.Counter = collections.Counter()
    for node in graph.nodes:
        if node.op_type in COSTLY:
            config = node_config(node, {})
            configs.setdefault(repr(config), config)
            counts[repr(config)] += 1
    hot = cold = 0.0
    for key, config in configs.items():
        count = counts[key]
        hot += count * single_node_ms(backend, config, in_network=False)
        cold += count * single_node_ms(backend, config, in_network=True)
    return inside, hot, cold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("networks", nargs="*", default=["mobilenet_v2", "resnet18", "nin"])
    parser.add_argument("--level", default="all", choices=["basic", "extended", "all"])
    args = parser.parse_args()
    backend = OrtCpuBackend(1, args.level, TimingPolicy(3, 15, 0.1, 1.0))
    print(f"{'network':14s} {'in network ms':>14s} {'hot ms':>8s} {'ratio':>6s} {'in-network state ms':>20s} {'ratio':>6s}")
    for name in args.networks:
        inside, hot, cold = network_row(backend, name)
        print(f"{name:14s} {inside:14.3f} {hot:8.3f} {hot / inside:6.2f} {cold:20.3f} {cold / inside:6.2f}")


if __name__ == "__main__":
    main()
