"""Shared fixtures: small models and a pack with known coefficients."""
from __future__ import annotations

import ctypes
import gc
import os
from pathlib import Path

import pytest
from onnx import TensorProto, helper

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from npower.pack import KindModels, Pack  # noqa: E402
from npower.polynomial import SparsePolynomial  # noqa: E402

# The project's shared data (third-party model files): `../shared` beside the checkout, or $NPOWER_SHARED.
SHARED_ENV = "NPOWER_SHARED"


def shared_path(*parts: str) -> Path:
    """A path inside the shared data folder (it may not exist: see need_shared)."""
    root = os.environ.get(SHARED_ENV) or Path(__file__).resolve().parents[2] / "shared"
    return Path(root).joinpath(*parts)


def shared_missing_reason(*parts: str) -> str:
    return (f"needs the shared data folder {shared_path(*parts)} (../shared beside the checkout, "
            f"or set {SHARED_ENV}); not found")


def need_shared(*parts: str) -> Path:
    """The shared path, or skip the calling test with a message naming the missing folder."""
    path = shared_path(*parts)
    if not path.exists():
        pytest.skip(shared_missing_reason(*parts))
    return path


def single_node_model(op, inputs, attrs=None, weights=(), outputs=1, opset=17):
    """A one-node model: inputs is [(name, shape)], weights is [(name, shape)] (shape-only)."""
    node = helper.make_node(op, [n for n, _ in inputs] + [n for n, _ in weights],
                            [f"y{i}" for i in range(outputs)], name="n0", **(attrs or {}))
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, None) for i in range(outputs)],
        [TensorProto(name=n, data_type=TensorProto.FLOAT, dims=s) for n, s in weights])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def linear_pack(name="testpack", with_power=True) -> Pack:
    """conv: 1e-6 ms per MAC, 100 W; relu: 1e-5 ms per element, 50 W; gemm: 2e-6 ms/MAC, no power."""
    def model(coef, feature, unit="ms"):
        return SparsePolynomial("linear", unit, 0.0, [(coef, {feature: 1})])
    models = {"conv": KindModels(model(1e-6, "macs"), SparsePolynomial("linear", "W", 100.0) if with_power else None),
              "relu": KindModels(model(1e-5, "elements"), SparsePolynomial("linear", "W", 50.0) if with_power else None),
              "gemm": KindModels(model(2e-6, "macs"))}
    return Pack(name, {"name": "Test Device", "kind": "cpu", "peak_gflops": 100.0, "bandwidth_gbs": 10.0},
                {"name": "onnxruntime", "version": "0", "execution_provider": "CPUExecutionProvider",
                 "intra_op_threads": 1, "precision": "fp32"}, models, {"samples_total": 0})


@pytest.fixture
def pack_dir(tmp_path):
    folder = tmp_path / "packs"
    linear_pack().save(folder / "testpack.yaml")
    return folder


# Memory: `make test` runs the suite in one process, where a module's peak adds to what earlier
# modules left behind. Modules marked `frameworks` (they load TensorFlow and PyTorch, which stay
# resident) run last, and the C heap is handed back to the system after every module.
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("frameworks") is not None)  # stable: order kept


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to hand back
        pass


@pytest.fixture(autouse=True, scope="module")
def _release_memory_after_module():
    yield
    gc.collect()
    _malloc_trim()
