"""Peak memory and wall time of the test suite, per test file and as `make test` runs it.

Each test file runs in its own pytest process; the peak RSS is that process's (os.wait4), so a
file that needs too much memory shows up by name. `--whole` adds one row for the whole suite in
one process (what `make test` does). Prints a table. Target: every row < 4 GB and the whole
suite < 5 min on the build machine (2 vCPU, 24 GB).
Run: python benchmarks/test_memory.py [--whole] [FILES...]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_pytest(targets: list[str]) -> tuple[str, float, float]:
    """(last line of pytest's summary, peak RSS in MB, wall seconds) of one pytest process."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *targets],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    lines = [line for line in output.splitlines() if line.strip()]
    return (lines[-1].strip("= ") if lines else f"exit {process.returncode}"), usage.ru_maxrss / 1024, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", help="test files (default: tests/test_*.py)")
    parser.add_argument("--whole", action="store_true", help="also run the whole suite in one process")
    args = parser.parse_args()
    files = args.files or sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py"))
    rows = [(name, *run_pytest([name])) for name in files]
    if args.whole:
        rows.append(("whole suite (one process)", *run_pytest([])))
    width = max(len(row[0]) for row in rows)
    print(f"{'test file':{width}s} {'peak RSS MB':>12s} {'wall s':>8s}  result")
    for name, result, rss, wall in rows:
        print(f"{name:{width}s} {rss:12.0f} {wall:8.1f}  {result}")
    print(f"{'largest peak':{width}s} {max(row[2] for row in rows):12.0f}")


if __name__ == "__main__":
    main()
