"""Coefficient packs: one YAML file per device and runtime. Load, validate, save, discover."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import yaml

from .errors import NpowerError
from .polynomial import SparsePolynomial
from .runtimes import Runtime
from .safeio import load_yaml, read_text

SCHEMA_VERSION = 1
PACK_SUFFIXES = (".yaml", ".yml")
# Measured device figures the roofline fallback divides by: anything outside these ranges is a typo or an attack.
DEVICE_FIGURES = {"peak_gflops": (1e-3, 1e9), "bandwidth_gbs": (1e-3, 1e8)}


@dataclass
class KindModels:
    """The models of one op kind: runtime (ms) and optionally average power (W)."""

    runtime: SparsePolynomial
    power: SparsePolynomial | None = None


@dataclass
class Pack:
    """A device's coefficient pack."""

    name: str
    device: dict[str, Any]
    runtime: Runtime
    models: dict[str, KindModels]
    provenance: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    path: Path | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.runtime, Runtime):
            self.runtime = Runtime.from_dict(self.runtime, f"pack {self.name}")

    @property
    def has_power(self) -> bool:
        return any(m.power is not None for m in self.models.values())

    @property
    def estimated(self) -> bool:
        """Estimated from a spec sheet and other GPUs' measurements (npower/estimate.py), not fitted to its own."""
        return self.provenance.get("source_kind") == ESTIMATED

    @property
    def device_label(self) -> str:
        """The device's name, with the CPU generation where the profiler recorded it ('AMD EPYC, family 25 model
        17'): virtual machines give one name to several generations."""
        name, cpu = str(self.device.get("name", "?")), self.device.get("cpu")
        return f"{name}, {cpu}" if cpu else name

    @property
    def peak_gflops(self) -> float | None:
        return self.device.get("peak_gflops")

    @property
    def bandwidth_gbs(self) -> float | None:
        return self.device.get("bandwidth_gbs")

    def to_dict(self) -> dict[str, Any]:
        models = {}
        for kind, kind_models in sorted(self.models.items()):
            entry: dict[str, Any] = {"runtime": kind_models.runtime.to_dict()}
            if kind_models.power is not None:
                entry["power"] = kind_models.power.to_dict()
            models[kind] = entry
        return {"schema_version": self.schema_version, "name": self.name, "device": self.device,
                "runtime": self.runtime.to_dict(), "provenance": self.provenance, "models": models}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the pack as YAML; raise NpowerError if the folder is not writable."""
        target = Path(path)
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, width=120)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_text(text)
            tmp.replace(target)
        except OSError as exc:
            raise NpowerError(f"cannot write pack {target}: {exc.strerror}") from exc
        return target


def pack_from_dict(data: Any, source: str = "pack") -> Pack:
    """Validate plain data and build a Pack; errors name the bad field."""
    if not isinstance(data, dict):
        raise NpowerError(f"{source}: a pack must be a YAML mapping")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise NpowerError(f"{source}: schema_version must be {SCHEMA_VERSION}, got {version!r}")
    for key in ("name", "device", "runtime", "models"):
        if key not in data:
            raise NpowerError(f"{source}: missing field '{key}'")
    if not isinstance(data["name"], str):
        raise NpowerError(f"{source}: field 'name' must be a string")
    for key in ("device", "runtime", "models"):
        if not isinstance(data[key], dict):
            raise NpowerError(f"{source}: field '{key}' must be a mapping")
    if not isinstance(data["device"].get("name"), str):
        raise NpowerError(f"{source}: field 'device.name' must be a string")
    for key, (low, high) in DEVICE_FIGURES.items():
        value = data["device"].get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not low <= value <= high):
            raise NpowerError(f"{source}: field 'device.{key}' must be a number from {low:g} to {high:g}, "
                              f"got {value!r}"[:200])
    models = {}
    for kind, entry in data["models"].items():
        where = f"{source}: models.{kind}"
        if not isinstance(entry, dict) or "runtime" not in entry:
            raise NpowerError(f"{where}: expected a mapping with a 'runtime' model")
        runtime = SparsePolynomial.from_dict(entry["runtime"], f"{where}.runtime")
        power = entry.get("power")
        models[str(kind)] = KindModels(runtime, SparsePolynomial.from_dict(power, f"{where}.power")
                                       if power is not None else None)
    provenance = data.get("provenance") or {}
    if not isinstance(provenance, dict):
        raise NpowerError(f"{source}: field 'provenance' must be a mapping")
    return Pack(data["name"], data["device"], Runtime.from_dict(data["runtime"], source), models, provenance)


def load_pack(path: str | os.PathLike) -> Pack:
    """Read and validate a pack file."""
    target = Path(path)
    data = load_yaml(read_text(target, "pack"), f"pack {target}")
    pack = pack_from_dict(data, f"pack {target.name}")
    pack.path = target
    return pack


def builtin_profiles_dir() -> Path:
    """The packs shipped with npower: package data when installed, gpu_profiles/ in a source checkout."""
    try:
        return Path(str(resources.files("npower.gpu_profiles")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "gpu_profiles"


def search_dirs(extra: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """Folders searched for packs: --profiles, then NPOWER_PROFILES, then the shipped ones."""
    dirs = [Path(d) for d in extra]
    env = os.environ.get("NPOWER_PROFILES", "")
    dirs += [Path(d) for d in env.split(os.pathsep) if d]
    dirs.append(builtin_profiles_dir())
    return dirs


def available_packs(extra: Iterable[str | os.PathLike] = ()) -> dict[str, Path]:
    """Pack name (file stem) -> path; earlier folders win."""
    found: dict[str, Path] = {}
    for folder in search_dirs(extra):
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.suffix in PACK_SUFFIXES and path.stem not in found:
                found[path.stem] = path
    return found


# provenance.source_kind, best first: own measurements, public data, estimates.
ESTIMATED = "estimated"  # provenance.source_kind of a pack estimated from a spec sheet
SOURCE_KINDS = ("measured", "public", ESTIMATED)


def _pack_header(path: Path) -> dict[str, Any]:
    """A pack's fields before `models:` (name, device, runtime, provenance): cheap to read for every pack."""
    text = read_text(path, "pack")
    end = text.find("\nmodels:")
    data = load_yaml(text if end < 0 else text[:end], f"pack {path}")
    return data if isinstance(data, dict) else {}


def _by_alias(gpu: str, packs: dict[str, Path]) -> Path | None:
    """The pack declaring `gpu` among its provenance.aliases; the best source kind wins, a tie is an error."""
    found = []
    for name, path in packs.items():
        try:
            provenance = _pack_header(path).get("provenance") or {}
        except (NpowerError, OSError, UnicodeDecodeError):
            continue
        aliases = provenance.get("aliases") if isinstance(provenance, dict) else None
        if isinstance(aliases, list) and gpu.lower() in (str(a).lower() for a in aliases):
            kind = provenance.get("source_kind", "measured")
            found.append((SOURCE_KINDS.index(kind) if kind in SOURCE_KINDS else len(SOURCE_KINDS), name, path))
    if not found:
        return None
    found.sort()
    best = [name for rank, name, _ in found if rank == found[0][0]]
    if len(best) > 1:
        kind = SOURCE_KINDS[found[0][0]] if found[0][0] < len(SOURCE_KINDS) else "unknown"
        raise NpowerError(f"--gpu '{gpu}' is an alias of several packs of the same kind ({kind}): "
                          f"{', '.join(best)}; name one of them")
    return found[0][2]


def find_pack(gpu: str, extra: Iterable[str | os.PathLike] = ()) -> Pack:
    """Resolve --gpu: a pack file path, an exact pack name, an alias a pack declares (`v100`; where several
    packs declare it, measured beats public beats estimated), or a unique name prefix."""
    candidate = Path(gpu)
    if candidate.suffix in PACK_SUFFIXES or os.sep in gpu:
        return load_pack(candidate)
    packs = available_packs(extra)
    if gpu in packs:
        return load_pack(packs[gpu])
    aliased = _by_alias(gpu, packs)
    if aliased is not None:
        return load_pack(aliased)
    matches = [name for name in packs if name.startswith(gpu)]
    if len(matches) == 1:
        return load_pack(packs[matches[0]])
    listing = ", ".join(sorted(packs)) or "none found"
    if len(matches) > 1:
        raise NpowerError(f"--gpu '{gpu}' matches several packs: {', '.join(matches)}")
    raise NpowerError(f"unknown pack '{gpu}'; available packs: {listing}")
