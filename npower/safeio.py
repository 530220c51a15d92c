"""Bounded reads of user files: regular files only, a size limit, and YAML whose nesting depth and
alias expansion are checked on the event stream before any document is built (deep nesting crashes
libyaml's composer; an alias bomb expands to billions of nodes)."""
from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import yaml

from .errors import NpowerError

# The safe loader (no Python objects), in libyaml's C implementation when PyYAML has it: 10x faster.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_YAML_BYTES = 32 * 2**20
MAX_YAML_DEPTH = 32
MAX_YAML_NODES = 2_000_000  # after expanding aliases


def read_text(path: Path, what: str, limit: int = MAX_YAML_BYTES) -> str:
    """A regular file's UTF-8 text; FIFOs, devices and folders are refused (they block or never end)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise NpowerError(f"{what} {path}: no such file") from None
    except OSError as exc:
        raise NpowerError(f"{what} {path}: cannot read ({exc.strerror or exc})") from exc
    if not stat.S_ISREG(info.st_mode):
        raise NpowerError(f"{what} {path}: not a regular file")
    if info.st_size > limit:
        raise NpowerError(f"{what} {path}: {info.st_size / 2**20:.1f} MiB is over the {limit // 2**20} MiB limit")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise NpowerError(f"{what} {path}: cannot read ({exc})") from exc


def _check_events(text: str, where: str) -> None:
    """Refuse nesting deeper than MAX_YAML_DEPTH and documents that expand past MAX_YAML_NODES."""
    sizes: dict[str, int] = {}  # anchor -> expanded node count of what it names
    open_nodes: list[list] = []  # [anchor, node count] per open collection
    total = 0
    for event in yaml.parse(text, Loader=SAFE_LOADER):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            if len(open_nodes) >= MAX_YAML_DEPTH:
                raise NpowerError(f"{where}: YAML nested more than {MAX_YAML_DEPTH} levels deep")
            open_nodes.append([event.anchor, 1])
            continue
        if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            anchor, count = open_nodes.pop()
        elif isinstance(event, yaml.AliasEvent):
            anchor, count = None, sizes.get(event.anchor, 1)
        elif isinstance(event, yaml.ScalarEvent):
            anchor, count = event.anchor, 1
        else:
            continue
        if anchor:
            sizes[anchor] = count
        if open_nodes:
            open_nodes[-1][1] += count
        else:
            total += count
        if total + sum(c for _, c in open_nodes) > MAX_YAML_NODES:
            raise NpowerError(f"{where}: YAML expands to more than {MAX_YAML_NODES:,} nodes (alias bomb?)")


def load_yaml(text: str, where: str) -> Any:
    """Parse YAML text with the safe loader after the depth and expansion checks."""
    try:
        _check_events(text, where)
        return yaml.load(text, Loader=SAFE_LOADER)
    except yaml.YAMLError as exc:
        if "maximum nesting depth" in str(getattr(exc, "problem", "")):  # PyYAML >= 6.0.4 stops at 1,000 itself
            raise NpowerError(f"{where}: YAML nested more than {MAX_YAML_DEPTH} levels deep") from exc
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise NpowerError(f"{where}: invalid YAML{at}") from exc
