"""Channel rules of ops with weights: Conv, ConvTranspose, Gemm, MatMul, normalizations.

Each ``propagate_*`` reads input labels from the context, records couplings, the output
labels and the edits the rewrite must apply. See :mod:`onnxprune.analyze.rules` for the table.
"""

from __future__ import annotations

import numpy as np
import onnx

from onnxprune.analyze.context import AnalysisContext
from onnxprune.analyze.types import Labels, SetGroups
from onnxprune.analyze.util import attr, input_at


def _why(node: onnx.NodeProto, text: str) -> str:
    return f"{node.op_type} '{node.name}' {text}"


def _freeze_unsliceable(node: onnx.NodeProto, ctx: AnalysisContext, axis: int, *names: str) -> None:
    """Freeze a layer whose weight or bias is not a sliceable constant.

    When the cause is an unsupported quantized weight (see :mod:`onnxprune.analyze.qdq`), the
    output channels become a frozen root, so the groups they reach name that cause.
    """
    problem = next((p for p in (ctx.weight_problem(n) for n in names if n) if p), "")
    reason = _why(node, "has a non-constant weight or bias" + (f" ({problem})" if problem else ""))
    ctx.freeze_inputs(node, reason)
    shape = ctx.shape(node.output[0])
    if problem and shape is not None and len(shape) > axis and shape[axis]:
        ctx.freeze(ctx.new_root(node, node.output[0], axis, int(shape[axis])).ids, reason)


def propagate_conv(node: onnx.NodeProto, ctx: AnalysisContext) -> None:
    """Conv / ConvTranspose: output channels are a new root; input channels are consumed.

    Grouped convs (1 < group): block k of the input and block k of the output form one
    unit, so whole conv groups are removed and the ``group`` attribute is rewritten
    (depthwise is the case of one input channel per block).
    """
    transpose = node.op_type == "ConvTranspose"
    x, w_name, b_name, y = node.input[0], node.input[1], input_at(node, 2), node.output[0]
    weight = ctx.weight_shape(w_name)
    x_lab = ctx.label(x)
    if weight is None or (b_name and ctx.weight_shape(b_name) is None):
        _freeze_unsliceable(node, ctx, 1, w_name, b_name)
        return
    if x_lab is not None and x_lab.axis != 1:
        ctx.freeze(x_lab.ids, _why(node, "reads channels on a non-channel axis"))
        x_lab = None
    groups = int(attr(node, "group", 1))
    in_axis, out_axis = (0, 1) if transpose else (1, 0)
    cout = weight[1] * groups if transpose else weight[0]
    out = ctx.new_root(node, y, 1, cout, weight=w_name, weight_axis=out_axis)
    if x_lab is not None:
        ctx.consume(node, x_lab)
    if b_name:
        ctx.slice_input(node, 2, 0, y)
    if groups == 1:
        if x_lab is not None:
            ctx.slice_input(node, 1, in_axis, x)
        ctx.slice_input(node, 1, out_axis, y)
        return
    if x_lab is None:
        ctx.freeze(out.ids, _why(node, "is a grouped conv over fixed input channels"))
        return
    cin = x_lab.ids.size
    in_blocks = x_lab.ids.reshape(groups, cin // groups)
    out_blocks = out.ids.reshape(groups, cout // groups)
    fixed = in_blocks.min(axis=1) < 0
    for k in range(groups):
        ctx.couple_all(np.concatenate([in_blocks[k], out_blocks[k]]).tolist())
        if fixed[k]:
            ctx.freeze(np.concatenate([in_blocks[k], out_blocks[k]]), _why(node, "has a fixed input block"))
    # whole blocks go: slice the per-group axis of the weight by the output (transpose: input) mask
    ctx.slice_input(node, 1, 0, x if transpose else y)
    ctx.edit(SetGroups(node.name, groups, y))


def propagate_gemm(node: onnx.NodeProto, ctx: AnalysisContext) -> None:
    """Gemm Y = A B + C with constant B: columns of Y are a new root; A's features consumed."""
    a, b_name, c_name, y = node.input[0], node.input[1], input_at(node, 2), node.output[0]
    weight = ctx.weight_shape(b_name)
    a_lab = ctx.label(a)
    if weight is None or (c_name and ctx.weight_shape(c_name) is None):
        _freeze_unsliceable(node, ctx, 1, b_name, c_name)
        return
    if int(attr(node, "transA", 0)):
        ctx.freeze_inputs(node, _why(node, "has a transposed input"))
        return
    trans_b = int(attr(node, "transB", 0))
    k_axis, n_axis = (1, 0) if trans_b else (0, 1)
    if a_lab is not None and a_lab.axis != 1:
        ctx.freeze(a_lab.ids, _why(node, "reads rows, not features"))
        a_lab = None
    ctx.new_root(node, y, 1, weight[n_axis], weight=b_name, weight_axis=n_axis)
    if a_lab is not None:
        ctx.consume(node, a_lab)
        ctx.slice_input(node, 1, k_axis, a)
    ctx.slice_input(node, 1, n_axis, y)
    bias = ctx.weight_shape(c_name) if c_name else None
    if bias is not None and len(bias) >= 1 and bias[-1] == weight[n_axis] > 1:
        ctx.slice_input(node, 2, len(bias) - 1, y)


def propagate_matmul(node: onnx.NodeProto, ctx: AnalysisContext) -> None:
    """MatMul: with a constant right operand it is a linear layer (new root on the last
    axis); between two activations the contracted axes are coupled (attention)."""
    a, b, y = node.input[0], node.input[1], node.output[0]
    a_lab, b_lab = ctx.label(a), ctx.label(b)
    ra, rb, ry = ctx.rank(a), ctx.rank(b), ctx.rank(y)
    weight = ctx.weight_shape(b)
    if ra is None or rb is None or ry is None or ra < 2 or rb < 2 or ctx.is_const(a):
        ctx.freeze_inputs(node, _why(node, "has operands of unknown or vector rank"))
        return
    if weight is None and ctx.weight_problem(b):
        _freeze_unsliceable(node, ctx, ry - 1, b)
        return
    if weight is not None:
        if a_lab is not None and a_lab.axis == ra - 1:
            ctx.consume(node, a_lab)
            ctx.slice_input(node, 1, rb - 2, a)
        elif a_lab is not None and a_lab.axis == ra - 2:
            ctx.set_label(y, Labels(axis=ry - 2, ids=a_lab.ids))  # rows pass through
            return
        elif a_lab is not None:
            ctx.freeze(a_lab.ids, _why(node, "mixes a batch axis that carries channels"))
        ctx.new_root(node, y, ry - 1, weight[-1], weight=b, weight_axis=rb - 1)
        ctx.slice_input(node, 1, rb - 1, y)
        return
    # two activations: contraction couples a[..., k] with b[..., k, :]
    if a_lab is not None and a_lab.axis == ra - 1 or b_lab is not None and b_lab.axis == rb - 2:
        if a_lab is not None and b_lab is not None and a_lab.axis == ra - 1 and b_lab.axis == rb - 2:
            ctx.couple(a_lab.ids, b_lab.ids, _why(node, "contracts"))
        else:
            ctx.freeze_inputs(node, _why(node, "contracts channels with a fixed operand"))
            return
    if a_lab is not None and a_lab.axis == ra - 2:
        ctx.set_label(y, Labels(axis=ry - 2, ids=a_lab.ids))
    if b_lab is not None and b_lab.axis == rb - 1:
        ctx.set_label(y, Labels(axis=ry - 1, ids=b_lab.ids))


def propagate_norm(node: onnx.NodeProto, ctx: AnalysisContext) -> None:
    """BatchNormalization / InstanceNormalization: per-channel parameters on axis 1."""
    x, y = node.input[0], node.output[0]
    lab = ctx.label(x)
    if lab is None:
        return
    if lab.axis != 1:
        ctx.freeze(lab.ids, _why(node, "normalizes channels on a non-channel axis"))
        return
    count = 5 if node.op_type == "BatchNormalization" else 3
    for index in range(1, min(count, len(node.input))):
        if ctx.weight_shape(node.input[index]) is None:
            ctx.freeze(lab.ids, _why(node, "has non-constant parameters"))
            return
    for index in range(1, min(count, len(node.input))):
        ctx.slice_input(node, index, 0, y)
    ctx.set_label(y, lab)
