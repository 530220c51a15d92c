"""Kernel rules: which graph nodes a runtime merges, folds or runs as views.

A rule is a function `(ctx, node) -> None` that records, in `ctx.found`, the nodes it merges
into a neighbour (the group's host). A host whose merged kernel differs from its own node
gets a synthesized node (`Fusion.kernel`: the fused op over the group's external inputs),
so it is costed as the kernel the runtime runs, not as the node it grew from. Rules are
built by the factories below with their runtime's parameters; `RuleSet`s compose them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable

from ..graph import Graph, Node, Tensor


@dataclass
class Fusion:
    """What a runtime does with one node.

    host: the node this one is merged into (None for a host or a folded node);
    costs: the merged work still takes time (e.g. the activation pass of a CPU FusedConv);
    kernel: for a host, the synthesized node of the kernel that runs (None: the node itself);
    free: the node runs no kernel (a view, or folded into a constant when the session starts);
    why: a short reason shown in reports.
    """

    host: str | None = None
    costs: bool = False
    kernel: Node | None = None
    free: bool = False
    why: str = ""


def host_of(found: dict[str, Fusion], name: str) -> str:
    """The node whose kernel runs node `name`: its host if it was merged, else itself."""
    fusion = found.get(name)
    return fusion.host if fusion is not None and fusion.host else name


class Context:
    """Graph lookups shared by the rules, and the fusions found so far."""

    def __init__(self, graph: Graph):
        self.producer = {t.name: node for node in graph.nodes for t in node.outputs}
        self.by_name = {node.name: node for node in graph.nodes}
        self.readers = graph.consumers()
        self.found: dict[str, Fusion] = {}
        self.tail: dict[str, str] = {}  # host name -> tensor that now ends its fused group

    def sole_reader(self, node: Node) -> Node | None:
        """The only node that reads node's first output, if exactly one does."""
        readers = self.readers.get(node.outputs[0].name, []) if node.outputs else []
        return readers[0] if len(readers) == 1 else None

    def source(self, node: Node, index: int = 0) -> Node | None:
        tensor = node.inputs[index] if index < len(node.inputs) else None
        return None if tensor is None else self.producer.get(tensor.name)

    def host_of(self, node: Node) -> str:
        return host_of(self.found, node.name)

    def absorb(self, node: Node, host: Node, costs: bool = False) -> None:
        self.found[node.name] = Fusion(host=self.host_of(host), costs=costs)
        self.tail[self.host_of(host)] = node.outputs[0].name

    def merge(self, members: Iterable[Node], host: Node, op_type: str, inputs: list[Tensor],
              attrs: dict | None = None) -> None:
        """Merge members into host, which then runs `op_type` over `inputs`."""
        for member in members:
            self.found[member.name] = Fusion(host=host.name)
        kernel = Node(host.name, op_type, "", inputs, list(host.outputs), dict(attrs or {}))
        self.found[host.name] = Fusion(kernel=kernel)


Rule = Callable[[Context, Node], None]


@dataclass(frozen=True)
class RuleSet:
    """One runtime's kernel rules.

    rules: fusion rules applied to each node in topological order (first match wins);
    view_ops: op types this runtime runs without a kernel (beyond the feature registry's free ops);
    folds_constants: nodes whose inputs are all constants are computed once, at session start.
    """

    name: str
    rules: tuple[Rule, ...] = ()
    view_ops: frozenset[str] = field(default_factory=frozenset)
    folds_constants: bool = False

    def kernels(self, graph: Graph) -> dict[str, Fusion]:
        """Node name -> what the runtime does with it; nodes absent run as written."""
        ctx = Context(graph)
        constant = {t.name for node in graph.nodes for t in node.inputs if t is not None and t.is_weight}
        for node in graph.nodes:
            if not node.outputs:
                continue
            if node.op_type in self.view_ops:
                ctx.found[node.name] = Fusion(free=True, why=f"a view in {self.name}")
                continue
            if self.folds_constants and _all_constant(node, constant):
                constant.update(t.name for t in node.outputs)
                ctx.found[node.name] = Fusion(free=True, why="constant-folded")
                continue
            if node.name in ctx.found:
                continue
            for rule in self.rules:
                rule(ctx, node)
                if node.name in ctx.found:
                    break
        return ctx.found

    def plan(self, graph: Graph) -> tuple[dict[str, Fusion], list[Node]]:
        """`kernels(graph)` and the kernels the runtime adds that no graph node stands for (layout reorders,
        costed as rows of their own), from one pass over the graph."""
        return self.kernels(graph), []


def _all_constant(node: Node, constant: set[str]) -> bool:
    inputs = [t for t in node.inputs if t is not None]
    return bool(inputs) and all(t.name in constant for t in inputs)


def _has_const_input(node: Node) -> bool:
    return any(t is not None and t.is_weight for t in node.inputs)


def _group_end(ctx: Context, node: Node, host_types: set[str], index: int = 0) -> Node | None:
    """If node's input `index` ends a group hosted by one of host_types (still running its own op, if with
    other attributes or inputs) and nothing else reads it."""
    before = ctx.source(node, index)
    if before is None or ctx.sole_reader(before) is not node:
        return None
    host = ctx.by_name[ctx.host_of(before)]
    kernel = ctx.found.get(host.name, Fusion()).kernel
    if host.op_type not in host_types or (kernel is not None and kernel.op_type != host.op_type):
        return None
    return before if ctx.tail.get(host.name, host.outputs[0].name) == node.inputs[index].name else None


def conv_affine() -> Rule:
    """BatchNormalization, or Mul/Add by a constant, right after a Conv folds into its weights."""
    def rule(ctx: Context, node: Node) -> None:
        if node.op_type == "BatchNormalization" or (node.op_type in ("Mul", "Add") and _has_const_input(node)
                                                    and len(node.inputs) == 2):
            before = _group_end(ctx, node, {"Conv"})
            if before is not None and before.op_type in ("Conv", "BatchNormalization", "Mul", "Add"):  # not after an activation
                ctx.absorb(node, before)
    return rule


def activation(hosts: set[str], activations: set[str], costs: bool) -> Rule:
    """A host (Conv, Gemm) followed by one of `activations` runs as one fused kernel; `costs`: the
    kernel still applies the activation as a separate pass over its output (onnxruntime CPU)."""
    def rule(ctx: Context, node: Node) -> None:
        if node.op_type in activations:
            before = _group_end(ctx, node, hosts)
            if before is not None:
                ctx.absorb(node, before, costs=costs)
    return rule


def matmul_bias() -> Rule:
    """MatMul by a 2-D weight + constant bias Add (either Add operand order) runs as one Gemm with bias; an
    N-D first operand is flattened to 2-D around it (onnxruntime's MatMulAddFusion adds the Reshapes, which
    are views)."""
    def rule(ctx: Context, node: Node) -> None:
        if node.op_type != "Add" or len(node.inputs) != 2 or not _has_const_input(node):
            return
        data = 1 if node.inputs[0] is not None and node.inputs[0].is_weight else 0  # Add(bias, x) as Add(x, bias)
        before = _group_end(ctx, node, {"MatMul"}, data)
        if before is None:
            return
        a, b = before.inputs[0], before.inputs[1]
        if a is None or b is None or not a.known or not b.known or len(a.shape) < 2 or len(b.shape) != 2:
            return
        bias = next(t for t in node.inputs if t is not None and t.is_weight)
        flat = a if len(a.shape) == 2 else Tensor(f"{a.name}/2d", (math.prod(a.shape[:-1]), a.shape[-1]), a.dtype,
                                                   a.itemsize, a.is_weight)
        ctx.merge([node], before, "Gemm", [flat, b, bias])
        ctx.tail[before.name] = node.outputs[0].name
    return rule


PAD_HOSTS = {"Conv", "AveragePool"}  # onnxruntime 1.32's PadFusion: not into MaxPool (it pads with -inf)


def pad_fusion() -> Rule:
    """A zero constant Pad of the spatial axes read only by a Conv or AveragePool (explicit pads) is dropped,
    its padding added to the reader's pads (onnxruntime's PadFusion, basic level; an AveragePool then counts
    the padding: count_include_pad=1). Not a Pad of another mode, with an `axes` input, padding the batch or
    channel axis, or cropping."""
    def rule(ctx: Context, node: Node) -> None:
        pad = ctx.source(node)
        if node.op_type not in PAD_HOSTS or pad is None or pad.op_type != "Pad" or ctx.sole_reader(pad) is not node \
                or pad.name in ctx.found or len(node.outputs) != 1:
            return
        amounts = _pad_amounts(pad)
        pads = list(node.attrs.get("pads", []))
        if amounts is None or len(amounts) != len(pads):
            return
        attrs = {**node.attrs, "pads": [mine + extra for mine, extra in zip(pads, amounts)]}
        if node.op_type == "AveragePool":
            attrs["count_include_pad"] = 1
        ctx.merge([pad], node, node.op_type, [pad.inputs[0], *node.inputs[1:]], attrs)
    return rule


def _pad_amounts(pad: Node) -> list[int] | None:
    """A Pad's padding of the spatial axes as a window op's pads (begins, then ends), if it is one PadFusion
    takes: mode constant, pads (and the value, taken as zero) constant, no `axes`, none on the batch and channel
    axes, none negative. npower's graph holds no initializer values: the padding of each axis is read off the
    shapes and split as exporters emit it (Keras' ZeroPadding2D, symmetric padding): the smaller half first."""
    x, y = pad.inputs[0] if pad.inputs else None, pad.outputs[0]
    constant = all(t is None or t.is_weight for t in pad.inputs[1:3])
    axes = len(pad.inputs) > 3 and pad.inputs[3] is not None
    if pad.attrs.get("mode", "constant") != "constant" or not constant or axes \
            or pad.attrs.get("value", 0.0) != 0.0 or x is None or not x.known or not y.known \
            or len(x.shape) != len(y.shape) or len(x.shape) < 3 or x.shape[:2] != y.shape[:2]:
        return None
    if "pads" in pad.attrs:  # opset < 11: pads is an attribute
        amounts = list(pad.attrs["pads"])
        rank = len(amounts) // 2
        return None if min(amounts) < 0 else amounts[2:rank] + amounts[rank + 2:]
    totals = [out - size for out, size in zip(y.shape[2:], x.shape[2:])]
    if min(totals) < 0:
        return None
    return [total // 2 for total in totals] + [total - total // 2 for total in totals]


def matmul_scale() -> Rule:
    """A scale by a constant scalar (x * c, c * x, x / c) of a MatMul's output, or of an operand only the
    MatMul reads, -> FusedMatMul (alpha): onnxruntime's MatMulScaleFusion."""
    def rule(ctx: Context, node: Node) -> None:
        data = _scaled_operand(node)
        if data is not None:
            before = _group_end(ctx, node, {"MatMul"}, data)
            if before is not None:
                ctx.absorb(node, before)
        elif node.op_type == "MatMul":
            for index in (0, 1):
                scale = ctx.source(node, index)
                if scale is not None and _scaled_operand(scale) is not None and ctx.sole_reader(scale) is node \
                        and scale.name not in ctx.found:
                    ctx.found[scale.name] = Fusion(host=node.name)
    return rule


def _scaled_operand(node: Node) -> int | None:
    """For a Mul by, or Div by, a one-element constant: the index of the input it scales."""
    if len(node.inputs) != 2 or None in node.inputs or node.op_type not in ("Mul", "Div"):
        return None
    scalar = [t.is_weight and t.known and t.elements == 1 for t in node.inputs]
    if node.op_type == "Div":
        return 0 if scalar[1] else None
    return 0 if scalar[1] else 1 if scalar[0] else None


def transposed_operand() -> Rule:
    """A Transpose of the last two axes feeding only a MatMul becomes FusedMatMul's transB."""
    def rule(ctx: Context, node: Node) -> None:
        if node.op_type != "MatMul":
            return
        for index in (0, 1):
            before = ctx.source(node, index)
            if before is None or before.op_type != "Transpose" or ctx.sole_reader(before) is not node:
                continue
            perm = _perm(ctx, before)
            rank = len(perm)
            if rank >= 2 and perm[:-2] == list(range(rank - 2)) and perm[-2:] == [rank - 1, rank - 2]:
                ctx.found[before.name] = Fusion(host=node.name)
    return rule


def _perm(ctx: Context, transpose: Node) -> list[int]:
    """A Transpose's permutation, the composed one where it absorbed the Transpose before it."""
    fusion = ctx.found.get(transpose.name)
    attrs = fusion.kernel.attrs if fusion is not None and fusion.kernel is not None else transpose.attrs
    return list(attrs.get("perm", []))


def transpose_chain() -> Rule:
    """A Transpose of a Transpose that nothing else reads runs as one Transpose with the composed
    permutation, or none where they cancel (onnxruntime's transpose optimizer, basic level)."""
    def rule(ctx: Context, node: Node) -> None:
        before = ctx.source(node)
        if node.op_type != "Transpose" or before is None or before.op_type != "Transpose" \
                or ctx.sole_reader(before) is not node or before.name in ctx.found or before.inputs[0] is None:
            return
        first, second = list(before.attrs.get("perm", [])), list(node.attrs.get("perm", []))
        if not first or len(first) != len(second):
            return
        composed = [first[axis] for axis in second]
        if composed == sorted(composed):
            for member in (before, node):
                ctx.found[member.name] = Fusion(free=True, why=f"cancels {before.name if member is node else node.name}")
            return
        ctx.merge([before], node, "Transpose", [before.inputs[0]], {"perm": composed})
    return rule


def conv_add_relu() -> Rule:
    """Conv (with what folded into it) -> Add of another tensor -> Relu runs as one kernel that adds the
    other tensor and applies Relu in its epilogue (onnxruntime's Conv+Add+Relu fusion, CUDA only)."""
    def rule(ctx: Context, node: Node) -> None:
        add = ctx.source(node)
        if node.op_type != "Relu" or add is None or add.op_type != "Add" or len(add.inputs) != 2 \
                or ctx.sole_reader(add) is not node or add.name in ctx.found or _has_const_input(add):
            return
        for index in (0, 1):
            before = _group_end(ctx, add, {"Conv"}, index)
            if before is not None:
                ctx.absorb(add, before)
                ctx.absorb(node, add)
                return
    return rule


def swish() -> Rule:
    """x * Sigmoid(x) -> one QuickGelu kernel over x."""
    def rule(ctx: Context, node: Node) -> None:
        if node.op_type != "Mul" or len(node.inputs) != 2 or None in node.inputs:
            return
        for a, b in ((0, 1), (1, 0)):
            gate = ctx.source(node, a)
            if gate is not None and gate.op_type == "Sigmoid" and gate.inputs and gate.inputs[0] is not None \
                    and gate.inputs[0].name == node.inputs[b].name and ctx.sole_reader(gate) is node:
                ctx.merge([gate], node, "QuickGelu", [node.inputs[b]])
                return
    return rule


def erf_gelu() -> Rule:
    """x/sqrt(2) -> Erf -> +1 -> *x -> *0.5 (any order of the last two) -> one Gelu kernel over x."""
    def rule(ctx: Context, node: Node) -> None:
        if node.op_type != "Erf":
            return
        scale = ctx.source(node)
        if scale is None or scale.op_type not in ("Div", "Mul") or ctx.sole_reader(scale) is not node:
            return
        chain, current = [scale], node
        for op in ("Add", "Mul", "Mul"):
            nxt = ctx.sole_reader(current)
            if nxt is None or nxt.op_type != op:
                break
            chain.append(current)
            current = nxt
        if len(chain) < 3 or scale.inputs[0] is None:
            return
        ctx.merge(chain, current, "Gelu", [scale.inputs[0]])
    return rule


def skip_layernorm() -> Rule:
    """A residual Add read only by a LayerNormalization: one SkipLayerNormalization kernel over the Add's
    inputs (a kernel of its own cost: about 10x a LayerNormalization's on onnxruntime 1.32's CPU provider)."""
    def rule(ctx: Context, node: Node) -> None:
        if node.op_type != "LayerNormalization":
            return
        before = ctx.source(node)
        if before is not None and before.op_type == "Add" and ctx.sole_reader(before) is node \
                and before.name not in ctx.found and not _has_const_input(before) and len(before.inputs) == 2:
            ctx.merge([before], node, "SkipLayerNormalization", [*before.inputs, *node.inputs[1:3]],
                      {"epsilon": node.attrs.get("epsilon", 1e-5)})
    return rule
