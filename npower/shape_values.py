"""Constant propagation of shape values: evaluate, with numpy, the small tensors a graph computes from
constants and static shapes (padding amounts, Reshape targets, masks), so that ONNX shape inference can
resolve the layers that read them. Runtimes fold these computations when a session starts."""
from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import NpowerError
from .registry import registrar

MAX_ELEMENTS = 1024        # a value larger than this is left unevaluated
MAX_TOTAL = 2**20          # elements held over all values of a graph
MAX_ROUNDS = 16            # evaluate / re-infer rounds
_NUMERIC = "biuf"          # numpy dtype kinds an initializer can hold here

Values = list[np.ndarray]
Attrs = dict[str, Any]
Evaluator = Callable[[Values, Attrs], Values]
EVALUATORS: dict[str, Evaluator] = {}
register = registrar(EVALUATORS)  # @register("Add", ...): the numpy evaluator of those op types
_SHAPE_ONLY = {"Shape", "Size"}  # read only their input's shape, never its values


class _TooLarge(ValueError):
    """An evaluation would exceed MAX_ELEMENTS."""


def fold(model: onnx.ModelProto, infer: Callable[[onnx.ModelProto], onnx.ModelProto]
         ) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Shape-infer model, evaluating shape values and re-inferring until every node output has a static
    shape or nothing new resolves. Returns the inferred model (model's nodes, all of them) and the values
    evaluated (tensors computed by nodes, which runtimes fold into constants)."""
    inferred, values = infer(model), {}
    for _ in range(MAX_ROUNDS):
        shapes = static_shapes(inferred)
        if all(name in shapes for node in model.graph.node for name in node.output if name):
            break
        found = evaluate(model.graph, shapes, values)
        if len(found) <= len(values):
            break
        try:
            inferred, values = infer(with_constants(model, found)), found
        except NpowerError:  # shape inference rejects an evaluated value: keep the last result
            break
    return (_with_shapes(model, inferred, values), values) if values else (inferred, values)


def static_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, for the tensors whose shape is fully static."""
    graph = model.graph
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    for vi in list(graph.value_info) + list(graph.input) + list(graph.output):
        shape = _static(vi.type)
        if shape is not None:
            shapes[vi.name] = shape
    return shapes


def _static(type_proto: onnx.TypeProto) -> tuple[int, ...] | None:
    tensor_type = type_proto.tensor_type
    if not type_proto.HasField("tensor_type") or not tensor_type.HasField("shape"):
        return None
    dims = tensor_type.shape.dim
    return tuple(d.dim_value for d in dims) if all(d.HasField("dim_value") for d in dims) else None


def evaluate(graph: onnx.GraphProto, shapes: dict[str, tuple[int, ...]],
             known: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """known plus the values of the small node outputs computable from them, initializers, Constants and
    static shapes, in one pass over graph.node (a node listed before its inputs waits for the next pass)."""
    weights = {init.name: value for init in graph.initializer if (value := tensor_value(init)) is not None}
    values = {**weights, **known}
    total = sum(v.size for v in values.values())
    for node in graph.node:
        if total > MAX_TOTAL:
            break
        if all(name in values for name in node.output if name):
            continue
        for name, value in zip(node.output, _evaluate_node(node, values, shapes)):
            if name and value.size <= MAX_ELEMENTS and value.dtype.kind in _NUMERIC:
                values[name] = value
                total += value.size
    return {name: value for name, value in values.items() if name not in weights}


def _evaluate_node(node: onnx.NodeProto, values: dict[str, np.ndarray],
                   shapes: dict[str, tuple[int, ...]]) -> Values:
    evaluator = EVALUATORS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
    if evaluator is None:
        return []
    try:
        inputs = [_input(name, node.op_type, values, shapes) for name in node.input]
        if any(value is None for name, value in zip(node.input, inputs) if name):
            return []
        attrs = {attr.name: helper.get_attribute_value(attr) for attr in node.attribute}
        with np.errstate(all="raise"):
            return [np.asarray(value) for value in evaluator(inputs, attrs)]
    except (ArithmeticError, IndexError, KeyError, TypeError, ValueError):  # unevaluable: left unresolved
        return []


def _input(name: str, op_type: str, values: dict[str, np.ndarray],
           shapes: dict[str, tuple[int, ...]]) -> np.ndarray | None:
    """An input's value; for Shape and Size, a zero-byte array of its static shape."""
    if name in values or not name:
        return values.get(name)
    if op_type in _SHAPE_ONLY and name in shapes:
        return np.broadcast_to(np.zeros((), np.int8), shapes[name])
    return None


def tensor_value(proto: onnx.TensorProto) -> np.ndarray | None:
    """A small inline tensor's value; None for large, external, stripped or non-numeric ones."""
    count = int(np.prod(proto.dims, dtype=np.float64))
    if proto.data_location == onnx.TensorProto.EXTERNAL or count > MAX_ELEMENTS:
        return None
    try:
        value = numpy_helper.to_array(proto)
    except (TypeError, ValueError, KeyError):
        return None
    return value if value.dtype.kind in _NUMERIC and value.size == count else None


def with_constants(model: onnx.ModelProto, values: dict[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of model in which the evaluated tensors are initializers and the nodes computing them gone."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph
    kept = [node for node in graph.node if not (node.output and all(name in values for name in node.output if name))]
    del graph.node[:]
    graph.node.extend(kept)
    present = {init.name for init in graph.initializer} | {vi.name for vi in graph.input}
    for name, value in values.items():
        if name not in present:
            graph.initializer.append(numpy_helper.from_array(value, name))
            if copy.ir_version < 4:  # initializers must also be graph inputs before IR 4
                graph.input.append(helper.make_tensor_value_info(name, _elem_type(value), value.shape))
    return copy


def _elem_type(value: np.ndarray) -> int:
    return helper.np_dtype_to_tensor_dtype(value.dtype)


def _with_shapes(model: onnx.ModelProto, inferred: onnx.ModelProto,
                 values: dict[str, np.ndarray]) -> onnx.ModelProto:
    """model with inferred's value_info and output types, plus the types of the evaluated tensors."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    graph.ClearField("value_info")
    graph.value_info.extend(inferred.graph.value_info)
    graph.value_info.extend(helper.make_tensor_value_info(name, _elem_type(value), value.shape)
                            for name, value in values.items())
    types = {vi.name: vi.type for vi in list(inferred.graph.output) + list(graph.value_info)}
    for output in graph.output:
        if output.name in types:
            output.type.CopyFrom(types[output.name])
    return result


def _check(count: int) -> None:
    if not 0 <= count <= MAX_ELEMENTS:
        raise _TooLarge(f"{count} elements")


def _axes(values: Values, attrs: Attrs, index: int) -> list[int] | None:
    """Axes from the attribute (older opsets) or from input index (newer); None when absent."""
    if "axes" in attrs:
        return [int(a) for a in attrs["axes"]]
    return [int(a) for a in values[index].ravel()] if len(values) > index and values[index] is not None else None


@register("Constant")
def _constant(values: Values, attrs: Attrs) -> Values:
    if "value" in attrs:
        value = tensor_value(attrs["value"])
        if value is None:
            raise _TooLarge("large or external Constant")
        return [value]
    for key, dtype in (("value_int", np.int64), ("value_ints", np.int64),
                       ("value_float", np.float32), ("value_floats", np.float32)):
        if key in attrs:
            _check(np.size(attrs[key]))
            return [np.array(attrs[key], dtype)]
    raise KeyError("Constant without a numeric value")


@register("Identity")
def _identity(values: Values, attrs: Attrs) -> Values:
    return [values[0]]


@register("Shape")
def _shape(values: Values, attrs: Attrs) -> Values:
    shape = values[0].shape
    return [np.array(shape[attrs.get("start", 0):attrs.get("end", len(shape))], np.int64)]


@register("Size")
def _size(values: Values, attrs: Attrs) -> Values:
    return [np.array(values[0].size, np.int64)]


@register("Cast")
def _cast(values: Values, attrs: Attrs) -> Values:
    return [values[0].astype(helper.tensor_dtype_to_np_dtype(attrs["to"]))]


@register("ConstantOfShape")
def _constant_of_shape(values: Values, attrs: Attrs) -> Values:
    shape = tuple(int(d) for d in values[0].ravel())
    _check(int(np.prod(shape, dtype=np.float64)))
    fill = tensor_value(attrs["value"]) if "value" in attrs else np.zeros(1, np.float32)
    if fill is None or fill.size != 1:
        raise ValueError("ConstantOfShape value must hold one element")
    return [np.full(shape, fill.ravel()[0], fill.dtype)]


@register("Range")
def _range(values: Values, attrs: Attrs) -> Values:
    start, limit, delta = (v.item() for v in values[:3])
    _check(max(int(np.ceil((limit - start) / delta)), 0))
    return [np.arange(start, limit, delta, dtype=values[0].dtype)]


@register("Gather")
def _gather(values: Values, attrs: Attrs) -> Values:
    data, indices = values
    _check(indices.size * data.size // max(data.shape[attrs.get("axis", 0)], 1))
    return [np.take(data, indices, axis=attrs.get("axis", 0))]


@register("Slice")
def _slice(values: Values, attrs: Attrs) -> Values:
    data = values[0]
    if "starts" in attrs:  # opset < 10
        starts, ends, axes, steps = attrs["starts"], attrs["ends"], attrs.get("axes"), None
    else:
        starts, ends = values[1].tolist(), values[2].tolist()
        axes = values[3].tolist() if len(values) > 3 and values[3] is not None else None
        steps = values[4].tolist() if len(values) > 4 and values[4] is not None else None
    index = [slice(None)] * data.ndim
    for i, axis in enumerate(axes if axes is not None else range(len(starts))):
        index[axis] = slice(starts[i], ends[i], steps[i] if steps else 1)
    return [data[tuple(index)]]


@register("Concat")
def _concat(values: Values, attrs: Attrs) -> Values:
    _check(sum(v.size for v in values))
    return [np.concatenate(values, axis=attrs["axis"])]


@register("Unsqueeze")
def _unsqueeze(values: Values, attrs: Attrs) -> Values:
    return [np.expand_dims(values[0], tuple(_axes(values, attrs, 1)))]


@register("Squeeze")
def _squeeze(values: Values, attrs: Attrs) -> Values:
    axes = _axes(values, attrs, 1)
    return [np.squeeze(values[0], axis=None if axes is None else tuple(axes))]


@register("Reshape")
def _reshape(values: Values, attrs: Attrs) -> Values:
    data, shape = values[0], [int(d) for d in values[1].ravel()]
    copy_zero = not attrs.get("allowzero", 0)
    return [data.reshape([data.shape[i] if d == 0 and copy_zero else d for i, d in enumerate(shape)])]


@register("Expand")
def _expand(values: Values, attrs: Attrs) -> Values:
    shape = np.broadcast_shapes(values[0].shape, tuple(int(d) for d in values[1].ravel()))
    _check(int(np.prod(shape, dtype=np.float64)))
    return [np.broadcast_to(values[0], shape).copy()]


@register("Transpose")
def _transpose(values: Values, attrs: Attrs) -> Values:
    return [np.transpose(values[0], attrs.get("perm"))]


def _integer_divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer division truncating toward zero, as ONNX runtimes do (numpy's // floors)."""
    if np.any(b == 0):
        raise ZeroDivisionError("integer division by zero")
    quotient = np.abs(a) // np.abs(b)
    return np.where((a < 0) != (b < 0), -quotient, quotient).astype(np.result_type(a, b))


def _divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _integer_divide(a, b) if a.dtype.kind in "iu" and b.dtype.kind in "iu" else np.true_divide(a, b)


_ELEMENTWISE: dict[str, Callable[..., np.ndarray]] = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": _divide, "Equal": np.equal, "Less": np.less,
    "Greater": np.greater, "And": np.logical_and, "Or": np.logical_or, "Where": np.where, "Neg": np.negative,
    "Abs": np.abs, "Floor": np.floor, "Ceil": np.ceil, "Sqrt": np.sqrt, "Not": np.logical_not,
}
_VARIADIC: dict[str, Callable[..., np.ndarray]] = {"Max": np.maximum, "Min": np.minimum}


def _elementwise(fn: Callable[..., np.ndarray], variadic: bool = False) -> Evaluator:
    """An evaluator broadcasting its inputs (a variadic one folds any number of them pairwise)."""
    def evaluate(values: Values, attrs: Attrs) -> Values:
        _check(int(np.prod(np.broadcast_shapes(*(v.shape for v in values)), dtype=np.float64)))
        return [functools.reduce(fn, values) if variadic else fn(*values)]
    return evaluate


for _op, _fn in _ELEMENTWISE.items():
    register(_op)(_elementwise(_fn))
for _op, _fn in _VARIADIC.items():
    register(_op)(_elementwise(_fn, variadic=True))
