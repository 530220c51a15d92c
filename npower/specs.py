"""GPU specification sheets (`gpu_specs/*.yaml`): vendor-published figures, each with its source.

A spec is what npower knows about a GPU it may never have measured: SM count, cores per SM,
boost clock, fp32 peak, memory bandwidth, L2, memory, board power. Estimated packs are derived
from it (npower/estimate.py). Loading validates every figure, requires a source for each, and
checks that the fp32 peak agrees with 2 x SMs x cores per SM x boost clock.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from .errors import NpowerError
from .safeio import load_yaml, read_text

SPEC_SUFFIXES = (".yaml", ".yml")
# Figures a spec must give (all positive numbers), and the device-block names they take in a pack.
FIGURES = {"sms": "sms", "cores_per_sm": "cores_per_sm", "boost_clock_mhz": "clock_mhz",
           "fp32_peak_gflops": "peak_gflops", "bandwidth_gbs": "bandwidth_gbs", "l2_mb": "l2_mb",
           "memory_gb": "memory_gb", "tdp_w": "tdp_w"}
PEAK_TOLERANCE = 0.015  # vendor peaks are rounded; a larger gap means a wrong clock or core count


@dataclass(frozen=True)
class Spec:
    """One GPU's published figures and where each came from."""

    id: str
    name: str
    architecture: str
    figures: dict[str, float]
    sources: dict[str, str]
    aliases: tuple[str, ...] = ()
    chip: str = ""
    neusight_device: str = ""
    notes: str = ""
    path: Path | None = field(default=None, compare=False)

    def __getattr__(self, name: str) -> float:
        figures = self.__dict__.get("figures", {})
        if name in figures:
            return figures[name]
        raise AttributeError(name)

    @property
    def names(self) -> tuple[str, ...]:
        """Every name this spec answers to, normalised."""
        return tuple(dict.fromkeys(normalise(n) for n in (self.id, self.name, self.neusight_device, *self.aliases) if n))

    def device_block(self) -> dict[str, Any]:
        """The `device` mapping of a pack for this GPU."""
        block: dict[str, Any] = {"name": self.name, "kind": "gpu", "vendor": self.name.split()[0],
                                 "architecture": self.architecture}
        block.update({FIGURES[key]: value for key, value in self.figures.items()})
        block["source"] = f"npower spec gpu_specs/{self.id}.yaml (vendor-published figures, not measured)"
        return block


def normalise(name: str) -> str:
    """Lower case, alphanumerics only: 'Tesla V100-PCIE-32GB' -> 'teslav100pcie32gb'."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def spec_from_dict(data: Any, source: str) -> Spec:
    """Validate plain data into a Spec; errors name the bad field."""
    if not isinstance(data, dict):
        raise NpowerError(f"{source}: a GPU spec must be a YAML mapping")
    for key in ("id", "name", "architecture"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise NpowerError(f"{source}: field '{key}' must be a non-empty string")
    figures = {}
    for key in FIGURES:
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise NpowerError(f"{source}: field '{key}' must be a positive number, got {value!r}"[:200])
        figures[key] = float(value)
    sources = data.get("sources")
    if not isinstance(sources, dict):
        raise NpowerError(f"{source}: field 'sources' must map each figure to the document it came from")
    missing = [key for key in FIGURES if not isinstance(sources.get(key), str) or not sources[key]]
    if missing:
        raise NpowerError(f"{source}: no source given for {', '.join(missing)}")
    computed = 2 * figures["sms"] * figures["cores_per_sm"] * figures["boost_clock_mhz"] / 1e3
    if abs(computed / figures["fp32_peak_gflops"] - 1) > PEAK_TOLERANCE:
        raise NpowerError(f"{source}: fp32_peak_gflops {figures['fp32_peak_gflops']:g} disagrees with "
                          f"2 x sms x cores_per_sm x boost_clock_mhz = {computed:.0f}")
    aliases = data.get("aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
        raise NpowerError(f"{source}: field 'aliases' must be a list of names")
    return Spec(data["id"], data["name"], data["architecture"].lower(), figures, {k: sources[k] for k in FIGURES},
                tuple(aliases), str(data.get("chip") or ""), str(data.get("neusight_device") or ""),
                str(data.get("notes") or ""))


def load_spec(path: str | os.PathLike) -> Spec:
    """Read and validate one spec file."""
    target = Path(path)
    spec = spec_from_dict(load_yaml(read_text(target, "GPU spec"), f"GPU spec {target}"), f"GPU spec {target.name}")
    return Spec(**{**spec.__dict__, "path": target})


def builtin_specs_dir() -> Path:
    """The specs shipped with npower: package data when installed, gpu_specs/ in a source checkout."""
    try:
        return Path(str(resources.files("npower.gpu_specs")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "gpu_specs"


def available_specs(extra: Iterable[str | os.PathLike] = ()) -> dict[str, Spec]:
    """Spec id -> Spec from the given folders, then the shipped ones (earlier folders win)."""
    found: dict[str, Spec] = {}
    for folder in [*map(Path, extra), builtin_specs_dir()]:
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                if path.suffix in SPEC_SUFFIXES:
                    spec = load_spec(path)
                    found.setdefault(spec.id, spec)
    return found


def find_spec(name: str, extra: Iterable[str | os.PathLike] = ()) -> Spec:
    """A spec by path, id, full name, NeuSight device name or alias (case and punctuation ignored)."""
    if Path(name).suffix in SPEC_SUFFIXES or os.sep in name:
        return load_spec(name)
    specs = available_specs(extra)
    wanted = normalise(name)
    matches = [s for s in specs.values() if wanted == normalise(s.id)] or \
              [s for s in specs.values() if wanted in s.names]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise NpowerError(f"GPU '{name}' matches several specs: {', '.join(s.id for s in matches)}")
    raise NpowerError(f"no GPU spec named '{name}'; known: {', '.join(sorted(specs)) or 'none'}")
