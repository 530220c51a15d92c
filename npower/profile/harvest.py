"""`--from-models`: the exact layer configurations of given networks, as plan configs."""
from __future__ import annotations

from typing import Any, Iterable, Iterator

from ..features import FREE, UNKNOWN, UNRESOLVED, extract
from ..graph import Node, load_graph
from ..modelio import load_model
from ..shape_values import tensor_value
from .plan import Config


def node_config(node: Node, values: dict[str, Any]) -> Config:
    """A graph node as a plan config (small constant operands keep their values)."""
    inputs = []
    for tensor in node.inputs:
        if tensor is None:
            break
        spec = {"shape": list(tensor.shape), "weight": tensor.is_weight}
        if tensor.is_weight and tensor.name in values and tensor.elements <= 64:
            spec["value"] = values[tensor.name]
        inputs.append(spec)
    attrs = {k: v for k, v in node.attrs.items() if v != "<subgraph>" and k != "auto_pad"}
    config: Config = {"op": node.op_type, "attrs": attrs, "inputs": inputs}
    if len(node.outputs) > 1:
        config["outputs"] = len(node.outputs)
    if node.domain:
        config["domain"], config["out_shape"] = node.domain, list(node.outputs[0].shape)
    return config


def harvest(paths: Iterable[str]) -> Iterator[tuple[str, Config]]:
    """Yield (kind, config) for every costed layer of the given ONNX models, without duplicates."""
    seen: set[str] = set()
    for path in paths:
        model = load_model(path)
        values = {init.name: value.tolist() for init in model.graph.initializer
                  if (value := tensor_value(init)) is not None}
        for node in load_graph(model).nodes:
            kind = extract(node).kind
            if kind in (FREE, UNKNOWN, UNRESOLVED):
                continue
            config = node_config(node, values)
            signature = repr(config)
            if signature not in seen:
                seen.add(signature)
                yield kind, config
