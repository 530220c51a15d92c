"""PyTorch frontend: nn.Module objects, TorchScript files (.pt/.pth) and exported programs (.pt2) -> ONNX."""
from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from typing import Any, Mapping

import onnx

from npower.errors import NpowerError

from ._export import example_shape, export_error, quiet

OPSET = 18


class TorchFrontend:
    """Exports with torch.onnx.export: the default (dynamo) exporter, or exporter='torchscript'."""

    name = "torch"
    description = "PyTorch nn.Module, TorchScript .pt/.pth, exported program .pt2 (torch.onnx.export)"
    suffixes = (".pt", ".pth", ".pt2")
    extra = "torch"
    requires = ("torch", "onnxscript")

    def accepts(self, source: Any) -> bool:
        if isinstance(source, (str, os.PathLike)):
            return Path(source).suffix in self.suffixes
        torch = sys.modules.get("torch")
        return torch is not None and isinstance(source, (torch.nn.Module, torch.export.ExportedProgram))

    def convert(self, source: Any, batch: int | None = None,
                input_shapes: Mapping[str, tuple[int, ...]] | None = None, exporter: str = "dynamo",
                dynamic_batch: bool = False, example_input: Any = None, **_options: Any) -> onnx.ModelProto:
        with quiet():
            return self._convert(source, batch, input_shapes, exporter, dynamic_batch, example_input)

    def _convert(self, source: Any, batch: int | None, input_shapes: Mapping[str, tuple[int, ...]] | None,
                 exporter: str, dynamic_batch: bool, example_input: Any) -> onnx.ModelProto:
        import torch
        module, default_shape = self._load(torch, source)
        if exporter == "dynamo" and isinstance(module, torch.jit.ScriptModule):
            exporter = "torchscript"  # TorchScript modules only go through the TorchScript exporter
        if example_input is None:
            name, shape = example_shape(input_shapes, batch, default_shape, "PyTorch")
            example_input = torch.randn(*shape)
        else:
            name = next(iter(input_shapes or {"input": None}))
        if isinstance(module, torch.nn.Module):
            module.eval()
        buffer = io.BytesIO()
        try:
            with torch.no_grad():
                if exporter == "torchscript":
                    axes = {name: {0: "batch"}} if dynamic_batch else None
                    torch.onnx.export(module, (example_input,), buffer, dynamo=False, opset_version=OPSET,
                                      input_names=[name], dynamic_axes=axes)
                    return onnx.load_from_string(buffer.getvalue())
                shapes = ({"x": {0: torch.export.Dim("batch")}},) if dynamic_batch else None
                program = torch.onnx.export(module, (example_input,), dynamo=True, opset_version=OPSET,
                                            input_names=[name], dynamic_shapes=shapes, verbose=False)
                return program.model_proto
        except NpowerError:
            raise
        except Exception as exc:  # noqa: BLE001 - exporters raise many types; the user gets one line
            raise export_error("PyTorch", exc) from exc

    def _load(self, torch, source: Any) -> tuple[Any, tuple[int, ...] | None]:
        """The module or exported program to export, and its example input shape when it has one."""
        if not isinstance(source, (str, os.PathLike)):
            return source, _example_shape(torch, source)
        path = Path(source)
        try:
            if path.suffix == ".pt2":
                program = torch.export.load(str(path))
                return program, _example_shape(torch, program)
            return torch.jit.load(str(path), map_location="cpu"), None
        except Exception as exc:  # noqa: BLE001
            raise NpowerError(f"{path}: not a TorchScript (.pt/.pth) or exported program (.pt2) file "
                              f"({type(exc).__name__})") from exc


def _example_shape(torch, source: Any) -> tuple[int, ...] | None:
    if isinstance(source, torch.export.ExportedProgram) and source.example_inputs:
        return tuple(source.example_inputs[0][0].shape)
    return None


FRONTEND = TorchFrontend()
