"""Single-node ONNX graphs from plan configs, with explicit IR version and opset."""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..graph import Node, load_graph
from .plan import Config

# Both onnxruntime 1.31+ (CPU) and onnxruntime-gpu 1.31 accept IR 8 / opset 17.
IR_VERSION = 8
OPSET = 17
CONTRIB_DOMAIN = "com.microsoft"


def _weight_values(spec: dict, rng: np.random.Generator) -> np.ndarray:
    if "value" in spec:
        value = spec["value"]
        is_int = isinstance(value, int) or (isinstance(value, list) and value and all(isinstance(v, int) for v in value))
        return np.array(value, dtype=np.int64 if is_int else np.float32).reshape(spec["shape"])
    shape = spec["shape"]
    if spec.get("init") == "positive":
        return rng.uniform(0.5, 1.5, size=shape).astype(np.float32)
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
    return (rng.standard_normal(shape) * math.sqrt(2.0 / max(fan_in, 1))).astype(np.float32)


def build_model(config: Config, seed: int = 0, values: bool = True) -> onnx.ModelProto:
    """One graph holding exactly the configured node; weights are initializers. A config with a `wrap` op
    (`plan.WRAP_OP`) puts that op before each of the node's graph inputs and after each output, so the kernels
    the node runs as read tensors a kernel just wrote and write ones a kernel reads, as inside a network.
    values=False: random weights are shape-only initializers (for feature extraction, not for running)."""
    rng = np.random.default_rng(seed)
    graph_inputs, initializers, names, nodes = [], [], [], []
    wrap = config.get("wrap")
    for index, spec in enumerate(config["inputs"]):
        name = f"x{index}"
        names.append(name)
        if spec["weight"] and not values and "value" not in spec:
            initializers.append(TensorProto(name=name, data_type=TensorProto.FLOAT, dims=spec["shape"]))
        elif spec["weight"]:
            initializers.append(numpy_helper.from_array(_weight_values(spec, rng), name))
        else:
            graph_inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, spec["shape"]))
            if wrap:
                names[-1] = f"{name}_written"
                nodes.append(helper.make_node(wrap, [name], [names[-1]], name=f"{wrap.lower()}_{name}"))
    outputs = [f"y{i}" for i in range(config.get("outputs", 1))]
    written = [f"{o}_read" for o in outputs] if wrap else outputs
    domain = config.get("domain", "")
    nodes.append(helper.make_node(config["op"], names, written, name=config["op"].lower(), domain=domain or None,
                                  **config.get("attrs", {})))
    if wrap:
        nodes += [helper.make_node(wrap, [w], [o], name=f"{wrap.lower()}_{o}") for w, o in zip(written, outputs)]
    out_shape = config.get("out_shape")
    value_infos = [helper.make_tensor_value_info(o, TensorProto.FLOAT, out_shape) for o in outputs]
    graph = helper.make_graph(nodes, f"single_{config['op']}", graph_inputs, value_infos, initializers)
    opsets = [helper.make_opsetid("", OPSET)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=opsets, ir_version=IR_VERSION, producer_name="npower.profile")


def configured_node(config: Config) -> Node:
    """The config's node (not its wrap ops) as npower loads it from a shapes-only graph."""
    graph = load_graph(build_model(config, values=False))
    return next(node for node in graph.nodes if node.name == config["op"].lower())


def make_feeds(config: Config, seed: int = 0) -> dict[str, np.ndarray]:
    """Random non-zero float32 inputs for the graph's non-weight inputs."""
    rng = np.random.default_rng(seed + 1)
    feeds = {}
    for index, spec in enumerate(config["inputs"]):
        if not spec["weight"]:
            values = rng.standard_normal(spec["shape"]).astype(np.float32)
            values[values == 0] = 1.0
            feeds[f"x{index}"] = values
    return feeds
