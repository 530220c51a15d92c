"""Held-out layer RMSPE per op kind per GPU of the packs fitted from the NeuSight operator data.

The figures are nested cross-validation errors measured when each pack was fitted (the model form
chosen again inside every outer fold, on its training part only), read from the packs. With
--refit the packs are first fitted again from the data (../shared/data/neusight by default).
Run: python benchmarks/neusight_layers.py [--refit] [--data DIR] [--gpus v100 t4 ...]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from npower.importers.neusight import ALIASES, DATA_KINDS, fit_neusight, pack_name
from npower.pack import builtin_profiles_dir, load_pack

ROOT = Path(__file__).resolve().parent.parent
GEMM_LIKE = ("gemm", "matmul", "conv")  # target <= 10 %; the others <= 15 %


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refit", action="store_true", help="fit the packs again from the data first")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "neusight"))
    parser.add_argument("--gpus", nargs="+", default=[g for g in ALIASES if g != "NVIDIA A100-SXM4-40GB"],
                        help="device names (default: every GPU with operator rows)")
    args = parser.parse_args()
    folder = builtin_profiles_dir()
    if args.refit:
        for gpu in args.gpus:
            start = time.perf_counter()
            pack, _, _ = fit_neusight(args.data, gpu)
            pack.save(folder / f"{pack.name}.yaml")
            print(f"fitted {pack.name} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    print(f"| GPU | {' | '.join(DATA_KINDS)} |")
    print(f"|---|{'---:|' * len(DATA_KINDS)}")
    misses = []
    for gpu in args.gpus:
        path = folder / f"{pack_name(gpu)}.yaml"
        if not path.exists():
            print(f"| {gpu} | no pack ({path.name}) |")
            continue
        errors = load_pack(path).provenance.get("heldout_rmspe_pct", {})
        cells = []
        for kind in DATA_KINDS:
            value = errors.get(kind)
            cells.append("-" if value is None else f"{value:.1f}")
            if value is not None and value > (10 if kind in GEMM_LIKE else 15):
                misses.append(f"{gpu} {kind} {value:.1f} %")
        print(f"| {gpu} | {' | '.join(cells)} |")
    print(f"\nheld-out RMSPE in % (nested CV); '-': no rows for that GPU. Targets: <= 10 % for "
          f"{', '.join(GEMM_LIKE)}, <= 15 % for the rest. Misses: {', '.join(misses) or 'none'}")


if __name__ == "__main__":
    main()
