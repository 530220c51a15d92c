"""NeuSight operator measurements (sitar-lab/NeuSight, MIT) -> npower samples for one GPU.

Each CSV row is one PyTorch 2.1 eager operator call on CUDA, fp32, latency in ms. It becomes the
sample the equivalent single ONNX node gives: the row's shapes go into a shapes-only one-node
graph and npower's own extractors compute its kind and features, so they are identical by
construction to what the analyzer extracts from a model. Rows that cannot be mapped are counted
by reason. Both layouts are read: the shared copy (`kernels/`, `devices/`, `_` in GPU names)
and the original repository (`scripts/asplos/data/dataset/`, spaces in GPU names).
"""
from __future__ import annotations

import csv
import datetime as dt
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import NpowerError
from ..registry import registrar

SOURCE = {"dataset": "NeuSight operator measurements (Lee et al., ASPLOS 2025), PyTorch 2.1.0, CUDA 12.1, "
                     "cuDNN 8.9.2, fp32, TF32 off, eager",
          "repository": "sitar-lab/NeuSight", "url": "https://github.com/sitar-lab/NeuSight", "commit": "6945927",
          "folder": "scripts/asplos/data", "licence": "MIT"}
RUNTIME = {"name": "torch", "version": "2.1.0", "device": "cuda", "graph_optimization": "eager", "precision": "fp32"}
# Folders holding the operator files (train/ and test/) and the device files, per known layout.
KERNEL_DIRS = ("kernels", "dataset", "data/dataset", "scripts/asplos/data/dataset", "asplos/data/dataset")
DEVICE_DIRS = ("devices", "device_configs", "data/device_configs", "scripts/asplos/data/device_configs",
               "asplos/data/device_configs")

Config = dict[str, Any]
RowMapper = Callable[[dict[str, str]], Config]
MAPPERS: dict[str, RowMapper] = {}


_mapper = registrar(MAPPERS)  # @_mapper("linear"): the row mapper of that NeuSight op


def _dims(row: dict[str, str], *columns: str, minimum: int = 1) -> list[int]:
    """Integer shape columns (>= minimum); ValueError names the bad one."""
    values = []
    for column in columns:
        text = (row.get(column) or "").strip()
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"column {column} missing or not a number") from None
        if not value.is_integer() or value < minimum:
            raise ValueError(f"column {column} is not an integer >= {minimum}")
        values.append(int(value))
    return values


def _tensor(shape: list[int], weight: bool = False) -> dict[str, Any]:
    return {"shape": shape, "weight": weight}


@_mapper("linear")
def _linear(row: dict[str, str]) -> Config:
    """nn.Linear(N, K) on (B, M, N): one GEMM of (B*M, N) by the (K, N) weight plus bias (N reduced)."""
    b, m, n, k = _dims(row, "B", "M", "N", "K")
    return {"op": "Gemm", "attrs": {"transB": 1},
            "inputs": [_tensor([b * m, n]), _tensor([k, n], True), _tensor([k], True)]}


@_mapper("bmm")
def _bmm(row: dict[str, str]) -> Config:
    """torch.bmm of (B, M, N) and (B, N, K): N reduced."""
    b, m, n, k = _dims(row, "B", "M", "N", "K")
    return {"op": "MatMul", "inputs": [_tensor([b, m, n]), _tensor([b, n, k])]}


@_mapper("conv")
def _conv(row: dict[str, str]) -> Config:
    """nn.Conv2d(Cin, Cout, k, stride, padding, bias=False) on (B, Cin, S, S)."""
    b, cin, cout, k, size, stride = _dims(row, "B", "Input_Channel", "Output_Channel", "Kernel_Szie", "Input_Size",
                                          "Stride")
    pad = _dims(row, "Padding", minimum=0)[0]
    if (size + 2 * pad - k) // stride + 1 <= 0:
        raise ValueError("kernel larger than the padded input")
    return {"op": "Conv", "attrs": {"kernel_shape": [k, k], "strides": [stride, stride], "pads": [pad] * 4},
            "inputs": [_tensor([b, cin, size, size]), _tensor([cout, cin, k, k], True)]}


@_mapper("ln")
def _layernorm(row: dict[str, str]) -> Config:
    """nn.LayerNorm(H) (affine) over a (B, H) tensor."""
    b, h = _dims(row, "B", "H")
    return {"op": "LayerNormalization", "attrs": {"axis": -1, "epsilon": 1e-5},
            "inputs": [_tensor([b, h]), _tensor([h], True), _tensor([h], True)]}


@_mapper("softmax")
def _softmax(row: dict[str, str]) -> Config:
    b, h = _dims(row, "B", "H")
    return {"op": "Softmax", "attrs": {"axis": -1}, "inputs": [_tensor([b, h])]}


def _binary(op: str, scalar: bool) -> RowMapper:
    """Two (B, H) tensors, or a (B, H) tensor and a Python scalar (a constant in the ONNX graph)."""
    def mapper(row: dict[str, str]) -> Config:
        b, h = _dims(row, "B", "H")
        return {"op": op, "inputs": [_tensor([b, h]), _tensor([], True) if scalar else _tensor([b, h])]}
    return mapper


def _unary(op: str, domain: str = "") -> RowMapper:
    def mapper(row: dict[str, str]) -> Config:
        b, h = _dims(row, "B", "H")
        config: Config = {"op": op, "inputs": [_tensor([b, h])]}
        if domain:  # contrib op: ONNX shape inference does not know it, so the output shape is given
            config.update(domain=domain, out_shape=[b, h])
        return config
    return mapper


for _name, _op in (("add", "Add"), ("mul", "Mul"), ("div", "Div"), ("pow", "Pow")):
    MAPPERS[_name] = _binary(_op, scalar=False)
    MAPPERS[_name + "u"] = _binary(_op, scalar=True)
MAPPERS["relu"] = _unary("Relu")
MAPPERS["tanh"] = _unary("Tanh")
MAPPERS["gelu"] = _unary("Gelu", "com.microsoft")  # nn.GELU: one kernel; torch-eager rules fuse the Erf chain to Gelu


def config_layer(config: Config) -> tuple[str, dict[str, float], dict[str, float]]:
    """Kind, features and special terms of a config, by npower's extractors on a shapes-only graph."""
    from ..features import extract
    from ..profile.build import configured_node
    layer = extract(configured_node(config))
    return layer.kind, layer.features, layer.specials


@dataclass(frozen=True)
class Layout:
    """Where one copy of the data keeps its operator files and device descriptions."""

    root: Path
    kernels: Path
    devices: Path

    def operator_files(self) -> Iterator[Path]:
        """train/<op>/<GPU>.csv and test/*.csv, in a stable order."""
        yield from sorted((self.kernels / "train").glob("*/*.csv"))
        yield from sorted((self.kernels / "test").glob("*.csv"))


def resolve_layout(root: str | Path) -> Layout:
    """Find the operator and device folders under root, in either known layout."""
    base = Path(root)
    if not base.is_dir():
        raise NpowerError(f"{base}: no such folder (expected the NeuSight data: ../shared/data/neusight or a "
                          "clone of sitar-lab/NeuSight)")
    kernels = next((base / d for d in KERNEL_DIRS if (base / d / "train").is_dir() or (base / d / "test").is_dir()),
                   None)
    devices = next((base / d for d in DEVICE_DIRS if (base / d).is_dir() and any((base / d).glob("*.json"))), None)
    if kernels is None or devices is None:
        missing = "operator files (train/, test/)" if kernels is None else "device files (*.json)"
        tried = ", ".join(KERNEL_DIRS if kernels is None else DEVICE_DIRS)
        raise NpowerError(f"{base}: no NeuSight {missing} found (looked in: {tried})")
    return Layout(base, kernels, devices)


def _norm(name: str) -> str:
    return name.strip().replace(" ", "_").lower()


def find_device(layout: Layout, name: str) -> dict[str, Any]:
    """The device file matching `name`: its full name (spaces or `_`), or a unique case-insensitive part of it."""
    files = {path: json.loads(path.read_text()) for path in sorted(layout.devices.glob("*.json"))}
    wanted = _norm(name)
    # a file name beats a Device field: two files (H100 and its TP variant) share one Device name
    exact = [d for p, d in files.items() if _norm(p.stem) == wanted] or \
            [d for p, d in files.items() if _norm(str(d.get("Device", ""))) == wanted]
    # a part of a name picks among files named after their device (not `..._TP.json`, a tensor-parallel pair)
    matches = exact or [d for p, d in files.items() if wanted in _norm(str(d.get("Device", "")))
                        and _norm(p.stem) == _norm(str(d.get("Device", "")))]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(sorted(str(d.get("Device")) for d in files.values()))
    if matches:
        raise NpowerError(f"--gpu '{name}' matches several NeuSight devices: "
                          f"{', '.join(sorted(str(d.get('Device')) for d in matches))}")
    raise NpowerError(f"--gpu '{name}': no NeuSight device of that name (known: {known})")


def device_block(info: dict[str, Any]) -> dict[str, Any]:
    """A pack's device block from a NeuSight device description."""
    try:
        return {"name": str(info["Device"]), "kind": "gpu", "vendor": str(info["Device"]).split()[0],
                "memory_gb": float(info["Dev_Mem"]), "bandwidth_gbs": float(info["Mem_Bw"]),
                "sms": int(info["Num_Sm"]), "cores_per_sm": int(info["Core_Per_SM"]),
                "clock_mhz": float(info["Freq"]), "peak_gflops": float(info["SingleFLOPs"]),
                "l2_mb": float(info["L2Cache"]),
                "source": f"NeuSight devices/{info['Device']}.json (vendor figures, not measured here)"}
    except (KeyError, TypeError, ValueError) as exc:
        raise NpowerError(f"NeuSight device description {info.get('Device', '?')}: missing or bad field {exc}") \
            from None


@dataclass
class ImportResult:
    """Samples of one GPU, and an account of every row read."""

    header: dict[str, Any]
    samples: list[dict[str, Any]] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)     # reason -> rows
    duplicates: int = 0                                   # identical shape and latency seen in another file
    files: dict[str, int] = field(default_factory=dict)   # file -> rows of this GPU imported

    def summary(self) -> str:
        kinds = Counter(row["kind"] for row in self.samples)
        lines = [f"{self.header['device']['name']}: {len(self.samples)} samples "
                 f"({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))}); "
                 f"{self.duplicates} duplicate rows merged; {sum(self.skipped.values())} rows not mapped"]
        lines += [f"  not mapped: {count} x {reason}" for reason, count in self.skipped.most_common()]
        return "\n".join(lines)


def import_neusight(root: str | Path, gpu: str) -> ImportResult:
    """Read every operator row of one GPU under root into npower samples."""
    from ..profile.plan import config_key
    layout = resolve_layout(root)
    info = find_device(layout, gpu)
    device = device_block(info)
    header = {"type": "header", "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "device": device, "runtime": dict(RUNTIME), "source": {**SOURCE, "root": str(layout.root)}}
    result = ImportResult(header)
    seen: set[tuple[str, float]] = set()
    cache: dict[str, tuple[str, dict, dict]] = {}
    for path in layout.operator_files():
        rel = path.relative_to(layout.root).as_posix()
        used = 0
        for number, row in _rows(path, device["name"]):
            op = (row.get("OPName") or "").strip()
            try:
                latency = float(row.get("Latency") or "nan")
                if not math.isfinite(latency) or latency <= 0:
                    raise ValueError("latency missing, zero or not finite")
                mapper = MAPPERS.get(op)
                if mapper is None:
                    raise ValueError(f"operator '{op}' has no ONNX equivalent here")
                config = mapper(row)
            except ValueError as exc:
                result.skipped[f"{op or '?'}: {exc}"] += 1
                continue
            key = config_key(config)
            if (key, latency) in seen:
                result.duplicates += 1
                continue
            seen.add((key, latency))
            if key not in cache:
                cache[key] = config_layer(config)
            kind, features, specials = cache[key]
            result.samples.append({"type": "sample", "key": f"{key}-{len(result.samples)}", "kind": kind,
                                   "config": config, "features": features, "specials": specials,
                                   "median_ms": latency, "source": {"op": op, "file": rel, "line": number}})
            used += 1
        if used:
            result.files[rel] = used
    if not result.samples:
        raise NpowerError(f"{layout.root}: no operator rows for device '{device['name']}'")
    return result


def _rows(path: Path, device: str) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) of `device` in one CSV; a per-GPU file's rows all belong to its GPU."""
    per_gpu = path.parent.parent.name == "train"
    if per_gpu and _norm(path.stem) != _norm(device):
        return
    try:
        with path.open(newline="") as handle:
            for number, row in enumerate(csv.DictReader(handle), start=2):
                if per_gpu or (row.get("Device") or "").strip() == device:
                    yield number, row
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise NpowerError(f"{path}: cannot read ({exc})") from exc


def write_samples(result: ImportResult, path: str | Path) -> Path:
    """Write the header and samples as an npower sample file (JSON lines)."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("w") as handle:
            for row in [result.header, *result.samples]:
                handle.write(json.dumps(row, sort_keys=True) + "\n")
    except OSError as exc:
        raise NpowerError(f"cannot write samples to {target}: {exc.strerror}") from exc
    return target


# Short names a pack answers to (`--gpu v100`), besides its own name and the device's full name.
ALIASES = {"Tesla P4": ["p4"], "Tesla P100-PCIE-16GB": ["p100"], "Tesla T4": ["t4"], "Tesla V100-PCIE-32GB": ["v100"],
           "NVIDIA A100-PCIE-40GB": ["a100", "a100-40gb"], "NVIDIA A100 80GB PCIe": ["a100-80gb"],
           "NVIDIA A100-SXM4-40GB": ["a100-sxm4"], "NVIDIA H100 80GB HBM3": ["h100"], "NVIDIA L4": ["l4"]}
DATA_KINDS = ("gemm", "matmul", "conv", "layernorm", "softmax", "add", "mul", "div", "pow", "relu", "gelu", "tanh")


def pack_name(device_name: str) -> str:
    """`Tesla V100-PCIE-32GB` -> `v100-pcie-32gb-torch2.1-cuda-fp32`."""
    words = [w for w in device_name.lower().replace("_", " ").split() if w not in ("tesla", "nvidia")]
    return "-".join(words) + "-torch2.1-cuda-fp32"


def fit_neusight(root: str | Path, gpu: str, folds: int = 5, max_degree: int = 3, seed: int = 0,
                 log=None) -> tuple[Any, list[dict[str, Any]], ImportResult]:
    """Import one GPU's rows and fit its pack: (pack, per-kind table, import account)."""
    import sys
    from ..fit import fit_samples
    from ..profile.store import SampleFile
    log = log or sys.stderr
    result = import_neusight(root, gpu)
    print(result.summary(), file=log)
    device = result.header["device"]["name"]
    pack, table = fit_samples([("(none: read from the NeuSight files)", SampleFile(result.header, result.samples))],
                              pack_name(device), folds, max_degree, seed, log, family="ridge")
    fitted = sorted(pack.models)
    pack.provenance.update({
        "source_kind": "public",
        "aliases": ALIASES.get(device, []) + [device],
        "source": {k: v for k, v in result.header["source"].items() if k != "root"},
        "source_files": result.files,
        "rows_not_mapped": dict(result.skipped),
        "duplicate_rows_merged": result.duplicates,
        "not_fitted": {kind: "no rows for this GPU in the NeuSight data" for kind in DATA_KINDS if kind not in fitted},
        "refit": f"npower fit --from-neusight ../shared/data/neusight --device '{device}' "
                 f"-o gpu_profiles/{pack.name}.yaml  (or a clone of sitar-lab/NeuSight at commit 6945927)",
    })
    return pack, table, result
