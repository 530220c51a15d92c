"""The cache state a layer meets inside a network, recreated before each timed run of a single-node graph.

Inside a network, a layer's weights were last read one inference earlier and the other layers have
evicted them since, while its input was just written by the layer before it. A single-node graph
run in a loop finds both in cache and runs faster than the same kernel inside a network: on the
CPU pack's machine, MobileNetV2's convolutions sum to 2.70 ms that way against 4.15 ms inside the
network, and to 3.49 ms from the state below (`benchmarks/cache_state.py`). Before each timed run the profiler therefore reads a buffer
twice the size of the last-level cache (evicting weights and everything else) and then reads the
run's inputs back (as the previous layer's write would have left them).
"""
from __future__ import annotations

import glob
from functools import lru_cache
from typing import Callable

import numpy as np

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


class InNetworkCacheState:
    """Wraps a run so that it starts from the in-network cache state (see the module doc)."""

    description = "in-network: caches evicted, then the inputs re-read, before every run"

    def __init__(self, evict_bytes: int | None = None):
        size = evict_bytes if evict_bytes is not None else 2 * last_level_cache_bytes()
        self.buffer = np.ones(max(size // 4, 1), dtype=np.float32)

    def around(self, run: Callable[[], None], inputs: dict[str, np.ndarray]) -> Callable[[], None]:
        """`run`, preceded by an eviction of the caches and a read of `inputs`."""
        def prepared() -> None:
            self.buffer.sum()
            for value in inputs.values():
                value.sum()
            run()
        return prepared


@lru_cache(maxsize=1)
def in_network_cache_state() -> InNetworkCacheState:
    """The process's one eviction buffer (allocated on first use)."""
    return InNetworkCacheState()
