"""Torch functions for the ONNX shape, indexing, reduction and resize ops (same signature as ops_nn)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from onnxprune.errors import UnsupportedInput
from onnxprune.finetune.opnode import ONNX_TO_TORCH, OpNode, Outputs, ints

logger = logging.getLogger(__name__)

_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}


def _input(inputs: Sequence[Tensor | None], index: int) -> Tensor | None:
    return inputs[index] if len(inputs) > index else None


def shape(node: OpNode, inputs: Sequence[Tensor | None]) -> Outputs:
    """ONNX Shape (``start``/``end``)."""
    dims = list(inputs[0].shape)
    start, end = node.attr("start", 0), node.attr("end", None)
    return (torch.tensor(dims[start:end], dtype=torch.int64, device=inputs[0].device),)


def size(node: OpNode, inputs: Sequence[Tensor | None]) -> Outputs:  # noqa: ARG001 - table signature
    """ONNX Size."""
    return (torch.tensor(inputs[0].numel(), dtype=torch.int64, device=inputs[0].device),)


def transpose(node: OpNode, inputs: Sequence[Tensor | None]) -> Outputs:
    """ONNX Transpose (default: reverse the axes)."""
    x = inputs[0]
    return (x.permute(*node.attr("perm", list(reversed(range(x.dim()))))),)


def _axes(node: OpNode, inputs: Sequence[Tensor | None], index: int) -> list[int] | None:
    """Axes from the input at ``index`` (opset 13+/18+) or from the ``axes`` attribute."""
    given = ints(_input(inputs, index))
    return given if given is not None else node.attr("axes", None)


def squeeze(node: OpNode, inputs: Sequence[Tensor | None]) -> Outputs:
    """ONNX Squeeze (no axes: every size-1 axis)."""
    x, axes = inputs[0], _axes(node, inputs, 1)
    if axes is None:
        return (x.squeeze(),)
    return (x.squeeze(tuple(a % x.dim() for a in axes)),)


def unsqueeze(node: OpNode, inputs: Sequence[Tensor | None]) -> Outputs:
    """ONNX Unsqueeze (axes relative to the output rank)."""
    x, axes = inputs[0], _axes(node, inputs, 1)
    rank = x.dim() + len(axes)
    for axis in sorted(a % rank for a in axes):
        x = x.unsqueeze(axis)
    return (x,)


def flatten(node: OpNode, inputs: Sequence[Tensor | None]) -> Outputs:
    """ONNX Flatten to 2-D at ``axis``."""
    x = inputs[0]
    axis = node.attr("axis", 1) % (x.dim() + 1) if x.dim() else 0
    return (x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:])),)


def reshape(node: OpNode, inputs: Sequence[Tensor | None]) -> Outputs:
    """ONNX Reshape (``0`` copies the input dim unless ``allowzero``)."""
    x, target = inputs[0], ints(inputs[1])
    if not node.attr("allowzero", 0):
        target = [x.shape[i] if d == 0 else d for i, d in enumerate(target)]
    return (x.reshape(target),)


def concat(node: OpNode, inputs: Sequence[Tensor | None]) -> Outputs:
    """ONNX Concat."""
    return (torch.cat([t for t in inputs if t is not None], dim=node.attr("axis")),)


def split(node: OpNode, inputs: Sequence[Tensor | None]) -> Outputs:
    """ONNX Split (sizes input, ``split`` attribute, or equal parts / ``num_outputs``)."""
    x, axis = inputs[0], node.attr("axis", 0)
    sizes = ints(_input(inputs, 1)) or node.attr("split", None)
    if not sizes:
        parts = node.attr("num_outputs", node.n_outputs)
        step = math.ceil(x.shape[axis] / parts)
        sizes = [min(step, x.shape[axis] - i * step) for i in range(parts)]
    return tuple(torch.split(x, list(sizes), dim=axis))


def slice_(node: OpNode, inputs: Sequence[Tensor | None]) -> Outputs:  # noqa: ARG001 - table signature
    """ONNX Slice (negative axes and steps, ONNX clamping)."""
    x = inputs[0]
    starts, ends = ints(inputs[1]), ints(inputs[2])
    axes = ints(_input(inputs, 3)) or list(range(len(starts)))
    steps = ints(_input(inputs, 4)) or [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis %= x.dim()
        dim = x.shape[axis]
        start = start + dim if start < 0 else start
        end = end + dim if end < 0 else end
        if step > 0:
            x = x[(slice(None),) * axis + (slice(min(max(start, 0), dim), min(max(end, 0), dim), step),)]
        else:
            index = list(range(min(max(start, 0), dim - 1), min(max(end, -1), dim - 1), step))
            x = x.index_select(axis, torch.tensor(index, dtype=torch.int64, device=x.device))
    return (x,)


def gather(node: OpNode, inputs: Sequence[Tensor | None]) -> Outputs:
    """ONNX Gather (negative indices, any index rank)."""
    x, index = inputs[0], inputs[1].long()
    axis = node.attr("axis", 0) % x.dim()
    index = torch.where(index < 0, index + x.shape[axis], index)
    picked = x.index_select(axis, index.reshape(-1))
    return (picked.reshape(*x.shape[:axis], *index.shape, *x.shape[axis + 1:]),)


def pad(node: OpNode, inputs: Sequence[Tensor | None]) -> Outputs:
    """ONNX Pad (constant/reflect/edge/wrap; ``axes`` input; negative pads crop)."""
    x, pads = inputs[0], ints(inputs[1])
    value = _input(inputs, 2)
    axes = ints(_input(inputs, 3)) or list(range(x.dim()))
    axes = [a % x.dim() for a in axes]
    full = [0] * (2 * x.dim())
    for i, axis in enumerate(axes):
        full[axis], full[axis + x.dim()] = pads[i], pads[i + len(axes)]
    mode = _PAD_MODES.get(node.attr("mode", "constant"))
    if mode is None:
        raise UnsupportedInput(f"node '{node.name}': Pad mode '{node.attr('mode')}' cannot be fine-tuned")
    torch_pads: list[int] = []
    for axis in reversed(range(x.dim())):
        torch_pads += [full[axis], full[axis + x.dim()]]
    while len(torch_pads) > 2 and torch_pads[-2:] == [0, 0]:
        torch_pads = torch_pads[:-2]
    if mode == "constant":
        fill = 0.0 if value is None or value.numel() == 0 else float(value.reshape(-1)[0])
        return (F.pad(x, torch_pads, value=fill),)
    if len(torch_pads) // 2 > 3 or len(torch_pads) // 2 > x.dim() - 1:
        raise UnsupportedInput(f"node '{node.name}': Pad mode '{node.attr('mode')}' on leading axes cannot "
                               "be fine-tuned")
    return (F.pad(x, torch_pads, mode=mode),)


def _resize_coordinate(mode: str, out_index: Tensor, scale: float, size_in: int, size_out: int) -> Tensor:
    if mode == "half_pixel":
        return (out_index + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (out_index + 0.5) / scale - 0.5 if size_out > 1 else torch.zeros_like(out_index)
    if mode == "align_corners":
        return out_index * ((size_in - 1) / (size_out - 1)) if size_out > 1 else torch.zeros_like(out_index)
    if mode == "asymmetric":
        return out_index / scale
    if mode == "tf_half_pixel_for_nn":
        return (out_index + 0.5) / scale
    raise UnsupportedInput(f"Resize coordinate_transformation_mode '{mode}' cannot be fine-tuned")


def _nearest(mode: str, coord: Tensor) -> Tensor:
    if mode == "round_prefer_floor":
        return torch.ceil(coord - 0.5)
    if mode == "round_prefer_ceil":
        return torch.floor(coord + 0.5)
    if mode == "floor":
        return torch.floor(coord)
    if mode == "ceil":
        return torch.ceil(coord)
    raise UnsupportedInput(f"Resize nearest_mode '{mode}' cannot be fine-tuned")


def resize(node: OpNode, inputs: Sequence[Tensor | None]) -> Outputs:
    """ONNX Resize, nearest or (bi)linear, every axis separably with ONNX's coordinate formulas."""
    x = inputs[0]
    scales, sizes = _input(inputs, 2), _input(inputs, 3)
    mode = node.attr("mode", "nearest")
    if mode not in ("nearest", "linear") or node.attr("antialias", 0) or _input(inputs, 4) is not None:
        raise UnsupportedInput(f"node '{node.name}': Resize mode '{mode}' (or antialias) cannot be fine-tuned; "
                               "nearest and linear can")
    if sizes is not None and sizes.numel():
        out_sizes = ints(sizes)
        factors = [o / i for o, i in zip(out_sizes, x.shape)]
    else:
        factors = [float(v) for v in scales.reshape(-1).tolist()]
        out_sizes = [int(math.floor(n * f)) for n, f in zip(x.shape, factors)]
    coord_mode = node.attr("coordinate_transformation_mode", "half_pixel")
    for axis, (size_in, size_out, factor) in enumerate(zip(x.shape, out_sizes, factors)):
        if size_in == size_out and factor == 1.0:
            continue
        out_index = torch.arange(size_out, dtype=torch.float64, device=x.device)
        coord = _resize_coordinate(coord_mode, out_index, factor, size_in, size_out)
        if mode == "nearest":
            index = _nearest(node.attr("nearest_mode", "round_prefer_floor"), coord).clamp(0, size_in - 1)
            x = x.index_select(axis, index.long())
            continue
        coord = coord.clamp(0, size_in - 1)
        low = coord.floor().long()
        high = (low + 1).clamp(max=size_in - 1)
        weight_shape = [1] * x.dim()
        weight_shape[axis] = size_out
        weight = (coord - low).to(x.dtype).reshape(weight_shape)
        x = x.index_select(axis, low) * (1 - weight) + x.index_select(axis, high) * weight
    return (x,)


def constant_of_shape(node: OpNode, inputs: Sequence[Tensor | None]) -> Outputs:
    """ONNX ConstantOfShape (default: float 0)."""
    value = node.attr("value", None)
    fill = torch.from_numpy(np.array(value)).reshape(-1) if value is not None else torch.zeros(1)
    return (fill.to(inputs[0].device).expand(ints(inputs[0])).clone(),)


def cast(node: OpNode, inputs: Sequence[Tensor | None]) -> Outputs:
    """ONNX Cast."""
    to = node.attr("to")
    if to not in ONNX_TO_TORCH:
        raise UnsupportedInput(f"node '{node.name}': Cast to ONNX type {to} cannot be fine-tuned")
    return (inputs[0].to(ONNX_TO_TORCH[to]),)


def cast_like(node: OpNode, inputs: Sequence[Tensor | None]) -> Outputs:  # noqa: ARG001 - table signature
    """ONNX CastLike."""
    return (inputs[0].to(inputs[1].dtype),)
