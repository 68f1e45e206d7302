"""Channel rules of ops that keep channels in place: activations, broadcasting
arithmetic, pooling, reductions and normalizations over other axes."""

from __future__ import annotations

import numpy as np
import onnx

from onnxprune.analyze.context import AnalysisContext
from onnxprune.analyze.types import Labels
from onnxprune.analyze.util import attr, input_at, norm_axis


def _why(node: onnx.NodeProto, text: str) -> str:
    return f"{node.op_type} '{node.name}' {text}"


def propagate_passthrough(node: onnx.NodeProto, ctx: AnalysisContext) -> None:
    """Unary elementwise ops (activations, Cast, Identity, Dropout): channels pass unchanged."""
    lab = ctx.label(node.input[0])
    if lab is not None:
        ctx.set_label(node.output[0], lab)


def propagate_pool(node: onnx.NodeProto, ctx: AnalysisContext) -> None:
    """Pooling over spatial axes (N, C, spatial...): channels on axis 1 pass."""
    lab = ctx.label(node.input[0])
    if lab is None:
        return
    if lab.axis != 1:
        ctx.freeze(lab.ids, _why(node, "pools over the axis that carries channels"))
        return
    ctx.set_label(node.output[0], lab)


def propagate_broadcast(node: onnx.NodeProto, ctx: AnalysisContext) -> None:
    """Broadcasting n-ary ops (Add, Mul, Sub, Div, Pow, Max, Min, Sum, Where, PRelu, ...).

    Labeled inputs are coupled channel by channel (a residual Add makes one group of its
    inputs). A constant input with a full-size channel dim is sliced with the channels; an
    activation without labels that is not broadcast along the channel axis freezes them.
    """
    out = node.output[0]
    ry = ctx.rank(out)
    labeled = [(i, n, ctx.label(n)) for i, n in enumerate(node.input) if ctx.label(n) is not None]
    if not labeled:
        return
    if ry is None or any(ctx.rank(n) is None for _, n, _ in labeled):
        ctx.freeze_inputs(node, _why(node, "has inputs of unknown rank"))
        return
    aligned = {lab.axis + ry - ctx.rank(n) for _, n, lab in labeled}
    if len(aligned) > 1:
        ctx.freeze_inputs(node, _why(node, "combines channels on different axes"))
        return
    axis = aligned.pop()
    out_dim = (ctx.shape(out) or (None,) * ry)[axis]
    ref = next((lab for _, _, lab in labeled if lab.ids.size == out_dim), labeled[0][2])
    for _, _, lab in labeled:
        if lab is not ref:
            ctx.couple(ref.ids, lab.ids, _why(node, "couples its inputs"))
    done = {i for i, _, _ in labeled}
    for index, name in enumerate(node.input):
        if not name or index in done:
            continue
        shape = ctx.shape(name)
        if shape is None:
            ctx.freeze(ref.ids, _why(node, f"combines channels with '{name}' of unknown shape"))
            continue
        pos = axis - (ry - len(shape))
        if pos < 0 or shape[pos] == 1:
            continue  # broadcast along the channel axis: nothing to change
        if ctx.weight_shape(name) is not None and shape[pos] == ref.ids.size:
            ctx.slice_input(node, index, pos, out)
        else:
            problem = ctx.weight_problem(name)
            ctx.freeze(ref.ids, _why(node, f"combines channels with '{name}', which carries none"
                                     + (f" ({problem})" if problem else "")))
    ctx.set_label(out, Labels(axis=axis, ids=ref.ids))


def _reduce_axes(node: onnx.NodeProto, ctx: AnalysisContext, rank: int) -> list[int] | None:
    axes = attr(node, "axes")
    if axes is None and input_at(node, 1):
        value = ctx.const(node.input[1])
        if value is None:
            return None
        axes = value.tolist()
    if not axes:
        return [] if int(attr(node, "noop_with_empty_axes", 0)) else list(range(rank))
    return sorted(norm_axis(int(a), rank) for a in np.atleast_1d(axes))


def _label_and_rank(node: onnx.NodeProto, ctx: AnalysisContext) -> tuple[Labels, int] | None:
    """Labels and rank of input 0; None (after freezing it if the rank is unknown) otherwise."""
    lab = ctx.label(node.input[0])
    rank = ctx.rank(node.input[0])
    if lab is not None and rank is None:
        ctx.freeze(lab.ids, _why(node, "has an input of unknown rank"))
    return None if lab is None or rank is None else (lab, rank)


def propagate_reduce(node: onnx.NodeProto, ctx: AnalysisContext) -> None:
    """Reduce* / ArgMax / ArgMin: channels pass unless their axis is reduced."""
    known = _label_and_rank(node, ctx)
    if known is None:
        return
    lab, rank = known
    if node.op_type in ("ArgMax", "ArgMin"):
        axes: list[int] | None = [norm_axis(int(attr(node, "axis", 0)), rank)]
    else:
        axes = _reduce_axes(node, ctx, rank)
    if axes is None or lab.axis in axes:
        ctx.freeze(lab.ids, _why(node, "reduces over the channel axis"))
        return
    keep = int(attr(node, "keepdims", 1))
    new_axis = lab.axis if keep else lab.axis - sum(1 for a in axes if a < lab.axis)
    ctx.set_label(node.output[0], Labels(axis=new_axis, ids=lab.ids))


def propagate_axis_op(node: onnx.NodeProto, ctx: AnalysisContext) -> None:
    """Softmax / LogSoftmax / Hardmax / LayerNormalization: channels pass unless normalized over."""
    known = _label_and_rank(node, ctx)
    if known is None:
        return
    lab, rank = known
    axis = norm_axis(int(attr(node, "axis", -1)), rank)
    hit = lab.axis >= axis if node.op_type == "LayerNormalization" else lab.axis == axis
    if hit:
        ctx.freeze(lab.ids, _why(node, "normalizes over the channel axis"))
        return
    ctx.set_label(node.output[0], lab)


def propagate_shape(node: onnx.NodeProto, ctx: AnalysisContext) -> None:
    """Shape / Size read the channel count: freeze unless the read range excludes it."""
    lab = ctx.label(node.input[0])
    rank = ctx.rank(node.input[0])
    if lab is None:
        return
    if node.op_type == "Shape" and rank is not None:
        start = norm_axis(int(attr(node, "start", 0)), rank)
        end = attr(node, "end")
        end = rank if end is None else min(norm_axis(int(end), rank), rank)
        if not start <= lab.axis < end:
            return
    ctx.freeze(lab.ids, _why(node, "reads the channel count at run time"))
