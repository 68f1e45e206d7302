"""Channel rules of ops that move, merge, cut or pad axes: Transpose, (Un)Squeeze, Flatten,
Reshape, Concat, Split, Slice, Gather, Pad, Resize."""

from __future__ import annotations

import numpy as np
import onnx

from onnxprune.analyze.context import AnalysisContext
from onnxprune.analyze.types import Labels, Select, SetShapeDims, SplitSizes
from onnxprune.analyze.util import attr, input_at, norm_axis


def _why(node: onnx.NodeProto, text: str) -> str:
    return f"{node.op_type} '{node.name}' {text}"


def _axes_input(node: onnx.NodeProto, ctx: AnalysisContext, index: int, rank: int) -> list[int] | None:
    """Axes from input ``index`` (opset >= 13) or the ``axes`` attribute; None if dynamic."""
    value = attr(node, "axes")
    if value is None and input_at(node, index):
        const = ctx.const(node.input[index])
        if const is None:
            return None
        value = const.tolist()
    return None if value is None else [norm_axis(int(a), rank) for a in np.atleast_1d(value)]


def propagate_transpose(node: onnx.NodeProto, ctx: AnalysisContext) -> None:
    """Transpose (e.g. tf2onnx NHWC <-> NCHW): the channel axis moves with ``perm``."""
    lab = ctx.label(node.input[0])
    rank = ctx.rank(node.input[0])
    if lab is None or rank is None:
        return
    perm = list(attr(node, "perm", list(range(rank))[::-1]))
    ctx.set_label(node.output[0], Labels(axis=perm.index(lab.axis), ids=lab.ids))


def propagate_squeeze(node: onnx.NodeProto, ctx: AnalysisContext) -> None:
    """Squeeze / Unsqueeze: the channel axis index shifts; squeezing it freezes it."""
    lab = ctx.label(node.input[0])
    rank_in, rank_out = ctx.rank(node.input[0]), ctx.rank(node.output[0])
    if lab is None:
        return
    if rank_in is None or rank_out is None:
        ctx.freeze(lab.ids, _why(node, "has unknown ranks"))
        return
    if node.op_type == "Unsqueeze":
        axes = _axes_input(node, ctx, 1, rank_out)
        if axes is None:
            ctx.freeze(lab.ids, _why(node, "has dynamic axes"))
            return
        kept = [a for a in range(rank_out) if a not in axes]
        ctx.set_label(node.output[0], Labels(axis=kept[lab.axis], ids=lab.ids))
        return
    axes = _axes_input(node, ctx, 1, rank_in)
    if axes is None:
        shape = ctx.shape(node.input[0]) or ()
        axes = [a for a, d in enumerate(shape) if d == 1]
    if lab.axis in axes:
        ctx.freeze(lab.ids, _why(node, "squeezes the channel axis"))
        return
    ctx.set_label(node.output[0], Labels(axis=lab.axis - sum(1 for a in axes if a < lab.axis), ids=lab.ids))


def _relabel(lab: Labels, shape_in: tuple[int, ...], shape_out: tuple[int, ...]
             ) -> tuple[Labels, list[np.ndarray]] | None:
    """Labels after a reshape, plus the atom sets that must become one unit; None if mixed.

    The channel labels are broadcast over the input shape (batch 1) and reshaped. Merged
    dims repeat each label (Flatten -> Gemm: channel c owns the c-th block of H*W features).
    When the channels end up on several axes (a channel shuffle's (g, C/g) split, attention
    heads (H, d)), the innermost of them carries the labels and the atoms at the same inner
    index are coupled across the outer axes, so the kept grid stays rectangular.
    """
    full = np.broadcast_to(lab.ids.reshape([-1 if a == lab.axis else 1 for a in range(len(shape_in))]),
                           shape_in).reshape(shape_out)
    varying = [a for a in range(full.ndim) if full.shape[a] > 1 and
               not np.array_equal(full, np.broadcast_to(full.take([0], axis=a), full.shape))]
    if not varying:
        return None
    axis = varying[-1]
    couplings = []
    if len(varying) > 1:
        for j in range(full.shape[axis]):
            atoms = np.unique(full.take(j, axis=axis))
            if atoms.size > 1:
                couplings.append(atoms)
    line = np.moveaxis(full, axis, 0).reshape(full.shape[axis], -1)
    fixed_outer = [a for a in range(full.ndim) if a != axis and a not in varying]
    check = np.broadcast_to(line[:, :1].reshape([-1 if a == axis else 1 for a in range(full.ndim)]), full.shape)
    if fixed_outer and len(varying) == 1 and not np.array_equal(full, check):
        return None
    return Labels(axis=axis, ids=line[:, 0].copy()), couplings


def _static(shape: tuple[int | None, ...] | None) -> tuple[int, ...] | None:
    if shape is None or any(d is None for d in shape):
        return None
    return tuple(int(d) for d in shape)


def propagate_reshape(node: onnx.NodeProto, ctx: AnalysisContext) -> None:
    """Reshape / Flatten: channels survive when they stay on one axis (possibly merged)."""
    lab = ctx.label(node.input[0])
    if lab is None:
        return
    shape_in, shape_out = _static(ctx.shape(node.input[0])), _static(ctx.shape(node.output[0]))
    target = ctx.const(node.input[1]) if node.op_type == "Reshape" else None
    if shape_in is None or shape_out is None or (node.op_type == "Reshape" and target is None):
        ctx.freeze(lab.ids, _why(node, "has a dynamic or unknown shape"))
        return
    if node.op_type == "Flatten" and lab.axis < norm_axis(int(attr(node, "axis", 1)), len(shape_in)):
        ctx.freeze(lab.ids, _why(node, "merges channels into the batch axis"))
        return
    relabeled = _relabel(lab, shape_in, shape_out)
    if relabeled is None:
        ctx.freeze(lab.ids, _why(node, "mixes the channel axis with others"))
        return
    new, couplings = relabeled
    if (lab.ids < 0).any() and couplings:
        ctx.freeze(lab.ids, _why(node, "splits channels that include fixed ones"))
        return
    for atoms in couplings:
        ctx.couple_all(atoms.tolist())
    ctx.set_label(node.output[0], new)
    if target is not None and int(target[new.axis]) not in (0, -1):
        ctx.edit(SetShapeDims(node.name, 1, ((new.axis, node.output[0]),)))


def propagate_concat(node: onnx.NodeProto, ctx: AnalysisContext) -> None:
    """Concat on the channel axis: output labels are the inputs' labels at their offsets."""
    out = node.output[0]
    rank = ctx.rank(out)
    labs = [ctx.label(n) for n in node.input]
    if rank is None or all(lab is None for lab in labs):
        if rank is None:
            ctx.freeze_inputs(node, _why(node, "has an unknown rank"))
        return
    axis = norm_axis(int(attr(node, "axis", 0)), rank)
    if any(lab is not None and lab.axis != axis for lab in labs):
        ctx.freeze_inputs(node, _why(node, "concatenates along an axis other than the channels"))
        return
    parts = []
    for name, lab in zip(node.input, labs):
        shape = ctx.shape(name)
        if lab is None and (shape is None or shape[axis] is None):
            ctx.freeze_inputs(node, _why(node, f"concatenates '{name}' of unknown size"))
            return
        parts.append(lab.ids if lab is not None else np.full(int(shape[axis]), -1, dtype=np.int64))
    ctx.set_label(out, Labels(axis=axis, ids=np.concatenate(parts)))


def propagate_split(node: onnx.NodeProto, ctx: AnalysisContext) -> None:
    """Split on the channel axis: each output takes its segment; sizes are rewritten."""
    lab = ctx.label(node.input[0])
    rank = ctx.rank(node.input[0])
    if lab is None or rank is None:
        return
    axis = norm_axis(int(attr(node, "axis", 0)), rank)
    if axis != lab.axis:
        for out in node.output:
            ctx.set_label(out, lab)
        return
    sizes = [(ctx.shape(o) or (None,) * rank)[axis] for o in node.output]
    if any(s is None for s in sizes) or sum(sizes) != lab.ids.size:
        ctx.freeze(lab.ids, _why(node, "has unknown split sizes"))
        return
    offsets = np.cumsum([0, *sizes])
    for k, out in enumerate(node.output):
        ctx.set_label(out, Labels(axis=axis, ids=lab.ids[offsets[k]:offsets[k + 1]]))
    ctx.edit(SplitSizes(node.name))


def propagate_slice(node: onnx.NodeProto, ctx: AnalysisContext) -> None:
    """Slice: on other axes channels pass; on the channel axis the output takes a subset."""
    lab = ctx.label(node.input[0])
    rank = ctx.rank(node.input[0])
    if lab is None or rank is None:
        return
    starts, ends = ctx.const(node.input[1]), ctx.const(node.input[2])
    axes = _axes_input(node, ctx, 3, rank) if input_at(node, 3) else list(range(len(starts if starts is not None else [])))
    if axes is not None and lab.axis not in axes and input_at(node, 3):
        ctx.set_label(node.output[0], lab)
        return
    steps = ctx.const(input_at(node, 4)) if input_at(node, 4) else None
    if starts is None or ends is None or axes is None or (input_at(node, 4) and steps is None):
        ctx.freeze(lab.ids, _why(node, "slices with dynamic bounds"))
        return
    if lab.axis not in axes:
        ctx.set_label(node.output[0], lab)
        return
    k = axes.index(lab.axis)
    step = int(steps[k]) if steps is not None else 1
    src = np.arange(*slice(int(starts[k]), int(ends[k]), step).indices(lab.ids.size), dtype=np.int64)
    ctx.set_label(node.output[0], Labels(axis=lab.axis, ids=lab.ids[src]))
    ctx.edit(Select(node.name, lab.axis, src, 0.0, "node" if len(axes) == 1 else "slice_axis"))


def propagate_gather(node: onnx.NodeProto, ctx: AnalysisContext) -> None:
    """Gather with constant indices: on the channel axis it selects channels."""
    lab = ctx.label(node.input[0])
    rank = ctx.rank(node.input[0])
    if lab is None or rank is None:
        return
    indices = ctx.const(node.input[1])
    axis = norm_axis(int(attr(node, "axis", 0)), rank)
    if indices is None:
        ctx.freeze(lab.ids, _why(node, "gathers with dynamic indices"))
        return
    if axis != lab.axis:
        shift = indices.ndim - 1 if lab.axis > axis else 0
        ctx.set_label(node.output[0], Labels(axis=lab.axis + shift, ids=lab.ids))
        return
    if indices.ndim != 1:
        ctx.freeze(lab.ids, _why(node, "gathers channels into a non-vector"))
        return
    src = np.where(indices < 0, indices + lab.ids.size, indices).astype(np.int64)
    ctx.set_label(node.output[0], Labels(axis=axis, ids=lab.ids[src]))
    ctx.edit(Select(node.name, axis, src, 0.0, "node"))


def propagate_pad(node: onnx.NodeProto, ctx: AnalysisContext) -> None:
    """Pad: spatial padding passes; constant channel padding (option-A shortcut) starts a
    new root linked to its input, rewritten as a gather from a zero-augmented tensor."""
    lab = ctx.label(node.input[0])
    rank = ctx.rank(node.input[0])
    if lab is None or rank is None:
        return
    pads = ctx.const(input_at(node, 1))
    axes = _axes_input(node, ctx, 3, rank) if input_at(node, 3) else list(range(rank))
    if pads is None or axes is None:
        ctx.freeze(lab.ids, _why(node, "pads with dynamic amounts"))
        return
    n = len(axes)
    if lab.axis not in axes or (pads[axes.index(lab.axis)] == 0 and pads[n + axes.index(lab.axis)] == 0):
        ctx.set_label(node.output[0], lab)
        return
    before, after = int(pads[axes.index(lab.axis)]), int(pads[n + axes.index(lab.axis)])
    value = ctx.const(input_at(node, 2)) if input_at(node, 2) else None
    if attr(node, "mode", "constant") != "constant" or before < 0 or after < 0 or \
            (input_at(node, 2) and value is None):
        ctx.freeze(lab.ids, _why(node, "pads channels with a non-constant or negative pad"))
        return
    size = lab.ids.size
    out = ctx.new_root(node, node.output[0], lab.axis, before + size + after)
    for i, atom in enumerate(lab.ids.tolist()):
        if atom >= 0:
            ctx.pad_links.append((int(out.ids[before + i]), atom))
    src = np.concatenate([np.full(before, -1), np.arange(size), np.full(after, -1)]).astype(np.int64)
    fill = float(value.ravel()[0]) if value is not None and value.size else 0.0
    others = [a for a in axes if a != lab.axis and (pads[axes.index(a)] or pads[n + axes.index(a)])]
    ctx.edit(Select(node.name, lab.axis, src, fill, "pad_axis" if others else "node"))


def propagate_resize(node: onnx.NodeProto, ctx: AnalysisContext) -> None:
    """Resize: channels pass when their scale is 1 (sizes are rewritten)."""
    lab = ctx.label(node.input[0])
    if lab is None:
        return
    scales = ctx.const(input_at(node, 2)) if input_at(node, 2) else None
    sizes = ctx.const(input_at(node, 3)) if input_at(node, 3) else None
    axes = attr(node, "axes")
    pos = list(axes).index(lab.axis) if axes is not None and lab.axis in axes else (None if axes else lab.axis)
    if pos is None:
        ctx.set_label(node.output[0], lab)
        return
    if sizes is not None and sizes.size and int(sizes[pos]) == lab.ids.size:
        ctx.edit(SetShapeDims(node.name, 3, ((pos, node.output[0]),)))
    elif not (scales is not None and scales.size and float(scales[pos]) == 1.0):
        ctx.freeze(lab.ids, _why(node, "resizes the channel axis"))
        return
    ctx.set_label(node.output[0], lab)
