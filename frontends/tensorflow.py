"""TensorFlow/Keras frontend: .keras/.h5 files, SavedModel folders and Keras models -> ONNX via tf2onnx.

Keras runs NHWC; npower converts with the input declared NCHW (tf2onnx's inputs_as_nchw), so
that tf2onnx's transpose optimizer leaves Conv/Pool layers in ONNX's NCHW layout and features
match other frameworks. The one layout Transpose that remains before Flatten->Dense is
removed by permuting the Dense weights instead (same result, no extra layer), and Dense
(MatMul + bias Add) becomes Gemm, as PyTorch and Caffe exports have it. Keras
BatchNormalization (inference) becomes Mul+Add or BatchNormalization; npower's fusion folds
either into the preceding Conv, as onnxruntime does.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from npower.errors import NpowerError

from ._export import example_shape, export_error, quiet

OPSET = 17


class TensorFlowFrontend:
    name = "tensorflow"
    description = "Keras .keras/.h5, SavedModel folders, in-memory Keras models (tf2onnx)"
    suffixes = (".keras", ".h5", "/saved_model.pb")
    extra = "tensorflow"
    requires = ("tensorflow", "tf2onnx")

    def accepts(self, source: Any) -> bool:
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            return path.suffix in (".keras", ".h5") or (path.is_dir() and (path / "saved_model.pb").exists())
        return type(source).__module__.startswith(("keras", "tensorflow", "tf_keras"))

    def convert(self, source: Any, batch: int | None = None,
                input_shapes: Mapping[str, tuple[int, ...]] | None = None, **_options: Any) -> onnx.ModelProto:
        with quiet():
            return self._convert(source, batch, input_shapes)

    def _convert(self, source: Any, batch: int | None,
                 input_shapes: Mapping[str, tuple[int, ...]] | None) -> onnx.ModelProto:
        import tensorflow as tf
        import tf2onnx
        function, keras_shape = self._load(tf, source)
        nchw_default = (keras_shape[0], keras_shape[-1], *keras_shape[1:-1]) if len(keras_shape) == 4 else keras_shape
        name, shape = example_shape(input_shapes, batch, nchw_default, "Keras")
        nhwc = (shape[0], *shape[2:], shape[1]) if len(shape) == 4 else shape
        spec = [tf.TensorSpec(nhwc, tf.float32, name=name)]
        try:
            # from_function: tf2onnx's from_keras trips over Keras 3 tensor names.
            proto, _ = tf2onnx.convert.from_function(tf.function(function), input_signature=spec, opset=OPSET,
                                                     inputs_as_nchw=[name] if len(shape) == 4 else None)
        except Exception as exc:  # noqa: BLE001
            raise export_error("Keras", exc) from exc
        fold_flatten_transposes(proto)
        dense_as_gemm(proto)
        return proto

    def _load(self, tf, source: Any):
        """(inference function of one tensor, NHWC input shape) of a Keras model or SavedModel folder."""
        if not isinstance(source, (str, os.PathLike)):
            return (lambda x: source(x, training=False)), tuple(source.inputs[0].shape)
        try:
            if Path(source).is_dir():
                loaded = tf.saved_model.load(str(source))
                signature = loaded.signatures["serving_default"]
                input_name, input_spec = next(iter(signature.structured_input_signature[1].items()))

                def serve(x, _keep_alive=loaded):  # the signature's variables live as long as `loaded`
                    return next(iter(signature(**{input_name: x}).values()))
                return serve, tuple(input_spec.shape)
            model = tf.keras.models.load_model(str(source), compile=False)
        except Exception as exc:  # noqa: BLE001
            raise NpowerError(f"{source}: cannot load as a Keras model or SavedModel ({type(exc).__name__})") from exc
        return (lambda x: model(x, training=False)), tuple(model.inputs[0].shape)


def fold_flatten_transposes(model: onnx.ModelProto) -> None:
    """NCHW->NHWC Transpose -> Reshape(N, -1) -> MatMul(W): drop the Transpose, permute W's rows."""
    graph = model.graph
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    inits = {init.name: init for init in graph.initializer}
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
              for vi in onnx.shape_inference.infer_shapes(model).graph.value_info}
    for transpose in list(graph.node):
        if transpose.op_type != "Transpose" or list(transpose.attribute[0].ints) != [0, 2, 3, 1]:
            continue
        reshape = readers.get(transpose.output[0], [None])[0]
        if reshape is None or reshape.op_type not in ("Reshape", "Flatten") or len(readers[transpose.output[0]]) != 1:
            continue
        matmul = readers.get(reshape.output[0], [None])[0]
        in_shape = shapes.get(transpose.input[0])
        if matmul is None or matmul.op_type != "MatMul" or matmul.input[1] not in inits or not in_shape or 0 in in_shape:
            continue
        _, c, h, w = in_shape
        weight = numpy_helper.to_array(inits[matmul.input[1]])
        order = np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)
        permuted = np.empty_like(weight)
        permuted[order] = weight
        inits[matmul.input[1]].CopyFrom(numpy_helper.from_array(permuted, matmul.input[1]))
        reshape.input[0] = transpose.input[0]
        graph.node.remove(transpose)


def dense_as_gemm(model: onnx.ModelProto) -> None:
    """Dense layers: MatMul(x, W) on 2-D x with constant W (+ Add of a constant bias) -> Gemm(x, W[, bias])."""
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    ranks = {vi.name: len(vi.type.tensor_type.shape.dim)
             for vi in onnx.shape_inference.infer_shapes(model).graph.value_info}
    ranks.update({vi.name: len(vi.type.tensor_type.shape.dim) for vi in graph.input})
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    for matmul in list(graph.node):
        if matmul.op_type != "MatMul" or matmul.input[1] not in inits or ranks.get(matmul.input[0]) != 2:
            continue
        inputs, output, replaced = [matmul.input[0], matmul.input[1]], matmul.output[0], [matmul]
        users = readers.get(matmul.output[0], [])
        if len(users) == 1 and users[0].op_type == "Add":
            bias = next((name for name in users[0].input if name != matmul.output[0]), None)
            if bias in inits and len(inits[bias].dims) == 1:
                inputs.append(bias)
                output = users[0].output[0]
                replaced.append(users[0])
        index = list(graph.node).index(matmul)
        for node in replaced:
            graph.node.remove(node)
        graph.node.insert(index, onnx.helper.make_node("Gemm", inputs, [output], name=matmul.name))


FRONTEND = TensorFlowFrontend()
