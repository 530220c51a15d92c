"""Derived GEMM features for GPU packs: tiles and waves (device-dependent) and operand alignment.

A GPU runs a GEMM as output tiles (t x t blocks of the result matrix), scheduled in waves of
one tile per SM; a shape one tile over a wave boundary costs a whole extra wave. So time follows
the tiles and waves (times the reduced length), not the FLOPs. These features need the device's SM
count, so they are computed from the pack's device block at fit time and at predict time by the
same function (`derive`); a device block without `sms` gets none of them.

cuBLAS also picks its kernel family by operand alignment: on a Tesla P4, shapes whose dimensions are
multiples of 4 run a vectorised kernel at ~4.4 TFLOP/s where unaligned ones run at ~1-2. So GEMM-like
kinds also get 0/1 flags `<dim>_div<a>` (dimension divisible by a) for their m, k and n.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

TILES = (32, 64, 128)
ALIGNMENTS = (4, 32)
ALIGNED_DIMS = ("m", "k", "n")
Columns = Mapping[str, np.ndarray]
# kind -> (rows, cols, independent GEMMs) of the output the GEMM a layer runs, from its feature columns
GemmShape = Callable[[Columns], tuple[np.ndarray, np.ndarray, np.ndarray]]
GEMM_SHAPES: dict[str, GemmShape] = {
    "gemm": lambda c: (c["m"], c["n"], c["batch"]),
    "matmul": lambda c: (c["m"], c["n"], c["batch"]),
    # implicit-GEMM convolution: output pixels of all images x output channels per group
    "conv": lambda c: (c["batch"] * c["gemm_n"], c["out_channels"] / c["groups"], c["groups"]),
}
ALIGNED_KINDS = ("gemm", "matmul")


def names(kind: str) -> list[str]:
    """The derived features of a kind (empty when it has none)."""
    if kind not in GEMM_SHAPES:
        return []
    aligned = [f"{dim}_div{a}" for dim in ALIGNED_DIMS for a in ALIGNMENTS] if kind in ALIGNED_KINDS else []
    return [f"{what}{t}" for t in TILES for what in ("tiles", "waves")] + aligned


def is_alignment_flag(name: str) -> bool:
    """Is `name` one of the 0/1 alignment flags (`k_div4`)?"""
    dim, _, div = name.partition("_div")
    return dim in ALIGNED_DIMS and div.isdigit() and int(div) in ALIGNMENTS


def alignment(kind: str, columns: Columns) -> dict[str, np.ndarray]:
    """1.0 where a GEMM dimension is a multiple of each alignment, else 0.0 ({} for other kinds)."""
    if kind not in ALIGNED_KINDS or any(dim not in columns for dim in ALIGNED_DIMS):
        return {}
    return {f"{dim}_div{a}": (np.asarray(columns[dim], dtype=float) % a == 0).astype(float)
            for dim in ALIGNED_DIMS for a in ALIGNMENTS}


def derive(kind: str, columns: Columns, device: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Derived features of a kind's layers (arrays aligned with `columns`); no tiles/waves without an SM count."""
    shape = GEMM_SHAPES.get(kind)
    sms = device.get("sms")
    out = alignment(kind, columns)
    if shape is None or not isinstance(sms, int) or sms <= 0:
        return out
    try:
        rows, cols, calls = (np.asarray(a, dtype=float) for a in shape(columns))
    except KeyError:
        return out
    for t in TILES:
        tiles = calls * np.ceil(rows / t) * np.ceil(cols / t)
        out[f"tiles{t}"], out[f"waves{t}"] = tiles, np.ceil(tiles / sms)
    return out
