"""The whole GPU job in one command: raw samples and network measurements, with power.

Run on a lent GPU machine (each call <= 10 min; two calls cover the plan, ~20 min of GPU time):

    python3 benchmarks/gpu_campaign.py --out $OUT --budget-s 540                      # call 1
    python3 benchmarks/gpu_campaign.py --out $OUT --budget-s 540 --resume-from run1   # call 2

In order, each phase appending durably (JSON lines, fsynced) to files under --out:
1. check: GPU name, driver, NVML energy counter, torch/CUDA versions (`campaign.jsonl`);
2. idle power, warm-up (temperature recorded), idle power again; a power check: for three loads,
   counter-based and polled power over the same window, and the counter's update interval;
3. networks (`networks.jsonl`): the zoo at --batches (node by node, PyTorch eager) and BERT-Large /
   GPT-2 Large (HF transformers, eval, input_ids (batch, seqlen) as the NeuSight labels), with power;
4. samples (`samples.jsonl`): runtime of every planned single-layer config (a `npower profile` file);
5. power samples (`power.jsonl`): the same configs again with power, in plan order (all kinds
   interleaved), for as long as the budget lasts.
Back on the CPU: `python benchmarks/gpu_campaign.py --merge DIR -o samples.jsonl` (power rows replace
runtime-only rows), then `npower fit samples.jsonl -o gpu_profiles/<name>.yaml`.
`--dry-run` prints the plan and its time estimate. A kill loses at most the item in flight.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from npower import __version__, zoo  # noqa: E402
from npower.errors import NpowerError  # noqa: E402
from npower.profile.backends import TimingPolicy  # noqa: E402
from npower.profile.runner import Budget, Planned, make_plan, measure_peaks, untraced_plan  # noqa: E402
from npower.profile.store import SampleWriter, read_samples  # noqa: E402

FILES = ("campaign.jsonl", "networks.jsonl", "samples.jsonl", "power.jsonl")
# name -> (sequence length, batches) of the NeuSight H100 labels
TRANSFORMERS = {"bert_large": (512, (8, 16)), "gpt2_large": (1024, (4, 8))}
# warm-up and power-check loads (matmul side, copied elements), on the GPU (True) and the CPU (tests)
LOADS = {True: (4096, 1 << 27), False: (128, 1 << 14)}
GPU_BUDGET = Budget(max_macs=2e11, max_bytes=8e9, max_elements=2e9)
# Seconds per item on an H100, for the plan (the campaign logs the real rates).
EST = {"check": 20.0, "idle": 4.0, "power_check": 16.0, "zoo_build": 2.0, "hf_build": 20.0,
       "sample": 0.15}


@dataclass
class Clock:
    """The call's deadline."""

    budget_s: float
    start: float = field(default_factory=time.monotonic)

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.start)

    def allows(self, seconds: float) -> bool:
        return self.left() > seconds + 5.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder for the raw files ($OUT)")
    parser.add_argument("--budget-s", type=float, default=540.0, help="stop starting new work after this")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (tests)")
    parser.add_argument("--resume-from", type=Path, help="a folder with an earlier call's files: continue them")
    parser.add_argument("--scale", type=float, default=0.5, help="sample plan size (x each kind's default count)")
    parser.add_argument("--kinds", help="comma-separated op kinds (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--networks", default=",".join(zoo.NETWORKS), help="zoo networks ('' for none)")
    parser.add_argument("--batches", default="1,32", help="zoo batch sizes")
    parser.add_argument("--transformers", default=",".join(TRANSFORMERS), help="HF models ('' for none)")
    parser.add_argument("--hf-layers", type=int, help="fewer transformer layers (tests only)")
    parser.add_argument("--hf-configs", type=Path, default=ROOT / ".carry" / "neusight",
                        help="folder with models/{bert_large,gpt2_large}.json (copy of ../shared/data/neusight/models, "
                             "carried to the GPU machine; never committed)")
    parser.add_argument("--warmup-s", type=float, default=30.0)
    parser.add_argument("--power-s", type=float, default=0.5, help="power window per sample")
    parser.add_argument("--net-power-s", type=float, default=2.0, help="power window per network")
    parser.add_argument("--check-s", type=float, default=3.0, help="power-check window per load")
    parser.add_argument("--min-seconds", type=float, default=0.05, help="timed seconds per sample")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--merge", type=Path, metavar="DIR", help="merge DIR's samples and power rows into -o")
    parser.add_argument("-o", "--output", type=Path, help="merged sample file (with --merge)")
    args = parser.parse_args(argv)
    if not (args.dry_run or args.merge or args.out):
        parser.error("--out is required")
    if args.merge and not args.output:
        parser.error("--merge needs -o")
    return args


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def networks_plan(args: argparse.Namespace) -> list[tuple[str, str, int, int | None]]:
    """(key, name, batch, seqlen) of every network measurement."""
    zoo_part = [(f"zoo:{name}@{batch}", name, int(batch), None)
                for name in _names(args.networks) for batch in _names(args.batches)]
    hf_part = [(f"hf:{name}@{batch}x{TRANSFORMERS[name][0]}", name, batch, TRANSFORMERS[name][0])
               for name in _names(args.transformers) for batch in TRANSFORMERS[name][1]]
    return zoo_part + hf_part


def sample_plan(args: argparse.Namespace) -> list[Planned]:
    kinds = _names(args.kinds) if args.kinds else None
    return untraced_plan(make_plan(args.scale, args.seed, kinds, [], GPU_BUDGET))  # a GPU traces no kernels


def sample_seconds(item: Planned, power_s: float = 0.0) -> float:
    """Estimated GPU-machine seconds of one sample (timing, plus a power window and its edges)."""
    s = item.layer.specials
    run = s.get("flops", 0) / 2e13 + (s.get("in_bytes", 0) + s.get("weight_bytes", 0) + s.get("out_bytes", 0)) / 2e12
    return EST["sample"] + 40 * run + (power_s + 0.25 if power_s else 0.0)


def estimate(args: argparse.Namespace, plan: list[Planned]) -> list[tuple[str, int, float]]:
    """(phase, items, seconds) for the whole campaign."""
    nets = networks_plan(args)
    zoo_s = sum(EST["zoo_build"] + 1.0 + args.net_power_s for key, *_ in nets if key.startswith("zoo:"))
    hf_models = len(_names(args.transformers))
    hf_s = hf_models * EST["hf_build"] + sum(1.0 + args.net_power_s for key, *_ in nets if key.startswith("hf:"))
    return [("check + idle + warm-up", 1, EST["check"] + 2 * EST["idle"] + args.warmup_s),
            ("power check (3 loads)", 3, EST["power_check"]),
            ("networks (zoo)", sum(k.startswith("zoo:") for k, *_ in nets), zoo_s),
            ("networks (transformers)", sum(k.startswith("hf:") for k, *_ in nets), hf_s),
            ("samples: runtime", len(plan), sum(sample_seconds(item) for item in plan)),
            ("samples: power (all)", len(plan), sum(sample_seconds(item, args.power_s) for item in plan))]


def print_plan(args: argparse.Namespace, plan: list[Planned]) -> None:
    rows = estimate(args, plan)
    print(f"{'phase':26s} {'items':>6s} {'est. s':>8s}")
    for phase, items, seconds in rows:
        print(f"{phase:26s} {items:6d} {seconds:8.0f}")
    fixed = sum(seconds for _, _, seconds in rows[:5])
    second_call = EST["check"] + 2 * EST["idle"] + min(args.warmup_s, 10.0)
    room = max(0.0, 2 * args.budget_s - fixed - second_call)
    per_power = rows[5][2] / max(len(plan), 1)
    print(f"runtime for all {len(plan)} samples + networks: {fixed:.0f} s; two calls of --budget-s {args.budget_s:.0f} "
          f"leave {room:.0f} s for power samples: about {min(len(plan), int(room / max(per_power, 1e-9)))} of {len(plan)}")
    print(f"GPU time planned: {2 * args.budget_s / 60:.1f} min in 2 calls (+ machine start)")


class Files:
    """The raw files under --out, each an append-only JSONL store (resumable by row key)."""

    def __init__(self, out: Path, header: dict[str, Any]):
        self.out, self.header = out, header
        self.writers: dict[str, SampleWriter] = {}

    def done(self, name: str) -> set[str]:
        path = self.out / name
        return read_samples(path).keys if path.exists() and path.stat().st_size else set()

    def rows(self, name: str) -> list[dict[str, Any]]:
        path = self.out / name
        return read_samples(path).samples if path.exists() and path.stat().st_size else []

    def append(self, name: str, row: dict[str, Any]) -> None:
        if name not in self.writers:
            self.writers[name] = SampleWriter(self.out / name, self.header)
        self.writers[name].append({"type": "sample", "time": round(time.time(), 2), **row})

    def event(self, kind: str, **data: Any) -> None:
        """A campaign event (check, idle, warm-up, power check, phase end); also printed."""
        self.append("campaign.jsonl", {"kind": kind, "key": f"{kind}@{time.time():.3f}", **data})
        print(f"[{kind}] {json.dumps(data, default=str)[:400]}", flush=True)


def make_backend(args: argparse.Namespace):
    from npower.profile.torch_backend import make_torch_backend
    policy = TimingPolicy(warmup_runs=3, min_runs=10, min_seconds=args.min_seconds, max_seconds=0.5)
    return make_torch_backend(args.device, policy, args.power_s)


def check(backend, files: Files) -> None:
    import torch
    info = {"device": backend.device_info(), "runtime": backend.runtime_info(), "python": platform.python_version(),
            "torch": torch.__version__, "cuda": torch.version.cuda, "npower": __version__,
            "energy_counter": bool(backend.meter and backend.meter.has_energy)}
    try:
        import transformers
        info["transformers"] = transformers.__version__
    except ImportError:
        info["transformers"] = None
    files.event("check", **info)


def warm_up(backend, files: Files, seconds: float) -> None:
    """Idle power, a matmul loop for `seconds` (temperature every ~5 s), idle power again."""
    import torch
    if backend.meter is not None:
        files.event("idle_cold", **backend.measure_idle())
    side = LOADS[backend.cuda][0]
    a = torch.randn(side, side, device=backend.device)
    trace, start, last = [], time.monotonic(), -5.0
    while time.monotonic() - start < seconds:
        for _ in range(10):
            a @ a
        backend.sync()
        if backend.meter is not None and time.monotonic() - last >= 5.0:
            last = time.monotonic()
            trace.append({"s": round(last - start, 1), **backend.meter.state(), "power_w": backend.meter.power_w()})
    files.event("warmup", seconds=seconds, trace=trace)
    if backend.meter is not None:
        files.event("idle_warm", **backend.measure_idle())


def counter_interval(meter, work: Callable[[], None], seconds: float) -> dict[str, Any]:
    """How often the energy counter changes while `work` loops (NVML: about every 100 ms)."""
    changes, last, start = [], meter.energy_mj(), time.perf_counter()
    while time.perf_counter() - start < seconds:
        work()
        value = meter.energy_mj()
        if value != last:
            changes.append(time.perf_counter())
            last = value
    gaps = sorted(b - a for a, b in zip(changes, changes[1:]))
    return {"counter_changes": len(changes), "counter_interval_ms": round(1e3 * gaps[len(gaps) // 2], 2) if gaps else None}


def power_check(backend, files: Files, seconds: float) -> None:
    """Counter vs polled power over the same windows, for a compute, a memory and a launch-bound load."""
    import torch
    meter = backend.meter
    if meter is None or "power_check" in {row["kind"] for row in files.rows("campaign.jsonl")}:
        return
    side, elements = LOADS[backend.cuda]
    a = torch.randn(side, side, device=backend.device)
    big, dst = torch.randn(elements, device=backend.device), torch.empty(elements, device=backend.device)
    small = torch.randn(1024, device=backend.device)
    loads = {"matmul": lambda: a @ a, "copy": lambda: dst.copy_(big), "add_1k": lambda: small + 1}
    results = {}
    for name, work in loads.items():
        with torch.inference_mode():
            for _ in range(20):
                work()
            backend.sync()
            window = meter.window(work, seconds, backend.sync, poll=True)
            window.update(counter_interval(meter, work, 1.0) if meter.has_energy else {})
            backend.sync()
        if window.get("counter_j") and window.get("polled_j"):
            window["counter_over_polled"] = window["counter_j"] / window["polled_j"]
        results[name] = window
    files.event("power_check", window_s=seconds, matmul_side=side, copy_elements=elements, idle=backend.idle,
                loads=results)
    del a, big, dst


def network_run(backend, args: argparse.Namespace, name: str, batch: int, seqlen: int | None, cache: dict):
    """One inference of a network on the device (the HF model is built once per name)."""
    import torch
    if seqlen is None:
        model = zoo.build(name, batch)
        shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        feeds = {model.graph.input[0].name: torch.randn(shape).numpy()}
        return backend.prepare(model, feeds), {"nodes": len(model.graph.node)}
    if name not in cache:
        cache.clear()
        import export_transformers
        with torch.device(backend.device):
            cache[name] = export_transformers.build(name, args.hf_configs, args.hf_layers)
    model = cache[name]
    ids = torch.randint(0, model.config.vocab_size, (batch, seqlen), device=backend.device)
    return (lambda: model(input_ids=ids)), {"layers": model.config.num_hidden_layers,
                                           "params": sum(p.numel() for p in model.parameters())}


def networks(backend, args: argparse.Namespace, files: Files, clock: Clock) -> None:
    done, cache = files.done("networks.jsonl"), {}
    for key, name, batch, seqlen in networks_plan(args):
        if key in done:
            continue
        if not clock.allows(EST["hf_build"] if seqlen else EST["zoo_build"] + 1 + args.net_power_s):
            files.event("stopped", phase="networks", reason="budget")
            return
        row: dict[str, Any] = {"kind": "network", "key": key, "name": name, "batch": batch, "seqlen": seqlen}
        started = time.monotonic()
        try:
            run, about = network_run(backend, args, name, batch, seqlen, cache)
            row.update(about, **backend.measure_run(run, True, args.net_power_s, poll=True).to_dict())
        except Exception as exc:  # noqa: BLE001 - OOM or an unsupported op: recorded, the campaign goes on
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        row["wall_s"] = round(time.monotonic() - started, 2)
        files.append("networks.jsonl", row)
        print(f"  {key}: {row.get('median_ms', float('nan')):.3f} ms {row.get('watts') or 0:.0f} W "
              f"{row.get('error', '')}", flush=True)
    cache.clear()


def samples(backend, plan: list[Planned], files: Files, clock: Clock, name: str, power: bool, seed: int) -> None:
    """Measure planned configs not yet in `name` (runtime only, or with power) until the budget ends."""
    done = files.done(name)
    count, started = 0, time.monotonic()
    for item in plan:
        if item.key in done:
            continue
        if not clock.allows(sample_seconds(item, backend.power_seconds if power else 0.0)):
            files.event("stopped", phase=name, reason="budget", measured=count)
            return
        row: dict[str, Any] = {"key": item.key, "kind": item.kind, "config": item.config,
                               "features": item.layer.features, "specials": item.layer.specials}
        try:
            row.update(backend.measure_run(backend.prepare_config(item.config, seed), power).to_dict())
        except Exception as exc:  # noqa: BLE001 - OOM, unsupported config: recorded, the sweep goes on
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
            backend.empty_cache()
        files.append(name, row)
        count += 1
    files.event("phase_done", phase=name, measured=count, seconds=round(time.monotonic() - started, 1))


def campaign(args: argparse.Namespace, backend) -> None:
    """Every phase in order, each skipping what the files under args.out already hold."""
    clock = Clock(args.budget_s)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.resume_from:
        for name in FILES:
            source = args.resume_from / name
            if source.exists() and not (args.out / name).exists():
                shutil.copyfile(source, args.out / name)
    resumed = (args.out / "campaign.jsonl").exists()
    header = {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "npower_version": __version__,
              "seed": args.seed, "device": backend.device_info(), "runtime": backend.runtime_info(),
              "timing": {**vars(backend.policy), "rep_ms": backend.rep_ms, "power_s": backend.power_seconds}}
    files = Files(args.out, header)
    check(backend, files)
    warm_up(backend, files, min(args.warmup_s, 10.0) if resumed else args.warmup_s)
    power_check(backend, files, args.check_s)
    if not (args.out / "samples.jsonl").exists():
        header["device"].update(measure_peaks(backend))
    networks(backend, args, files, clock)
    plan = sample_plan(args)
    samples(backend, plan, files, clock, "samples.jsonl", False, args.seed)
    if backend.meter is not None:
        samples(backend, plan, files, clock, "power.jsonl", True, args.seed)
    files.event("end", seconds=round(args.budget_s - clock.left(), 1))


def merge(folder: Path, output: Path) -> int:
    """samples.jsonl with each row that power.jsonl also measured replaced by its power row."""
    data = read_samples(folder / "samples.jsonl")
    powered = {row["key"]: row for row in read_samples(folder / "power.jsonl").samples} \
        if (folder / "power.jsonl").exists() else {}
    with SampleWriter(output, {k: v for k, v in data.header.items() if k != "type"}) as writer:
        for row in data.samples:
            writer.append(powered.get(row["key"], row))
    print(f"{output}: {len(data.samples)} samples, {sum(row['key'] in powered for row in data.samples)} with power")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.merge:
            return merge(args.merge, args.output)
        if args.dry_run:
            print_plan(args, sample_plan(args))
            return 0
        campaign(args, make_backend(args))
    except NpowerError as exc:
        print(f"npower: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
