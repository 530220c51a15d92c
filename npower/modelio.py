"""Read ONNX models from files, bytes or ModelProto objects without ever reading weights."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import onnx
from google.protobuf.message import DecodeError

from .errors import NpowerError

ModelSource = Union[str, os.PathLike, bytes, onnx.ModelProto]

# Initializers larger than this keep only their shape: their values never matter for cost
# prediction, and small ones (shape tensors for Reshape, Slice starts...) feed shape inference.
_KEEP_VALUES_UP_TO = 4096


def load_model(source: ModelSource) -> onnx.ModelProto:
    """Return a ModelProto whose large weights are stripped (external data is never loaded)."""
    if isinstance(source, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(source)
    elif isinstance(source, bytes):
        model = _parse(source, "<bytes>")
    else:
        model = _parse(_read(Path(source)), str(source))
    _check_is_model(model)
    strip_weights(model, Path(source).parent if isinstance(source, (str, os.PathLike)) else None)
    return model


def _read(path: Path) -> bytes:
    if not path.exists():
        raise NpowerError(f"{path}: no such file")
    if path.is_dir():
        raise NpowerError(f"{path}: is a folder, not an ONNX file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise NpowerError(f"{path}: cannot read ({exc.strerror})") from exc


def _parse(data: bytes, name: str) -> onnx.ModelProto:
    if not data:
        raise NpowerError(f"{name}: empty file, not an ONNX model")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise NpowerError(f"{name}: not a valid ONNX model (protobuf decode failed: truncated or not ONNX)") from exc
    return model


def _check_is_model(model: onnx.ModelProto) -> None:
    if model.ir_version <= 0 or not model.HasField("graph"):
        raise NpowerError("not a valid ONNX model (no IR version or no graph: is this an ONNX file?)")
    if len(model.graph.node) == 0:
        raise NpowerError("the ONNX graph has no nodes")
    graph = model.graph
    names = [vi.name for vi in list(graph.input) + list(graph.output) + list(graph.value_info)]
    names += [init.name for init in graph.initializer]
    for index, node in enumerate(graph.node):
        texts = [node.op_type, node.name, node.domain, *node.input, *node.output, *(a.name for a in node.attribute)]
        if not all(isinstance(text, str) for text in texts):
            raise NpowerError(f"not a valid ONNX model: node #{index} holds text that is not UTF-8 (corrupt file?)")
    if not all(isinstance(name, str) for name in names):
        raise NpowerError("not a valid ONNX model: a tensor name is not UTF-8 text (corrupt file?)")


def strip_weights(model: onnx.ModelProto, folder: Path | None = None) -> None:
    """Drop the values of large initializers in place (external references included). Small external
    tensors (shape tensors saved with `size_threshold=0`) keep their values when their data file is in
    `folder`: only their own bytes are read."""
    for init in model.graph.initializer:
        count = 1
        for dim in init.dims:
            count *= dim
        external = init.data_location == onnx.TensorProto.EXTERNAL
        value = _external_bytes(init, folder) if external and count <= _KEEP_VALUES_UP_TO else None
        if count > _KEEP_VALUES_UP_TO or external:
            for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data",
                          "uint64_data", "string_data", "external_data"):
                init.ClearField(field)
            init.data_location = onnx.TensorProto.DEFAULT
        if value is not None:
            init.raw_data = value


def external_data(init: onnx.TensorProto) -> dict[str, str]:
    """An external initializer's location, offset and length entries."""
    return {entry.key: entry.value for entry in init.external_data}


def _external_bytes(init: onnx.TensorProto, folder: Path | None) -> bytes | None:
    """The bytes of a small external tensor, or None when its data file is absent, outside the model's
    folder, or does not hold exactly the tensor's bytes."""
    info = external_data(init)
    if folder is None or "location" not in info:
        return None
    count = 1
    for dim in init.dims:
        count *= dim
    size = count * onnx.helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
    path = (folder / info["location"]).resolve()
    try:
        if folder.resolve() not in path.parents or int(info.get("length", size)) != size:
            return None
        with open(path, "rb") as handle:
            handle.seek(int(info.get("offset", 0)))
            data = handle.read(size)
    except (OSError, ValueError):
        return None
    return data if len(data) == size else None


def missing_data_files(path: str | os.PathLike) -> list[str]:
    """The external data files an ONNX file refers to that are not beside it."""
    model = _parse(_read(Path(path)), str(path))
    locations = {external_data(init).get("location", "") for init in model.graph.initializer
                 if init.data_location == onnx.TensorProto.EXTERNAL}
    return sorted(name for name in locations if name and not (Path(path).parent / name).exists())
