"""Per-kernel samples of runtimes that lay a graph out in kernels of their own (onnxruntime CPU at 'all').

At ORT_ENABLE_ALL a single Conv runs as up to three kernels: ReorderInput, an nchwc Conv and
ReorderOutput. A network pays the reorders only where its blocked regions begin and end, so each
kernel is sampled on its own: the planned single-node graph runs under onnxruntime's profiler
(timed by the backend's policy, for each of the two cache states of `cache_state`), and every kernel
onnxruntime executed becomes one sample row with the config, kind and features of the kernel
npower's rules synthesize for it, and its time per inference from the trace (median, p10, p90 over
the timed runs of the state that kernel meets inside a network; both states' timings are kept). A kernel without a
weight matrix is also timed in a steady loop, its third state (`times_steady`).
The profiler adds about 1 us to every kernel it traces: a new sample file's header records that
overhead as measured on the machine (`trace_overhead_ms`), and `npower fit` takes it off each row.
The kernels onnxruntime ran must be the ones the rules predict for that graph: a mismatch is
recorded as the row's error (nothing is fitted from it), so every profiled config also checks the
rules.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Callable

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..features import extract
from ..features_nchwc import NCHWC
from ..graph import Graph, Node, load_graph
from ..runtimes import Runtime, RuleSet
from ..runtimes.ort_layout import LayoutRuleSet
from .backends import summarize, time_runs
from .build import build_model, make_feeds
from .cache_state import GRAPH_EDGE_KINDS, in_network_cache_state, reads_weight_matrix


def traces_kernels(backend) -> bool:
    """Does the backend's runtime run single-node graphs as kernels of its own (reorders, blocked ops)?"""
    return isinstance(Runtime.from_dict(backend.runtime_info(), "backend").rules, LayoutRuleSet)


def op_name(domain: str, op_type: str) -> str:
    """A kernel's op as the rules and onnxruntime's optimised graph both name it (NCHWc ops qualified)."""
    return f"{NCHWC}:{op_type}" if domain == NCHWC else op_type


def costed_kernels(graph: Graph, rules: RuleSet) -> list[Node]:
    """The kernels the rules cost for a graph: hosts (as their synthesized kernel) and runtime-added ones."""
    fusions, added = rules.plan(graph)
    kernels = []
    for node in graph.nodes:
        fusion = fusions.get(node.name)
        if fusion is None or not (fusion.host or fusion.free):
            kernels.append(fusion.kernel if fusion is not None and fusion.kernel is not None else node)
    return kernels + added


def kernel_runs(events: list[dict[str, Any]], executed: onnx.GraphProto,
                skip: int) -> dict[str, tuple[str, list[float]]]:
    """Executed node name -> (its op, its seconds in every inference after the first `skip`)."""
    ops = {node.name: op_name(node.domain, node.op_type) for node in executed.node}
    runs: dict[str, list[float]] = {}
    for event in events:
        name = event.get("name", "")
        if event.get("cat") == "Node" and name.endswith("_kernel_time"):
            runs.setdefault(name[: -len("_kernel_time")], []).append(event["dur"] * 1e-6)
    return {name: (ops.get(name, ""), times[skip:] or times) for name, times in runs.items()}


def kernel_config(kernel: Node) -> dict[str, Any]:
    """A synthesized kernel as a plan config (rebuilt by `build_model` for its features when fitting)."""
    return {"op": kernel.op_type, "domain": kernel.domain, "attrs": dict(kernel.attrs),
            "inputs": [{"shape": list(t.shape), "weight": t.is_weight} for t in kernel.inputs if t is not None],
            "out_shape": list(kernel.outputs[0].shape)}


def trace_overhead_ms(backend, kernels: int = 200, runs: int = 200) -> float:
    """Time onnxruntime's profiler adds to each kernel it traces: a chain of tiny element-wise kernels,
    their traced times summed against the same runs timed by the wall clock (which also holds each
    kernel's dispatch, paid inside networks as well), per kernel. About 1 us on the CPU pack's machine."""
    nodes = [helper.make_node("Relu" if index % 2 else "Sigmoid", [f"t{index}"], [f"t{index + 1}"], name=f"k{index}")
             for index in range(kernels)]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info(f"t{kernels}", TensorProto.FLOAT, [1, 16])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    feeds = {"t0": np.linspace(-1.0, 1.0, 16, dtype=np.float32).reshape(1, 16)}
    warmup = backend.policy.warmup_runs
    run = backend.runner(backend.session(model), feeds)
    for _ in range(warmup):
        run()
    start = time.perf_counter()
    for _ in range(runs):
        run()
    wall_ms = (time.perf_counter() - start) / runs * 1e3
    events, executed = backend.trace(model, feeds, lambda traced: [traced() for _ in range(warmup + runs)])
    timed = kernel_runs(events, executed, warmup).values()
    traced_ms = sum(float(np.median(times)) for _, times in timed) * 1e3
    return max(traced_ms - wall_ms, 0.0) / max(len(timed), 1)


def kernel_rows(backend, config: dict[str, Any], seed: int, base: dict[str, Any]) -> list[dict[str, Any]]:
    """One sample row per kernel onnxruntime runs for the config's single-node graph (see the module doc)."""
    rules = Runtime.from_dict(backend.runtime_info(), "backend").rules
    expected = costed_kernels(load_graph(build_model(config, values=False)), rules)

    feeds = make_feeds(config, seed)
    state, policy = in_network_cache_state(), backend.policy

    fed_from_memory = set(feeds) if config.get("graph_input") else set()  # graph inputs: not read back into cache
    read_back = {name: value for name, value in feeds.items() if name not in fed_from_memory}

    def alternating(run: Callable[[], None]) -> None:
        time_runs(state.alternate(run, read_back), replace(policy, min_runs=2 * policy.min_runs))

    model = build_model(config, seed).SerializeToString()
    ran = _sorted_runs(*backend.trace(model, feeds, alternating), policy.warmup_runs)
    ours = sorted(expected, key=lambda kernel: op_name(kernel.domain, kernel.op_type))
    names = [op for op, _ in ran], [op_name(k.domain, k.op_type) for k in ours]
    if names[0] != names[1]:
        return [{**base, "error": f"onnxruntime ran {', '.join(names[0])}; "
                                  f"npower's rules expect {', '.join(names[1])}"}]
    steady = [times_steady(kernel, config) for kernel in ours]
    if any(steady):
        steady_runs = _sorted_runs(*backend.trace(model, feeds, lambda run: time_runs(run, policy)), policy.warmup_runs)
        steady = [times if timed else None for timed, (_, times) in zip(steady, steady_runs)]
    rows = []
    for kernel, (op, times), steady_times in zip(ours, ran, steady):
        if is_wrap(kernel, config):
            continue
        layer = extract(kernel)
        states = dict(zip(("evicted", "hot"), (summarize(t).to_dict() for t in state.split(times, policy.warmup_runs))))
        chosen = "evicted" if reads_weight_matrix(kernel) else "hot"
        if steady_times:
            states[chosen := "steady"] = summarize(steady_times).to_dict()
        rows.append({**base, "kind": layer.kind, "kernel": op,
                     "config": kernel_config(kernel) if kernel.domain == NCHWC else config,
                     "features": layer.features, "specials": layer.specials,
                     **states[chosen], "cache_state": chosen, "states": states,
                     **({"graph_input": True} if any(t is not None and t.name in fed_from_memory
                                                     for t in kernel.inputs) else {}),
                     **({"mid_graph": True} if config.get("wrap") else {})})
    return rows


def _sorted_runs(events: list[dict[str, Any]], executed: onnx.GraphProto, skip: int) -> list[tuple[str, list[float]]]:
    """A trace's (op, per-inference seconds) of every kernel, in the order of their ops (as `kernel_rows` pairs them
    with the kernels the rules expect)."""
    return sorted(kernel_runs(events, executed, skip).values(), key=lambda item: item[0])


def times_steady(kernel: Node, config: dict[str, Any]) -> bool:
    """Is the kernel fitted from the steady state (`cache_state` module doc): one without a weight matrix, other
    than the wrap ops and the reorders a single-node graph runs at its edges?"""
    edge_reorder = not config.get("wrap") and extract(kernel).kind in GRAPH_EDGE_KINDS
    return not (reads_weight_matrix(kernel) or is_wrap(kernel, config) or edge_reorder)


def is_wrap(kernel: Node, config: dict[str, Any]) -> bool:
    """Is the kernel one of the plain ops a `wrap` config puts around its node (timed, not sampled)?"""
    return bool(config.get("wrap")) and kernel.op_type == config["wrap"] and not kernel.domain
