"""The cache states a kernel meets inside a network, recreated around the timed runs of a single-node graph.

Inside a network, a layer's weights were last read one inference earlier and the other layers have
evicted them since, while its input was just written by the layer before it and its output lands
in arena memory the layers before it used. A single-node graph run in a loop finds everything in
cache. So the profiler alternates two states, run by run:
- evicted: it reads a buffer twice the size of the last-level cache (evicting weights and
  everything else), then reads the run's inputs back (as the previous layer's write would have
  left them). The kernels that read a weight matrix (`reads_weight_matrix`) take their times from
  these runs.
- hot: the run right after, with everything in cache. Kernels without a weight matrix (element-wise
  ops, pooling, reorders, softmax, layer norms) take their times from these runs: evicting made
  their output buffers and code cold as well, which inside a network they are not.
A depthwise convolution meets neither state inside a network: its weights are a few KB, so what a cold
start costs it is its output buffer, code and runtime state, which a network left warm, while its input and
output are too large to stay in the innermost caches as in a loop. Inside networks it ran between the two
states, which is why the fit takes the geometric mean of both for the depthwise kinds (`in_network_ms`).
`python benchmarks/cache_state.py` measures both states against the same kernels inside networks.
A reorder of the blocked layout reads the tensor a kernel just wrote and writes one the next kernel reads inside a
network; in a single-node graph it reads the user's input or writes the graph output, 1.5-3x slower: the reorder
kinds (`GRAPH_EDGE_KINDS`) are fitted on samples timed between two plain kernels where the runs have them.
Kernels without a weight matrix are also timed in a steady loop (the steady state: no eviction between runs): the
hot run right after an evicted one is not hot for a tensor of a few MB (a Relu over 3 MB: 2.1x its steady time on the
Zen 4 pack's machine, 1.3x at 0.2 MB; `BENCHMARKS.md`, "The hot state after an eviction"). Every kind is fitted
from the hot state of all its rows (a kernel of its own inside a network: the hot state predicted the zoo best). An
activation a host kernel applies to the output it just wrote (an nchwc Conv's Clip or Sigmoid epilogue) works on
data in cache, as in a loop: its kind (`EPILOGUE_KINDS`), where at least MIN_STEADY_ROWS of its rows were timed in
the steady state (`steady_state_kinds`), is also fitted from them as a variant kind (`steady_kind`), which `predict`
uses for such passes.
A kernel that reads a graph input (the tensor the user feeds, last touched one inference earlier) meets it in
memory: a network's first conv. Plan configs marked `graph_input` are timed from an evicted state whose inputs
are not read back; their rows are fitted as a kind of their own (`graph_input_kind`), which `predict` uses for
the kernel that first reads a graph input (through views that move no data); later readers find it in cache.
"""
from __future__ import annotations

import glob
import itertools
import math
from collections import Counter
from functools import lru_cache
from typing import Callable, Iterable

import numpy as np

from ..graph import Node

FALLBACK_CACHE_BYTES = 32 << 20
_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def last_level_cache_bytes(cpu: str = "/sys/devices/system/cpu/cpu0") -> int:
    """Size of the largest cache sysfs reports for the CPU (the last level), else 32 MiB."""
    sizes = []
    for path in glob.glob(f"{cpu}/cache/index*/size"):
        try:
            with open(path) as handle:
                text = handle.read().strip()
        except OSError:
            continue
        number, unit = text[:-1], text[-1:].upper()
        if number.isdigit() and unit in _UNITS:
            sizes.append(int(number) * _UNITS[unit])
    return max(sizes, default=FALLBACK_CACHE_BYTES)


CONV_OPS = ("Conv", "FusedConv", "ConvTranspose")


def reads_weight_matrix(kernel: Node) -> bool:
    """Does the kernel read a constant with two or more dimensions above 1 (a filter bank or weight
    matrix, as opposed to a bias, a norm's scale or a per-channel constant), or an ungrouped conv's filters?"""
    weights = [t.shape for t in kernel.inputs if t is not None and t.is_weight and t.shape is not None]
    return _weight_matrix(kernel.op_type, int(kernel.attrs.get("group", 1)), weights)


def _weight_matrix(op: str, groups: int, weight_shapes: list) -> bool:
    """`reads_weight_matrix` from the op, its group count and its weights' shapes. An ungrouped conv's (or
    transposed conv's) filters are a filter bank even where only one dimension exceeds 1: [C, 1, 1, 1] maps one
    input channel to C."""
    filter_bank = op in CONV_OPS and groups == 1
    return any(sum(isinstance(d, int) and d > 1 for d in shape) >= 2 or (filter_bank and len(shape) > 2)
               for shape in weight_shapes)


def _chosen_state(row: dict) -> str | None:
    """The state a row's kernel takes its time from by today's rule (`reads_weight_matrix`); rows profiled before
    ungrouped 1x1 convs (and transposed convs) over one channel counted as reading a filter bank were timed hot,
    and recorded both."""
    config = row.get("config") or {}
    weights = [t["shape"] for t in config.get("inputs", []) if isinstance(t, dict) and t.get("weight")]
    op = config.get("op")
    if op in CONV_OPS and _weight_matrix(op, int(config.get("attrs", {}).get("group", 1)), weights):
        return "evicted"
    return row.get("cache_state")


BETWEEN_STATES_KINDS = ("nchwc_conv_dw", "conv_dw")
# Kinds a single-node graph runs only at its edges, reading the user's input or writing the graph output, which a
# network runs mostly between other kernels: fitted on the samples timed inside a graph (`mid_graph`) where the
# runs have some (a wrapped config: `plan.WRAP_OP`)
GRAPH_EDGE_KINDS = ("reorder_input", "reorder_output")
EVICTED_WEIGHT = 0.5  # of the evicted state in the between-states time (0.5: the geometric mean of the two)
GRAPH_INPUT = "@graph_input"
STEADY = "@steady"


def graph_input_kind(kind: str) -> str:
    """The kind of a kernel of `kind` that reads a graph input from memory (see the module doc)."""
    return kind + GRAPH_INPUT


def steady_kind(kind: str) -> str:
    """The kind of a kernel of `kind` run on data in cache, as in a steady loop (see the module doc)."""
    return kind + STEADY


def base_kind(kind: str) -> str:
    """The op kind of a kind, graph-input or steady variant or not."""
    return kind.removesuffix(GRAPH_INPUT).removesuffix(STEADY)


def in_network_ms(row: dict, overhead_ms: float = 0.0) -> float:
    """A sample's time in the state its kernel meets inside a network (`typical_ms` of that state's runs), each
    state's time less `overhead_ms` (kept to at least a tenth of it): the state `reads_weight_matrix` picks, or for a
    depthwise conv timed from the evicted state, the geometric mean of the evicted and hot states (a 1x1 depthwise
    conv, such as a BatchNormalization or a per-channel Mul in the blocked layout, reads no weight matrix: hot)."""
    def less_overhead(stats: dict) -> float:
        ms = typical_ms(stats)
        return max(ms - overhead_ms, 0.1 * ms)
    states, chosen = row.get("states") or {}, _chosen_state(row)
    if row.get("kind") in BETWEEN_STATES_KINDS and chosen == "evicted" and {"evicted", "hot"} <= states.keys():
        return between_states_ms(less_overhead(states["evicted"]), less_overhead(states["hot"]))
    return less_overhead(states[chosen] if chosen in states else row)


MIN_STEADY_ROWS = 20  # a kind's rows timed in the steady state for the kind to be fitted from it
STEADY_STATE = "kernels without a weight matrix also timed in a steady loop (no eviction between runs)"
# The kinds of the activations a host kernel applies to the output it just wrote (onnxruntime CPU's FusedConv and
# FusedGemm, and its NCHWc convs: `runtimes.ort_rules.CPU_ACTIVATIONS`), the only kernels `predict` costs in the
# steady state
EPILOGUE_KINDS = frozenset({"relu", "clip", "sigmoid", "tanh", "leakyrelu", "hardsigmoid"})


def steady_state_kinds(rows: Iterable[dict]) -> set[str]:
    """The kinds fitted from the steady state too: epilogue activations (`EPILOGUE_KINDS`) with at least
    MIN_STEADY_ROWS good rows timed in it."""
    counts = Counter(row.get("kind") for row in rows if row.get("cache_state") == "steady" and not row.get("error"))
    return {kind for kind, count in counts.items() if count >= MIN_STEADY_ROWS and kind in EPILOGUE_KINDS}


def fitted_states(row: dict, steady_kinds: set[str]) -> list[dict]:
    """The row in each state a kind is fitted from: a row timed in the steady state gives its hot state (for its kind)
    and, where its kind is one of `steady_kinds`, its steady state too (for the kind's steady variant); any other row
    is fitted as it is."""
    if row.get("cache_state") != "steady":
        return [row]
    hot = {**row, "cache_state": "hot"}
    return [hot, row] if row.get("kind") in steady_kinds else [hot]


def typical_ms(stats: dict) -> float:
    """A kernel's time over its runs: their mean, the median where only that was recorded (imported public
    measurements). A network's time is the sum of its kernels', whose expectation is the sum of their means; a
    kernel's runs are skewed (on the Zen 4 pack's machine the mean of a 4-16 us kernel's runs was 6.5 % above their
    median, of a 16-60 us one's 4 %, above 1 ms 0.5-1 %), and onnxruntime's profiler traces whole microseconds,
    which the median keeps and the mean averages out (on the 22 pooled Zen 4 runs: `reorder_input` 26.7 -> 21.2 %
    held-out, every conv kind 0-0.8 points lower)."""
    return float(stats["mean_ms"] if "mean_ms" in stats else stats["median_ms"])


def between_states_ms(evicted_ms: float, hot_ms: float) -> float:
    """A depthwise kernel's time inside a network from its two single-node states: their geometric mean,
    weighted by EVICTED_WEIGHT."""
    return evicted_ms ** EVICTED_WEIGHT * hot_ms ** (1.0 - EVICTED_WEIGHT)


class InNetworkCacheState:
    """Wraps a run so that calls alternate between the evicted and the hot state (see the module doc)."""

    description = ("in-network: weight-matrix kernels timed after a cache eviction and a re-read of the inputs, "
                   "other kernels hot (runs alternate)")

    def __init__(self, evict_bytes: int | None = None):
        size = evict_bytes if evict_bytes is not None else 2 * last_level_cache_bytes()
        self.buffer = np.ones(max(size // 4, 1), dtype=np.float32)

    def around(self, run: Callable[[], None], inputs: dict[str, np.ndarray]) -> Callable[[], None]:
        """`run`, preceded by an eviction of the caches and a read of `inputs` (the evicted state)."""
        def prepared() -> None:
            self.buffer.sum()
            for value in inputs.values():
                value.sum()
            run()
        return prepared

    def alternate(self, run: Callable[[], None], inputs: dict[str, np.ndarray]) -> Callable[[], None]:
        """`run` whose even-numbered calls (from 0) start from the evicted state and odd ones hot. The evicted
        state reads `inputs` back: pass none to time graph inputs, which come from memory."""
        evicted = self.around(run, inputs)
        calls = itertools.count()

        def prepared() -> None:
            (run if next(calls) % 2 else evicted)()
        return prepared

    @staticmethod
    def split(times: list[float], first_call: int) -> tuple[list[float], list[float]]:
        """(evicted, hot) times of an `alternate` run's calls, `times[0]` being call number `first_call`."""
        parity = first_call % 2
        return times[parity::2], times[1 - parity::2]


@lru_cache(maxsize=1)
def in_network_cache_state() -> InNetworkCacheState:
    """The process's one eviction buffer (allocated on first use)."""
    return InNetworkCacheState()
