"""npower: predict per-layer runtime, power and energy of ONNX networks from measured coefficient packs.

Importing npower is light: heavy dependencies (onnxruntime, scikit-learn, torch, tensorflow)
load only inside the functions that need them.
"""
from __future__ import annotations

from typing import Any

from .errors import NpowerError

__version__ = "0.1.0"
__all__ = ["analyze", "compare", "NpowerError", "Report", "Pack", "load_pack", "__version__"]

_LAZY = {"analyze": ("api", "analyze"), "compare": ("api", "compare"), "Report": ("report", "Report"),
         "Pack": ("pack", "Pack"),
         "load_pack": ("pack", "load_pack")}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module
        module, attr = _LAZY[name]
        return getattr(import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'npower' has no attribute '{name}'")
