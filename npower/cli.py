"""Command line: `npower analyze|packs|profile|fit|validate|zoo`. User errors: one line, exit 2."""
from __future__ import annotations

import argparse
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Callable

from . import __version__
from .errors import NpowerError

EXIT_USER_ERROR = 2
EXIT_PARTIAL = 3  # analyze --allow-partial: a report was written, but most of the runtime is not in it
COMPARE_HELP = """Predict every MODEL x PACK x batch size: latency (ms), throughput (inferences/s), average
power (W), energy per inference (mJ), MACs and parameters per inference, and the share of the
runtime from fitted models. Power and energy are n/a with a pack that has no power model.

With --accuracy NAME=PCT (top-1 accuracy in percent): error rate and the energy-precision ratio
  EPR = error_rate^alpha * energy per inference (mJ), lower is better, alpha = 1 by default
(NeuralPower, Cai et al., ACML 2017; the paper leaves alpha to the user).

  npower compare a.onnx lenet.prototxt b.pt2 --gpu PACK --batch 1 8 32 --accuracy a=76.1 lenet=99.1
"""


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr and exit 2, like every other user error."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"npower: error: {message} (see {self.prog} --help)\n")


def whole_number(low: int = 1, high: int = 2**31 - 1) -> Callable[[str], int]:
    """An argparse type: a decimal integer from low to high."""
    def parse(text: str) -> int:
        value = int(text) if re.fullmatch(r"\s*[+-]?\d{1,18}\s*", text, re.ASCII) else None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be a whole number from {low} to {high}, got {text!r}"[:120])
        return value
    return parse


def _add_model_shape_args(parser: argparse.ArgumentParser, sweep: bool = False) -> None:
    parser.add_argument("--batch", type=whole_number(), nargs="+" if sweep else None, default=[1] if sweep else None,
                        help="bind the first (batch) dimension of every input" + (" (several: a sweep)" if sweep else ""))
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME=1x3x224x224",
                        help="set an input's full shape (repeatable)")


def _add_report_args(parser: argparse.ArgumentParser) -> None:
    """Output and costing options shared by analyze and compare."""
    parser.add_argument("--format", choices=["table", "json", "csv", "html"],
                        help="report format (default: from the -o suffix, .txt/.json/.csv/.html; else table)")
    parser.add_argument("-o", "--output", help="write the report to a file (default: standard output)")
    parser.add_argument("--no-fusion", action="store_true", help="cost every node as written (no runtime fusion)")
    parser.add_argument("--frontend", help="force a frontend for non-ONNX models (see `npower frontends`)")


def _add_pack_args(parser: argparse.ArgumentParser, required: bool = True, many: bool = False) -> None:
    parser.add_argument("--gpu", required=required, metavar="PACK", action="append" if many else "store",
                        help="pack name (see `npower packs`), unique name prefix, or path to a pack .yaml"
                        + (" (repeatable)" if many else ""))
    parser.add_argument("--profiles", action="append", default=[], metavar="DIR",
                        help="extra folder of packs (also: NPOWER_PROFILES)")


def _input_shapes(args: argparse.Namespace) -> dict[str, tuple[int, ...]]:
    from .graph import parse_input_shape
    return dict(parse_input_shape(text) for text in args.input_shape)


def _write(text: str, output: str | None) -> None:
    if output is None:
        sys.stdout.write(text)
        return
    try:
        Path(output).write_text(text)
    except OSError as exc:
        raise NpowerError(f"cannot write {output}: {exc.strerror}") from exc
    print(f"wrote {output}", file=sys.stderr)


def _write_model(model, output: str) -> None:
    try:
        Path(output).write_bytes(model.SerializeToString())
    except OSError as exc:
        raise NpowerError(f"cannot write {output}: {exc.strerror}") from exc


def cmd_analyze(args: argparse.Namespace) -> int:
    from .api import analyze
    fmt = args.format or _format_from_suffix(args.output)  # before the work: a bad suffix fails fast
    model = _zoo_network(args.model[len(ZOO_PREFIX):], args.batch) if args.model.startswith(ZOO_PREFIX) else args.model
    report = analyze(model, gpu=args.gpu, batch=args.batch, input_shapes=_input_shapes(args),
                     profiles=args.profiles, fusion=not args.no_fusion, frontend=args.frontend,
                     allow_partial=args.allow_partial)
    _write(report.render(fmt, args.top), args.output)
    return EXIT_PARTIAL if report.partial else 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .api import compare
    accuracy = dict(_parse_accuracy(text) for text in args.accuracy)
    sort = args.sort or ("epr" if accuracy else "energy")
    comparison = compare(args.models, gpu=args.gpu, batch=args.batch, accuracy=accuracy, alpha=args.alpha,
                         input_shapes=_input_shapes(args), profiles=args.profiles, fusion=not args.no_fusion,
                         frontend=args.frontend, sort=sort)
    fmt = args.format or _format_from_suffix(args.output)
    if fmt == "html":
        from .html_report import plots_missing
        if plots_missing():
            print(f"npower: note: {plots_missing()}", file=sys.stderr)
    _write(comparison.render(fmt), args.output)
    return 0


def _parse_accuracy(text: str) -> tuple[str, float]:
    name, sep, value = text.rpartition("=")
    try:
        if sep and name:
            return name, float(value)
    except ValueError:
        pass
    raise NpowerError(f"--accuracy '{text}': expected NAME=TOP1_PERCENT, e.g. resnet50.onnx=76.1")


ZOO_PREFIX = "zoo:"
FORMAT_BY_SUFFIX = {"": "table", ".txt": "table", ".json": "json", ".csv": "csv", ".html": "html", ".htm": "html"}


def _format_from_suffix(output: str | None) -> str:
    suffix = Path(output).suffix.lower() if output else ""
    if suffix not in FORMAT_BY_SUFFIX:
        raise NpowerError(f"cannot tell the report format of {output}: use a .txt, .json, .csv or .html file, "
                          "or --format")
    return FORMAT_BY_SUFFIX[suffix]


def _zoo_network(name: str, batch: int | None):
    """A reference network, shapes only (`analyze zoo:NAME`)."""
    from . import zoo
    return zoo.build(name, batch=batch or 1, weights=False)


def cmd_packs(args: argparse.Namespace) -> int:
    from .pack import available_packs, load_pack
    packs = available_packs(args.profiles)
    if not packs:
        print("no packs found")
        return 0
    if args.markdown:
        print("| pack | device | runtime | models | power | recorded validation |\n|---|---|---|---|---|---|")
    for name, path in packs.items():
        try:
            facts = _pack_facts(load_pack(path))
        except NpowerError as exc:
            print(f"{name}: INVALID ({exc})")
            continue
        print(f"| `{name}` | {' | '.join(facts)} |" if args.markdown else f"{name}: {' | '.join(facts)} | {path}")
    return 0


def cmd_estimate(args: argparse.Namespace) -> int:
    from .specs import available_specs, find_spec
    if not args.gpu:
        for spec in available_specs().values():
            print(f"{spec.id:16s} {spec.name} ({spec.architecture}, {spec.fp32_peak_gflops:g} GFLOP/s fp32, "
                  f"{spec.bandwidth_gbs:g} GB/s)")
        return 0
    if not args.data:
        raise NpowerError("--data DIR is required: the measured operator rows to estimate from")
    from .estimate import DEFAULT_METHOD, estimate_pack, method_set, neusight_sources
    target = find_spec(args.gpu)
    methods = method_set(args.method or DEFAULT_METHOD)
    pack = estimate_pack(target, neusight_sources(args.data), methods=methods)
    path = pack.save(args.output or f"{pack.name}.yaml")
    for kind, choice in sorted(pack.provenance["per_kind"].items()):
        print(f"{kind:12s} {choice.get('method') or 'not estimated'}: mean left-out-GPU RMSPE "
              f"{choice.get('mean_loo_rmspe_pct', float('nan')):.1f} %")
    print(f"wrote {path}")
    return 0


def _count_kinds(pack) -> str:
    """'N op kinds', and the graph-input and steady variants of some of them (models of their own, not op kinds)."""
    from .profile.cache_state import GRAPH_INPUT, STEADY, base_kind
    kinds = {base_kind(kind) for kind in pack.models}
    variants = [f"{count} {name} variant{'s' * (count > 1)}" for suffix, name in ((GRAPH_INPUT, "graph-input"),
                                                                                 (STEADY, "steady"))
                if (count := sum(kind.endswith(suffix) for kind in pack.models))]
    return f"{len(kinds)} op kinds" + (f" (+{' and '.join(variants)})" if variants else "")


def _pack_facts(pack) -> list[str]:
    """Device, runtime, models and samples, power, validation: one pack's line in `npower packs`."""
    samples = pack.provenance.get("samples_total")
    validation = pack.provenance.get("validation")
    accuracy = validation.get("mean_runtime_accuracy") if isinstance(validation, dict) else None
    if pack.estimated:
        from .estimate import loo_figures
        figures = loo_figures(pack)
        return [f"{pack.device.get('name')} (ESTIMATED from a spec sheet)", pack.runtime.label,
                f"{len(pack.models)} op kinds, from {len(pack.provenance.get('source_gpus') or [])} measured GPUs",
                "power: no", f"left-out GPUs: {figures['mean_abs_error_pct']}% mean whole-model |error|"
                if "mean_abs_error_pct" in figures else "not validated"]
    return [pack.device_label, pack.runtime.label,
            f"{_count_kinds(pack)}, {f'{samples:,}' if isinstance(samples, int) else '?'} samples",
            f"power: {'yes' if pack.has_power else 'no'}",
            f"{accuracy:.1%} network runtime accuracy" if isinstance(accuracy, float) else "not validated"]


def cmd_convert(args: argparse.Namespace) -> int:
    from .frontend import find_frontend, ensure_available
    frontend = find_frontend(args.model, args.frontend)
    ensure_available(frontend)
    options = {"exporter": args.exporter, "dynamic_batch": args.dynamic_batch} if frontend.name == "torch" else {}
    if args.weights != "none":
        options["weights"] = args.weights
    model = frontend.convert(args.model, batch=args.batch, input_shapes=_input_shapes(args), **options)
    _write_model(model, args.output)
    print(f"wrote {args.output} ({frontend.name} frontend, {len(model.graph.node)} nodes)")
    return 0


def cmd_frontends(args: argparse.Namespace) -> int:
    from .frontend import statuses
    for status in statuses():
        state = "ready" if not status.missing else \
            f"missing {', '.join(status.missing)}: pip install 'npower[{status.extra}]'"
        print(f"{status.name:12s} {' '.join(status.suffixes):28s} {state}\n{'':12s} {status.description}")
    return 0


def cmd_zoo(args: argparse.Namespace) -> int:
    from . import zoo
    if not args.network:
        print("\n".join(zoo.NETWORKS))
        return 0
    output = Path(args.output or f"{args.network}.onnx")
    if os.path.exists(output) and not args.force:  # False, not OSError, for a name too long to exist
        raise NpowerError(f"{output} exists; pass --force to overwrite it, or -o another file")
    model = zoo.build(args.network, batch=args.batch or 1, weights=not args.no_weights,
                      symbolic_batch=args.symbolic_batch)
    _write_model(model, str(output))
    print(f"wrote {output.resolve()}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from .importers.neusight import import_neusight, write_samples
    result = import_neusight(args.folder, args.gpu)
    write_samples(result, args.output)
    print(result.summary())
    print(f"wrote {args.output}")
    return 0


def _lazy(module: str, function: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from importlib import import_module
        return getattr(import_module(f".{module}", __package__), function)(args)
    return run


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="npower", description="Predict per-layer runtime, power and energy "
                                     "of ONNX neural networks from measured coefficient packs.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks (also accepted after the command)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    analyze = sub.add_parser("analyze", help="predict a model's per-layer and total cost")
    analyze.add_argument("model", help="ONNX file, a framework model a frontend reads, or zoo:NAME (see `npower zoo`)")
    _add_pack_args(analyze)
    _add_model_shape_args(analyze)
    _add_report_args(analyze)
    analyze.add_argument("--top", type=whole_number(0, 10**6), default=5, help="bottlenecks to list")
    analyze.add_argument("--allow-partial", action="store_true",
                         help=f"report a model most of whose runtime cannot be costed (exit {EXIT_PARTIAL}) instead of refusing")
    analyze.set_defaults(run=cmd_analyze)

    compare = sub.add_parser("compare", help="compare models (any frontend) across packs and batch sizes",
                             description=COMPARE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    compare.add_argument("models", nargs="+", metavar="MODEL", help="ONNX files or framework models, mixed freely")
    _add_pack_args(compare, many=True)
    _add_model_shape_args(compare, sweep=True)
    compare.add_argument("--accuracy", nargs="+", action="extend", default=[], metavar="NAME=PCT",
                         help="top-1 accuracy in percent per model (file name or stem): adds error and EPR")
    compare.add_argument("--alpha", type=float, help="EPR exponent on the error rate (default 1)")
    compare.add_argument("--sort", choices=["energy", "latency", "epr"],
                         help="rank within each pack and batch (default: epr with --accuracy, else energy)")
    _add_report_args(compare)
    compare.set_defaults(run=cmd_compare)

    convert = sub.add_parser("convert", help="convert a framework model (Caffe, PyTorch, Keras) to ONNX")
    convert.add_argument("model", help="model file or folder (.prototxt, .pt/.pth/.pt2, .keras/.h5, SavedModel)")
    convert.add_argument("-o", "--output", required=True)
    _add_model_shape_args(convert)
    convert.add_argument("--frontend", help="force a frontend")
    convert.add_argument("--exporter", choices=["dynamo", "torchscript"], default="dynamo",
                         help="PyTorch exporter (torchscript: the older exporter, as a fallback)")
    convert.add_argument("--dynamic-batch", action="store_true", help="PyTorch: keep the batch dimension symbolic")
    convert.add_argument("--weights", choices=["none", "random"], default="none",
                         help="Caffe: shape-only weights (default) or random ones so the model can run")
    convert.set_defaults(run=cmd_convert)

    frontends = sub.add_parser("frontends", help="list model frontends and whether their dependencies are installed")
    frontends.set_defaults(run=cmd_frontends)

    packs = sub.add_parser("packs", help="list available packs")
    packs.add_argument("--profiles", action="append", default=[], metavar="DIR")
    packs.add_argument("--markdown", action="store_true", help="a Markdown table (the README's pack table)")
    packs.set_defaults(run=cmd_packs)

    estimate = sub.add_parser("estimate", help="estimate a pack for an unmeasured GPU from its spec sheet and "
                              "the measured GPUs (npower/estimate.py)")
    estimate.add_argument("gpu", nargs="?", help="GPU spec: id, name or alias (omit to list the specs), or a spec .yaml")
    estimate.add_argument("--data", metavar="DIR", help="measured operator rows: the NeuSight data folder "
                          "(../shared/data/neusight or a clone of sitar-lab/NeuSight)")
    estimate.add_argument("-o", "--output", help="pack file to write (default: <gpu>-torch2.1-cuda-fp32-estimated.yaml)")
    estimate.add_argument("--method", help="transfer method for every op kind, or 'auto' (per kind, the lowest "
                          "leave-one-GPU-out kernel error); default: device-regression:bw+peak")
    estimate.set_defaults(run=cmd_estimate)

    zoo = sub.add_parser("zoo", help="list or export reference networks as ONNX")
    zoo.add_argument("network", nargs="?", help="network to export (omit to list them)")
    zoo.add_argument("-o", "--output", help="ONNX file to write (default: NETWORK.onnx in the current folder)")
    zoo.add_argument("--force", action="store_true", help="overwrite the output file if it exists")
    zoo.add_argument("--batch", type=whole_number(), help="batch size (default: 1)")
    zoo.add_argument("--no-weights", action="store_true", help="shapes only (a few KB)")
    zoo.add_argument("--symbolic-batch", action="store_true", help="leave the batch dimension symbolic (N)")
    zoo.set_defaults(run=cmd_zoo)

    importer = sub.add_parser("import", help="turn public measurements into a sample file (`npower fit` reads it)")
    importer.add_argument("source", choices=["neusight"], help="data set: neusight (sitar-lab/NeuSight operator files)")
    importer.add_argument("folder", help="its folder (../shared/data/neusight, or a clone of the repository)")
    importer.add_argument("--gpu", required=True, help="GPU name as in the data (e.g. 'Tesla T4'), or a unique part")
    importer.add_argument("-o", "--output", required=True, help="sample file (.jsonl) to write")
    importer.set_defaults(run=cmd_import)

    from .profile.cli_args import add_profile_parsers
    add_profile_parsers(sub, _lazy)
    for command in sub.choices.values():  # `npower analyze ... --debug` works too
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except NpowerError as exc:
        if args.debug:
            traceback.print_exc()
        one_line = str(exc).replace("\r", "\\r").replace("\n", "\\n")  # names from a file may hold newlines
        print(f"npower: error: {one_line}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("npower: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
