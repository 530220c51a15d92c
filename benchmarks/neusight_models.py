"""Whole-model GPU accuracy: npower vs the published NeuSight labels and predictors, side by side.

    .venv/bin/python benchmarks/neusight_models.py [--data ../shared/data/neusight] [--no-breakdown]

For every recorded label (GPU x model x batch: BERT-Large seq 512 batch 8/16, GPT-2 Large seq 1024
batch 4/8, PyTorch 2.1 eager fp32) whose GPU has a shipped torch pack, it predicts
examples/<model>.onnx with that pack and prints the label (measured fw_latency), npower, npower's
error, and the published errors (%) of NeuSight, Habitat, Li et al. and roofline from
anchors/nvidia_inf_error_percent.csv; then the targets (mean |error| <= 5 %, all within 10 %, below
NeuSight on >= 80 % of cases) and, per case, predicted vs labelled time per kernel kind.
The published figures are absolute errors, so npower is compared by |error|.
"""
from __future__ import annotations

import argparse
import csv
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from npower.errors import NpowerError  # noqa: E402
from npower.labels import LabelResult, compare_with_label, find_labels, format_breakdown  # noqa: E402
from npower.pack import Pack, available_packs, load_pack  # noqa: E402

PREDICTORS = ("NeuSight", "Habitat", "Li et al.", "Roofline")


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def read_anchors(path: Path) -> dict[tuple[str, str, int], dict[str, float]]:
    """(GPU key, model key, batch) -> predictor -> published |error| %. Blocks: GPU line, Model, Batch, rows."""
    out: dict[tuple[str, str, int], dict[str, float]] = {}
    gpu, models, batches = "", [], []
    with open(path, newline="") as handle:
        for row in csv.reader(handle):
            if not row or not any(cell.strip() for cell in row):
                continue
            if len(row) == 1 or not any(cell.strip() for cell in row[1:]):
                gpu = _key(row[0])
            elif row[0] == "Model":
                models = [_key(m) for m in _fill_right(row[1:])]
            elif row[0] == "Batch":
                batches = [int(b) for b in row[1:]]
            else:
                for model, batch, cell in zip(models, batches, row[1:]):
                    if cell.strip():
                        out.setdefault((gpu, model, batch), {})[row[0]] = float(cell)
    return out


def _fill_right(cells: list[str]) -> list[str]:
    """'BERT-Large,,GPT2-Large,' -> each model name repeated over its batch columns."""
    filled, last = [], ""
    for cell in cells:
        last = cell or last
        filled.append(last)
    return filled


def torch_packs() -> dict[str, Pack]:
    """Device-name key -> the shipped PyTorch-eager pack fitted to that GPU's own rows (estimated packs are
    excluded: they are checked by benchmarks/estimate_loo.py); two fitted packs for one GPU are an error."""
    packs: dict[str, Pack] = {}
    for path in available_packs().values():
        pack = load_pack(path)
        if pack.runtime.name != "torch" or pack.estimated:
            continue
        key = _key(str(pack.device.get("name", "")))
        if key in packs:
            raise NpowerError(f"two fitted torch packs for {pack.device.get('name')}: {packs[key].name}, {pack.name}")
        packs[key] = pack
    return packs


def run(data: Path, breakdown: bool) -> int:
    labels = find_labels(data)
    if not labels:
        raise NpowerError(f"{data}: no labels found (expected labels/<GPU>/<model>-inf-<seq>-<batch>.json)")
    anchors = read_anchors(data / "anchors" / "nvidia_inf_error_percent.csv")
    packs = torch_packs()
    results: list[tuple[LabelResult, Pack, dict[str, float]]] = []
    for label in labels:
        pack = packs.get(_key(label.gpu))
        if pack is None:
            print(f"{label.gpu}: no torch pack; {label.model} b{label.batch} skipped")
            continue
        result = compare_with_label(ROOT / "examples" / f"{label.model}.onnx", label, pack)
        results.append((result, pack, anchors.get((_key(label.gpu), _key(label.model), label.batch), {})))
    print("packs: " + ", ".join(sorted({f"{r.label.gpu} -> {pack.name}" for r, pack, _ in results})))
    header = (f"{'GPU':22s} {'model':11s} {'batch':>5s} {'label ms':>9s} {'npower ms':>9s} {'error':>7s} "
              f"{'fitted':>6s} " + " ".join(f"{p:>9s}" for p in PREDICTORS))
    print(header)
    for result, pack, published in results:
        print(f"{result.label.gpu[:22]:22s} {result.label.model:11s} {result.label.batch:5d} {result.label.fw_ms:9.1f} "
              f"{result.predicted_ms:9.1f} {result.error:+7.1%} {result.fitted_share:6.1%} "
              + " ".join(f"{published[p]:8.1f}%" if p in published else f"{'-':>9s}" for p in PREDICTORS))
    _summary(results)
    if breakdown:
        for result, pack, _ in results:
            print(f"\n{result.label.gpu} {result.label.model} batch {result.label.batch} (pack {pack.name}):")
            print(format_breakdown(result))
    return 0


def _summary(results: list[tuple[LabelResult, Pack, dict[str, float]]]) -> None:
    if not results:
        return
    errors = [abs(r.error) * 100 for r, _, _ in results]
    versus = [(abs(r.error) * 100, p["NeuSight"]) for r, _, p in results if "NeuSight" in p]
    print(f"\ncases: {len(errors)}  mean |error|: {sum(errors) / len(errors):.1f} % (target <= 5)  "
          f"max |error|: {max(errors):.1f} %  within 10 %: {sum(e <= 10 for e in errors)}/{len(errors)}")
    if versus:
        better = sum(ours < theirs for ours, theirs in versus)
        print(f"npower |error| below NeuSight's: {better}/{len(versus)} ({better / len(versus):.0%}, target >= 80 %); "
              f"NeuSight mean |error| on these cases: {sum(t for _, t in versus) / len(versus):.1f} %")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "neusight")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the per-kernel-kind tables")
    args = parser.parse_args(argv)
    try:
        return run(args.data, not args.no_breakdown)
    except NpowerError as exc:
        print(f"npower: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
