"""Command line: `npower analyze|packs|profile|fit|validate|zoo`. User errors: one line, exit 2."""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path
from typing import Callable

from .errors import NpowerError

EXIT_USER_ERROR = 2


def _add_model_shape_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", type=int, help="bind the first (batch) dimension of every input")
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME=1x3x224x224",
                        help="set an input's full shape (repeatable)")


def _add_pack_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--gpu", required=required, metavar="PACK",
                        help="pack name (see `npower packs`), unique name prefix, or path to a pack .yaml")
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
    report = analyze(args.model, gpu=args.gpu, batch=args.batch, input_shapes=_input_shapes(args),
                     profiles=args.profiles, fusion=not args.no_fusion, frontend=args.frontend)
    fmt = args.format or _format_from_suffix(args.output)
    _write(report.render(fmt, args.top), args.output)
    return 0


def _format_from_suffix(output: str | None) -> str:
    suffix = Path(output).suffix.lower() if output else ""
    return {".json": "json", ".csv": "csv", ".html": "html", ".htm": "html"}.get(suffix, "table")


def cmd_packs(args: argparse.Namespace) -> int:
    from .pack import available_packs, load_pack
    packs = available_packs(args.profiles)
    if not packs:
        print("no packs found")
        return 0
    for name, path in packs.items():
        try:
            pack = load_pack(path)
        except NpowerError as exc:
            print(f"{name}: INVALID ({exc})")
            continue
        provenance = pack.provenance
        samples = provenance.get("samples_total", "?")
        validation = provenance.get("validation", {}).get("mean_runtime_accuracy")
        accuracy = f"{validation:.1%} network runtime accuracy" if isinstance(validation, float) else "not validated"
        print(f"{name}: {pack.device.get('name')} | {pack.runtime.label} | "
              f"{len(pack.models)} op kinds, {samples} samples, power: {'yes' if pack.has_power else 'no'} | "
              f"{accuracy} | {path}")
    return 0


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
    model = zoo.build(args.network, batch=args.batch or 1, weights=not args.no_weights,
                      symbolic_batch=args.symbolic_batch)
    _write_model(model, args.output)
    print(f"wrote {args.output}")
    return 0


def _lazy(module: str, function: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from importlib import import_module
        return getattr(import_module(f".{module}", __package__), function)(args)
    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="npower", description="Predict per-layer runtime, power and energy "
                                     "of ONNX neural networks from measured coefficient packs.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    analyze = sub.add_parser("analyze", help="predict a model's per-layer and total cost")
    analyze.add_argument("model", help="ONNX file, or a framework model a frontend reads")
    _add_pack_args(analyze)
    _add_model_shape_args(analyze)
    analyze.add_argument("--format", choices=["table", "json", "csv", "html"])
    analyze.add_argument("-o", "--output", help="write the report to a file (format from suffix)")
    analyze.add_argument("--top", type=int, default=5, help="bottlenecks to list")
    analyze.add_argument("--no-fusion", action="store_true", help="cost every node as written (no runtime fusion)")
    analyze.add_argument("--frontend", help="force a frontend for non-ONNX models (see `npower frontends`)")
    analyze.set_defaults(run=cmd_analyze)

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
    packs.set_defaults(run=cmd_packs)

    zoo = sub.add_parser("zoo", help="list or export reference networks as ONNX")
    zoo.add_argument("network", nargs="?")
    zoo.add_argument("-o", "--output", default="model.onnx")
    zoo.add_argument("--batch", type=int)
    zoo.add_argument("--no-weights", action="store_true", help="shapes only (a few KB)")
    zoo.add_argument("--symbolic-batch", action="store_true")
    zoo.set_defaults(run=cmd_zoo)

    from .profile.cli_args import add_profile_parsers
    add_profile_parsers(sub, _lazy)
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
        print(f"npower: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("npower: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
