"""Features that depend on the device as well as the layer: GEMM tiles and waves on a GPU, the paths of MLAS's
SGEMM on a CPU.

A GPU runs a GEMM as output tiles (t x t blocks of the result matrix), scheduled in waves of
one tile per SM; a shape one tile over a wave boundary costs a whole extra wave. So time follows
the tiles and waves (times the reduced length), not the FLOPs. These features need the device's SM
count, so they are computed from the pack's device block at fit time and at predict time by the
same function (`derive`); a device block without `sms` gets none of them.

On a CPU, onnxruntime runs GEMMs and convolutions through MLAS's SGEMM (`sgemm_features`), whose x86 kernels
compute whole 16-column panels of a packed B, except on two paths that pack nothing.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

TILES = (32, 64, 128)
Columns = Mapping[str, np.ndarray]
# kind -> (rows, cols, independent GEMMs) of the output the GEMM a layer runs, from its feature columns
GemmShape = Callable[[Columns], tuple[np.ndarray, np.ndarray, np.ndarray]]
GEMM_SHAPES: dict[str, GemmShape] = {
    "gemm": lambda c: (c["m"], c["n"], c["batch"]),
    "matmul": lambda c: (c["m"], c["n"], c["batch"]),
    # implicit-GEMM convolution: output pixels of all images x output channels per group
    "conv": lambda c: (c["batch"] * c["gemm_n"], c["out_channels"] / c["groups"], c["groups"]),
}


SGEMM_PANEL = 16  # columns of B that MLAS packs together, and that its x86 kernels compute at once
# kind -> (M, K, N, calls, A transposed, B transposed) of the SGEMMs onnxruntime's CPU kernel of a layer runs
SgemmShape = Callable[[Columns], tuple[Any, ...]]
_CONV_SGEMM: SgemmShape = lambda c: (c["gemm_m"], c["gemm_k"], c["gemm_n"], c["gemm_calls"], 0, 0)
SGEMM_SHAPES: dict[str, SgemmShape] = {
    "conv": _CONV_SGEMM,
    "conv_1x1": _CONV_SGEMM,
    # the transposed weights by the input, into the column buffer (features._conv_transpose)
    "conv_transpose": lambda c: (c["gemm_m"], c["gemm_k"], c["gemm_n"], c["gemm_calls"], 1, 0),
    "gemm": lambda c: (c["m"], c["k"], c["n"], 1, c["trans_a"], c["trans_b"]),
    "matmul": lambda c: (c["gemm_m"], c["k"], c["n"], c["gemm_calls"], 0, 0),
}
SGEMM_FEATURES = ["sgemm_macs", "gemm_single_row", "gemm_single_column"]


def names(kind: str) -> list[str]:
    """The device features a kind may have (empty when it has none): a GPU's tiles and waves, a CPU's SGEMM paths."""
    tiles = [f"{what}{t}" for t in TILES for what in ("tiles", "waves")] if kind in GEMM_SHAPES else []
    return tiles + (SGEMM_FEATURES if kind in SGEMM_SHAPES else [])


def sgemm_features(m: np.ndarray, k: np.ndarray, n: np.ndarray, calls: np.ndarray, transposed_a: Any,
                   transposed_b: Any) -> dict[str, np.ndarray]:
    """What MLAS's SGEMM executes for `calls` products (M x K) @ (K x N): `sgemm_macs`, its kernels' multiply-adds,
    N rounded up to whole 16-column panels of the packed B (a 2x2 output map costs as much as a 4x4 one), except on
    its two x86 paths that pack nothing, flagged: a single row of A (`gemm_single_row`: M = 1, A not transposed) and
    a single column of B and C, contiguous (`gemm_single_column`: N = 1, B not transposed: a GEMV)."""
    m, k, n, calls = (np.asarray(a, dtype=float) for a in (m, k, n, calls))
    single_row = (m == 1) & (np.asarray(transposed_a) == 0)
    single_column = (n == 1) & (np.asarray(transposed_b) == 0)
    columns = np.where(single_row | single_column, n, np.ceil(n / SGEMM_PANEL) * SGEMM_PANEL)
    return {"sgemm_macs": calls * m * k * columns, "gemm_single_row": single_row.astype(float),
            "gemm_single_column": single_column.astype(float)}


def derive(kind: str, columns: Columns, device: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Device features of a kind's layers (arrays aligned with `columns`): a CPU's SGEMM paths; a GPU's tiles and
    waves, {} without an SM count."""
    if device.get("kind") == "cpu":
        sgemm = SGEMM_SHAPES.get(kind)
        try:
            return sgemm_features(*sgemm(columns)) if sgemm else {}
        except KeyError:  # columns without a GEMM shape (rows of another extractor's version)
            return {}
    shape = GEMM_SHAPES.get(kind)
    sms = device.get("sms")
    if shape is None or not isinstance(sms, int) or sms <= 0:
        return {}
    try:
        rows, cols, calls = (np.asarray(a, dtype=float) for a in shape(columns))
    except KeyError:
        return {}
    out: dict[str, np.ndarray] = {}
    for t in TILES:
        tiles = calls * np.ceil(rows / t) * np.ceil(cols / t)
        out[f"tiles{t}"], out[f"waves{t}"] = tiles, np.ceil(tiles / sms)
    return out
