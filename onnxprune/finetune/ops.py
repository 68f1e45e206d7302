"""THE op table of the fine-tuning interpreter: ONNX op type (default domain) -> torch function.

It covers exactly the ops the analyzer has a channel rule for (:data:`onnxprune.analyze.rules.RULES`)
plus ``Constant`` and ``ConstantOfShape`` (constant subgraphs of exports); a model with any other op
(or a custom-domain op) is refused with one line naming it. Each function takes the parsed
:class:`~onnxprune.finetune.opnode.OpNode` and the input tensors and returns the outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from onnxprune.finetune import ops_nn, ops_tensor
from onnxprune.finetune.ops_math import OpFn
from onnxprune.finetune.ops_math import table as _math_table

#: Which inputs of an op are trainable when they are float initializers; every other
#: initializer (BN running statistics, shape constants, Clip bounds, Resize scales...) stays fixed.
TRAINABLE_INPUTS: Mapping[str, frozenset[int]] = MappingProxyType({
    "Conv": frozenset({1, 2}), "ConvTranspose": frozenset({1, 2}), "Gemm": frozenset({0, 1, 2}),
    "MatMul": frozenset({0, 1}), "BatchNormalization": frozenset({1, 2}),
    "InstanceNormalization": frozenset({1, 2}), "LayerNormalization": frozenset({1, 2}),
    "Add": frozenset({0, 1}), "Sub": frozenset({0, 1}), "Mul": frozenset({0, 1}), "Div": frozenset({0, 1}),
    "PRelu": frozenset({1}),
})

OPS: Mapping[str, OpFn] = MappingProxyType({
    **_math_table(),
    "Conv": ops_nn.conv,
    "ConvTranspose": ops_nn.conv_transpose,
    "Gemm": ops_nn.gemm,
    "MatMul": ops_nn.matmul,
    "BatchNormalization": ops_nn.batch_norm,
    "InstanceNormalization": ops_nn.instance_norm,
    "LayerNormalization": ops_nn.layer_norm,
    "MaxPool": ops_nn.max_pool,
    "AveragePool": ops_nn.average_pool,
    "LpPool": ops_nn.lp_pool,
    "GlobalAveragePool": ops_nn.global_average_pool,
    "GlobalMaxPool": ops_nn.global_max_pool,
    "GlobalLpPool": ops_nn.global_lp_pool,
    "Shape": ops_tensor.shape,
    "Size": ops_tensor.size,
    "Transpose": ops_tensor.transpose,
    "Squeeze": ops_tensor.squeeze,
    "Unsqueeze": ops_tensor.unsqueeze,
    "Flatten": ops_tensor.flatten,
    "Reshape": ops_tensor.reshape,
    "Concat": ops_tensor.concat,
    "Split": ops_tensor.split,
    "Slice": ops_tensor.slice_,
    "Gather": ops_tensor.gather,
    "Pad": ops_tensor.pad,
    "Resize": ops_tensor.resize,
    "Cast": ops_tensor.cast,
    "CastLike": ops_tensor.cast_like,
    "ConstantOfShape": ops_tensor.constant_of_shape,
})
