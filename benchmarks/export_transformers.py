"""Build BERT-Large and GPT-2 Large as weightless ONNX files, as the NeuSight labels were measured.

Dev-time tool (needs `transformers` and `torch`; npower itself never imports them):

    .venv/bin/pip install 'transformers>=4.40'
    .venv/bin/python benchmarks/export_transformers.py            # writes examples/{bert,gpt2}_large.onnx

The models are HuggingFace `from_config` builds of `../shared/data/neusight/models/*.json` with
`attn_implementation="eager"`, in eval mode, random weights: `AutoModelForSequenceClassification` for
BERT and `AutoModelForCausalLM` for GPT-2, fed `input_ids` of shape (batch, seqlen), exactly the
labels' set-up. The batch dimension is symbolic ("batch"; bind it with `--batch`), the sequence length
is the labels' (512 for BERT, 1024 for GPT-2). GPT-2 is exported with `use_cache=False`: the cached
keys and values are views of tensors the model computes anyway, so the kernels are the same.
Initializers are written shape-only (npower never reads weights) and the exporter's per-node metadata
(stack traces) is dropped, so each file is well under 1 MB.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# name -> (transformers auto class, sequence length of the labels)
MODELS = {"bert_large": ("AutoModelForSequenceClassification", 512),
          "gpt2_large": ("AutoModelForCausalLM", 1024)}
OPSET = 18


def build(name: str, data: Path, layers: int | None = None):
    """The eval-mode model of models/<name>.json with random weights (optionally fewer layers)."""
    import transformers
    config_dict = json.loads((data / "models" / f"{name}.json").read_text())
    config = transformers.AutoConfig.for_model(**config_dict)
    if layers is not None:
        config.num_hidden_layers = layers
    if config.model_type == "gpt2":
        config.use_cache = False
    auto_class = getattr(transformers, MODELS[name][0])
    return auto_class.from_config(config, attn_implementation="eager").eval()


def logits_only(model, seqlen: int):
    """The model as a module with one input (input_ids) and one output (the logits). GPT-2 gets its positions
    and its causal mask (additive, 0 / finfo.min) as constant buffers: transformers builds them from `arange`,
    which exports as a Range whose length ONNX shape inference cannot resolve, leaving the mask's nodes
    without shapes. The mask is then added to the scores in each layer, one element-wise kernel as in eager
    (where eager with transformers 4.x ran `torch.where` on the scores: the same kind of pass)."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.gpt2 = inner.config.model_type == "gpt2"
            if self.gpt2:
                causal = torch.full((seqlen, seqlen), torch.finfo(torch.float32).min).triu(1)
                self.register_buffer("causal", causal[None, None], persistent=False)
                self.register_buffer("positions", torch.arange(seqlen)[None], persistent=False)

        def forward(self, input_ids):
            if self.gpt2:
                return self.inner(input_ids=input_ids, attention_mask=self.causal, position_ids=self.positions).logits
            return self.inner(input_ids=input_ids).logits

    return LogitsOnly(model).eval()


def export(name: str, data: Path, out: Path, layers: int | None = None) -> Path:
    """Export one model with a symbolic batch and write it shape-only to out/<name>.onnx."""
    import onnx
    import torch
    from npower.modelio import strip_weights

    model = logits_only(build(name, data, layers), MODELS[name][1])
    input_ids = torch.ones((2, MODELS[name][1]), dtype=torch.long)
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        raw = Path(tmp) / "model.onnx"
        program = torch.onnx.export(model, (input_ids,), dynamo=True, opset_version=OPSET,
                                    input_names=["input_ids"], output_names=["logits"],
                                    dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},),
                                    optimize=True, verbose=False)
        program.save(str(raw), external_data=True)
        proto = onnx.load(str(raw), load_external_data=False)
    strip_weights(proto)
    proto.graph.ClearField("value_info")  # npower infers shapes itself
    for node in proto.graph.node:  # the exporter's stack traces and scopes are 99 % of the file
        node.ClearField("metadata_props")
        node.ClearField("doc_string")
    target = out / f"{name}.onnx"
    onnx.save(proto, str(target))
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "neusight",
                        help="the NeuSight data folder (models/*.json)")
    parser.add_argument("--out", type=Path, default=ROOT / "examples")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--layers", type=int, help="fewer layers (structure checks only; labels are full depth)")
    args = parser.parse_args(argv)
    for name in args.models:
        target = export(name, args.data, args.out, args.layers)
        print(f"{target}: {target.stat().st_size / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
