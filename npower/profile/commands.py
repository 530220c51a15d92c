"""Handlers of `npower profile` and `npower fit`."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..errors import NpowerError
from .ort_trace import traces_kernels
from .runner import ANCHOR_SCALE, Budget, dry_run, make_plan, run_profile, untraced_plan
from .backends import TimingPolicy, make_backend


def cmd_profile(args: argparse.Namespace) -> int:
    policy = TimingPolicy(min_runs=args.min_runs, min_seconds=args.min_seconds, max_seconds=args.max_seconds)
    kinds = [k.strip() for k in args.kinds.split(",")] if args.kinds else None
    budget = Budget() if args.max_macs is None else Budget(max_macs=args.max_macs)
    if args.device != "cpu":
        budget = Budget(max_macs=args.max_macs or 2e11, max_bytes=8e9, max_elements=2e9)
    started = time.perf_counter()
    anchors = ANCHOR_SCALE if args.anchors is None else args.anchors
    plan = make_plan(args.scale, args.seed, kinds, args.from_models, budget, anchors)
    if not args.quiet:
        print(f"planned {len(plan)} samples in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    if args.dry_run:
        dry_run(plan, policy)
        return 0
    out = Path(args.output)
    if out.exists() and out.is_dir():
        raise NpowerError(f"{out} is a folder; give a sample file path")
    backend = make_backend(args.device, args.threads, args.optimization, policy)
    if not traces_kernels(backend):
        plan = untraced_plan(plan)
    try:
        summary = run_profile(str(out), backend, plan, args.seed, progress=not args.quiet, anchors=anchors)
    except KeyboardInterrupt:
        return 130
    print(f"{summary['measured']} measured ({summary['failed']} failed), {summary['already']} already in {out}; "
          f"{summary['per_minute']:.1f} samples/min over {summary['minutes']:.1f} min")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    from ..fit import fit_pack, format_fit_table
    if bool(args.samples) == bool(args.from_neusight) or bool(args.from_neusight) != bool(args.device):
        raise NpowerError("fit: give one or more sample files, or --from-neusight DIR with --device GPU")
    if args.from_neusight:
        from ..importers.neusight import fit_neusight
        pack, table, _ = fit_neusight(args.from_neusight, args.device, args.folds, args.max_degree, args.seed)
        pack.name = args.name or pack.name
    else:
        pack, table = fit_pack(args.samples, name=args.name or Path(args.output).stem, folds=args.folds,
                               max_degree=args.max_degree, seed=args.seed, log=sys.stderr)
    if args.alias:
        pack.provenance["aliases"] = sorted(set(pack.provenance.get("aliases") or []) | set(args.alias))
    pack.save(args.output)
    print(format_fit_table(table))
    print(f"wrote {args.output}")
    return 0
