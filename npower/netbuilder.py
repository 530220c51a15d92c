"""A small ONNX network builder (NCHW, fp32) for reference networks, examples and tests.

Weights are He-scaled random values (so CPU timings do not hit subnormal floats) and
BatchNorm statistics are realistic; `weights=False` builds shape-only initializers.
"""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 8
OPSET = 17


class NetBuilder:
    """Append layers one call at a time; each call returns the output tensor name."""

    def __init__(self, name: str, input_shape: tuple[int, ...], weights: bool = True, seed: int = 0,
                 symbolic_batch: bool = False, opset: int = OPSET):
        self.name = name
        self.opset = opset
        self.weights = weights
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.shapes: dict[str, tuple[int, ...]] = {"input": tuple(input_shape)}
        dims = ["N", *input_shape[1:]] if symbolic_batch else list(input_shape)
        self.input = helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)
        self._count = 0

    # -- plumbing -----------------------------------------------------------------------
    def _name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}{self._count}"

    def _init(self, prefix: str, values: np.ndarray) -> str:
        name = self._name(prefix)
        if self.weights:
            self.inits.append(numpy_helper.from_array(values.astype(np.float32), name))
        else:
            shape_only = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=values.shape)
            self.inits.append(shape_only)
        return name

    def _const_i64(self, values) -> str:
        name = self._name("c")
        self.inits.append(numpy_helper.from_array(np.array(values, dtype=np.int64), name))
        return name

    def _node(self, op: str, inputs: list[str], shape: tuple[int, ...], **attrs) -> str:
        out = self._name(op.lower() + "_")
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        self.shapes[out] = tuple(int(d) for d in shape)
        return out

    def _random(self, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
        if not self.weights:
            return np.empty(shape, np.float32)
        return self.rng.standard_normal(shape).astype(np.float32) * math.sqrt(2.0 / max(fan_in, 1))

    # -- layers -------------------------------------------------------------------------
    def conv(self, x: str, cout: int, k: int, stride: int = 1, pad: int | None = None, groups: int = 1,
             dilation: int = 1, bias: bool = True) -> str:
        n, cin, h, w = self.shapes[x]
        pad = (k - 1) * dilation // 2 if pad is None else pad
        weight = self._init("w", self._random((cout, cin // groups, k, k), cin // groups * k * k))
        inputs = [x, weight] + ([self._init("b", np.zeros(cout))] if bias else [])
        ho = (h + 2 * pad - dilation * (k - 1) - 1) // stride + 1
        wo = (w + 2 * pad - dilation * (k - 1) - 1) // stride + 1
        return self._node("Conv", inputs, (n, cout, ho, wo), kernel_shape=[k, k], strides=[stride, stride],
                          pads=[pad] * 4, group=groups, dilations=[dilation, dilation])

    def bn(self, x: str) -> str:
        c = self.shapes[x][1]
        params = [self._init("bn", np.ones(c) if i in (0, 3) else np.zeros(c)) for i in range(4)]
        return self._node("BatchNormalization", [x, *params], self.shapes[x], epsilon=1e-5)

    def _unary(self, op: str, x: str, **attrs) -> str:
        return self._node(op, [x], self.shapes[x], **attrs)

    def relu(self, x: str) -> str:
        return self._unary("Relu", x)

    def sigmoid(self, x: str) -> str:
        return self._unary("Sigmoid", x)

    def relu6(self, x: str) -> str:
        bounds = [self._name("clip") for _ in range(2)]
        for name, value in zip(bounds, (0.0, 6.0)):
            self.inits.append(numpy_helper.from_array(np.array(value, dtype=np.float32), name))
        return self._node("Clip", [x, *bounds], self.shapes[x])

    def swish(self, x: str) -> str:
        return self.mul(x, self.sigmoid(x))

    def lrn(self, x: str, size: int = 5) -> str:
        return self._unary("LRN", x, size=size, alpha=1e-4, beta=0.75, bias=1.0)

    def dropout(self, x: str) -> str:
        return self._unary("Dropout", x)

    def softmax(self, x: str) -> str:
        return self._unary("Softmax", x, axis=-1)

    def _pool(self, op: str, x: str, k: int, stride: int, pad: int, ceil: bool) -> str:
        n, c, h, w = self.shapes[x]
        rounding = math.ceil if ceil else math.floor
        ho = int(rounding((h + 2 * pad - k) / stride)) + 1
        wo = int(rounding((w + 2 * pad - k) / stride)) + 1
        return self._node(op, [x], (n, c, ho, wo), kernel_shape=[k, k], strides=[stride, stride],
                          pads=[pad] * 4, ceil_mode=int(ceil))

    def maxpool(self, x: str, k: int, stride: int, pad: int = 0, ceil: bool = False) -> str:
        return self._pool("MaxPool", x, k, stride, pad, ceil)

    def avgpool(self, x: str, k: int, stride: int, pad: int = 0, ceil: bool = False) -> str:
        return self._pool("AveragePool", x, k, stride, pad, ceil)

    def gap(self, x: str) -> str:
        n, c = self.shapes[x][:2]
        return self._node("GlobalAveragePool", [x], (n, c, 1, 1))

    def flatten(self, x: str) -> str:
        shape = self.shapes[x]
        return self._node("Flatten", [x], (shape[0], math.prod(shape[1:])), axis=1)

    def gemm(self, x: str, n_out: int) -> str:
        n, k = self.shapes[x]
        weight = self._init("fc", self._random((n_out, k), k))
        return self._node("Gemm", [x, weight, self._init("fcb", np.zeros(n_out))], (n, n_out), transB=1)

    def linear(self, x: str, n_out: int) -> str:
        """MatMul + Add over the last axis (transformer style)."""
        shape = self.shapes[x]
        weight = self._init("lw", self._random((shape[-1], n_out), shape[-1]))
        y = self._node("MatMul", [x, weight], (*shape[:-1], n_out))
        return self._node("Add", [y, self._init("lb", np.zeros(n_out))], self.shapes[y])

    def add(self, a: str, b: str) -> str:
        return self._node("Add", [a, b], self.shapes[a])

    def mul(self, a: str, b: str) -> str:
        shape = np.broadcast_shapes(self.shapes[a], self.shapes[b])
        return self._node("Mul", [a, b], tuple(shape))

    def concat(self, xs: list[str], axis: int = 1) -> str:
        shape = list(self.shapes[xs[0]])
        shape[axis] = sum(self.shapes[x][axis] for x in xs)
        return self._node("Concat", xs, tuple(shape), axis=axis)

    def reshape(self, x: str, shape: tuple[int, ...]) -> str:
        return self._node("Reshape", [x, self._const_i64(shape)], shape)

    def transpose(self, x: str, perm: tuple[int, ...]) -> str:
        shape = tuple(self.shapes[x][p] for p in perm)
        return self._node("Transpose", [x], shape, perm=list(perm))

    def matmul(self, a: str, b: str) -> str:
        sa, sb = self.shapes[a], self.shapes[b]
        return self._node("MatMul", [a, b], (*sa[:-1], sb[-1]))

    def scale(self, x: str, factor: float) -> str:
        name = self._name("s")
        self.inits.append(numpy_helper.from_array(np.array(factor, dtype=np.float32), name))
        return self._node("Mul", [x, name], self.shapes[x])

    def layernorm(self, x: str) -> str:
        c = self.shapes[x][-1]
        scale, bias = self._init("ln", np.ones(c)), self._init("ln", np.zeros(c))
        return self._node("LayerNormalization", [x, scale, bias], self.shapes[x], axis=-1, epsilon=1e-5)

    def gelu(self, x: str) -> str:
        """Erf-form GELU as exporters emit it for opset < 20."""
        half = self._name("h")
        root = self._name("r")
        one = self._name("o")
        for name, value in ((half, 0.5), (root, math.sqrt(2.0)), (one, 1.0)):
            self.inits.append(numpy_helper.from_array(np.array(value, dtype=np.float32), name))
        shape = self.shapes[x]
        scaled = self._node("Div", [x, root], shape)
        erf = self._node("Erf", [scaled], shape)
        plus = self._node("Add", [erf, one], shape)
        return self._node("Mul", [self._node("Mul", [x, plus], shape), half], shape)

    # -- result -------------------------------------------------------------------------
    def model(self, output: str) -> onnx.ModelProto:
        out = helper.make_tensor_value_info(output, TensorProto.FLOAT, None)
        graph = helper.make_graph(self.nodes, self.name, [self.input], [out], self.inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)], ir_version=IR_VERSION,
                                 producer_name="npower.netbuilder")
