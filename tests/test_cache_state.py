"""The profiler's in-network cache state: cache size from sysfs, the wrapped run, and samples bound to it."""
from __future__ import annotations

import pytest

from npower import NpowerError
from npower.profile.cache_state import FALLBACK_CACHE_BYTES, InNetworkCacheState, last_level_cache_bytes
from npower.profile.store import SampleWriter


def test_last_level_cache_is_the_largest_sysfs_cache(tmp_path):
    for index, size in enumerate(["48K", "32K", "1024K", "32768K"]):
        (tmp_path / "cache" / f"index{index}").mkdir(parents=True)
        (tmp_path / "cache" / f"index{index}" / "size").write_text(size + "\n")
    assert last_level_cache_bytes(str(tmp_path)) == 32 << 20
    assert last_level_cache_bytes(str(tmp_path / "missing")) == FALLBACK_CACHE_BYTES


class Recorder:
    """Stands for an input array: records that it was read."""

    def __init__(self, log: list[str], name: str):
        self.log, self.name = log, name

    def sum(self) -> float:
        self.log.append(f"read {self.name}")
        return 0.0


def test_each_run_follows_an_eviction_and_a_read_of_its_inputs():
    log: list[str] = []
    state = InNetworkCacheState(evict_bytes=1 << 12)
    evict = state.buffer

    class Buffer:
        def sum(self) -> float:
            log.append("evict")
            return 0.0

    state.buffer = Buffer()
    prepared = state.around(lambda: log.append("run"), {"x0": Recorder(log, "x0"), "x1": Recorder(log, "x1")})
    prepared()
    prepared()
    assert log == ["evict", "read x0", "read x1", "run"] * 2
    assert evict.nbytes == 1 << 12


def test_samples_of_another_cache_state_are_not_resumed(tmp_path):
    path = tmp_path / "s.jsonl"
    header = {"runtime": {"name": "onnxruntime"}, "device": {"name": "cpu"}}
    with SampleWriter(path, {**header, "cache_state": "hot"}) as writer:
        writer.append({"type": "sample", "key": "a"})
    with pytest.raises(NpowerError, match="cache state 'hot' -> 'in-network"):
        SampleWriter(path, {**header, "cache_state": InNetworkCacheState.description})
