"""Graph walker: bind symbolic inputs, infer shapes, order nodes, resolve attributes."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Collection, Mapping

import onnx
from onnx import helper

from .attrs import resolve_window, with_defaults
from .errors import NpowerError, first_line
from .modelio import ModelSource, load_model
from .shape_values import fold

CONTROL_FLOW = {"If", "Loop", "Scan", "SequenceMap"}
MAX_USER_DIM = 2**31 - 1  # --batch and --input-shape dimensions
MAX_OPSET = 10_000

_DTYPE_BYTES = {
    onnx.TensorProto.FLOAT: 4, onnx.TensorProto.DOUBLE: 8, onnx.TensorProto.FLOAT16: 2,
    onnx.TensorProto.BFLOAT16: 2, onnx.TensorProto.INT8: 1, onnx.TensorProto.UINT8: 1,
    onnx.TensorProto.INT16: 2, onnx.TensorProto.UINT16: 2, onnx.TensorProto.INT32: 4,
    onnx.TensorProto.UINT32: 4, onnx.TensorProto.INT64: 8, onnx.TensorProto.UINT64: 8,
    onnx.TensorProto.BOOL: 1,
}


@dataclass(frozen=True)
class Tensor:
    """A tensor as the walker sees it: static shape (None where unknown) and element type."""

    name: str
    shape: tuple | None
    dtype: str
    itemsize: int
    is_weight: bool = False

    @property
    def known(self) -> bool:
        return self.shape is not None and all(isinstance(d, int) for d in self.shape)

    @property
    def elements(self) -> int:
        count = 1
        for dim in self.shape or ():
            count *= dim
        return count


@dataclass
class Node:
    """One graph node with resolved tensors and attributes (defaults applied)."""

    name: str
    op_type: str
    domain: str
    inputs: list[Tensor | None]
    outputs: list[Tensor]
    attrs: dict[str, Any]

    @property
    def shapes_known(self) -> bool:
        return all(t.known for t in self.inputs if t is not None) and all(t.known for t in self.outputs)


@dataclass
class Graph:
    """Nodes in topological order plus what the walker could not resolve."""

    name: str
    opset: int
    nodes: list[Node]
    inputs: list[Tensor]
    unknown_tensors: list[str] = field(default_factory=list)

    def consumers(self) -> dict[str, list[Node]]:
        """Map tensor name -> nodes that read it."""
        readers: dict[str, list[Node]] = {}
        for node in self.nodes:
            for tensor in node.inputs:
                if tensor is not None:
                    readers.setdefault(tensor.name, []).append(node)
        return readers


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """Parse 'NAME=1x3x224x224' (the name may itself contain '=' only before the last one)."""
    name, sep, dims = text.rpartition("=")
    if not sep or not name:
        raise NpowerError(f"--input-shape '{text}': expected NAME=D1xD2x..., e.g. input=1x3x224x224")
    try:
        shape = tuple(int(d) for d in dims.lower().split("x"))
    except ValueError:
        raise NpowerError(f"--input-shape '{text}': dimensions must be integers separated by 'x'") from None
    if any(not 0 < d <= MAX_USER_DIM for d in shape):
        raise NpowerError(f"--input-shape '{text}': dimensions must be from 1 to {MAX_USER_DIM}")
    return name, shape


def load_graph(source: ModelSource, batch: int | None = None,
               input_shapes: Mapping[str, tuple[int, ...]] | None = None) -> Graph:
    """Load a model and return its resolved Graph (shape values computed from constants and static shapes
    are evaluated, for the layers shape inference alone leaves unresolved)."""
    model = load_model(source)
    _bind_inputs(model, batch, dict(input_shapes or {}))
    inferred, values = fold(model, _infer)
    return walk(inferred, values.keys())


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    weights = {init.name for init in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in weights]


def _bind_inputs(model: onnx.ModelProto, batch: int | None, shapes: dict[str, tuple[int, ...]]) -> None:
    if batch is not None and not 0 < batch <= MAX_USER_DIM:
        raise NpowerError(f"--batch must be from 1 to {MAX_USER_DIM}, got {batch}")
    for name, wanted in shapes.items():
        if any(not 0 < d <= MAX_USER_DIM for d in wanted):
            raise NpowerError(f"--input-shape {name}: dimensions must be from 1 to {MAX_USER_DIM}, got {wanted}")
    inputs = _graph_inputs(model)
    known = {vi.name for vi in inputs}
    for name in shapes:
        if name not in known:
            raise NpowerError(f"--input-shape names '{name}', but the model's inputs are: {', '.join(sorted(known))}")
    for vi in inputs:
        tensor_type = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or not tensor_type.HasField("shape"):
            if vi.name in shapes:
                tensor_type.shape.SetInParent()
            else:
                raise NpowerError(f"input '{vi.name}' has no shape: pass --input-shape {vi.name}=D1xD2x...")
        dims = tensor_type.shape.dim
        if vi.name in shapes:
            wanted = shapes[vi.name]
            if len(dims) and len(wanted) != len(dims):
                raise NpowerError(f"--input-shape {vi.name}: model input has rank {len(dims)}, got {len(wanted)} dims")
            del dims[:]
            for value in wanted:
                dims.add().dim_value = value
            continue
        for index, dim in enumerate(dims):
            if index == 0 and batch is not None:
                dim.dim_value = batch
            elif not dim.HasField("dim_value") or dim.dim_value <= 0:
                label = dim.dim_param or ("?" if not dim.HasField("dim_value") else str(dim.dim_value))
                if dim.HasField("dim_value"):
                    raise NpowerError(f"input '{vi.name}' dimension {index} is {dim.dim_value}: dimensions must be positive")
                hint = "--batch N or " if index == 0 else ""
                raise NpowerError(f"input '{vi.name}' dimension {index} ('{label}') is symbolic: "
                                  f"bind it with {hint}--input-shape {vi.name}=D1xD2x...")


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    except MemoryError:
        raise NpowerError("ONNX shape inference ran out of memory (a constant too large to propagate)") from None
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, RuntimeError, ValueError) as exc:
        raise NpowerError(f"ONNX shape inference failed: {first_line(exc)}") from exc


def _tensor_from_type(name: str, type_proto: onnx.TypeProto, is_weight: bool = False) -> Tensor:
    tensor_type = type_proto.tensor_type
    elem = tensor_type.elem_type
    shape = None
    if type_proto.HasField("tensor_type") and tensor_type.HasField("shape"):
        shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim)
    return Tensor(name, shape, _dtype_name(name, elem), _DTYPE_BYTES.get(elem, 4), is_weight)


def _dtype_name(tensor: str, elem: int) -> str:
    """The TensorProto type name; an element type ONNX does not define is an error naming the tensor."""
    if not elem:
        return "UNDEFINED"
    try:
        return onnx.TensorProto.DataType.Name(elem)
    except ValueError:
        raise NpowerError(f"invalid graph: tensor '{tensor}' has element type {elem}, which ONNX does not define") from None


def _collect_tensors(model: onnx.ModelProto, constants: Collection[str]) -> dict[str, Tensor]:
    graph = model.graph
    tensors: dict[str, Tensor] = {}
    for vi in list(graph.value_info) + list(graph.input) + list(graph.output):
        tensors[vi.name] = _tensor_from_type(vi.name, vi.type)
    for init in graph.initializer:
        tensors[init.name] = Tensor(init.name, tuple(init.dims), _dtype_name(init.name, init.data_type),
                                    _DTYPE_BYTES.get(init.data_type, 4), True)
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            _mark_weight(tensors, node.output[0])
    for name in constants:
        _mark_weight(tensors, name)
    _propagate_through_identity(graph, tensors)
    return tensors


def _mark_weight(tensors: dict[str, Tensor], name: str) -> None:
    tensor = tensors.get(name)
    if tensor is not None:
        tensors[name] = Tensor(tensor.name, tensor.shape, tensor.dtype, tensor.itemsize, True)


def _propagate_through_identity(graph: onnx.GraphProto, tensors: dict[str, Tensor]) -> None:
    """An Identity of a constant is a constant (the PyTorch exporter shares equal initializers, such as
    zero biases, through Identity nodes; runtimes fold them away, so a Conv's bias stays a weight)."""
    identities = [node for node in graph.node if node.op_type == "Identity" and node.input and node.output]
    changed = True
    while changed:
        changed = False
        for node in identities:
            source, target = tensors.get(node.input[0]), tensors.get(node.output[0])
            if source is not None and source.is_weight and target is not None and not target.is_weight:
                _mark_weight(tensors, node.output[0])
                changed = True


def _topological(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    available = {vi.name for vi in graph.input} | {init.name for init in graph.initializer} | {""}
    producers: dict[str, int] = {}
    for index, node in enumerate(graph.node):
        for out in node.output:
            if out in producers and out:
                raise NpowerError(f"invalid graph: tensor '{out}' is produced by two nodes")
            producers[out] = index
    waiting: dict[int, set[str]] = {}
    readers: dict[str, list[int]] = {}
    for index, node in enumerate(graph.node):
        missing = set()
        for name in node.input:
            if name in available:
                continue
            if name not in producers:
                label = node.name or f"#{index}"
                raise NpowerError(f"invalid graph: node '{label}' ({node.op_type}) reads '{name}', "
                                  "which no node, input or initializer provides")
            missing.add(name)
        waiting[index] = missing
        for name in missing:
            readers.setdefault(name, []).append(index)
    ready = [i for i, missing in waiting.items() if not missing]
    order: list[onnx.NodeProto] = []
    while ready:
        index = ready.pop(0)
        order.append(graph.node[index])
        for out in graph.node[index].output:
            for reader in readers.get(out, []):
                waiting[reader].discard(out)
                if not waiting[reader]:
                    ready.append(reader)
    if len(order) != len(graph.node):
        stuck = next(graph.node[i] for i, missing in waiting.items() if missing)
        raise NpowerError(f"invalid graph: it has a cycle (node '{stuck.name or stuck.op_type}' waits on itself)")
    return order


def walk(model: onnx.ModelProto, constants: Collection[str] = ()) -> Graph:
    """Turn a shape-inferred ModelProto into a Graph of resolved nodes; tensors named in constants are
    computed from constants only (the runtime folds them), and count as weights like initializers."""
    tensors = _collect_tensors(model, constants)
    unknown: list[str] = []

    def tensor(name: str) -> Tensor | None:
        if not name:
            return None
        found = tensors.get(name)
        if found is None:
            found = Tensor(name, None, "UNDEFINED", 4)
            tensors[name] = found
        if not found.known and name not in unknown:
            unknown.append(name)
        bad_dims = found.shape is not None and any(isinstance(d, int) and d <= 0 for d in found.shape)
        empty_constant = found.is_weight and found.known and found.elements == 0  # e.g. Resize's unused roi
        if bad_dims and not empty_constant:
            raise NpowerError(f"tensor '{name}' has a zero or negative dimension {found.shape}")
        return found

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if not 0 <= opset <= MAX_OPSET:
        raise NpowerError(f"invalid graph: opset version {opset} (ONNX defines 1 to a few dozen)")
    nodes = []
    names: set[str] = set()
    for index, proto in enumerate(_topological(model.graph)):
        name = proto.name or f"{proto.op_type}_{index}"
        if name in names:
            name = f"{name}#{index}"
        names.add(name)
        inputs = [tensor(name) for name in proto.input]
        outputs = [tensor(name) for name in proto.output]
        attrs = with_defaults(proto.op_type, _attributes(proto, opset))
        if proto.op_type not in CONTROL_FLOW and inputs and inputs[0] is not None and inputs[0].known:
            weight = inputs[1].shape if len(inputs) > 1 and inputs[1] is not None else None
            try:
                attrs = resolve_window(proto.op_type, attrs, inputs[0].shape, weight,
                                       outputs[0].shape if outputs and outputs[0] is not None else None)
            except (IndexError, KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
                raise NpowerError(f"invalid graph: node '{name}' ({proto.op_type}) has window attributes "
                                  f"that do not fit its input ({exc})") from exc
        nodes.append(Node(name, proto.op_type, proto.domain,
                          inputs, [t for t in outputs if t is not None], attrs))
    inputs = [tensors[vi.name] for vi in _graph_inputs(model)]
    return Graph(model.graph.name, opset, nodes, inputs, unknown)


def _attributes(proto: onnx.NodeProto, opset: int) -> dict[str, Any]:
    """Attribute values, with their types checked against the operator's schema where known."""
    try:
        schema = onnx.defs.get_schema(proto.op_type, max(opset, 1), proto.domain or "")
        expected = {name: int(a.type) for name, a in schema.attributes.items()}
    except onnx.defs.SchemaError:
        expected = {}
    values = {}
    for attr in proto.attribute:
        if attr.name in expected and int(attr.type) != expected[attr.name]:
            raise NpowerError(f"invalid graph: node '{proto.name or proto.op_type}' attribute '{attr.name}' "
                              f"has type {onnx.AttributeProto.AttributeType.Name(attr.type)}")
        if attr.type == onnx.AttributeProto.UNDEFINED:
            raise NpowerError(f"invalid graph: node '{proto.name or proto.op_type}' attribute '{attr.name}' has no type")
        values[attr.name] = _attr_value(attr)
    return values


def _attr_value(attr: onnx.AttributeProto) -> Any:
    if attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
        return "<subgraph>"
    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, onnx.TensorProto):
        return tuple(value.dims)
    return value
