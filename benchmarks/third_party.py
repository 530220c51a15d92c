"""Networks npower never saw: Keras applications and HuggingFace models exported to ONNX, measured vs predicted.

Dev-time tool (needs tensorflow + tf2onnx for Keras, torch + transformers for HuggingFace; npower
itself never imports them). No download: Keras applications are built with `weights=None` and
HuggingFace models `from_config` with the library's default configuration (random weights; the
timing of dense fp32 kernels does not depend on the values). Each export is written to `--out`
(default: a temporary folder), then `npower validate` measures it at the pack's own level and prints
predicted vs measured. Models whose export fails are listed and skipped.

    python benchmarks/third_party.py --gpu amd-epyc --runs 20
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OPSET = 17

KERAS = ("MobileNetV2", "EfficientNetB0", "NASNetMobile", "ResNet50V2", "DenseNet121", "InceptionV3", "Xception")
# HuggingFace: (config class, model class, input kind); default configs (ResNet-50, ConvNeXt-T, ViT-B/16, BERT-base)
HUGGINGFACE = {"hf_resnet50": ("ResNetConfig", "ResNetForImageClassification", "image"),
               "hf_convnext_tiny": ("ConvNextConfig", "ConvNextForImageClassification", "image"),
               "hf_mobilenet_v2": ("MobileNetV2Config", "MobileNetV2ForImageClassification", "image"),
               "hf_vit_base": ("ViTConfig", "ViTForImageClassification", "image"),
               "hf_bert_base_seq128": ("BertConfig", "BertForSequenceClassification", "text")}


def export_keras(name: str, path: Path) -> None:
    import tensorflow as tf
    import tf2onnx
    model = getattr(tf.keras.applications, name)(weights=None)
    shape = [1, *model.input_shape[1:]]
    signature = (tf.TensorSpec(shape, tf.float32, name="input"),)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        tf2onnx.convert.from_keras(model, input_signature=signature, opset=OPSET, output_path=str(path))


def export_huggingface(name: str, path: Path) -> None:
    import torch
    import transformers
    config_class, model_class, kind = HUGGINGFACE[name]
    config = getattr(transformers, config_class)()
    model = getattr(transformers, model_class)(config).eval()
    if kind == "image":
        size = getattr(config, "image_size", 224)
        inputs = (torch.randn(1, 3, size, size),)
        names = ["pixel_values"]
    else:
        inputs = (torch.randint(0, config.vocab_size, (1, 128)),)
        names = ["input_ids"]

    class LogitsOnly(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x).logits

    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        torch.onnx.export(LogitsOnly(model), inputs, str(path), input_names=names, output_names=["logits"],
                          opset_version=OPSET, dynamo=False)


def exporters() -> dict[str, Callable[[Path], None]]:
    table: dict[str, Callable[[Path], None]] = {}
    for name in KERAS:
        table[f"keras_{name.lower()}"] = lambda path, name=name: export_keras(name, path)
    for name in HUGGINGFACE:
        table[name] = lambda path, name=name: export_huggingface(name, path)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", default="amd-epyc")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--passes", type=int, default=3, help="passes over all the networks (npower validate --passes)")
    parser.add_argument("--out", help="folder for the ONNX files (default: a temporary one)")
    parser.add_argument("--models", nargs="*", help="a subset of: " + ", ".join(exporters()))
    args = parser.parse_args()
    from npower.cli import main as npower_main
    table = exporters()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.out or scratch)
        folder.mkdir(parents=True, exist_ok=True)
        files = []
        for name in args.models or table:
            path = folder / f"{name}.onnx"
            if not path.exists():
                try:
                    table[name](path)
                except Exception as exc:  # noqa: BLE001 - a third-party exporter's failure: report it, go on
                    print(f"skipped {name}: export failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
                    continue
            files.append(str(path))
        sys.exit(npower_main(["validate", *files, "--gpu", args.gpu, "--runs", str(args.runs),
                              "--passes", str(args.passes)]))


if __name__ == "__main__":
    main()
