"""A reader for protobuf text format (Caffe .prototxt), with line/column errors. No Caffe needed."""
from __future__ import annotations

import re
from typing import Any

from npower.errors import NpowerError

MAX_DEPTH = 64  # Caffe's messages nest 4 deep; anything far deeper is hostile, not a network
_TOKEN = re.compile(r'''
    (?P<space>[ \t\r\n,;]+|\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|inf|nan)(?![A-Za-z_]))
  | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>[{}:<>\[\]])
''', re.VERBOSE)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v", "\\": "\\", "'": "'",
            '"': '"', "?": "?"}
_ESCAPE = re.compile(r"\\(?:([0-7]{1,3})|x([0-9A-Fa-f]{1,2})|u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8})|(.)|$)")


class Message(dict):
    """Field -> list of values (repeated fields keep order), with the line of each field's last value."""

    def __init__(self, line: int = 1):
        super().__init__()
        self.line = line
        self.lines: dict[str, int] = {}

    def add(self, field: str, value: Any, line: int) -> None:
        self.setdefault(field, []).append(value)
        self.lines[field] = line

    def line_of(self, field: str) -> int:
        """The line of the field's last value (the message's own line if absent)."""
        return self.lines.get(field, self.line)


Token = tuple[str, str, int, int]


def _tokens(text: str, name: str) -> list[Token]:
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


def _unescape(body: str) -> str:
    """Protobuf text-format string escapes (C-style); ValueError names a bad one."""
    def replace(match: re.Match) -> str:
        octal, hex2, hex4, hex8, other = match.groups()
        if octal or hex2:
            value = int(octal, 8) if octal else int(hex2, 16)
            if value > 0xFF:
                raise ValueError(f"octal escape \\{octal} is above \\377")
            return chr(value)
        if hex4 or hex8:
            value = int(hex4 or hex8, 16)
            if value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
                raise ValueError(f"\\u escape {hex4 or hex8} is not a character")
            return chr(value)
        if other in _ESCAPES:
            return _ESCAPES[other]
        raise ValueError(f"invalid escape '\\{other or ''}'")
    return _ESCAPE.sub(replace, body)


def _scalar(token: Token, where: str) -> Any:
    kind, value, line, column = token
    if kind == "string":
        try:
            return _unescape(value[1:-1])
        except ValueError as exc:
            raise NpowerError(f"{where}:{line}:{column}: {exc} in string {value[:40]}") from None
    if kind == "number":
        return int(value) if re.fullmatch(r"[-+]?\d+", value) else float(value)
    return {"true": True, "false": False}.get(value, value)  # enum names stay strings


def parse_prototxt(text: str, name: str = "prototxt") -> Message:
    """Parse text format into nested Messages: field -> list of values (repeated fields keep order)."""
    tokens = _tokens(text, name)
    position = 0

    def error(message: str) -> NpowerError:
        where = tokens[position] if position < len(tokens) else tokens[-1] if tokens else ("", "", 1, 1)
        return NpowerError(f"{name}:{where[2]}:{where[3]}: {message}")

    def values_list(field: str, into: Message) -> None:
        nonlocal position
        while position < len(tokens) and tokens[position][1] != "]":
            if tokens[position][0] not in ("string", "number", "word"):
                raise error(f"unexpected {tokens[position][1]!r} in the list of field '{field}'")
            into.add(field, _scalar(tokens[position], name), tokens[position][2])
            position += 1
        if position >= len(tokens):
            raise error(f"missing ']' after the list of field '{field}'")
        position += 1

    def message(closing: str | None, line: int, depth: int) -> Message:
        nonlocal position
        if depth > MAX_DEPTH:
            raise error(f"messages nested more than {MAX_DEPTH} levels deep")
        fields = Message(line)
        while position < len(tokens):
            kind, value, field_line, _ = tokens[position]
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
                fields.add(value, message("}" if next_value == "{" else ">", field_line, depth + 1), field_line)
            elif next_kind == "punct" and next_value == "[":
                position += 1
                values_list(value, fields)
            elif next_kind in ("string", "number", "word"):
                fields.add(value, _scalar(tokens[position], name), field_line)
                position += 1
            else:
                raise error(f"unexpected {next_value!r} after field '{value}'")
        if closing is not None:
            raise error(f"missing '{closing}' at end of file")
        return fields

    return message(None, 1, 0)


def one(message: Message, field: str, default: Any = None) -> Any:
    """The last value of a field (protobuf semantics for a non-repeated field), or default."""
    values = message.get(field)
    return values[-1] if values else default
