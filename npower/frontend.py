"""Frontend plugins: framework models -> ONNX, discovered through the `npower.frontends` entry points.

A frontend is any object with: name, description, suffixes (file suffixes it reads), extra (pip
extra that installs its dependencies), requires (importable module names), accepts(source)
and convert(source, batch=None, input_shapes=None, **options) -> onnx.ModelProto. A third
party adds one by installing a package that declares an entry point in this group.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Mapping, Protocol

import onnx

from .errors import NpowerError

ENTRY_POINT_GROUP = "npower.frontends"


class Frontend(Protocol):
    name: str
    description: str
    suffixes: tuple[str, ...]
    extra: str
    requires: tuple[str, ...]

    def accepts(self, source: Any) -> bool: ...

    def convert(self, source: Any, batch: int | None = None,
                input_shapes: Mapping[str, tuple[int, ...]] | None = None, **options: Any) -> onnx.ModelProto: ...


@dataclass
class FrontendStatus:
    name: str
    description: str
    suffixes: tuple[str, ...]
    missing: list[str]
    extra: str


def discover() -> dict[str, Frontend]:
    """All installed frontends, by name."""
    found: dict[str, Frontend] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            frontend = entry.load()
        except Exception as exc:  # noqa: BLE001 - a broken third-party plugin must not break npower
            raise NpowerError(f"frontend plugin '{entry.name}' failed to load: {exc}") from exc
        found[entry.name] = frontend
    return found


def missing_modules(frontend: Frontend) -> list[str]:
    return [module for module in frontend.requires if importlib.util.find_spec(module) is None]


def statuses() -> list[FrontendStatus]:
    return [FrontendStatus(name, f.description, tuple(f.suffixes), missing_modules(f), f.extra)
            for name, f in sorted(discover().items())]


def ensure_available(frontend: Frontend) -> None:
    missing = missing_modules(frontend)
    if missing:
        raise NpowerError(f"the {frontend.name} frontend needs {', '.join(missing)}: "
                          f"pip install 'npower[{frontend.extra}]'")


def find_frontend(source: Any, name: str | None = None) -> Frontend:
    """The frontend named, or the first that accepts the source."""
    frontends = discover()
    if name is not None:
        if name not in frontends:
            raise NpowerError(f"unknown frontend '{name}'; installed: {', '.join(sorted(frontends)) or 'none'}")
        return frontends[name]
    for frontend in frontends.values():
        if frontend.accepts(source):
            return frontend
    what = Path(source).suffix or str(source) if isinstance(source, (str, os.PathLike)) else type(source).__name__
    raise NpowerError(f"no frontend reads '{what}'; installed frontends: "
                      + ", ".join(f"{n} ({' '.join(f.suffixes)})" for n, f in sorted(frontends.items())))


def is_onnx(source: Any) -> bool:
    return isinstance(source, (onnx.ModelProto, bytes)) or (
        isinstance(source, (str, os.PathLike)) and Path(source).suffix.lower() == ".onnx")


def to_onnx(source: Any, batch: int | None = None, input_shapes: Mapping[str, tuple[int, ...]] | None = None,
            frontend: str | None = None, **options: Any) -> Any:
    """ONNX sources pass through; anything else is converted by its frontend (in memory)."""
    if frontend is None and is_onnx(source):
        return source
    if isinstance(source, (str, os.PathLike)) and not Path(source).exists():
        raise NpowerError(f"{source}: no such file or folder")
    chosen = find_frontend(source, frontend)
    ensure_available(chosen)
    return chosen.convert(source, batch=batch, input_shapes=input_shapes, **options)
