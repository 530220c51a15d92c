"""Append-only sample store (JSON lines): a header row, then one row per measured config.

Each row is flushed and fsynced as it is written, so a kill loses at most the sample in
flight. Reading skips (and reports) corrupt rows, keeping the good ones. A file holds the
samples of one device and runtime (its header's): appending with another is refused.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import NpowerError


@dataclass
class SampleFile:
    """The parsed content of a sample file."""

    header: dict[str, Any]
    samples: list[dict[str, Any]]
    bad_rows: list[tuple[int, str]] = field(default_factory=list)

    @property
    def keys(self) -> set[str]:
        return {row["key"] for row in self.samples if "key" in row}


def read_samples(path: str | os.PathLike) -> SampleFile:
    """Parse a sample file; corrupt rows are listed in bad_rows (line number, reason)."""
    target = Path(path)
    try:
        lines = target.read_text().splitlines()
    except FileNotFoundError:
        raise NpowerError(f"{target}: no such sample file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise NpowerError(f"{target}: cannot read ({exc})") from exc
    header: dict[str, Any] = {}
    samples, bad = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            bad.append((number, f"not JSON ({exc.msg})"))
            continue
        if not isinstance(row, dict) or row.get("type") not in ("header", "sample"):
            bad.append((number, "not a header or sample row"))
        elif row["type"] == "header":
            header = row
        elif not isinstance(row.get("kind"), str) or "key" not in row:
            bad.append((number, "sample row without kind or key"))
        else:
            samples.append(row)
    return SampleFile(header, samples, bad)


def _first_row(handle) -> dict[str, Any]:
    handle.seek(0)
    try:
        row = json.loads(handle.readline())
    except json.JSONDecodeError:
        return {}
    return row if isinstance(row, dict) and row.get("type") == "header" else {}


def cpu_change(old_device: dict[str, Any], new_device: dict[str, Any]) -> str | None:
    """'family 26 model 2 -> family 25 model 17' where both devices recorded their CPU generation and they differ
    (a virtual machine gives several generations one name); None otherwise."""
    old, new = old_device.get("cpu"), new_device.get("cpu")
    return f"{old} -> {new}" if None not in (old, new) and old != new else None


def runtime_differences(old_header: dict[str, Any], new_header: dict[str, Any]) -> list[str]:
    """What differs between the runtimes, devices and cache states two sample-file headers measured
    ('threads 1 -> 2', ...); empty when samples of the two may be pooled."""
    old, new = old_header.get("runtime", {}), new_header.get("runtime", {})
    changed = [f"{key} {old[key]} -> {new[key]}" for key in sorted(old.keys() & new.keys()) if old[key] != new[key]]
    old_device, new_device = old_header.get("device", {}), new_header.get("device", {})
    if old_device.get("name") != new_device.get("name"):
        changed.append(f"device '{old_device.get('name')}' -> '{new_device.get('name')}'")
    elif change := cpu_change(old_device, new_device):
        changed.append(f"CPU {change}")
    if old_header.get("cache_state") != new_header.get("cache_state"):
        changed.append(f"cache state '{old_header.get('cache_state')}' -> '{new_header.get('cache_state')}'")
    return changed


def check_same_runtime(path: Path, existing: dict[str, Any], header: dict[str, Any]) -> None:
    """Samples are bound to the device and runtime that measured them: refuse to append samples measured
    with another one (threads, optimisation level, provider, version, cache state) to an existing file."""
    if not existing:
        raise NpowerError(f"{path}: cannot resume: the file has no header row saying which runtime measured it")
    changed = runtime_differences(existing, header)
    if changed:
        raise NpowerError(f"{path} holds samples of another runtime ({', '.join(changed)}): "
                          "write to a new sample file")


class SampleWriter:
    """Appends rows durably; creates the file with a header when it is new."""

    def __init__(self, path: str | os.PathLike, header: dict[str, Any]):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fresh = not self.path.exists() or self.path.stat().st_size == 0
            self.handle = open(self.path, "a+")
        except OSError as exc:
            raise NpowerError(f"cannot write samples to {self.path}: {exc.strerror}") from exc
        if fresh:
            self.append({"type": "header", **header})
        else:
            check_same_runtime(self.path, _first_row(self.handle), header)
            self._end_partial_line()

    def _end_partial_line(self) -> None:
        """A kill mid-write leaves a partial last row: close it so new rows start cleanly."""
        self.handle.seek(0, os.SEEK_END)
        if self.handle.tell() == 0:
            return
        self.handle.seek(self.handle.tell() - 1)
        if self.handle.read(1) != "\n":
            self.handle.write("\n")

    def append(self, row: dict[str, Any]) -> None:
        self.handle.write(json.dumps(row, sort_keys=True) + "\n")
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()

    def __enter__(self) -> "SampleWriter":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

