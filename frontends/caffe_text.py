"""A reader for protobuf text format (Caffe .prototxt), with line/column errors. No Caffe needed."""
from __future__ import annotations

import re
from typing import Any

from npower.errors import NpowerError

Message = dict[str, list[Any]]

_TOKEN = re.compile(r'''
    (?P<space>[ \t\r\n,;]+|\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|inf|nan)(?![A-Za-z_]))
  | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>[{}:<>\[\]])
''', re.VERBOSE)


def _tokens(text: str, name: str) -> list[tuple[str, Any, int, int]]:
    tokens, position, line, line_start = [], 0, 1, 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise NpowerError(f"{name}:{line}:{position - line_start + 1}: syntax error near {text[position:position + 12]!r}")
        kind, value = match.lastgroup, match.group()
        if kind != "space":
            tokens.append((kind, value, line, position - line_start + 1))
        newlines = value.count("\n")
        if newlines:
            line += newlines
            line_start = match.start() + value.rindex("\n") + 1
        position = match.end()
    return tokens


def _scalar(kind: str, value: str) -> Any:
    if kind == "string":
        return bytes(value[1:-1], "utf-8").decode("unicode_escape")
    if kind == "number":
        number = float(value)
        return int(number) if re.fullmatch(r"[-+]?\d+", value) else number
    return {"true": True, "false": False}.get(value, value)  # enum names stay strings


def parse_prototxt(text: str, name: str = "prototxt") -> Message:
    """Parse text format into nested dicts: field -> list of values (repeated fields keep order)."""
    tokens = _tokens(text, name)
    position = 0

    def error(message: str) -> NpowerError:
        where = tokens[position] if position < len(tokens) else tokens[-1] if tokens else ("", "", 1, 1)
        return NpowerError(f"{name}:{where[2]}:{where[3]}: {message}")

    def message(closing: str | None) -> Message:
        nonlocal position
        fields: Message = {}
        while position < len(tokens):
            kind, value, _, _ = tokens[position]
            if kind == "punct" and value == closing:
                position += 1
                return fields
            if kind != "word":
                raise error(f"expected a field name, got {value!r}")
            position += 1
            if position >= len(tokens):
                raise error(f"field '{value}' has no value")
            next_kind, next_value, _, _ = tokens[position]
            if next_kind == "punct" and next_value == ":":
                position += 1
                if position >= len(tokens):
                    raise error(f"field '{value}' has no value")
                next_kind, next_value, _, _ = tokens[position]
            if next_kind == "punct" and next_value in "{<":
                position += 1
                fields.setdefault(value, []).append(message("}" if next_value == "{" else ">"))
            elif next_kind == "punct" and next_value == "[":
                position += 1
                while position < len(tokens) and tokens[position][1] != "]":
                    fields.setdefault(value, []).append(_scalar(tokens[position][0], tokens[position][1]))
                    position += 1
                position += 1
            elif next_kind in ("string", "number", "word"):
                fields.setdefault(value, []).append(_scalar(next_kind, next_value))
                position += 1
            else:
                raise error(f"unexpected {next_value!r} after field '{value}'")
        if closing is not None:
            raise error(f"missing '{closing}' at end of file")
        return fields

    return message(None)


def one(message: Message, field: str, default: Any = None) -> Any:
    """The last value of a field (protobuf semantics for a non-repeated field), or default."""
    values = message.get(field)
    return values[-1] if values else default
