"""Fuzz harness: hostile inputs must give exit 0, or one line `npower: error: ...` and exit 2.

Four families of generated cases, each run as an `npower` command line:
  onnx      mutated ONNX models (types, dims, empty inputs, attributes, bytes)  -> analyze --format json
  cli       mutated command lines (bad types, huge numbers, odd paths)          -> analyze/packs/convert/...
  pack      mutated pack YAML (numbers, types, alias bombs, deep nesting, FIFOs) -> analyze / packs --profiles
  prototxt  mutated Caffe prototxt (fields, types, ranges, nesting, escapes)     -> analyze / convert

A failure is a traceback, a crash (signal), a hang (--timeout), a memory blow-up (cases run under
an address-space cap of --mem-mb), a multi-line error or usage dump, a Python warning on stderr,
a non-finite or negative number in the JSON report, or an exit code other than 0 and 2.

Cases run in-process in a worker subprocess (many cases per worker, fast); the parent only
isolates crashes and hangs, restarting the worker when one dies. Case i of a family under seed S
is generated from its own RNG, so any case is reproducible alone:
  python benchmarks/fuzz.py --cases 400 --seed 1
  python benchmarks/fuzz.py --family prototxt --only 123 --seed 1   # one case: its recipe, files and output
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import math
import os
import random
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
PACK_NAME = "amd-epyc-cpu-ort1.32-fp32-extended"
FAMILIES = ("onnx", "cli", "pack", "prototxt")
WEIRD_INTS = [0, -1, -7, 1, 2, 3, 7, 2**31 - 1, 2**31, 2**32, 2**40, 2**62, 2**63 - 1, 10**6, 65537]
WEIRD_TEXT = ["1e3", "10**30", "-1", "0", "1" * 40, "nan", "inf", "", " 1", "0x10", "1_000", str(2**63),
              "1.5", "abc", "--", "-", "=", "x", "1x", "1e400", "\x00", "é", "9" * 400]


# ---------------------------------------------------------------- base inputs (built once per worker)

def _tiny_models() -> dict[str, Any]:
    """Small ONNX models that exercise many extractors and fusion rules."""
    import onnx
    from onnx import TensorProto, helper
    f = TensorProto.FLOAT

    def shape_only(name: str, dims: list[int]) -> TensorProto:
        return TensorProto(name=name, data_type=f, dims=dims)

    def model(nodes, inputs, inits, name: str) -> onnx.ModelProto:
        graph = helper.make_graph(nodes, name, inputs, [helper.make_tensor_value_info(nodes[-1].output[0], f, None)],
                                  inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)

    cnn = model([
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "s", "bb", "m", "v"], ["bn"], name="bn1"),
        helper.make_node("Relu", ["bn"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], name="dw", group=8, kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c2"], ["sg"], name="sig"),
        helper.make_node("Mul", ["c2", "sg"], ["sw"], name="swish"),
        helper.make_node("Concat", ["sw", "p1"], ["cat"], name="cat", axis=1),
        helper.make_node("GlobalAveragePool", ["cat"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["fl"], name="flat"),
        helper.make_node("Gemm", ["fl", "wf", "bf"], ["g"], name="fc", transB=1),
        helper.make_node("Softmax", ["g"], ["y"], name="softmax"),
    ], [helper.make_tensor_value_info("x", f, ["N", 3, 16, 16])],
        [shape_only("w1", [8, 3, 3, 3]), shape_only("b1", [8]), shape_only("s", [8]), shape_only("bb", [8]),
         shape_only("m", [8]), shape_only("v", [8]), shape_only("w2", [8, 1, 3, 3]), shape_only("wf", [10, 16]),
         shape_only("bf", [10])], "cnn")
    block = model([
        helper.make_node("MatMul", ["t", "wq"], ["q"], name="proj"),
        helper.make_node("Add", ["q", "bq"], ["qb"], name="bias"),
        helper.make_node("Transpose", ["qb"], ["qt"], name="tr", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["qb", "qt"], ["att"], name="scores"),
        helper.make_node("Softmax", ["att"], ["sm"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["sm", "qb"], ["o"], name="context"),
        helper.make_node("Add", ["o", "t"], ["res"], name="residual"),
        helper.make_node("LayerNormalization", ["res", "ln_s", "ln_b"], ["ln"], name="ln", axis=-1),
        helper.make_node("Resize", ["ln", "", "scales"], ["up"], name="resize", mode="nearest"),
        helper.make_node("ReduceMean", ["up"], ["y"], name="mean", keepdims=1),
    ], [helper.make_tensor_value_info("t", f, ["N", 8, 32])],
        [shape_only("wq", [32, 32]), shape_only("bq", [32]), shape_only("ln_s", [32]), shape_only("ln_b", [32]),
         helper.make_tensor("scales", f, [3], [1.0, 2.0, 1.0])], "block")
    return {"cnn": cnn, "block": block}


PROTOTXT_BASES = {
    "current": """name: "fuzznet"
input: "data"
input_shape { dim: 1 dim: 3 dim: 32 dim: 32 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 stride: 1 } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" batch_norm_param { eps: 0.001 } }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" relu_param { negative_slope: 0.1 } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "norm1" type: "LRN" bottom: "pool1" top: "norm1" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "split" type: "Split" bottom: "norm1" top: "a" top: "b" }
layer { name: "conv2" type: "Convolution" bottom: "a" top: "conv2"
  convolution_param { num_output: 8 kernel_h: 3 kernel_w: 1 pad_h: 1 pad_w: 0 group: 2 dilation: 1 } }
layer { name: "sum" type: "Eltwise" bottom: "conv2" bottom: "b" top: "sum" eltwise_param { operation: SUM coeff: 1 coeff: 0.5 } }
layer { name: "cat" type: "Concat" bottom: "sum" bottom: "b" top: "cat" concat_param { axis: 1 } }
layer { name: "slice" type: "Slice" bottom: "cat" top: "s1" top: "s2" slice_param { axis: 1 slice_point: 4 } }
layer { name: "prelu" type: "PReLU" bottom: "s2" top: "s2p" }
layer { name: "up" type: "Deconvolution" bottom: "s2p" top: "up" convolution_param { num_output: 4 kernel_size: 2 stride: 2 } }
layer { name: "crop" type: "Crop" bottom: "up" bottom: "data" top: "crop" crop_param { axis: 2 offset: 0 } }
layer { name: "pow" type: "Power" bottom: "crop" top: "pow" power_param { power: 2 scale: 0.5 shift: 1 } }
layer { name: "pool2" type: "Pooling" bottom: "pow" top: "pool2" pooling_param { pool: AVE global_pooling: true } }
layer { name: "flat" type: "Flatten" bottom: "pool2" top: "flat" flatten_param { axis: 1 } }
layer { name: "fc" type: "InnerProduct" bottom: "flat" top: "fc" inner_product_param { num_output: 10 } }
layer { name: "drop" type: "Dropout" bottom: "fc" top: "fc" dropout_param { dropout_ratio: 0.5 } }
layer { name: "resh" type: "Reshape" bottom: "fc" top: "resh" reshape_param { shape { dim: 0 dim: -1 } } }
layer { name: "elu" type: "ELU" bottom: "resh" top: "elu" elu_param { alpha: 1.0 } }
layer { name: "prob" type: "Softmax" bottom: "elu" top: "prob" softmax_param { axis: 1 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" include { phase: TRAIN } }
""",
    "v1": """name: "fuzzv1"
input: "data"
input_dim: 2
input_dim: 1
input_dim: 28
input_dim: 28
layers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"
  convolution_param { num_output: 6 kernel_size: 5 stride: 1 } }
layers { name: "pool1" type: POOLING bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layers { name: "relu1" type: RELU bottom: "pool1" top: "pool1" }
layers { name: "ip1" type: INNER_PRODUCT bottom: "pool1" top: "ip1" inner_product_param { num_output: 20 } }
layers { name: "sig" type: SIGMOID bottom: "ip1" top: "sig" }
layers { name: "tanh" type: TANH bottom: "sig" top: "tanh" }
layers { name: "prob" type: SOFTMAX bottom: "tanh" top: "prob" }
""",
    "input_layer": """name: "inputlayer"
layer { name: "data" type: "Input" top: "data" input_param { shape: { dim: 1 dim: 4 dim: 12 dim: 12 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 3 bias_term: false } }
layer { name: "bnll" type: "BNLL" bottom: "conv" top: "bnll" }
layer { name: "abs" type: "AbsVal" bottom: "bnll" top: "abs" }
layer { name: "max" type: "Eltwise" bottom: "abs" bottom: "conv" top: "max" eltwise_param { operation: MAX } }
layer { name: "prod" type: "Eltwise" bottom: "max" bottom: "conv" top: "prod" eltwise_param { operation: PROD } }
layer { name: "pool" type: "Pooling" bottom: "prod" top: "pool" pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip" inner_product_param { num_output: 3 axis: 1 } }
""",
}


@dataclass
class Bases:
    """Inputs the mutators start from, built once per worker."""

    models: dict[str, Any]
    model_bytes: dict[str, bytes]
    pack: dict[str, Any]
    op_types: list[str] = field(default_factory=list)

    @classmethod
    def build(cls) -> "Bases":
        import yaml
        from npower import zoo
        models = _tiny_models()
        models["squeezenet"] = zoo.build("squeezenet", weights=False, symbolic_batch=True)
        with open(REPO / "gpu_profiles" / f"{PACK_NAME}.yaml") as handle:
            pack = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        pack["provenance"] = {"samples_total": pack["provenance"].get("samples_total"),
                              "validation": {"mean_runtime_accuracy": 0.8}}
        for entry in pack["models"].values():  # fit reports are half the file and never read by analyze
            entry["runtime"].pop("fit", None)
        for kind in ("conv", "relu", "gemm", "softmax"):  # power models, so power and energy paths run too
            pack["models"][kind]["power"] = {"target": "linear", "unit": "W", "intercept": 40.0,
                                             "terms": [{"coef": 1e-9, "powers": {"macs": 1}}]}
        op_types = sorted({n.op_type for m in models.values() for n in m.graph.node} |
                          {"LRN", "ConvTranspose", "AveragePool", "Pad", "Split", "Slice", "Gelu", "Erf", "Where",
                           "If", "Loop", "FusedConv", "QuickGelu", "SkipLayerNormalization", "Unknown", ""})
        return cls(models, {k: m.SerializeToString() for k, m in models.items()}, pack, op_types)


# ---------------------------------------------------------------- case generators

@dataclass
class Case:
    argv: list[str]
    recipe: str  # "mutation-name detail; ..." (the first word of each step names the mutation)


def _mutation_count(rng: random.Random) -> int:
    """Mostly one mutation, so that many cases get past validation into the deeper code."""
    return rng.choices([1, 2, 3], weights=[6, 3, 1])[0]


def _weird_int(rng: random.Random) -> int:
    return rng.choice(WEIRD_INTS) if rng.random() < 0.8 else rng.randint(-2**40, 2**40)


def _weird_number(rng: random.Random) -> Any:
    return rng.choice([10**43, 10**400, 1e308, 5e-324, -5e-324, float("nan"), float("inf"), float("-inf"), -1, 0,
                       -0.0, 1e-300, 2**64, True, "1e3", None, [], {}, "nan", 1e43, -1e43])


def _analyze_argv(rng: random.Random, model: str, gpu: str = PACK_NAME) -> list[str]:
    argv = ["analyze", model, "--gpu", gpu, "--format", rng.choice(["json"] * 4 + ["table", "csv", "html"])]
    if rng.random() < 0.25:
        argv.append("--no-fusion")
    batch = rng.random()
    if batch < 0.6:
        argv += ["--batch", str(rng.choice([1, 2, 3, 16]))]
    elif batch < 0.7:
        argv += ["--batch", str(rng.choice([0, -1, 2**31, 2**40, 10**30, 65536]))]
    return argv


def _onnx_mutation(rng: random.Random, model, bases: Bases) -> str:
    import onnx
    graph = model.graph
    choice = rng.randrange(13)
    values = list(graph.input) + list(graph.output) + list(graph.value_info)
    nodes = list(graph.node)
    node = rng.choice(nodes) if nodes else None
    if choice == 0 and values:
        vi, elem = rng.choice(values), rng.choice([-5, 0, 17, 18, 25, 40, 999, 2**31 - 1, 7, 10, 16])
        vi.type.tensor_type.elem_type = elem
        return f"elem_type {vi.name}={elem}"
    if choice == 1 and graph.input:
        vi = rng.choice(list(graph.input))
        dims = vi.type.tensor_type.shape.dim
        if not dims:
            return "dim none"
        dim = rng.choice(list(dims))
        if rng.random() < 0.2:
            dim.dim_param = rng.choice(["", "N", "batch size", "\u00e9"])
            return f"dim_param {vi.name}"
        value = rng.choice([0, -1, 2**31, 2**40, 2**62, 2**63 - 1, 1, 10**6, 7])
        dim.dim_value = value
        return f"dim {vi.name}={value}"
    if choice == 2 and node is not None and node.input:
        index = rng.randrange(len(node.input))
        node.input[index] = ""
        return f"empty-input {node.op_type}[{index}]"
    if choice == 3 and node is not None:
        graph.node.remove(node)
        return f"remove-node {node.op_type}"
    if choice == 4 and node is not None and node.attribute:
        attr = rng.choice(list(node.attribute))
        if attr.type == onnx.AttributeProto.INTS:
            attr.ints[:] = [_weird_int(rng) for _ in range(rng.choice([len(attr.ints), 1, 3, 0]))]
        elif attr.type == onnx.AttributeProto.INT:
            attr.i = _weird_int(rng)
        elif attr.type == onnx.AttributeProto.FLOAT:
            attr.f = rng.choice([float("nan"), float("inf"), -1e38, 0.0])
        else:
            attr.type = rng.choice([0, 1, 2, 7, 5])
        return f"attr {node.op_type}.{attr.name}"
    if choice == 5 and node is not None:
        name = rng.choice(["kernel_shape", "strides", "pads", "dilations", "group", "axis", "perm", "output_padding",
                           "auto_pad", "transA", "transB", "size", "epsilon"])
        if name == "auto_pad":
            node.attribute.append(onnx.helper.make_attribute(name, rng.choice(["SAME_UPPER", "VALID", "x"])))
        else:
            many = rng.random() < 0.6
            value = [_weird_int(rng) for _ in range(rng.randint(0, 6))] if many else _weird_int(rng)
            node.attribute.append(onnx.helper.make_attribute(
                name, value, attr_type=onnx.AttributeProto.INTS if many else onnx.AttributeProto.INT))
        return f"add-attr {node.op_type}.{name}"
    if choice == 6 and node is not None:
        new = rng.choice(bases.op_types)
        old, node.op_type = node.op_type, new
        return f"op-type {old}->{new}"
    if choice == 7 and graph.initializer:
        init = rng.choice(list(graph.initializer))
        init.ClearField("raw_data")
        init.ClearField("float_data")
        init.dims[:] = [rng.choice([0, 1, 3, 2**20, 2**40, 2**62, -1]) for _ in range(rng.randint(0, 5))]
        return f"init-dims {init.name}"
    if choice == 8 and node is not None:
        node.input.append(rng.choice(["", "x", "t", "nonexistent", node.output[0] if node.output else "y"]))
        return f"extra-input {node.op_type}"
    if choice == 9 and node is not None and node.output:
        other = rng.choice(nodes)
        other.output[0] = node.output[0]
        return f"duplicate-output {node.op_type}"
    if choice == 10 and node is not None:
        node.domain = rng.choice(["com.microsoft", "ai.onnx.ml", "bogus", "ai.onnx"])
        return f"domain {node.op_type}->{node.domain}"
    if choice == 11:
        version = rng.choice([0, 1, 6, 9, 13, 21, 999, -1, 2**40])
        model.opset_import[0].version = version
        return f"opset {version}"
    if choice == 12:
        graph.value_info.append(onnx.helper.make_tensor_value_info(
            rng.choice([n.output[0] for n in nodes if n.output] or ["y"]), rng.choice([1, 7, -5]),
            [rng.choice([1, 0, -3, 2**40, None, "s"]) for _ in range(rng.randint(0, 5))]))
        return "value-info"
    return "noop"


def gen_onnx(rng: random.Random, work: Path, bases: Bases) -> Case:
    import onnx
    base = rng.choice(sorted(bases.models))
    model = onnx.ModelProto()
    model.CopyFrom(bases.models[base])
    steps = [_onnx_mutation(rng, model, bases) for _ in range(_mutation_count(rng))]
    data = model.SerializeToString()
    if rng.random() < 0.15:
        data = bytearray(data)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        data = bytes(data[:rng.randint(len(data) // 2, len(data))] if rng.random() < 0.5 else data)
        steps.append("bytes")
    path = work / "model.onnx"
    path.write_bytes(data)
    argv = _analyze_argv(rng, str(path))
    if rng.random() < 0.2 and rng.random() < 0.5:
        argv += ["--input-shape", f"{rng.choice(['x', 't', 'input'])}={rng.choice(['1x3x16x16', '1x8x32', '0x3', '1x3x99999999999x99999999999', '2**40'])}"]
    return Case(argv, f"{base}: " + "; ".join(steps))


def gen_cli(rng: random.Random, work: Path, bases: Bases) -> Case:
    model = work / "cnn.onnx"
    model.write_bytes(bases.model_bytes["cnn"])
    proto = work / "net.prototxt"
    proto.write_text(PROTOTXT_BASES["v1"])
    junk = work / "junk.onnx"
    junk.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randint(0, 64))))
    models = [str(model), str(proto), str(junk), str(work), str(work / "missing.onnx"), "/dev/null", "", "-",
              str(work / "x.weird"), "zoo:resnet50", str(model) + "/"]
    gpus = [PACK_NAME, "amd", "", "/", str(work), "/dev/null", "/dev/zero", "missing", "a", str(model),
            str(work / "p.yaml"), "../x.yml", PACK_NAME + ".yaml"]
    shapes = ["x=1x3x16x16", "x=1x3x16", "x=", "=1", "x=0x3x16x16", "x=-1x3", "x=1e3x3x16x16", "y=1x3x16x16",
              f"x={2**31}x3x16x16", f"x=1x3x{2**40}x{2**40}", "x=" + "x".join(["1"] * 40), "x=1x3x16x16x", "x"]
    command = rng.choice(["analyze"] * 6 + ["packs", "convert", "zoo", "frontends", "profile", "fit", "validate",
                                            "bogus", ""])
    argv: list[str] = [] if not command else [command]
    if command == "analyze":
        argv += [rng.choice(models), "--gpu", rng.choice(gpus)]
        options = {"--batch": lambda: rng.choice(WEIRD_TEXT + ["1", "2", "8"]),
                   "--input-shape": lambda: rng.choice(shapes),
                   "--format": lambda: rng.choice(["json", "table", "csv", "html", "xml", ""]),
                   "--top": lambda: rng.choice(WEIRD_TEXT + ["3"]),
                   "-o": lambda: rng.choice([str(work / "r.json"), str(work), "/dev/full", str(work / "no/such/r.csv"),
                                             str(work / "r.html"), ""]),
                   "--profiles": lambda: rng.choice([str(work), "/nonexistent", "/dev/null", ""]),
                   "--frontend": lambda: rng.choice(["caffe", "bogus", "onnx", ""])}
        for option in rng.sample(sorted(options), rng.randint(0, 4)):
            argv += [option, options[option]()]
        if rng.random() < 0.2:
            argv.append("--no-fusion")
    elif command == "packs":
        argv += ["--profiles", rng.choice([str(work), "/nonexistent", "/dev/null", "", "/dev"])] if rng.random() < 0.7 else []
    elif command == "convert":
        argv += [rng.choice([str(proto), str(junk), str(work / "missing.prototxt")]), "-o",
                 rng.choice([str(work / "out.onnx"), str(work), "/dev/full"])]
        for option, values in (("--batch", WEIRD_TEXT + ["2"]), ("--weights", ["none", "random", "bogus"]),
                               ("--input-shape", ["data=1x1x28x28", "data=1x1x9999x9999", "data=0x1"])):
            if rng.random() < 0.4:
                argv += [option, rng.choice(values)]
    elif command == "zoo":  # listing only, and bad values (never a real export: it writes big files)
        argv += rng.choice([[], ["bogus"], ["--batch", rng.choice(WEIRD_TEXT)]])
    elif command in ("profile", "fit", "validate"):  # argument errors only: these commands measure for minutes
        bad = {"profile": ["-o", str(work / "s.jsonl"), rng.choice(["--threads", "--scale", "--seed", "--min-runs",
                                                                     "--max-macs"]), rng.choice(["x", "1e", "", "--"])],
               "fit": [str(junk), "-o", str(work / "p.yaml"), rng.choice(["--folds", "--max-degree", "--seed"]),
                       rng.choice(["x", "1.5", ""])],
               "validate": [str(model), "--gpu", PACK_NAME, rng.choice(["--bogus", "--runs"]), "x"]}
        argv += bad[command]
    if rng.random() < 0.15:
        argv.insert(rng.randint(0, len(argv)), rng.choice(["--bogus", "-x", "--debug=1", "--batch", "--gpu=", "-o"]))
    if rng.random() < 0.1 and argv:
        del argv[rng.randrange(len(argv))]
    return Case(argv, f"{command or 'none'}: {' '.join(a.replace(str(work), 'W') for a in argv)}"[:200])


def _paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(data, dict):
        for key, value in data.items():
            out += _paths(value, prefix + (key,))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            out += _paths(value, prefix + (index,))
    return out


def _pack_text_mutation(rng: random.Random, text: str) -> tuple[str | bytes, str]:
    choice = rng.randrange(8)
    if choice == 0:
        depth = rng.choice([10, 1000, 20000, 100000])
        return "[" * depth + "]" * depth, f"nested-list {depth}"
    if choice == 1:
        levels = rng.randint(3, 12)
        lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
        lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
        return "\n".join(lines) + "\n" + text, f"alias-bomb {levels}"
    if choice == 2:
        depth = rng.choice([100, 5000, 50000])
        return "x: " + "{a: " * depth + "1" + "}" * depth + "\n", f"nested-map {depth}"
    if choice == 3:
        return text[:rng.randrange(len(text))], "truncate"
    if choice == 4:
        data = bytearray(text.encode())
        for _ in range(rng.randint(1, 10)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data), "byte-flip"
    if choice == 5:
        return rng.choice(["!!python/object:os.system {}", "--- !!binary AAAA", "%YAML 9.9\n---\n1", "\t- x",
                           "models: &m {a: *m}", "? [a, b]\n: 1", "a: !!float nan"]) + "\n" + text, "tag"
    if choice == 6:
        return text + "\n" + text, "duplicate-document"
    return text * rng.choice([1, 50]), "repeat"


def gen_pack(rng: random.Random, work: Path, bases: Bases) -> Case:
    import yaml
    data = copy.deepcopy(bases.pack)
    steps = []
    for _ in range(_mutation_count(rng)):
        paths = _paths(data)
        path = rng.choice(paths)
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        action = rng.random()
        if action < 0.6:
            parent[path[-1]] = _weird_number(rng)
            steps.append(f"value {'.'.join(map(str, path))}={parent[path[-1]]!r}"[:120])
        elif action < 0.8:
            del parent[path[-1]]
            steps.append(f"delete {'.'.join(map(str, path))}")
        else:
            parent[path[-1]] = rng.choice(["text", [1, 2], {"a": 1}, None, 3])
            steps.append(f"type {'.'.join(map(str, path))}")
    if rng.random() < 0.3 and isinstance(data.get("device"), dict):
        key = rng.choice(["peak_gflops", "bandwidth_gbs"])
        data["device"][key] = _weird_number(rng)
        steps.append(f"device {key}={data['device'][key]!r}"[:80])
    if rng.random() < 0.3 and isinstance(data.get("models"), dict):  # kinds without a model: roofline fallback
        for kind in rng.sample(sorted(data["models"]), rng.randint(1, len(data["models"]))):
            del data["models"][kind]
        steps.append("drop-models")
    try:
        text: str | bytes = yaml.dump(data, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False)
    except (yaml.YAMLError, OverflowError, ValueError):
        text = "{}"
    if rng.random() < 0.25:
        text, step = _pack_text_mutation(rng, text)
        steps.append(step)
    folder = work / "packs"
    folder.mkdir()
    pack = folder / "fuzzpack.yaml"
    if isinstance(text, bytes):
        pack.write_bytes(text)
    else:
        pack.write_text(text)
    special = rng.random()
    if special < 0.06:
        os.mkfifo(folder / "fifo.yaml")
        steps.append("fifo")
    elif special < 0.09:
        (folder / "dir.yaml").mkdir()
        steps.append("folder")
    elif special < 0.12:
        os.symlink(folder / "loop.yaml", folder / "loop.yaml")
        steps.append("symlink-loop")
    model = work / "model.onnx"
    model.write_bytes(bases.model_bytes[rng.choice(["cnn", "block", "cnn"])])
    route = rng.random()
    if route < 0.25:
        argv = ["packs", "--profiles", str(folder)]
    elif route < 0.45:
        argv = _analyze_argv(rng, str(model), "fuzzpack") + ["--profiles", str(folder), "--batch", "2"]
    elif route < 0.5 and "fifo" in steps:
        argv = _analyze_argv(rng, str(model), str(folder / "fifo.yaml")) + ["--batch", "2"]
    else:
        argv = _analyze_argv(rng, str(model), str(pack)) + ["--batch", "2"]
    return Case(argv, "; ".join(steps))


_PROTO_VALUES = ["0", "-1", "99999999999999999999", "1099511627776", "4294967296", "2147483648", "1.5", "nan",
                 "inf", "-inf", "1e400", '"str"', "MAX", "{ }", "true", "AVE", "-0", "65536", "3", "1", "2", "1e-45"]
_PROTO_FIELDS = ["axis: 77", "axis: -9", "group: 0", "group: 3", "stride: 0", "pad: -3", "dilation: 0",
                 "kernel_size: 0", "kernel_size: 99999", "local_size: 0", "end_axis: 9", "slice_point: 100",
                 "slice_point: 0", "coeff: nan", "engine: CUDNN", "dim: -1", "dim: 0", "dim: 2147483647",
                 "num_output: 0", "num_output: 1e9", "num_output: 4294967295", "pool: STOCHASTIC",
                 "operation: 7", "offset: 99", "bias_term: 7", "shape { dim: 5 }", "shape: 5",
                 "channel_shared: true", "global_pooling: true", "norm_region: WITHIN_CHANNEL", "top: \"data\"",
                 "bottom: \"nowhere\"", "bottom: \"data\"", "stride_h: 0", "kernel_w: 0", "pad_h: 99999",
                 "negative_slope: inf", "eps: -1", "concat_dim: 3", "power: nan", "type: \"Python\""]
_LAYER_TYPES = ["Convolution", "Deconvolution", "Pooling", "InnerProduct", "ReLU", "PReLU", "LRN", "Concat",
                "Eltwise", "Flatten", "Reshape", "Slice", "Split", "Crop", "Power", "BatchNorm", "Scale", "Softmax",
                "Input", "DummyData", "ELU", "Sigmoid", "Dropout", "Python", "Data", "CONVOLUTION", "", "Bogus"]


def _prototxt_mutation(rng: random.Random, text: str) -> tuple[str, str]:
    import re
    choice = rng.randrange(12)
    numbers = list(re.finditer(r"(?<=: )-?[0-9][0-9.e+-]*", text))
    strings = list(re.finditer(r'"[^"\n]*"', text))
    lines = text.splitlines()
    if choice in (0, 1) and numbers:
        match = rng.choice(numbers)
        value = rng.choice(_PROTO_VALUES)
        return text[:match.start()] + value + text[match.end():], f"number {match.group()}->{value}"
    if choice == 2 and strings:
        match = rng.choice(strings)
        value = rng.choice(['"\\x"', '"\\', '"\\777"', '"\\u12"', "3", "{ }", '""', "MAX", '"\u00e9\\n"', '"a" "b"'])
        return text[:match.start()] + value + text[match.end():], f"string {match.group()}->{value}"
    if choice == 3:
        types = list(re.finditer(r'type: "?([A-Za-z_]*)"?', text))
        if types:
            match = rng.choice(types)
            value = rng.choice(_LAYER_TYPES)
            return text[:match.start()] + f'type: "{value}"' + text[match.end():], f"type {match.group(1)}->{value}"
    if choice == 4:
        braces = [m.end() for m in re.finditer(r"\{", text)]
        if braces:
            at = rng.choice(braces)
            extra = rng.choice(_PROTO_FIELDS)
            return text[:at] + f" {extra} " + text[at:], f"field {extra}"
    if choice == 5:
        field_names = list(re.finditer(r"\b([a-z_]+_param|shape|input_shape|convolution_param)\s*\{", text))
        if field_names:
            match = rng.choice(field_names)
            value = rng.choice(["5", '"x"', "MAX", "1.5"])
            # replace the message by a scalar, leaving its body as stray fields of the parent
            return text[:match.start()] + f"{match.group(1)}: {value} dummy {{" + text[match.end():], \
                f"message-to-scalar {match.group(1)}"
    if choice == 6 and lines:
        index = rng.randrange(len(lines))
        del lines[index]
        return "\n".join(lines), f"delete-line {index}"
    if choice == 7:
        depth = rng.choice([50, 1100, 5000, 50000])
        at = rng.choice([0, len(text)])
        return text[:at] + "deep " + "{ a " * depth + "}" * depth + " " + text[at:], f"nesting {depth}"
    if choice == 8:
        return text[:rng.randrange(len(text) + 1)], "truncate"
    if choice == 9:
        at = rng.randrange(len(text) + 1)
        return text[:at] + rng.choice(["{", "}", ":", "[", "]", "<", '"', "#", "\\", "\x00", "\u00e9"]) + text[at:], "insert-char"
    if choice == 10 and numbers:  # field -> empty message: `num_output { }`
        match = rng.choice(numbers)
        start = text.rfind(":", 0, match.start())
        return text[:start] + " { }" + text[match.end():], "number-to-message"
    if choice == 11:
        dims = list(re.finditer(r"(?:dim|input_dim): (\d+)", text))
        if dims:
            match = rng.choice(dims)
            value = rng.choice(["100000", "1000000", "65536", "4096", "2147483647"])
            return text[:match.start(1)] + value + text[match.end(1):], f"big-dim {value}"
    return text, "noop"


def gen_prototxt(rng: random.Random, work: Path, bases: Bases) -> Case:
    base = rng.choice(sorted(PROTOTXT_BASES))
    text, steps = PROTOTXT_BASES[base], []
    for _ in range(_mutation_count(rng)):
        text, step = _prototxt_mutation(rng, text)
        steps.append(step)
    path = work / "net.prototxt"
    if rng.random() < 0.02:
        os.mkfifo(path)
        steps.append("fifo")
    else:
        path.write_text(text, errors="surrogateescape")
    if rng.random() < 0.12:
        argv = ["convert", str(path), "-o", str(work / "out.onnx"), "--weights", rng.choice(["random", "none"])]
    else:
        argv = _analyze_argv(rng, str(path))
    return Case(argv, f"{base}: " + "; ".join(steps))


GENERATORS: dict[str, Callable[[random.Random, Path, Bases], Case]] = {
    "onnx": gen_onnx, "cli": gen_cli, "pack": gen_pack, "prototxt": gen_prototxt}


def make_case(family: str, index: int, seed: int, work: Path, bases: Bases) -> Case:
    return GENERATORS[family](random.Random(f"{seed}:{family}:{index}"), work, bases)


# ---------------------------------------------------------------- checking one case (in the worker)

def _bad_numbers(value: Any, path: str = "") -> str | None:
    """The path of the first non-finite or negative number in a JSON document."""
    if isinstance(value, dict):
        for key, item in value.items():
            found = _bad_numbers(item, f"{path}.{key}")
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _bad_numbers(item, f"{path}[{index}]")
            if found:
                return found
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value) or value < 0:
            return f"{path}={value}"
    return None


def _frame_signature(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/npower/" in f.filename or "/frontends/" in f.filename
            or "npower_frontends" in f.filename]
    where = ours[-1] if ours else (frames[-1] if frames else None)
    place = f"{Path(where.filename).parent.name}/{Path(where.filename).name}:{where.name}" if where else "?"
    deepest = f" <- {frames[-1].name}" if frames and where is not frames[-1] else ""
    return f"traceback {type(exc).__name__} in {place}{deepest}"


def check_case(argv: list[str]) -> tuple[str | None, str]:
    """Run `npower argv` in-process: (failure signature or None, captured output starting 'exit N')."""
    import warnings
    from npower.cli import main
    out, err = io.StringIO(), io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except MemoryError as exc:
            return f"memory {_frame_signature(exc)[10:]}", traceback.format_exc()
        except RecursionError as exc:
            return _frame_signature(exc), traceback.format_exc()
        except Exception as exc:  # noqa: BLE001 - a traceback is exactly what we look for
            return _frame_signature(exc), traceback.format_exc()
    stdout, stderr = out.getvalue(), err.getvalue()
    captured = f"exit {code}\n--- stdout\n{stdout[:3000]}\n--- stderr\n{stderr[:3000]}"
    lines = [line for line in stderr.splitlines() if line.strip()]
    if code not in (0, 2):
        return f"exit code {code}", captured
    if "Traceback" in stderr:
        return "traceback printed", captured
    if any("Warning" in line for line in lines):
        warning = next(line for line in lines if "Warning" in line)
        return f"warning {warning.split(':', 3)[-1].strip()[:60]}", captured
    if code == 2:
        if any(line.startswith("usage:") for line in lines):
            return "usage dump", captured
        if len(lines) != 1 or not lines[0].startswith("npower: error: "):
            return "error not one line", captured
    if code == 0 and "json" in argv and "-o" not in argv:
        try:
            document = json.loads(stdout, parse_constant=lambda name: float(name.replace("Infinity", "inf")))
        except ValueError:
            return "json unreadable", captured
        bad = _bad_numbers(document)
        if bad:
            return f"bad number in report ({'nan/inf' if 'n' in bad.split('=')[-1] else 'negative'})", captured
    return None, captured


def worker(mem_mb: int, root: str | None) -> None:
    """Read 'family index seed' lines; for each, print a start line and then a result line (JSON)."""
    import resource
    if mem_mb:
        limit = mem_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    sys.setrecursionlimit(3000)
    bases = Bases.build()
    real_stdout = sys.stdout
    for line in sys.stdin:
        family, index, seed = line.split()
        work = Path(tempfile.mkdtemp(prefix="case-", dir=root))
        try:
            case = make_case(family, int(index), int(seed), work, bases)
            print(json.dumps({"start": case.recipe}), file=real_stdout, flush=True)
            signature, captured = check_case(case.argv)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        accepted = captured.startswith("exit 0")
        print(json.dumps({"signature": signature, "accepted": accepted}), file=real_stdout, flush=True)


# ---------------------------------------------------------------- the parent: isolation and the table

class Worker:
    """A worker subprocess; restarted after a crash or a hang."""

    def __init__(self, mem_mb: int, root: str):
        self.mem_mb, self.root = mem_mb, root
        self.process: subprocess.Popen | None = None
        self.buffer = b""

    def start(self) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "ORT_DISABLE_TELEMETRY": "1"}
        self.process = subprocess.Popen([sys.executable, __file__, "--worker", "--mem-mb", str(self.mem_mb),
                                         "--tmp", self.root],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=REPO,
                                        start_new_session=True)
        self.buffer = b""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def _line(self, deadline: float) -> dict | None:
        selector = selectors.DefaultSelector()
        selector.register(self.process.stdout, selectors.EVENT_READ)
        try:
            while b"\n" not in self.buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    return None
                chunk = os.read(self.process.stdout.fileno(), 65536)
                if not chunk:
                    return None
                self.buffer += chunk
        finally:
            selector.close()
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def run(self, family: str, index: int, seed: int, timeout: float) -> tuple[str | None, str, bool]:
        """(failure signature or None, the case's recipe, whether npower accepted the input: exit 0)."""
        if self.process is None or self.process.poll() is not None:
            self.start()
        self.process.stdin.write(f"{family} {index} {seed}\n".encode())
        self.process.stdin.flush()
        start = self._line(time.monotonic() + 120)  # worker start-up and case generation
        if start is None:
            self.stop()
            return "harness: worker failed to start", "", False
        recipe = start["start"]
        result = self._line(time.monotonic() + timeout)
        if result is not None:
            return result["signature"], recipe, result["accepted"]
        code = self.process.poll()
        self.stop()
        mutation = recipe.split(": ", 1)[-1].split()[0] if recipe else "?"
        if code is None:
            return f"hang ({mutation})", recipe, False
        if code < 0:
            return f"crash {signal.Signals(-code).name} ({mutation})", recipe, False
        return f"worker exit {code} ({mutation})", recipe, False


@dataclass
class Tally:
    cases: int = 0
    failures: int = 0
    accepted: int = 0  # cases npower ran to a report (exit 0) rather than refused (exit 2)
    signatures: dict[str, tuple[int, str]] = field(default_factory=dict)


def run_fuzz(families: list[str], cases: int, seed: int, timeout: float = 20.0, mem_mb: int = 4096,
             progress: bool = False) -> dict[str, Tally]:
    """Run `cases` cases spread evenly over the families; returns per-family tallies."""
    tallies = {family: Tally() for family in families}
    schedule = [(families[i % len(families)], i // len(families)) for i in range(cases)]
    root = tempfile.mkdtemp(prefix="npfuzz-")
    runner = Worker(mem_mb, root)
    try:
        for done, (family, index) in enumerate(schedule, 1):
            signature, recipe, accepted = runner.run(family, index, seed, timeout)
            tally = tallies[family]
            tally.cases += 1
            tally.accepted += accepted
            if signature is not None:
                if progress:
                    print(f"  FAIL {family} #{index}: {signature} | {recipe[:120]}", file=sys.stderr, flush=True)
                tally.failures += 1
                count, example = tally.signatures.get(signature, (0, f"#{index}: {recipe}"))
                tally.signatures[signature] = (count + 1, example)
            if progress and done % 100 == 0:
                print(f"  {done}/{cases} cases, {sum(t.failures for t in tallies.values())} failures",
                      file=sys.stderr, flush=True)
    finally:
        runner.stop()
        shutil.rmtree(root, ignore_errors=True)
    return tallies


def print_table(tallies: dict[str, Tally], seconds: float) -> None:
    print(f"{'family':10s} {'cases':>7s} {'passes':>7s} {'failures':>9s} {'signatures':>11s} {'(exit 0)':>9s}")
    for family, tally in tallies.items():
        print(f"{family:10s} {tally.cases:7d} {tally.cases - tally.failures:7d} {tally.failures:9d} "
              f"{len(tally.signatures):11d} {tally.accepted:9d}")
    total = sum(t.cases for t in tallies.values())
    failures = sum(t.failures for t in tallies.values())
    distinct = len({s for t in tallies.values() for s in t.signatures})
    print(f"{'total':10s} {total:7d} {total - failures:7d} {failures:9d} {distinct:11d}   ({seconds:.0f} s)")
    for family, tally in tallies.items():
        for signature, (count, example) in sorted(tally.signatures.items(), key=lambda kv: -kv[1][0]):
            print(f"  [{family}] {count:4d} x {signature}\n         e.g. case {example[:160]}")


def show(family: str, index: int, seed: int) -> None:
    """Generate one case, print its recipe, command line and what npower printed."""
    bases = Bases.build()
    work = Path(tempfile.mkdtemp(prefix="npfuzz-show-"))
    case = make_case(family, index, seed, work, bases)
    print(f"recipe: {case.recipe}\nfiles in {work} (kept)\nnpower {' '.join(case.argv)}")
    signature, captured = check_case(case.argv)
    print(captured)
    print(f"verdict: {signature or 'pass'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=400, help="total cases, spread evenly over the families")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--family", action="append", choices=FAMILIES, help="restrict to these families")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds before a case counts as a hang")
    parser.add_argument("--mem-mb", type=int, default=4096, help="address-space cap of the worker process")
    parser.add_argument("--only", type=int, help="run one case (with --family) and show it")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.mem_mb, args.tmp)
        return 0
    families = args.family or list(FAMILIES)
    if args.only is not None:
        show(families[0], args.only, args.seed)
        return 0
    start = time.monotonic()
    tallies = run_fuzz(families, args.cases, args.seed, args.timeout, args.mem_mb, progress=True)
    print(f"npower fuzz: seed {args.seed}, {args.cases} cases, timeout {args.timeout:g} s, memory cap {args.mem_mb} MB")
    print_table(tallies, time.monotonic() - start)
    return 1 if any(t.failures for t in tallies.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
