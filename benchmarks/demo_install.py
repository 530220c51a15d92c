"""`make demo` on a fresh copy of the checkout: wall time and venv size (core install only).

Copies the working tree (tracked and untracked, not ignored files: what a clone of the next commit
holds) to a temporary folder, runs `make demo` there, and prints a table; then checks that `make test`
on the same venv would still install the frontend and test extras (second install marker).
Target on the build machine: < 30 s and < 300 MB. Run: python benchmarks/demo_install.py [--keep]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def copy_checkout(target: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the copy (its path is printed)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="npower-fresh-"))
    try:
        copy_checkout(work)
        start = time.perf_counter()
        demo = subprocess.run(["make", "demo"], cwd=work, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        plan = subprocess.run(["make", "-n", "test"], cwd=work, capture_output=True, text=True).stdout
        extras = "'.[test]'" in plan
        print(f"{'step':34s} {'result':>8s} {'seconds':>8s} {'venv MB':>8s}")
        print(f"{'make demo (fresh copy, core only)':34s} {'ok' if demo.returncode == 0 else 'FAILED':>8s} "
              f"{seconds:8.1f} {folder_mb(work / '.venv'):8.0f}")
        print(f"{'make test then installs extras':34s} {'yes' if extras else 'NO':>8s}")
        if demo.returncode:
            print(demo.stderr[-2000:])
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
