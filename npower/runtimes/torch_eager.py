"""PyTorch eager mode: one kernel per operator call, no cross-operator fusion.

An ONNX export of an eager model has nodes that launch nothing in eager PyTorch and nodes that
split one eager kernel in several; these rules map the export back to the eager kernels (checked
node by node against the NeuSight per-node labels of BERT-Large and GPT-2 Large, see
tests/test_torch_eager.py):
- `nn.Linear` is one GEMM with its bias: on 3-D input it exports as MatMul + bias Add, merged here
  into one Gemm over the input flattened to 2-D (what eager's `addmm` runs), on 2-D input as Gemm;
  `F.linear` without bias exports as a MatMul by a Transpose of the weight (a view in eager).
- `nn.GELU` exports as the Erf chain: one kernel. A tanh GELU written as element-wise ops
  (`gelu_new` in GPT-2) stays as written: one kernel per op, as eager runs it.
- Views launch nothing: Reshape/Flatten/Squeeze/Unsqueeze, Slice, Split, Expand, a Gather of one
  constant index (`x[:, 0]`), and a Transpose (`permute`/`transpose`) unless a Reshape reads it:
  then eager's `.contiguous()` (or `reshape`) copies the permuted tensor, one kernel.
- Shape arithmetic launches nothing: nodes computing from Shape outputs and constants only, with a
  small output (Python ints in eager). Tensors built from shapes (attention masks from `arange`,
  comparisons) are kernels. Eager folds no constants: a node computing from weights only runs
  every forward (position-embedding lookups), except views (weight transposes).
- Everything else (Gather of embeddings, Where, Cast, element-wise ops, MatMul between
  activations) is one kernel per node.
"""
from __future__ import annotations

import math

from ..graph import Node, Tensor
from . import register_rules
from .kernels import Context, Fusion, Rule, RuleSet, erf_gelu

VIEWS = frozenset({"Slice", "Expand", "Split"})
_SHAPE_SOURCES = {"Shape", "Size", "Constant"}
_SMALL = 8  # a shape-derived output with at most this many elements is a tuple of Python ints
_RESHAPES = {"Reshape", "Flatten"}
_SHAPE_WHY = "shape arithmetic (Python ints in eager)"


def _is_static(ctx: Context, tensor: Tensor | None) -> bool:
    """A weight, a shape, or computed from weights and shapes only (known before any kernel runs)."""
    if tensor is None or tensor.is_weight:
        return True
    producer = ctx.producer.get(tensor.name)
    if producer is None:
        return False
    if producer.op_type in _SHAPE_SOURCES:
        return True
    fusion = ctx.found.get(producer.name)
    return fusion is not None and fusion.why == _SHAPE_WHY


def shape_arithmetic() -> Rule:
    """A small output computed from shapes and constants only: Python ints in eager, no kernel."""
    def rule(ctx: Context, node: Node) -> None:
        small = all(len(t.shape or ()) <= 1 and t.known and t.elements <= _SMALL for t in node.outputs)
        if node.op_type != "Shape" and small and all(_is_static(ctx, t) for t in node.inputs):
            ctx.found[node.name] = Fusion(free=True, why=_SHAPE_WHY)
    return rule


def transpose_view() -> Rule:
    """permute/transpose is a view; only a Reshape reading it makes eager copy it (`.contiguous()`)."""
    def rule(ctx: Context, node: Node) -> None:
        if node.op_type == "Transpose" and not any(r.op_type in _RESHAPES for r in ctx.readers.get(
                node.outputs[0].name, [])):
            ctx.found[node.name] = Fusion(free=True, why="a view in PyTorch eager (permute)")
    return rule


def select_view() -> Rule:
    """Gather of one constant index from an activation (`x[:, 0]`) is a view."""
    def rule(ctx: Context, node: Node) -> None:
        if node.op_type == "Gather" and len(node.inputs) == 2 and node.inputs[1] is not None \
                and not node.inputs[0].is_weight and node.inputs[1].known and node.inputs[1].elements == 1 \
                and _is_static(ctx, node.inputs[1]):
            ctx.found[node.name] = Fusion(free=True, why="a view in PyTorch eager (select)")
    return rule


def linear_gemm() -> Rule:
    """`nn.Linear`/`F.linear`: a MatMul by a weight (or by a transposed weight, a view) and the bias Add after
    it run as ONE GEMM over the input flattened to 2-D (`addmm`, or `mm` without bias): costed as a Gemm,
    the node the NeuSight `linear` rows become."""
    def rule(ctx: Context, node: Node) -> None:
        if node.op_type != "MatMul" or len(node.inputs) != 2 or None in node.inputs:
            return
        x, weight = node.inputs[0], _weight_view(ctx, node.inputs[1])
        if weight is None or not x.known or len(x.shape) < 2 or len(weight.shape) != 2:
            return
        rows = math.prod(x.shape[:-1])
        inputs = [Tensor(x.name, (rows, x.shape[-1]), x.dtype, x.itemsize), weight]
        add = ctx.sole_reader(node)
        bias = None if add is None or add.op_type != "Add" or len(add.inputs) != 2 else \
            next((t for t in add.inputs if t is not None and t.is_weight and t.shape == weight.shape[1:]), None)
        ctx.merge([add] if bias is not None else [], node, "Gemm", inputs + ([bias] if bias is not None else []))
        if bias is not None:
            ctx.tail[node.name] = add.outputs[0].name
    return rule


def _weight_view(ctx: Context, tensor: Tensor) -> Tensor | None:
    """The tensor as a weight if it is one, or a Transpose of one (`weight.t()`)."""
    if tensor.is_weight:
        return tensor
    producer = ctx.producer.get(tensor.name)
    if producer is not None and producer.op_type == "Transpose" and producer.inputs[0].is_weight and tensor.known:
        return Tensor(tensor.name, tensor.shape, tensor.dtype, tensor.itemsize, is_weight=True)
    return None


TORCH_EAGER = RuleSet("PyTorch eager",
                      (shape_arithmetic(), transpose_view(), select_view(), linear_gemm(), erf_gelu()),
                      view_ops=VIEWS)

register_rules("torch", "cuda", "eager", TORCH_EAGER)
register_rules("torch", "cpu", "eager", TORCH_EAGER)
