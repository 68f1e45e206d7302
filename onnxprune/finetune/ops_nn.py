"""Torch functions for the ONNX layers with weights: Conv, ConvTranspose, Gemm, norms, pooling.

Every function has the signature ``(node, inputs) -> outputs`` of :mod:`onnxprune.finetune.ops`:
``node`` is the :class:`OpNode` (attributes parsed once), ``inputs`` the node's input tensors in
ONNX order (``None`` for an omitted optional input), and the result a tuple of output tensors.
ONNX semantics are followed exactly (asymmetric pads, ``auto_pad``, ``output_padding``), so the
module's forward equals ONNX Runtime's output to float rounding.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from onnxprune.errors import UnsupportedInput
from onnxprune.finetune.opnode import OpNode, Outputs

logger = logging.getLogger(__name__)

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def _spatial(node: OpNode, x: Tensor, kernel: Sequence[int]) -> tuple[list[int], list[int], list[int]]:
    """``(strides, dilations, pads)`` with ``auto_pad`` resolved; pads as ONNX ``[b..., e...]``."""
    rank = len(kernel)
    strides = list(node.attr("strides", [1] * rank))
    dilations = list(node.attr("dilations", [1] * rank))
    auto = node.attr("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        return strides, dilations, list(node.attr("pads", [0] * (2 * rank)))
    if auto == "VALID":
        return strides, dilations, [0] * (2 * rank)
    begin, end = [], []
    for size, k, s, d in zip(x.shape[2:], kernel, strides, dilations):
        total = max(0, (math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        begin.append(small if auto == "SAME_UPPER" else large)
        end.append(large if auto == "SAME_UPPER" else small)
    return strides, dilations, begin + end


def _torch_pads(pads: Sequence[int]) -> list[int]:
    """ONNX ``[b1, b2, e1, e2]`` -> F.pad's ``[b2, e2, b1, e1]`` (last axis first)."""
    rank = len(pads) // 2
    out: list[int] = []
    for axis in reversed(range(rank)):
        out += [pads[axis], pads[axis + rank]]
    return out


def _symmetric(pads: Sequence[int]) -> bool:
    rank = len(pads) // 2
    return list(pads[:rank]) == list(pads[rank:])


def _rank_fn(table: dict[int, object], node: OpNode, rank: int) -> object:
    if rank not in table:
        raise UnsupportedInput(f"node '{node.name}': {node.op_type} over {rank} spatial dims cannot be "
                               "fine-tuned (1-3 are supported)")
    return table[rank]


def conv(node: OpNode, inputs: Sequence[Tensor | None]) -> Outputs:
    """ONNX Conv (any auto_pad, asymmetric pads, groups)."""
    x, w, b = inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None
    kernel = list(node.attr("kernel_shape", list(w.shape[2:])))
    strides, dilations, pads = _spatial(node, x, kernel)
    fn = _rank_fn(_CONV, node, len(kernel))
    if _symmetric(pads):
        padding: int | list[int] = pads[: len(kernel)]
    else:
        x, padding = F.pad(x, _torch_pads(pads)), 0
    return (fn(x, w, b, strides, padding, dilations, node.attr("group", 1)),)


def conv_transpose(node: OpNode, inputs: Sequence[Tensor | None]) -> Outputs:
    """ONNX ConvTranspose: full transposed conv, ``output_padding`` zeros, then the pads cropped."""
    x, w, b = inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None
    kernel = list(node.attr("kernel_shape", list(w.shape[2:])))
    rank = len(kernel)
    strides = list(node.attr("strides", [1] * rank))
    dilations = list(node.attr("dilations", [1] * rank))
    extra = list(node.attr("output_padding", [0] * rank))
    full = _rank_fn(_CONV_T, node, rank)(x, w, None, strides, 0, 0, node.attr("group", 1), dilations)
    lengths = [s * (n - 1) + o + (k - 1) * d + 1
               for n, s, o, k, d in zip(x.shape[2:], strides, extra, kernel, dilations)]
    pads = _transpose_pads(node, x, lengths, strides)
    if any(extra):
        full = F.pad(full, _torch_pads([0] * rank + extra))
    index = [slice(None), slice(None)] + [slice(pads[i], lengths[i] - pads[i + rank]) for i in range(rank)]
    out = full[tuple(index)]
    if b is not None:
        out = out + b.reshape(1, -1, *([1] * rank))
    return (out,)


def _transpose_pads(node: OpNode, x: Tensor, lengths: Sequence[int], strides: Sequence[int]) -> list[int]:
    """Pads of a ConvTranspose: given, or from ``output_shape`` / ``SAME_*`` (ONNX's split rule)."""
    rank = len(lengths)
    shape = node.attr("output_shape", None)
    auto = node.attr("auto_pad", "NOTSET")
    if shape is None and auto not in ("SAME_UPPER", "SAME_LOWER"):
        return list(node.attr("pads", [0] * (2 * rank))) if auto != "VALID" else [0] * (2 * rank)
    targets = list(shape)[-rank:] if shape is not None else [n * s for n, s in zip(x.shape[2:], strides)]
    begin, end = [], []
    for full, target in zip(lengths, targets):
        total = max(0, full - target)
        half = total // 2
        begin.append(half if auto == "SAME_UPPER" else total - half)
        end.append(total - half if auto == "SAME_UPPER" else half)
    return begin + end


def gemm(node: OpNode, inputs: Sequence[Tensor | None]) -> Outputs:
    """ONNX Gemm: ``alpha * A' @ B' + beta * C``."""
    a, b = inputs[0], inputs[1]
    c = inputs[2] if len(inputs) > 2 else None
    a = a.transpose(0, 1) if node.attr("transA", 0) else a
    b = b.transpose(0, 1) if node.attr("transB", 0) else b
    alpha, beta = node.attr("alpha", 1.0), node.attr("beta", 1.0)
    out = a @ b
    if alpha != 1.0:
        out = out * alpha
    if c is not None:
        out = out + (c if beta == 1.0 else c * beta)
    return (out,)


def matmul(node: OpNode, inputs: Sequence[Tensor | None]) -> Outputs:  # noqa: ARG001 - table signature
    """ONNX MatMul (numpy matmul semantics)."""
    return (torch.matmul(inputs[0], inputs[1]),)


def batch_norm(node: OpNode, inputs: Sequence[Tensor | None]) -> Outputs:
    """Inference BatchNormalization: an affine op of the running statistics (no batch statistics)."""
    x, scale, bias, mean, var = inputs[:5]
    return (F.batch_norm(x, mean, var, scale, bias, training=False, eps=node.attr("epsilon", 1e-5)),)


def instance_norm(node: OpNode, inputs: Sequence[Tensor | None]) -> Outputs:
    """ONNX InstanceNormalization."""
    x, scale, bias = inputs[:3]
    return (F.instance_norm(x, weight=scale, bias=bias, eps=node.attr("epsilon", 1e-5)),)


def layer_norm(node: OpNode, inputs: Sequence[Tensor | None]) -> Outputs:
    """ONNX LayerNormalization over ``axis..end`` with a broadcast scale and bias (one output)."""
    if node.n_outputs > 1:
        raise UnsupportedInput(f"node '{node.name}': LayerNormalization's mean/inv-std outputs are used; "
                               "fine-tuning supports its first output only")
    x, scale = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    axis = node.attr("axis", -1) % x.dim()
    out = F.layer_norm(x, x.shape[axis:], None, None, node.attr("epsilon", 1e-5)) * scale
    return (out if bias is None else out + bias,)


def _pool_args(node: OpNode, x: Tensor) -> tuple[list[int], list[int], list[int], list[int]]:
    kernel = list(node.attr("kernel_shape"))
    strides, dilations, pads = _spatial(node, x, kernel)
    return kernel, strides, dilations, pads


def _pads_fit(kernel: Sequence[int], pads: Sequence[int]) -> bool:
    """Torch pooling takes symmetric pads of at most half the kernel."""
    return _symmetric(pads) and all(p <= k // 2 for p, k in zip(pads, kernel))


def max_pool(node: OpNode, inputs: Sequence[Tensor | None]) -> Outputs:
    """ONNX MaxPool (Indices output unsupported)."""
    if node.n_outputs > 1:
        raise UnsupportedInput(f"node '{node.name}': MaxPool's Indices output is used; fine-tuning "
                               "supports its first output only")
    x = inputs[0]
    kernel, strides, dilations, pads = _pool_args(node, x)
    fn = _rank_fn(_MAX_POOL, node, len(kernel))
    ceil = bool(node.attr("ceil_mode", 0))
    if _pads_fit(kernel, pads):
        return (fn(x, kernel, strides, pads[: len(kernel)], dilations, ceil_mode=ceil),)
    x = F.pad(x, _torch_pads(pads), value=-math.inf)
    return (fn(x, kernel, strides, 0, dilations, ceil_mode=ceil),)


def average_pool(node: OpNode, inputs: Sequence[Tensor | None]) -> Outputs:
    """ONNX AveragePool (``count_include_pad``, asymmetric pads)."""
    x = inputs[0]
    kernel, strides, dilations, pads = _pool_args(node, x)
    if any(d != 1 for d in dilations):
        raise UnsupportedInput(f"node '{node.name}': dilated AveragePool cannot be fine-tuned")
    fn = _rank_fn(_AVG_POOL, node, len(kernel))
    ceil, include = bool(node.attr("ceil_mode", 0)), bool(node.attr("count_include_pad", 0))
    if _pads_fit(kernel, pads):
        return (fn(x, kernel, strides, pads[: len(kernel)], ceil, include),)
    padded = F.pad(x, _torch_pads(pads))
    total = fn(padded, kernel, strides, 0, ceil, True)
    if include:
        return (total,)
    count = fn(F.pad(torch.ones_like(x[:1, :1]), _torch_pads(pads)), kernel, strides, 0, ceil, True)
    return (total / count,)


def lp_pool(node: OpNode, inputs: Sequence[Tensor | None]) -> Outputs:
    """ONNX LpPool: ``(sum |x|^p) ^ (1/p)`` over each window."""
    x = inputs[0]
    kernel, strides, _, pads = _pool_args(node, x)
    p = float(node.attr("p", 2))
    fn = _rank_fn(_AVG_POOL, node, len(kernel))
    summed = fn(F.pad(x.abs() ** p, _torch_pads(pads)), kernel, strides, 0, False, True) * math.prod(kernel)
    return (summed ** (1.0 / p),)


def global_average_pool(node: OpNode, inputs: Sequence[Tensor | None]) -> Outputs:  # noqa: ARG001
    """ONNX GlobalAveragePool (keeps the spatial dims as 1)."""
    x = inputs[0]
    return (x.mean(dim=tuple(range(2, x.dim())), keepdim=True),)


def global_max_pool(node: OpNode, inputs: Sequence[Tensor | None]) -> Outputs:  # noqa: ARG001
    """ONNX GlobalMaxPool."""
    x = inputs[0]
    return (x.amax(dim=tuple(range(2, x.dim())), keepdim=True),)


def global_lp_pool(node: OpNode, inputs: Sequence[Tensor | None]) -> Outputs:
    """ONNX GlobalLpPool."""
    x, p = inputs[0], float(node.attr("p", 2))
    return ((x.abs() ** p).sum(dim=tuple(range(2, x.dim())), keepdim=True) ** (1.0 / p),)
