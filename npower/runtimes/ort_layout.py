"""onnxruntime CPU at ORT_ENABLE_ALL (its default): the extended fusions, then the NCHWc layout.

On x86 the 'all' level adds onnxruntime's NchwcTransformer: convolutions, pooling and a few
element-wise ops run on tensors whose channels are stored in blocks of `BLOCK` (padded to a
whole block), with ReorderInput/ReorderOutput kernels where a blocked region begins and ends.
What follows was read off the optimised models of onnxruntime 1.32 (`optimized_model_filepath`)
for the zoo and for probe graphs of one to four nodes; tests/test_ort_layout.py checks it on every
zoo network:
- Conv (2-D, constant weight; with what the extended level fused into it) -> nchwc Conv when it
  has one group (fewer input channels than a block: it reads the plain NCHW tensor directly;
  otherwise a multiple of 4, padded to a block), is depthwise (a multiple of 4 channels, padded),
  or has whole blocks of input and output channels per group. Output channels are padded.
- BatchNormalization on a blocked tensor -> a depthwise 1x1 nchwc Conv; so does a Mul of a blocked
  tensor by a per-channel constant (shape (C,1,1) or (1,C,1,1); no bias: an Add of one stays plain).
- MaxPool/AveragePool/GlobalAveragePool/GlobalMaxPool (2-D, channels a multiple of the block,
  no indices output) -> nchwc pool, reordering a plain input (a global pool only a graph input).
- Resize, linear, integer spatial scales (half_pixel, align_corners or asymmetric) of a blocked
  tensor -> nchwc Upsample. Nearest Resize stays plain.
- Add/Sum of two blocked tensors of one shape: joins (as the kernel's Sum input) the first of
  its inputs written by an nchwc Conv that has no Sum or activation yet and no other reader;
  otherwise it runs blocked. Mul of two blocked tensors of one shape runs blocked.
- Relu/Sigmoid/Tanh/HardSigmoid after such a Conv (Sum or not) become its activation; with
  QuickGelu they otherwise run blocked. Concat on axis 1 of blocked tensors whose channel counts
  are whole blocks runs blocked.
- Identity and Dropout (removed at the basic level) pass a blocked tensor through. Any other
  reader of a blocked tensor, and a graph output, gets a ReorderOutput (one per tensor); a plain
  tensor read by blocked kernels gets one ReorderInput.
- Channels-last models (Keras exports, ConvNeXt): a Transpose to channels-last (perm 0,2,3,1) of a
  blocked tensor is done by a ReorderOutput writing channels-last (`channels_last`), besides the
  tensor's other readers; a Transpose from channels-last (perm 0,3,1,2) whose output only one blocked
  kernel reads is done by that kernel's ReorderInput reading the channels-last tensor. The Transpose
  then runs no kernel of its own.
The fused Sum and a fused Relu run inside the blocked convolution's kernel: not costed apart. Any other fused
activation (Clip, Sigmoid, Tanh, HardSigmoid, LeakyRelu) MLAS applies in the convolution's epilogue, as a pass over
the output rows the kernel just wrote (`MLAS_CONV_KERNEL_FLAG_OTHER_ACTIVATION`): costed as that activation, on data
in cache (`predict`: the kind's steady variant). MobileNetV2's ReLU6 (Clip) costs it 7-11 % on the Zen 4 pack's
machine against a Relu there (`BENCHMARKS.md`).
Not modelled: a tensor read by nodes and also a graph output (npower's graph has no output list: a
tensor nothing reads is an output); onnxruntime's transpose optimiser moving a Transpose past element-wise
ops until it cancels another (ConvNeXt's residual stream stays channels-last: npower costs its Transposes
from channels-last, a plain Add and a ReorderInput where onnxruntime runs a channels-last ReorderInput); and
the ReorderOutput onnxruntime adds for a blocked tensor read through a Transpose pair that cancels.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

from ..features_nchwc import BLOCK, NCHWC
from ..graph import Graph, Node, Tensor
from . import register_rules
from .kernels import Fusion, RuleSet, host_of
from .ort_rules import CPU_EXTENDED

CONV_ACTIVATIONS = {"Relu", "Sigmoid", "Tanh", "HardSigmoid"}
IN_KERNEL_ACTIVATIONS = {"Relu"}  # applied in the blocked conv kernel's registers; others in its epilogue
BLOCKED_ACTIVATIONS = CONV_ACTIVATIONS | {"QuickGelu"}
POOLS = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"}
UPSAMPLE_MODES = {"half_pixel", "align_corners", "asymmetric"}
PADDABLE = 4  # a blocked input's channel count is padded to a block only from a multiple of 4
TO_CHANNELS_LAST, FROM_CHANNELS_LAST = [0, 2, 3, 1], [0, 3, 1, 2]  # the Transposes a reorder absorbs


def reorder_name(op_type: str, tensor: str) -> str:
    """The name of the reorder kernel npower adds for a tensor (its plain side), as reports show it."""
    return f"{op_type}:{tensor}"


def padded(channels: int) -> int:
    """Channels rounded up to the NCHWc block."""
    return -(-channels // BLOCK) * BLOCK


@dataclass
class Blocked:
    """A tensor held in the blocked layout: its logical channels, the kernel writing it, and that
    kernel while it may still take a Sum input or an activation (an nchwc Conv read once)."""

    tensor: Tensor
    channels: int
    host: str
    uses: int
    conv: Node | None = None
    plain_needed: bool = False


@dataclass
class Layout:
    """One pass of onnxruntime's NchwcTransformer over a graph after the extended fusions."""

    graph: Graph
    fusions: dict[str, Fusion]
    blocked: dict[str, Blocked] = field(default_factory=dict)  # original tensor name -> blocked
    reorder_in: dict[str, Node] = field(default_factory=dict)   # plain tensor name -> ReorderInput
    to_channels_last: list[Node] = field(default_factory=list)  # ReorderOutputs that do a Transpose

    def __post_init__(self) -> None:
        self.readers = self.graph.consumers()
        self.producer = {t.name: node for node in self.graph.nodes for t in node.outputs}
        order = {node.name: index for index, node in enumerate(self.graph.nodes)}
        self.group: dict[str, list[Node]] = {}
        for node in self.graph.nodes:
            self.group.setdefault(host_of(self.fusions, node.name), []).append(node)
        self.tail = {host: max((n for n in nodes if n.outputs), key=lambda n: order[n.name]).outputs[0]
                     for host, nodes in self.group.items() if any(n.outputs for n in nodes)}

    def run(self) -> "Layout":
        for node in self.graph.nodes:
            fusion = self.fusions.get(node.name)
            if fusion is not None and (fusion.host or fusion.free):
                continue
            kernel = fusion.kernel if fusion is not None and fusion.kernel is not None else node
            handler = HANDLERS.get(kernel.op_type) if not kernel.domain or kernel.domain == "com.microsoft" else None
            if handler is None or not _shapes_known(kernel) or not handler(self, node, kernel):
                self.needs_plain(node.name)
        return self

    def needs_plain(self, host: str) -> None:
        """The kernel hosted by `host` reads plain tensors: its blocked inputs get a ReorderOutput."""
        for member in self.group[host]:
            for tensor in member.inputs:
                if tensor is not None and tensor.name in self.blocked:
                    self.blocked[tensor.name].plain_needed = True

    def uses(self, tensor: Tensor) -> int:
        """Readers of a tensor; one for a graph output (a tensor nothing reads)."""
        return len(self.readers.get(tensor.name, [])) or 1

    def blocked_input(self, tensor: Tensor) -> Tensor:
        """The blocked form of a tensor, reordering a plain one (once per tensor)."""
        if tensor.name in self.blocked:
            return self.blocked[tensor.name].tensor
        if tensor.name not in self.reorder_in:
            out = _blocked_tensor(tensor, tensor.shape[1])
            nhwc = self.channels_last_source(tensor)
            plain = nhwc if nhwc is not None else tensor
            self.reorder_in[tensor.name] = Node(reorder_name("ReorderInput", plain.name), "ReorderInput", NCHWC,
                                                [plain], [out], {"channels_last": int(nhwc is not None)})
        return self.reorder_in[tensor.name].outputs[0]

    def channels_last_source(self, tensor: Tensor) -> Tensor | None:
        """The channels-last tensor a ReorderInput reads instead of `tensor`, where `tensor` is the output of a
        Transpose from channels-last, a kernel of its own, that only this reorder's kernel reads; the Transpose
        becomes free."""
        node = self.producer.get(tensor.name)
        if node is None or node.op_type != "Transpose" or list(node.attrs.get("perm", ())) != FROM_CHANNELS_LAST \
                or self.fusions.get(node.name) is not None or self.uses(tensor) != 1 or not _four_d(tensor):
            return None
        self.fusions[node.name] = Fusion(free=True, why="done by the ReorderInput reading its input")
        return node.inputs[0]

    def plain_input(self, tensor: Tensor) -> Tensor:
        if tensor.name in self.blocked:
            self.blocked[tensor.name].plain_needed = True
        return tensor

    def write(self, host: str, original: Tensor, channels: int, conv: Node | None = None) -> Tensor:
        """Record that `host` writes `original` blocked; returns the blocked tensor."""
        tensor = _blocked_tensor(original, channels)
        self.blocked[original.name] = Blocked(tensor, channels, host, self.uses(original), conv)
        return tensor

    def set_kernel(self, node: Node, kernel: Node) -> None:
        self.fusions[node.name] = Fusion(kernel=kernel)

    def join(self, node: Node, blocked: Blocked, why: str, costs: bool = False) -> None:
        """Node becomes part of the nchwc Conv writing `blocked`, which now writes node's output; `costs`: the
        kernel applies it as a pass over that output (`epilogue_costs`)."""
        self.fusions[node.name] = Fusion(host=blocked.host, costs=costs, why=why)
        self.group[blocked.host].append(node)
        out = self.write(blocked.host, node.outputs[0], blocked.channels, blocked.conv)
        blocked.conv.outputs[0] = out

    def reorders(self) -> list[Node]:
        """ReorderInput kernels, then one ReorderOutput per blocked tensor read plain or leaving the graph."""
        outputs = [Node(reorder_name("ReorderOutput", name), "ReorderOutput", NCHWC, [b.tensor],
                        [_plain(b.tensor, name, b.channels)], {"channels": b.channels, "channels_last": 0})
                   for name, b in self.blocked.items() if b.plain_needed or name not in self.readers]
        return list(self.reorder_in.values()) + outputs + self.to_channels_last


def _blocked_tensor(tensor: Tensor, channels: int) -> Tensor:
    shape = (tensor.shape[0], padded(channels), *tensor.shape[2:])
    return Tensor(f"{tensor.name}/nchwc", shape, tensor.dtype, tensor.itemsize)


def _plain(blocked: Tensor, name: str, channels: int) -> Tensor:
    return Tensor(name, (blocked.shape[0], channels, *blocked.shape[2:]), blocked.dtype, blocked.itemsize)


def _shapes_known(kernel: Node) -> bool:
    return kernel.shapes_known and bool(kernel.inputs) and kernel.inputs[0] is not None and bool(kernel.outputs)


def _four_d(tensor: Tensor | None) -> bool:
    return tensor is not None and len(tensor.shape) == 4


Handler = Callable[[Layout, Node, Node], bool]


def _conv(layout: Layout, node: Node, kernel: Node) -> bool:
    x, w = kernel.inputs[0], kernel.inputs[1]
    bias = kernel.inputs[2] if len(kernel.inputs) > 2 else None
    if not _four_d(x) or w is None or not w.is_weight or len(w.shape) != 4 or (bias is not None and not bias.is_weight):
        return False
    group, (cout, cin) = int(kernel.attrs.get("group", 1)), w.shape[:2]
    depthwise = group > 1 and cin == 1 and cout == group
    if group > 1 and not depthwise and (cin % BLOCK or (cout // group) % BLOCK or cout % group):
        return False
    if (depthwise or (group == 1 and cin >= BLOCK)) and cin * group % PADDABLE:
        return False
    attrs = dict(kernel.attrs)
    if depthwise:
        x_in, weight = layout.blocked_input(x), (padded(cout), 1, *w.shape[2:])
        attrs["group"] = padded(cout)
    elif group == 1 and cin < BLOCK:
        x_in, weight = layout.plain_input(x), (padded(cout), cin, *w.shape[2:])
    else:
        x_in, weight = layout.blocked_input(x), (padded(cout), padded(cin) if group == 1 else cin, *w.shape[2:])
    members = [m for m in layout.group[node.name] if m is not node]
    activation = [m.op_type for m in members if layout.fusions[m.name].costs]
    for member in members:  # folded, applied in the kernel, or a pass in its epilogue
        costs = layout.fusions[member.name].costs and epilogue_costs(member.op_type)
        layout.fusions[member.name] = Fusion(host=node.name, costs=costs)
    if activation:
        attrs["activation"] = activation[0]
    inputs = [x_in, replace(w, shape=weight)] + ([replace(bias, shape=(padded(cout),))] if bias is not None else [])
    conv = Node(node.name, "Conv", NCHWC, inputs, [], attrs)
    conv.outputs.append(layout.write(node.name, layout.tail[node.name], cout, None if activation else conv))
    layout.set_kernel(node, conv)
    return True


def _batchnorm(layout: Layout, node: Node, kernel: Node) -> bool:
    x = kernel.inputs[0]
    if x.name not in layout.blocked or not _four_d(x):
        return False
    _channel_conv(layout, node, x, bias=True)
    return True


def _channel_conv(layout: Layout, node: Node, x: Tensor, bias: bool) -> None:
    """Node, a per-channel scale (and shift) of blocked `x`, runs as a depthwise 1x1 nchwc Conv."""
    channels = layout.blocked[x.name].channels
    weight = Tensor(f"{node.name}/scale", (padded(channels), 1, 1, 1), x.dtype, x.itemsize, True)
    shift = [Tensor(f"{node.name}/shift", (padded(channels),), x.dtype, x.itemsize, True)] if bias else []
    attrs = {"group": padded(channels), "kernel_shape": [1, 1], "strides": [1, 1], "pads": [0, 0, 0, 0],
             "dilations": [1, 1]}
    conv = Node(node.name, "Conv", NCHWC, [layout.blocked_input(x), weight, *shift], [], attrs)
    conv.outputs.append(layout.write(node.name, layout.tail[node.name], channels, conv))
    layout.set_kernel(node, conv)


def _pool(layout: Layout, node: Node, kernel: Node) -> bool:
    x = kernel.inputs[0]
    if not _four_d(x) or x.shape[1] % BLOCK or len(kernel.outputs) != 1:
        return False
    if kernel.op_type.startswith("Global") and x.name not in layout.blocked and x.name in layout.producer:
        return False
    pool = Node(node.name, kernel.op_type, NCHWC, [layout.blocked_input(x)], [], dict(kernel.attrs))
    pool.outputs.append(layout.write(node.name, layout.tail[node.name], x.shape[1]))
    layout.set_kernel(node, pool)
    return True


def _upsample(layout: Layout, node: Node, kernel: Node) -> bool:
    x, y = kernel.inputs[0], kernel.outputs[0]
    sizes = kernel.inputs[3] if len(kernel.inputs) > 3 else None
    mode = str(kernel.attrs.get("mode")), str(kernel.attrs.get("coordinate_transformation_mode", "half_pixel"))
    if x.name not in layout.blocked or not _four_d(x) or sizes is not None or mode[0] != "linear" \
            or mode[1] not in UPSAMPLE_MODES or y.shape[:2] != x.shape[:2] \
            or any(o % i for o, i in zip(y.shape[2:], x.shape[2:])):
        return False
    channels = layout.blocked[x.name].channels
    upsample = Node(node.name, "Upsample", NCHWC, [layout.blocked_input(x)], [], {"mode": "linear"})
    upsample.outputs.append(layout.write(node.name, y, channels))
    layout.set_kernel(node, upsample)
    return True


def _transpose(layout: Layout, node: Node, kernel: Node) -> bool:
    """A blocked tensor transposed to channels-last: a ReorderOutput writes the Transpose's output."""
    x, y = kernel.inputs[0], kernel.outputs[0]
    if x.name not in layout.blocked or list(kernel.attrs.get("perm", ())) != TO_CHANNELS_LAST \
            or len(layout.group[node.name]) != 1:
        return False
    source = layout.blocked[x.name]
    layout.fusions[node.name] = Fusion(free=True, why="done by a ReorderOutput to channels-last")
    layout.to_channels_last.append(Node(reorder_name("ReorderOutput", y.name), "ReorderOutput", NCHWC,
                                        [source.tensor], [y], {"channels": source.channels, "channels_last": 1}))
    return True


def epilogue_costs(activation: str) -> bool:
    """Does a blocked conv apply `activation` as a pass over its output (its cost kept), not in its kernel?"""
    return activation not in IN_KERNEL_ACTIVATIONS


def _fusable(blocked: Blocked) -> bool:
    """An nchwc Conv that nothing else reads and that has no activation yet."""
    return blocked.conv is not None and "activation" not in blocked.conv.attrs and blocked.uses == 1


def _activation(layout: Layout, node: Node, kernel: Node) -> bool:
    x = kernel.inputs[0]
    if x.name not in layout.blocked:
        return False
    source = layout.blocked[x.name]
    if kernel.op_type in CONV_ACTIVATIONS and _fusable(source):
        source.conv.attrs["activation"] = kernel.op_type
        layout.join(node, source, f"the activation of {source.host}'s nchwc Conv", epilogue_costs(kernel.op_type))
        return True
    layout.write(node.name, kernel.outputs[0], source.channels)
    return True


def _same_blocked(layout: Layout, kernel: Node) -> list[Blocked] | None:
    inputs = [t for t in kernel.inputs if t is not None]
    if len(inputs) != 2 or any(t.name not in layout.blocked for t in inputs) or inputs[0].shape != inputs[1].shape:
        return None
    blocked = [layout.blocked[t.name] for t in inputs]
    return blocked if blocked[0].channels == blocked[1].channels else None


def _add(layout: Layout, node: Node, kernel: Node) -> bool:
    blocked = _same_blocked(layout, kernel)
    if blocked is None:
        return False
    for index, source in enumerate(blocked):
        if _fusable(source) and len(source.conv.inputs) < 4:
            other = blocked[1 - index].tensor
            source.conv.inputs.extend([None] * (3 - len(source.conv.inputs)) + [other])
            layout.join(node, source, f"the Sum input of {source.host}'s nchwc Conv")
            return True
    layout.write(node.name, kernel.outputs[0], blocked[0].channels)
    return True


def _mul(layout: Layout, node: Node, kernel: Node) -> bool:
    """Two blocked tensors of one shape: a blocked Mul; a blocked tensor by a per-channel constant: a Conv."""
    blocked = _same_blocked(layout, kernel)
    if blocked is not None:
        layout.write(node.name, kernel.outputs[0], blocked[0].channels)
        return True
    x = _channel_scaled(layout, kernel)
    if x is not None:
        _channel_conv(layout, node, x, bias=False)
    return x is not None


def _channel_scaled(layout: Layout, kernel: Node) -> Tensor | None:
    """The blocked 4-D input of a two-input op whose other input is a constant of one value per channel."""
    if len(kernel.inputs) != 2 or None in kernel.inputs:
        return None
    for x, scale in (kernel.inputs, kernel.inputs[::-1]):
        if x.name in layout.blocked and _four_d(x) and scale.is_weight \
                and scale.shape in ((x.shape[1], 1, 1), (1, x.shape[1], 1, 1)) and x.shape[1] > 1:
            return x
    return None


def _concat(layout: Layout, node: Node, kernel: Node) -> bool:
    inputs = [t for t in kernel.inputs if t is not None]
    if int(kernel.attrs.get("axis", 0)) % max(len(inputs[0].shape), 1) != 1 \
            or any(t.name not in layout.blocked or layout.blocked[t.name].channels % BLOCK for t in inputs):
        return False
    layout.write(node.name, kernel.outputs[0], sum(layout.blocked[t.name].channels for t in inputs))
    return True


def _elided(layout: Layout, node: Node, kernel: Node) -> bool:
    """Identity and Dropout are removed at the basic level: their readers read the blocked tensor."""
    x = kernel.inputs[0]
    if x.name in layout.blocked:
        layout.blocked[kernel.outputs[0].name] = replace(layout.blocked[x.name], uses=layout.uses(kernel.outputs[0]))
    return x.name in layout.blocked


HANDLERS: dict[str, Handler] = {"Conv": _conv, "BatchNormalization": _batchnorm, "Resize": _upsample,
                                "Add": _add, "Sum": _add, "Mul": _mul, "Concat": _concat,
                                "Identity": _elided, "Dropout": _elided, "Transpose": _transpose,
                                **{op: _pool for op in POOLS}, **{op: _activation for op in BLOCKED_ACTIVATIONS}}


@dataclass(frozen=True)
class LayoutRuleSet(RuleSet):
    """A rule set followed by onnxruntime's NCHWc layout pass."""

    def layout(self, graph: Graph) -> Layout:
        return Layout(graph, super().kernels(graph)).run()

    def kernels(self, graph: Graph) -> dict[str, Fusion]:
        return self.layout(graph).fusions

    def plan(self, graph: Graph) -> tuple[dict[str, Fusion], list[Node]]:
        layout = self.layout(graph)
        return layout.fusions, layout.reorders()


CPU_ALL = LayoutRuleSet("onnxruntime CPU all (NCHWc layout)", CPU_EXTENDED.rules, CPU_EXTENDED.view_ops,
                        CPU_EXTENDED.folds_constants)

register_rules("onnxruntime", "cpu", "all", CPU_ALL)
