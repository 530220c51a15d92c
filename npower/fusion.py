"""Runtime-fusion awareness: which nodes the runtime merges into a neighbour.

Runtimes do not execute the graph as written. These rules follow what onnxruntime's
basic and extended graph optimisations do on the CPU and CUDA providers (checked against
saved optimised models): BatchNorm and constant Mul/Add folded into Conv; Conv and Gemm fused
with a following activation; MatMul with a constant bias becomes Gemm; MatMul with a scalar
scale or a transposed input becomes FusedMatMul; x*sigmoid(x) becomes QuickGelu; the
Erf form of GELU becomes Gelu; a residual Add feeding only a LayerNormalization becomes
SkipLayerNormalization. A fused node costs nothing; its host may change op kind.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .graph import Graph, Node


@dataclass
class Fusion:
    """host: the node this one is merged into (None for a host); kind: a host's new op kind;
    costs: the merged work still takes time (e.g. the activation pass of a CPU FusedConv)."""

    host: str | None = None
    kind: str | None = None
    costs: bool = False


_ACTIVATIONS = {"Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid"}


class _Context:
    """Graph lookups shared by the rules, and the fusions found so far."""

    def __init__(self, graph: Graph, provider: str):
        self.provider = provider
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
        fusion = self.found.get(node.name)
        return fusion.host if fusion is not None and fusion.host else node.name

    def absorb(self, node: Node, host: Node, costs: bool = False) -> None:
        self.found[node.name] = Fusion(host=self.host_of(host), costs=costs)
        self.tail[self.host_of(host)] = node.outputs[0].name


def _group_end(ctx: _Context, node: Node, host_types: set[str]) -> Node | None:
    """If node's input 0 ends a group hosted by one of host_types and nothing else reads it."""
    before = ctx.source(node)
    if before is None or ctx.sole_reader(before) is not node:
        return None
    host = ctx.by_name[ctx.host_of(before)]
    if host.op_type not in host_types or ctx.found.get(host.name, Fusion()).kind:
        return None
    return before if ctx.tail.get(host.name, host.outputs[0].name) == node.inputs[0].name else None


def _has_const_input(node: Node) -> bool:
    return any(t is not None and t.is_weight for t in node.inputs)


def _conv_affine(ctx: _Context, node: Node) -> None:
    """BatchNormalization, or Mul/Add by a constant, right after a Conv folds into its weights."""
    if node.op_type == "BatchNormalization" or (node.op_type in ("Mul", "Add") and _has_const_input(node)
                                                and len(node.inputs) == 2):
        before = _group_end(ctx, node, {"Conv"})
        if before is not None:
            ctx.absorb(node, before)


def _activation(ctx: _Context, node: Node) -> None:
    """Conv/Gemm followed by a supported activation run as one fused kernel. On the CPU provider that
    kernel still applies the activation as a pass over its output (measured: costing it as free
    under-predicts MobileNetV2 by 11 %); on CUDA it is an epilogue of the convolution."""
    if node.op_type in _ACTIVATIONS:
        before = _group_end(ctx, node, {"Conv", "Gemm"})
        if before is not None:
            ctx.absorb(node, before, costs=ctx.provider == "CPUExecutionProvider")


def _matmul_epilogue(ctx: _Context, node: Node) -> None:
    """MatMul + constant bias (-> Gemm) or * constant scalar (-> FusedMatMul)."""
    is_bias = node.op_type == "Add" and _has_const_input(node)
    is_scale = node.op_type == "Mul" and any(t is not None and t.is_weight and t.elements == 1 for t in node.inputs)
    if is_bias or is_scale:
        before = _group_end(ctx, node, {"MatMul"})
        if before is not None:
            ctx.absorb(node, before)


def _transposed_operand(ctx: _Context, node: Node) -> None:
    """A Transpose of the last two axes feeding only a MatMul becomes FusedMatMul's transB."""
    if node.op_type != "MatMul":
        return
    for index in (0, 1):
        before = ctx.source(node, index)
        if before is None or before.op_type != "Transpose" or ctx.sole_reader(before) is not node:
            continue
        perm = list(before.attrs.get("perm", []))
        rank = len(perm)
        if rank >= 2 and perm[:-2] == list(range(rank - 2)) and perm[-2:] == [rank - 1, rank - 2]:
            ctx.found[before.name] = Fusion(host=node.name)


def _swish(ctx: _Context, node: Node) -> None:
    """x * Sigmoid(x) -> QuickGelu."""
    if node.op_type != "Mul" or len(node.inputs) != 2 or None in node.inputs:
        return
    for a, b in ((0, 1), (1, 0)):
        gate = ctx.source(node, a)
        if gate is not None and gate.op_type == "Sigmoid" and gate.inputs[0].name == node.inputs[b].name \
                and ctx.sole_reader(gate) is node:
            ctx.found[gate.name] = Fusion(host=node.name)
            ctx.found[node.name] = Fusion(kind="quickgelu")
            return


def _erf_gelu(ctx: _Context, node: Node) -> None:
    """x/sqrt(2) -> Erf -> +1 -> *x -> *0.5 (any order of the last two) -> Gelu."""
    if node.op_type != "Erf":
        return
    scale = ctx.source(node)
    chain = [scale] if scale is not None and scale.op_type in ("Div", "Mul") and ctx.sole_reader(scale) is node else []
    current = node
    for op in ("Add", "Mul", "Mul"):
        nxt = ctx.sole_reader(current)
        if nxt is None or nxt.op_type != op:
            break
        chain.append(current)
        current = nxt
    if len(chain) < 3 or not scale:
        return
    for member in chain:
        ctx.found[member.name] = Fusion(host=current.name)
    ctx.found[current.name] = Fusion(kind="gelu")


def _skip_layernorm(ctx: _Context, node: Node) -> None:
    """A residual Add read only by a LayerNormalization becomes SkipLayerNormalization."""
    if node.op_type != "LayerNormalization":
        return
    before = ctx.source(node)
    if before is not None and before.op_type == "Add" and ctx.sole_reader(before) is node \
            and before.name not in ctx.found and not _has_const_input(before):
        ctx.found[before.name] = Fusion(host=node.name)


RULES: list[Callable[[_Context, Node], None]] = [
    _conv_affine, _activation, _matmul_epilogue, _transposed_operand, _swish, _erf_gelu, _skip_layernorm,
]


def find_fusions(graph: Graph, provider: str = "CPUExecutionProvider") -> dict[str, Fusion]:
    """Node name -> Fusion, applying every rule to the nodes in topological order."""
    ctx = _Context(graph, provider)
    for node in graph.nodes:
        if node.name in ctx.found or not node.outputs:
            continue
        for rule in RULES:
            rule(ctx, node)
            if node.name in ctx.found:
                break
    return ctx.found
