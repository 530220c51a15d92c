"""Features that depend on the device as well as the layer: GEMM tiles and waves on a GPU.

A GPU runs a GEMM as output tiles (t x t blocks of the result matrix), scheduled in waves of
one tile per SM; a shape one tile over a wave boundary costs a whole extra wave. So time follows
the tiles and waves (times the reduced length), not the FLOPs. These features need the device's SM
count, so they are computed from the pack's device block at fit time and at predict time by the
same function (`derive`); a device block without `sms` gets none of them.
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


def names(kind: str) -> list[str]:
    """The device features of a kind (empty when it has none)."""
    if kind not in GEMM_SHAPES:
        return []
    return [f"{what}{t}" for t in TILES for what in ("tiles", "waves")]


def derive(kind: str, columns: Columns, device: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Device features of a kind's layers (arrays aligned with `columns`); {} without an SM count."""
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
