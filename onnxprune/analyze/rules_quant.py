"""Channel rules of QuantizeLinear / DequantizeLinear on activations (QDQ models).

Quantizing or dequantizing a tensor keeps its channels in place. A per-tensor scale and zero
point (a scalar or one entry) need nothing; a per-axis (1-D) scale on the channel axis is
sliced with the channels, like a per-channel constant of ``Mul``. Weights stored as an integer
initializer behind a DequantizeLinear are handled by the rule of the layer that reads them
(:meth:`onnxprune.analyze.context.AnalysisContext.slice_input`).
"""

from __future__ import annotations

import numpy as np
import onnx

from onnxprune.analyze.context import AnalysisContext
from onnxprune.analyze.types import SliceConst
from onnxprune.analyze.util import attr, input_at, norm_axis


def _why(node: onnx.NodeProto, text: str) -> str:
    return f"{node.op_type} '{node.name}' {text}"


def propagate_qdq(node: onnx.NodeProto, ctx: AnalysisContext) -> None:
    """QuantizeLinear / DequantizeLinear: channels pass; a per-axis scale on them is sliced."""
    x, y = node.input[0], node.output[0]
    params = [n for n in (input_at(node, 1), input_at(node, 2)) if n]
    if any(ctx.label(n) is not None for n in params):
        ctx.freeze_inputs(node, _why(node, "takes its scale or zero point from a tensor that carries channels"))
        return
    lab = ctx.label(x)
    if lab is None:
        return
    rank = ctx.rank(x)
    scale_shape = ctx.shape(params[0]) if params else None
    if rank is None or scale_shape is None:
        ctx.freeze(lab.ids, _why(node, "has an input or scale of unknown shape"))
        return
    if int(attr(node, "block_size", 0)) or len(scale_shape) > 1:
        ctx.freeze(lab.ids, _why(node, "uses blocked quantization (block_size), which is not supported"))
        return
    per_axis = len(scale_shape) == 1 and int(np.prod(scale_shape)) > 1
    if per_axis and norm_axis(int(attr(node, "axis", 1)), rank) == lab.axis:
        if not all(ctx.is_const(n) for n in params):
            ctx.freeze(lab.ids, _why(node, "has a per-channel scale or zero point computed at run time"))
            return
        for index in range(1, len(node.input)):
            if node.input[index]:
                ctx.edit(SliceConst(node.name, index, 0, y))
    ctx.set_label(y, lab)
