"""Recorded whole-model labels (NeuSight layout): read them and compare predictions with them.

A label is `<GPU>/<model>-inf-<seqlen>-<batch>.json` (`fw_latency`: the measured forward pass in ms,
`num_layer`: the model's depth) with a `.csv` beside it: one row per torch.fx node of the model
traced with ONE transformer layer, each with its own measured `latency` (ms). The per-node rows
therefore describe the model as `outside-the-layers + num_layer x layer 0`. Rows of Python scalar
arithmetic (`size`, `getitem`, `add` on shapes...) carry ~0.01 ms of CUDA-event overhead but launch
no kernel; they are kept apart ("python") and are not part of the kernel sums. The whole-model
label is `fw_latency`; the per-node sums are a separate measurement and do not add up to it
exactly (the sum is 18-54 % above fw_latency on the A100 PCIe, within +/-15 % elsewhere).
"""
from __future__ import annotations

import argparse
import ast
import csv
import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Mapping

from .errors import NpowerError
from .features import FREE, UNKNOWN, UNRESOLVED, extract
from .graph import Graph, Node, load_graph
from .pack import Pack, find_pack
from .predict import LayerPrediction, predict
from .runtimes import Fusion

_NAME = re.compile(r"^(?P<model>.+)-inf-(?P<seqlen>\d+)-(?P<batch>\d+)$")
_LAYER0 = re.compile(r"'(bert\.encoder\.layer\.0|transformer\.h\.0|model\.decoder\.layers\.0)'")
_MODULES = {"Linear": "linear", "Conv1D": "linear", "Embedding": "embedding", "LayerNorm": "layernorm",
            "Dropout": "free", "Tanh": "tanh", "GELUActivation": "gelu", "NewGELUActivation": "gelu"}
_FUNCTIONS = {"addmm": "linear", "matmul": "bmm", "bmm": "bmm", "softmax": "softmax", "gelu": "gelu",
              "tanh": "tanh", "where": "where", "add": "add", "sub": "sub", "mul": "mul", "truediv": "div",
              "pow": "pow", "ones": "fill", "full": "fill", "arange": "fill", "zeros": "fill"}
_COPIES = {"contiguous"}
_SCALAR_FORMS = {"add", "sub", "mul", "div", "pow"}  # with one tensor operand: NeuSight's addu, mulu...
# Label categories whose kernel an ONNX export writes as another op: x / sqrt(d) exports as x * (1 / sqrt(d)),
# and transformers 5 adds an additive causal mask where the labels' 4.x ran torch.where: one element-wise
# pass over the scores either way.
EXPORTED_AS = {"divu": "mulu", "where": "add"}


@dataclass(frozen=True)
class LabelNode:
    """One torch.fx node of the label's trace."""

    name: str
    category: str   # linear, bmm, layernorm, softmax, gelu, add, ... | copy | fill | view | python | free
    ms: float
    in_layer: bool  # a node of transformer layer 0 (repeated num_layer times in the real model)
    elements: int   # of the output


@dataclass(frozen=True)
class Label:
    """A recorded whole-model forward latency and its per-node trace."""

    path: Path
    gpu: str
    model: str
    seqlen: int
    batch: int
    num_layer: int
    fw_ms: float
    nodes: tuple[LabelNode, ...]

    def per_category(self) -> dict[str, tuple[int, float]]:
        """Category -> (kernel count, summed ms) for the whole model (layer rows x num_layer)."""
        out: dict[str, tuple[int, float]] = {}
        for node in self.nodes:
            times = self.num_layer if node.in_layer else 1
            count, total = out.get(node.category, (0, 0.0))
            out[node.category] = (count + times, total + times * node.ms)
        return out


def read_label(path: str | Path) -> Label:
    """Read `<model>-inf-<seqlen>-<batch>.json` (or its `.csv`) and the file beside it."""
    path = Path(path)
    match = _NAME.match(path.stem)
    if match is None:
        raise NpowerError(f"{path}: not a label file (expected <model>-inf-<seqlen>-<batch>.json)")
    json_path, csv_path = path.with_suffix(".json"), path.with_suffix(".csv")
    for needed in (json_path, csv_path):
        if not needed.is_file():
            raise NpowerError(f"{needed}: no such file (a label is a .json total and a .csv trace)")
    try:
        summary = json.loads(json_path.read_text())
        fw_ms, num_layer = float(summary["fw_latency"]), int(summary["num_layer"])
        with open(csv_path, newline="") as handle:
            nodes = tuple(_node(row) for row in csv.DictReader(handle))
    except (ValueError, KeyError, TypeError, SyntaxError) as exc:
        raise NpowerError(f"{path}: malformed label ({type(exc).__name__}: {exc})") from exc
    return Label(path, path.parent.name, match["model"], int(match["seqlen"]), int(match["batch"]), num_layer,
                 fw_ms, nodes)


def find_labels(folder: str | Path) -> list[Label]:
    """Every label under folder (its `labels/` subfolder when there is one), sorted by path."""
    root = Path(folder)
    root = root / "labels" if (root / "labels").is_dir() else root
    return [read_label(p) for p in sorted(root.glob("*/*-inf-*.json"))]


def _node(row: dict[str, str]) -> LabelNode:
    shape = ast.literal_eval(row["output_shape"] or "()")
    elements = math.prod(int(d) for d in shape) if isinstance(shape, tuple) else 0
    return LabelNode(row["Name"], _category(row), float(row["latency"] or 0.0), bool(_LAYER0.search(row["meta"])),
                     elements)


def _category(row: dict[str, str]) -> str:
    """What kind of kernel an fx node launched in eager PyTorch (or none)."""
    op, target, shape = row["op"], row["target"], row["output_shape"]
    if op in ("placeholder", "output", "get_attr"):
        return "free"
    if op == "call_module":
        return _MODULES.get(_module_class(row["meta"], target), "other")
    if shape == "(1,)" and _numel(row["input_shapes"]) <= 1 or target in ("size", "dim", "finfo"):
        return "python"  # scalar arithmetic on sizes: no kernel
    if op == "call_method":
        return "copy" if target in _COPIES else "view"  # view, permute, transpose, expand, split, to, type
    function = re.sub(r"^<(built-in (function|method) |function |class ')?|( of .*| at .*)?'?>$", "", target)
    category = _FUNCTIONS.get(function.split(".")[-1], "view" if function in ("getitem", "getattr") else "other")
    shapes = ast.literal_eval(row["input_shapes"] or "[]")
    tensors = [s for s in shapes if isinstance(s, list) and math.prod(int(d) for d in s) > 1]
    return category + "u" if category in _SCALAR_FORMS and len(tensors) == 1 else category


def _module_class(meta: str, target: str) -> str:
    found = re.search(rf"\('{re.escape(target)}', <class '([\w.]+)'>\)", meta)
    return found.group(1).rsplit(".", 1)[-1] if found else ""


def _numel(shapes: str) -> int:
    """Largest element count among a row's input shapes."""
    return max([1] + [math.prod(int(d) for d in s) for s in ast.literal_eval(shapes or "[]") if isinstance(s, list)])


def kernel_categories(graph: Graph, fusions: Mapping[str, Fusion]) -> dict[str, str]:
    """Node name -> label category of the kernel it runs, for every node that runs one (per the
    runtime's `fusions`: merged, free and view nodes are left out)."""
    out = {}
    for node in graph.nodes:
        fusion = fusions.get(node.name)
        if fusion is not None and (fusion.free or (fusion.host is not None and not fusion.costs)):
            continue
        if extract(node).kind in (FREE, UNKNOWN, UNRESOLVED):
            continue
        out[node.name] = _kernel_category(fusion.kernel if fusion is not None and fusion.kernel else node)
    return out


_ONNX_CATEGORIES = {"Gemm": "linear", "LayerNormalization": "layernorm", "Softmax": "softmax", "Gelu": "gelu",
                    "Transpose": "copy"}


def _kernel_category(kernel: Node) -> str:
    op = kernel.op_type
    if op == "MatMul":
        return "linear" if any(t is not None and t.is_weight for t in kernel.inputs[1:]) else "bmm"
    if op == "Gather" and kernel.inputs[0].is_weight:
        return "embedding"
    category = _ONNX_CATEGORIES.get(op, op.lower())
    tensors = [t for t in kernel.inputs if t is not None and t.elements > 1]
    return category + "u" if category in _SCALAR_FORMS and len(tensors) == 1 else category


@dataclass(frozen=True)
class KindRow:
    """Predicted vs labelled kernels of one category."""

    category: str
    label_count: int
    label_ms: float
    predicted_count: int
    predicted_ms: float


def breakdown(label: Label, rows: Iterable[LayerPrediction], categories: Mapping[str, str]) -> list[KindRow]:
    """Per category: the label's kernels (count, summed ms) next to the predicted ones, largest first.
    `categories`: node name -> category of the kernels the prediction costs (see kernel_categories);
    label categories are named as the export writes them (EXPORTED_AS)."""
    predicted: dict[str, tuple[int, float]] = {}
    for row in rows:
        if row.name in categories or row.ms > 0:
            key = categories.get(row.name, row.kind)
            count, total = predicted.get(key, (0, 0.0))
            predicted[key] = (count + 1, total + row.ms)
    labelled: dict[str, tuple[int, float]] = {}
    for category, (count, total) in label.per_category().items():
        if category not in ("free", "view", "python"):
            key = EXPORTED_AS.get(category, category)
            labelled[key] = (labelled.get(key, (0, 0.0))[0] + count, labelled.get(key, (0, 0.0))[1] + total)
    keys = sorted(set(labelled) | set(predicted), key=lambda k: -max(labelled.get(k, (0, 0.0))[1],
                                                                     predicted.get(k, (0, 0.0))[1]))
    return [KindRow(k, *labelled.get(k, (0, 0)), *predicted.get(k, (0, 0))) for k in keys]


@dataclass(frozen=True)
class LabelResult:
    """One model's prediction next to its recorded label."""

    model: str
    label: Label
    predicted_ms: float
    fitted_share: float
    kinds: list[KindRow]

    @property
    def error(self) -> float:
        """Signed relative error of the prediction (0.05 = 5 % over the label)."""
        return self.predicted_ms / self.label.fw_ms - 1.0

    def to_dict(self) -> dict:
        return {"model": self.model, "label": str(self.label.path), "gpu": self.label.gpu, "batch": self.label.batch,
                "seqlen": self.label.seqlen, "label_ms": self.label.fw_ms, "predicted_ms": self.predicted_ms,
                "error": self.error, "fitted_share": self.fitted_share,
                "kinds": [asdict(k) for k in self.kinds]}


def compare_with_label(model: str | Path, label: Label, pack: Pack, fusion: bool = True) -> LabelResult:
    """Predict `model` at the label's batch with `pack` and set it beside the label."""
    graph = load_graph(model, batch=label.batch)
    data = [t for t in graph.inputs if t.shape is not None and len(t.shape) == 2]
    if not data or tuple(data[0].shape) != (label.batch, label.seqlen):
        shapes = ", ".join(f"{t.name} {t.shape}" for t in graph.inputs)
        raise NpowerError(f"{model}: inputs ({shapes}) do not match the label's (batch, seqlen) = "
                          f"({label.batch}, {label.seqlen})")
    rows = predict(graph, pack, fusion=fusion)
    total = sum(row.ms for row in rows)
    fitted = sum(row.ms for row in rows if row.source == "fitted")
    categories = kernel_categories(graph, pack.runtime.rules.kernels(graph) if fusion else {})
    return LabelResult(Path(model).name, label, total, fitted / total if total else 0.0,
                       breakdown(label, rows, categories))


def format_breakdown(result: LabelResult) -> str:
    """The per-category table, with the label's Python-op overhead on its own line."""
    label = result.label
    python_count, python_ms = label.per_category().get("python", (0, 0.0))
    lines = [f"  {'kernel kind':14s} {'label n':>8s} {'label ms':>10s} {'npower n':>8s} {'npower ms':>10s} {'error':>8s}"]
    for k in result.kinds:
        error = f"{(k.predicted_ms - k.label_ms) / k.label_ms:+8.1%}" if k.label_ms else "       -"
        lines.append(f"  {k.category:14s} {k.label_count:8d} {k.label_ms:10.2f} {k.predicted_count:8d} "
                     f"{k.predicted_ms:10.2f} {error}")
    kernel_ms = sum(k.label_ms for k in result.kinds)
    lines.append(f"  label per-node kernel sum {kernel_ms:.2f} ms vs fw_latency {label.fw_ms:.2f} ms "
                 f"({kernel_ms / label.fw_ms - 1:+.1%}); {python_count} Python scalar-op rows ({python_ms:.2f} ms) "
                 "launch no kernel and are left out")
    return "\n".join(lines)


def cmd_validate_label(args: argparse.Namespace) -> int:
    """`npower validate MODEL --gpu PACK --label LABEL.json`: compare with a recorded label, measure nothing."""
    if len(args.models) != 1 or args.models[0].startswith("zoo:"):
        raise NpowerError("--label compares one ONNX file with one recorded label: give exactly one model file")
    label = read_label(args.label)
    if args.batch is not None and args.batch != label.batch:
        raise NpowerError(f"--batch {args.batch} differs from the label's batch {label.batch}")
    pack = find_pack(args.gpu, args.profiles)
    result = compare_with_label(args.models[0], label, pack, fusion=not args.no_fusion)
    if args.format == "json":
        text = json.dumps({"schema_version": 1, "pack": pack.name, "results": [result.to_dict()]}, indent=2)
    else:
        text = (f"{'model':16s} {'gpu':24s} {'batch':>5s} {'label ms':>10s} {'npower ms':>10s} {'error':>7s} "
                f"{'fitted':>7s}\n{result.model:16s} {label.gpu:24s} {label.batch:5d} {label.fw_ms:10.2f} "
                f"{result.predicted_ms:10.2f} {result.error:+7.1%} {result.fitted_share:7.1%}")
        if args.layers:
            text += "\nper kernel kind, label (per-node trace x layers) vs npower:\n" + format_breakdown(result)
    if args.output:
        Path(args.output).write_text(text + "\n")
    print(text)
    return 0
