"""Time and memory of planning a profile: the full default plan, as `npower profile --dry-run` makes it.

Planning reads every configuration's features from shapes (shape-only weights), so it should take
seconds, not minutes. Prints a table. Run: python benchmarks/plan_speed.py [--scale 1.0]
"""
from __future__ import annotations

import argparse
import resource
import time

from npower.profile.runner import Budget, make_plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args()
    start = time.perf_counter()
    plan = make_plan(args.scale, 0, None, [], Budget())
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{'what':28s} {'samples':>8s} {'seconds':>8s} {'peak RSS MB':>12s}")
    print(f"{'full plan (dry-run), scale ' + str(args.scale):28s} {len(plan):8d} {seconds:8.2f} {peak_mb:12.0f}")


if __name__ == "__main__":
    main()
