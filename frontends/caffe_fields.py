"""Typed, range-checked reads of prototxt fields; every error names the file, line, layer and field."""
from __future__ import annotations

import math
from typing import Any

from npower.errors import NpowerError

from .caffe_text import Message, one

INT32_MAX = 2**31 - 1
UINT32_MAX = 2**32 - 1


class Fields:
    """One prototxt message (a layer or one of its *_param blocks) read with checks."""

    def __init__(self, message: Any, file: str, layer: str, prefix: str = "", line: int = 1):
        if not isinstance(message, Message):
            raise NpowerError(f"{file}:{line}: layer '{layer}': {prefix.rstrip('.') or 'layer'} must be a "
                              f"{{ ... }} block, got {message!r}"[:300])
        self.message, self.file, self.layer, self.prefix = message, file, layer, prefix

    def fail(self, field: str, problem: str) -> NpowerError:
        """An error about one field, at its line."""
        return NpowerError(f"{self.file}:{self.message.line_of(field)}: layer '{self.layer}': "
                           f"{self.prefix}{field} {problem}")

    def error(self, problem: str) -> NpowerError:
        """An error about the layer as a whole, at its first line."""
        return NpowerError(f"{self.file}:{self.message.line}: layer '{self.layer}': {problem}")

    def has(self, field: str) -> bool:
        return field in self.message

    def _required(self, field: str, default: Any) -> Any:
        value = one(self.message, field, default)
        if value is None:
            raise self.fail(field, "is required")
        return value

    def _int(self, field: str, value: Any, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(field, f"must be an integer from {low} to {high}, got {_show(value)}")
        return value

    def int(self, field: str, default: int | None = None, low: int = 0, high: int = UINT32_MAX) -> int:
        return self._int(field, self._required(field, default), low, high)

    def ints(self, field: str, low: int = 0, high: int = UINT32_MAX) -> list[int]:
        return [self._int(field, value, low, high) for value in self.message.get(field, [])]

    def float(self, field: str, default: float, low: float = -math.inf, high: float = math.inf) -> float:
        value = self._required(field, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not low <= value <= high:
            bounds = f" from {low:g} to {high:g}" if math.isfinite(low) or math.isfinite(high) else ""
            raise self.fail(field, f"must be a finite number{bounds}, got {_show(value)}")
        return float(value)

    def floats(self, field: str) -> list[float]:
        return [self._finite(field, value) for value in self.message.get(field, [])]

    def _finite(self, field: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(field, f"must be a finite number, got {_show(value)}")
        return float(value)

    def bool(self, field: str, default: bool) -> bool:
        value = self._required(field, default)
        if value in (0, 1) and not isinstance(value, float):
            return bool(value)
        raise self.fail(field, f"must be true or false, got {_show(value)}")

    def enum(self, field: str, default: str, names: tuple[str, ...]) -> str:
        """An enum by name or by number (its index in names)."""
        value = self._required(field, default)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
            return names[value]
        if isinstance(value, str) and value in names:
            return value
        raise self.fail(field, f"must be one of {', '.join(names)}, got {_show(value)}")

    def text(self, field: str, default: str | None = None) -> str:
        value = self._required(field, default)
        if not isinstance(value, str):
            raise self.fail(field, f"must be a string, got {_show(value)}")
        return value

    def texts(self, field: str) -> list[str]:
        values = self.message.get(field, [])
        for value in values:
            if not isinstance(value, str):
                raise self.fail(field, f"must be a string, got {_show(value)}")
        return values

    def sub(self, field: str) -> "Fields":
        """A nested block (empty when absent)."""
        value = one(self.message, field, Message(self.message.line))
        return Fields(value, self.file, self.layer, f"{self.prefix}{field}.", self.message.line_of(field))

    def subs(self, field: str) -> list["Fields"]:
        return [Fields(value, self.file, self.layer, f"{self.prefix}{field}.", self.message.line_of(field))
                for value in self.message.get(field, [])]


def _show(value: Any) -> str:
    return "a { ... } block" if isinstance(value, Message) else repr(value)[:40]


def elements_text(count: int) -> str:
    """A size in bytes of float32 elements, for messages."""
    size = 4.0 * count
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if size < 1000 or unit == "PB":
            return f"{size:.3g} {unit}"
        size /= 1000
    return f"{size:.3g} PB"
