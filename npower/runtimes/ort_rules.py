"""onnxruntime's kernel rules per execution provider and graph optimisation level.

Basic level: constant folding and the semantics-preserving fusions (BatchNorm and constant
Mul/Add folded into Conv). Extended level adds the provider's fusions: on the CPU, Conv/Gemm +
activation (FusedConv/FusedGemm, the activation still a pass over the output), MatMul + bias ->
Gemm, MatMul scale / transposed operand -> FusedMatMul, x*sigmoid(x) -> QuickGelu, Erf-GELU ->
Gelu, Add + LayerNorm -> SkipLayerNormalization; on CUDA, Conv + Relu as a cuDNN epilogue.
"""
from __future__ import annotations

from . import register_rules
from .kernels import (RuleSet, activation, conv_affine, erf_gelu, matmul_bias, matmul_scale, skip_layernorm, swish,
                      transposed_operand)

CPU_ACTIVATIONS = {"Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid"}

_BASIC = (conv_affine(),)
_TRANSFORMER = (matmul_bias("Gemm"), matmul_scale(), transposed_operand(), swish(), erf_gelu(), skip_layernorm())

DISABLED = RuleSet("onnxruntime (optimisations disabled)")
CPU_BASIC = RuleSet("onnxruntime CPU basic", _BASIC, folds_constants=True)
CPU_EXTENDED = RuleSet("onnxruntime CPU extended",
                       _BASIC + (activation({"Conv", "Gemm"}, CPU_ACTIVATIONS, costs=True),) + _TRANSFORMER,
                       folds_constants=True)
CUDA_EXTENDED = RuleSet("onnxruntime CUDA extended",
                        _BASIC + (activation({"Conv"}, {"Relu"}, costs=False),) + _TRANSFORMER,
                        folds_constants=True)

for _device in ("cpu", "cuda"):
    register_rules("onnxruntime", _device, "disabled", DISABLED)
    register_rules("onnxruntime", _device, "basic", CPU_BASIC)
register_rules("onnxruntime", "cpu", "extended", CPU_EXTENDED)
register_rules("onnxruntime", "cpu", "all", CPU_EXTENDED)
register_rules("onnxruntime", "cuda", "extended", CUDA_EXTENDED)
register_rules("onnxruntime", "cuda", "all", CUDA_EXTENDED)
