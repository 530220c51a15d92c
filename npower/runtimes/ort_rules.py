"""onnxruntime's kernel rules per execution provider and graph optimisation level.

Basic level (any provider): constant folding, BatchNorm and constant Mul/Add folded into Conv,
MatMul + bias -> Gemm (N-D inputs flattened around it), consecutive Transposes merged, a zero Pad
folded into the pads of the Conv/AveragePool reading it. Extended level adds the provider's
fusions, as onnxruntime registers them: on the CPU, Conv/Gemm +
activation (FusedConv/FusedGemm; the activation still a pass over the output); on CUDA,
Conv + Relu and Conv + Add + Relu as cuDNN epilogues (no other activation; Gemm + activation is
registered for the CPU provider only); on both, MatMul scale / transposed operand -> FusedMatMul,
x*sigmoid(x) -> QuickGelu, Erf-GELU -> Gelu, Add + LayerNorm -> SkipLayerNormalization.
Checked op by op against the optimised models of onnxruntime 1.32 (CPU) in tests/test_fusion.py
and tests/test_pad_fusion.py.
"""
from __future__ import annotations

from . import register_rules
from .kernels import (RuleSet, activation, conv_add_relu, conv_affine, erf_gelu, matmul_bias, matmul_scale,
                      pad_fusion, skip_layernorm, swish, transpose_chain, transposed_operand)

CPU_ACTIVATIONS = {"Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid"}

_BASIC = (pad_fusion(), conv_affine(), matmul_bias(), transpose_chain())
_TRANSFORMER = (matmul_scale(), transposed_operand(), swish(), erf_gelu(), skip_layernorm())

DISABLED = RuleSet("onnxruntime (optimisations disabled)")
CPU_BASIC = RuleSet("onnxruntime CPU basic", _BASIC, folds_constants=True)
CPU_EXTENDED = RuleSet("onnxruntime CPU extended",
                       _BASIC + (activation({"Conv", "Gemm"}, CPU_ACTIVATIONS, costs=True),) + _TRANSFORMER,
                       folds_constants=True)
CUDA_EXTENDED = RuleSet("onnxruntime CUDA extended",
                        _BASIC + (activation({"Conv"}, {"Relu"}, costs=False), conv_add_relu()) + _TRANSFORMER,
                        folds_constants=True)

for _device in ("cpu", "cuda"):
    register_rules("onnxruntime", _device, "disabled", DISABLED)
    register_rules("onnxruntime", _device, "basic", CPU_BASIC)
register_rules("onnxruntime", "cpu", "extended", CPU_EXTENDED)
register_rules("onnxruntime", "cuda", "extended", CUDA_EXTENDED)
register_rules("onnxruntime", "cuda", "all", CUDA_EXTENDED)
