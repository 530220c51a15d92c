"""PyTorch eager mode: one kernel per operator call, no cross-operator fusion.

What an ONNX export of an eager model contains beyond the kernels: `nn.Linear` on 3-D input
exports as MatMul + bias Add (one GEMM with bias in eager), `nn.GELU` exports as the Erf chain
(one kernel in eager), and views and shape arithmetic export as nodes that launch nothing.
"""
from __future__ import annotations

from . import register_rules
from .kernels import RuleSet, erf_gelu, matmul_bias

TORCH_EAGER = RuleSet("PyTorch eager", (matmul_bias("MatMul"), erf_gelu()),
                      view_ops=frozenset({"Transpose", "Slice", "Expand", "Split"}), folds_constants=True)

register_rules("torch", "cuda", "eager", TORCH_EAGER)
register_rules("torch", "cpu", "eager", TORCH_EAGER)
