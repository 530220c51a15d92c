"""Element-wise kernels' time in the profiler's cache states, by tensor size: why kernels without a weight matrix are
fitted from a steady loop (`npower.profile.cache_state`).

For each op and size, a single-node graph timed from onnxruntime's trace three ways: the evicted and hot runs of the
profiler's alternation (an eviction of twice the last-level cache before every other run) and a steady loop (no
eviction). Prints a table; the hot run's ratio to the steady loop is the column to read. On the Zen 4 pack's machine the
hot run right after an evicted one stayed 1.3-2.4x slower than the steady loop for tensors of 0.2-6 MB.
Run: python benchmarks/hot_state.py [--gpu PACK] [--ops Relu Mul Sigmoid]
"""
from __future__ import annotations

import argparse

import numpy as np

from npower.pack import find_pack
from npower.profile.backends import OrtCpuBackend, TimingPolicy, time_runs
from npower.profile.build import build_model, make_feeds
from npower.profile.cache_state import InNetworkCacheState, in_network_cache_state
from npower.profile.ort_trace import kernel_runs

CHANNELS = (16, 64, 128, 256, 512)  # of a 56x56 map: 0.19-6.1 MB


def state_times(backend: OrtCpuBackend, op: str, channels: int) -> tuple[float, float, float]:
    """(alternating evicted, alternating hot, steady) mean ms of the op's kernel over [1, channels, 56, 56]."""
    shape = [1, channels, 56, 56]
    inputs = [{"shape": shape, "weight": False}] + ([{"shape": [1, channels, 1, 1], "weight": False}]
                                                    if op in ("Add", "Mul") else [])
    config = {"op": op, "attrs": {}, "inputs": inputs}
    model, feeds = build_model(config).SerializeToString(), make_feeds(config)
    policy, state = backend.policy, in_network_cache_state()

    def kernel_ms(loop) -> list[float]:
        (_, times), = kernel_runs(*backend.trace(model, feeds, loop), policy.warmup_runs).values()
        return times

    alternating = kernel_ms(lambda run: time_runs(state.alternate(run, feeds), policy))
    evicted, hot = InNetworkCacheState.split(alternating, policy.warmup_runs)
    steady = kernel_ms(lambda run: time_runs(run, policy))
    return float(np.mean(evicted)) * 1e3, float(np.mean(hot)) * 1e3, float(np.mean(steady)) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", default="amd-epyc", help="CPU pack: its runtime level and threads")
    parser.add_argument("--ops", nargs="+", default=["Relu", "Mul", "Sigmoid"])
    args = parser.parse_args()
    pack = find_pack(args.gpu)
    if (pack.runtime.name, pack.runtime.device) != ("onnxruntime", "cpu"):
        parser.error(f"{args.gpu}: not an onnxruntime CPU pack")
    backend = OrtCpuBackend(pack.runtime.threads or 1, pack.runtime.optimization, TimingPolicy(3, 40, 0.1, 2.0))
    print(f"{'op':8s} {'MB':>6s} {'evicted ms':>11s} {'hot ms':>8s} {'steady ms':>10s} {'hot/steady':>11s}")
    for op in args.ops:
        for channels in CHANNELS:
            evicted, hot, steady = state_times(backend, op, channels)
            print(f"{op:8s} {channels * 56 * 56 * 4 / 2 ** 20:6.2f} {evicted:11.4f} {hot:8.4f} {steady:10.4f} "
                  f"{hot / steady:11.2f}")


if __name__ == "__main__":
    main()
