"""THE channel-rule table: ONNX op type (default domain) -> how channels pass through it.

A rule reads its inputs' channel labels from the :class:`AnalysisContext`, couples channels
that must be pruned together, labels its outputs and records the edits the rewrite applies.
An op type missing here (or any op of a custom domain) freezes every channel that touches
it, and the report names the op: the pruned model is never broken by an unknown op.
Layers read constants through :meth:`AnalysisContext.slice_input`, which sees through the
DequantizeLinear of a QDQ weight (:mod:`onnxprune.analyze.qdq`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

import onnx

from onnxprune.analyze.context import AnalysisContext
from onnxprune.analyze.rules_elementwise import (
    propagate_axis_op, propagate_broadcast, propagate_passthrough, propagate_pool, propagate_reduce,
    propagate_shape)
from onnxprune.analyze.rules_linear import propagate_conv, propagate_gemm, propagate_matmul, propagate_norm
from onnxprune.analyze.rules_quant import propagate_qdq
from onnxprune.analyze.rules_shape import (
    propagate_concat, propagate_gather, propagate_pad, propagate_reshape, propagate_resize, propagate_slice,
    propagate_split, propagate_squeeze, propagate_transpose)

Rule = Callable[[onnx.NodeProto, AnalysisContext], None]

_UNARY = ("Relu", "LeakyRelu", "Elu", "Selu", "Celu", "ThresholdedRelu", "Sigmoid", "HardSigmoid",
          "HardSwish", "Tanh", "Gelu", "Erf", "Softplus", "Softsign", "Mish", "Exp", "Log", "Sqrt",
          "Abs", "Neg", "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos", "Not", "IsNaN", "IsInf",
          "Cast", "Identity", "Dropout", "Shrink")
_BROADCAST = ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Where", "PRelu", "Clip",
              "CastLike", "Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "And", "Or", "Xor",
              "Mod", "BitShift")
_POOL = ("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
_REDUCE = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
           "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin")

RULES: Mapping[str, Rule] = MappingProxyType({
    "Conv": propagate_conv,
    "ConvTranspose": propagate_conv,
    "Gemm": propagate_gemm,
    "MatMul": propagate_matmul,
    "BatchNormalization": propagate_norm,
    "InstanceNormalization": propagate_norm,
    **{op: propagate_passthrough for op in _UNARY},
    **{op: propagate_broadcast for op in _BROADCAST},
    **{op: propagate_pool for op in _POOL},
    **{op: propagate_reduce for op in _REDUCE},
    "Softmax": propagate_axis_op,
    "LogSoftmax": propagate_axis_op,
    "Hardmax": propagate_axis_op,
    "LayerNormalization": propagate_axis_op,
    "Shape": propagate_shape,
    "Size": propagate_shape,
    "Transpose": propagate_transpose,
    "Squeeze": propagate_squeeze,
    "Unsqueeze": propagate_squeeze,
    "Flatten": propagate_reshape,
    "Reshape": propagate_reshape,
    "Concat": propagate_concat,
    "Split": propagate_split,
    "Slice": propagate_slice,
    "Gather": propagate_gather,
    "Pad": propagate_pad,
    "Resize": propagate_resize,
    "QuantizeLinear": propagate_qdq,
    "DequantizeLinear": propagate_qdq,
})


def rule_for(node: onnx.NodeProto) -> Rule | None:
    """The rule of ``node``'s op type, or None (unknown op or custom domain)."""
    if node.domain not in ("", "ai.onnx"):
        return None
    return RULES.get(node.op_type)
