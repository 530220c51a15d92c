"""Argument parsers of the pack-building commands (profile, fit, validate); handlers load lazily."""
from __future__ import annotations

import argparse
from typing import Callable

Lazy = Callable[[str, str], Callable[[argparse.Namespace], int]]


def add_profile_parsers(sub, lazy: Lazy) -> None:
    profile = sub.add_parser("profile", help="measure single-node graphs on a device into a sample file")
    profile.add_argument("-o", "--output", required=True, help="sample file (.jsonl); resumed if it exists")
    profile.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (onnxruntime); torch-cpu, torch-cuda, torch-cuda:N (PyTorch eager)")
    profile.add_argument("--threads", type=int, default=1, help="intra-op threads (recorded in the pack)")
    profile.add_argument("--optimization", default="extended", choices=["disabled", "basic", "extended", "all"])
    profile.add_argument("--scale", type=float, default=1.0, help="multiply every kind's default sample count")
    profile.add_argument("--kinds", help="comma-separated op kinds (default: all)")
    profile.add_argument("--seed", type=int, default=0)
    profile.add_argument("--anchors", type=float, metavar="SCALE",
                         help="at a seed other than 0, also measure seed 0's plan at this scale (default 0.1): configs "
                              "shared with the seed-0 runs put this run on their scale when pooled (0: none)")
    profile.add_argument("--from-models", nargs="+", default=[], metavar="ONNX",
                         help="also measure the exact layers of these networks")
    profile.add_argument("--max-macs", type=float, help="skip configs above this many MACs")
    profile.add_argument("--min-runs", type=int, default=15)
    profile.add_argument("--min-seconds", type=float, default=0.15)
    profile.add_argument("--max-seconds", type=float, default=2.0)
    profile.add_argument("--dry-run", action="store_true", help="print the plan and its estimated time")
    profile.add_argument("--quiet", action="store_true", help="no progress bar")
    profile.set_defaults(run=lazy("profile.commands", "cmd_profile"))

    fit = sub.add_parser("fit", help="fit a pack from one or more sample files (runs of one runtime)")
    fit.add_argument("samples", nargs="*", help="sample file(s) written by `npower profile`; several runs of one "
                     "runtime are pooled (each config's geometric mean), their spread reported as repeat noise")
    fit.add_argument("--from-neusight", metavar="DIR", help="fit from the public NeuSight operator measurements "
                     "instead (../shared/data/neusight, or a clone of sitar-lab/NeuSight); needs --device")
    fit.add_argument("--device", metavar="GPU", help="with --from-neusight: the GPU (e.g. 'Tesla V100-PCIE-32GB', V100)")
    fit.add_argument("-o", "--output", required=True, help="pack .yaml to write")
    fit.add_argument("--name", help="pack name (default: output file stem)")
    fit.add_argument("--alias", action="append", default=[], metavar="NAME",
                     help="a name --gpu also resolves to this pack (repeatable; recorded in provenance.aliases)")
    fit.add_argument("--folds", type=int, default=5, help="outer folds for the held-out error")
    fit.add_argument("--max-degree", type=int, default=3)
    fit.add_argument("--seed", type=int, default=0)
    fit.set_defaults(run=lazy("profile.commands", "cmd_fit"))

    validate = sub.add_parser("validate", help="measure whole networks and compare with the pack's predictions")
    validate.add_argument("models", nargs="+", help="ONNX files or zoo:NAME")
    validate.add_argument("--gpu", required=True, metavar="PACK")
    validate.add_argument("--profiles", action="append", default=[], metavar="DIR")
    validate.add_argument("--batch", type=int, help="batch size of every network (default: the model's own; zoo: 1)")
    validate.add_argument("--runs", type=int, default=30,
                          help="timed runs per network; the median is reported (default: %(default)s)")
    validate.add_argument("--passes", type=int, default=1, help="measure every network in this many passes over "
                          "them all and report the median of the passes' medians (default: %(default)s)")
    validate.add_argument("--predictor", choices=["npower", "paleo"], default="npower")
    validate.add_argument("--no-fusion", action="store_true")
    validate.add_argument("--layers", action="store_true", help="per-layer comparison with onnxruntime's profile")
    validate.add_argument("--format", choices=["table", "json"], default="table", help="(default: %(default)s)")
    validate.add_argument("-o", "--output")
    validate.add_argument("--record", action="store_true", help="write the figures into the pack's provenance")
    validate.add_argument("--label", metavar="JSON", help="compare with a recorded whole-model label "
                          "(<model>-inf-<seqlen>-<batch>.json + .csv, NeuSight layout) instead of measuring")
    validate.set_defaults(run=lazy("validate", "cmd_validate"))
