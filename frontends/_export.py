"""Helpers shared by the framework frontends: example shapes, export error messages, quiet conversion."""
from __future__ import annotations

import os
import sys
import warnings
from contextlib import contextmanager
from typing import Iterator, Mapping

from npower.errors import NpowerError


def example_shape(input_shapes: Mapping[str, tuple[int, ...]] | None, batch: int | None,
                  default: tuple[int, ...] | None, framework: str) -> tuple[str, tuple[int, ...]]:
    """The single input's (name, shape): from --input-shape, else the model's own shape; --batch sets dim 0."""
    shapes = dict(input_shapes or {})
    if len(shapes) > 1:
        raise NpowerError(f"the {framework} frontend converts single-input models; got {len(shapes)} input shapes")
    if shapes:
        name, shape = next(iter(shapes.items()))
    elif default is not None and all(isinstance(d, int) and d > 0 for d in default[1:]):
        name, shape = "input", (batch or (default[0] if isinstance(default[0], int) and default[0] else 1), *default[1:])
    else:
        raise NpowerError(f"the {framework} model's input shape is unknown: pass --input-shape input=1x3x224x224")
    if batch is not None:
        shape = (batch, *shape[1:])
    return name, tuple(int(d) for d in shape)


def export_error(framework: str, exc: BaseException) -> NpowerError:
    """One line naming what failed (exporters often name the unsupported operator)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    hint = next((line for line in lines if "op" in line.lower() or "operator" in line.lower()), lines[0] if lines else "")
    return NpowerError(f"{framework} export to ONNX failed ({type(exc).__name__}): {hint[:300]}")


@contextmanager
def quiet() -> Iterator[None]:
    """Silence what frameworks print while importing and converting (TensorFlow/absl C++ logs, torch
    exporter chatter, Python warnings): the user sees npower's one line, or its one-line error."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as sink, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                for stream in (sys.stdout, sys.stderr):
                    stream.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        for fd in saved:
            os.close(fd)
