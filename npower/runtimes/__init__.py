"""Runtimes: what a pack's `runtime` field means, and which kernels that runtime runs.

A pack models one device and one runtime (onnxruntime CPU at an optimisation level,
onnxruntime CUDA, PyTorch eager on CUDA). The runtime decides which graph nodes become which
kernels: fusions, nodes that run as views, constant folding. Every such decision goes through
`Runtime.rules`, one `RuleSet` per runtime, registered in this package.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import NpowerError
from .kernels import Fusion, RuleSet

RUNTIME_NAMES = ("onnxruntime", "torch")
DEVICES = ("cpu", "cuda")
ORT_LEVELS = ("disabled", "basic", "extended", "all")
ORT_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
_KEYS = ("name", "version", "device", "execution_provider", "graph_optimization", "precision", "intra_op_threads")

RULE_SETS: dict[tuple[str, str, str], RuleSet] = {}


def register_rules(name: str, device: str, optimization: str, rules: RuleSet) -> None:
    """Make `rules` the kernel rules of runtime `name` on `device` at `optimization`."""
    RULE_SETS[(name, device, optimization)] = rules


@dataclass(frozen=True)
class Runtime:
    """The software a pack was measured with: it decides the kernels a graph becomes."""

    name: str
    version: str
    device: str
    optimization: str
    provider: str = ""
    precision: str = "fp32"
    threads: int | None = None

    @classmethod
    def from_dict(cls, data: Any, source: str = "pack") -> "Runtime":
        """Parse a pack's `runtime` mapping; errors name the bad field."""
        if not isinstance(data, Mapping):
            raise NpowerError(f"{source}: field 'runtime' must be a mapping")
        unknown = sorted(str(k) for k in data if k not in _KEYS)
        if unknown:
            raise NpowerError(f"{source}: unknown field(s) runtime.{', runtime.'.join(unknown)}")
        name = _text(data, "name", source)
        if name not in RUNTIME_NAMES:
            raise NpowerError(f"{source}: field 'runtime.name' must be one of {', '.join(RUNTIME_NAMES)}, got {name!r}")
        provider = str(data.get("execution_provider") or "")
        device = data.get("device") or ("cuda" if "CUDA" in provider else "cpu")
        if device not in DEVICES:
            raise NpowerError(f"{source}: field 'runtime.device' must be one of {', '.join(DEVICES)}, got {device!r}")
        if name == "onnxruntime":
            provider = provider or ORT_PROVIDERS[device]
            if provider != ORT_PROVIDERS[device]:
                raise NpowerError(f"{source}: field 'runtime.execution_provider' is {provider!r}, "
                                  f"which does not run on device {device!r}")
        default_level = "eager" if name == "torch" else "extended"
        optimization = str(data.get("graph_optimization") or default_level)
        threads = data.get("intra_op_threads")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 0):
            raise NpowerError(f"{source}: field 'runtime.intra_op_threads' must be a non-negative integer")
        runtime = cls(name, str(data.get("version", "")), device, optimization, provider,
                      str(data.get("precision") or "fp32"), threads)
        if runtime.key not in RULE_SETS:
            known = ", ".join("/".join(key) for key in sorted(RULE_SETS))
            raise NpowerError(f"{source}: no kernel rules for runtime {'/'.join(runtime.key)} (known: {known})")
        return runtime

    @property
    def key(self) -> tuple[str, str, str]:
        return self.name, self.device, self.optimization

    @property
    def rules(self) -> RuleSet:
        return RULE_SETS[self.key]

    @property
    def label(self) -> str:
        """One line for report headers, e.g. 'onnxruntime 1.32.0 CPUExecutionProvider (extended) x1 fp32'."""
        where = self.provider or self.device
        threads = f" x{self.threads}" if self.threads else ""
        return f"{self.name} {self.version} {where} ({self.optimization}){threads} {self.precision}"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "version": self.version, "device": self.device}
        if self.provider:
            data["execution_provider"] = self.provider
        data["graph_optimization"] = self.optimization
        data["precision"] = self.precision
        if self.threads is not None:
            data["intra_op_threads"] = self.threads
        return data


def _text(data: Mapping, key: str, source: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise NpowerError(f"{source}: field 'runtime.{key}' must be a non-empty string")
    return value


from . import ort_layout, ort_rules, torch_eager  # noqa: E402,F401  (register the rule sets)

__all__ = ["Fusion", "Runtime", "RuleSet", "register_rules", "RULE_SETS"]
