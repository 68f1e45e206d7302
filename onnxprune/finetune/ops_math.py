"""Torch functions for ONNX elementwise, activation, softmax and reduction ops (signature of ops_nn)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import Tensor

from onnxprune.finetune.opnode import OpNode, Outputs, ints

logger = logging.getLogger(__name__)

OpFn = Callable[[OpNode, Sequence["Tensor | None"]], Outputs]
_SELU_ALPHA = 1.67326319217681884765625
_SELU_GAMMA = 1.05070102214813232421875


def _unary(fn: Callable[[OpNode, Tensor], Tensor]) -> OpFn:
    def op(node: OpNode, inputs: Sequence[Tensor | None]) -> Outputs:
        return (fn(node, inputs[0]),)

    return op


def _hard_sigmoid(node: OpNode, x: Tensor) -> Tensor:
    return (x * node.attr("alpha", 0.2) + node.attr("beta", 0.5)).clamp(0.0, 1.0)


def _is_inf(node: OpNode, x: Tensor) -> Tensor:
    negative, positive = node.attr("detect_negative", 1), node.attr("detect_positive", 1)
    return (torch.isneginf(x) & bool(negative)) | (torch.isposinf(x) & bool(positive))


def _shrink(node: OpNode, x: Tensor) -> Tensor:
    lambd, bias = node.attr("lambd", 0.5), node.attr("bias", 0.0)
    return torch.where(x < -lambd, x + bias, torch.where(x > lambd, x - bias, torch.zeros_like(x)))


#: Unary ops: (node, x) -> y.
UNARY: Mapping[str, Callable[[OpNode, Tensor], Tensor]] = MappingProxyType({
    "Relu": lambda n, x: torch.relu(x),
    "LeakyRelu": lambda n, x: F.leaky_relu(x, n.attr("alpha", 0.01)),
    "Elu": lambda n, x: F.elu(x, n.attr("alpha", 1.0)),
    "Selu": lambda n, x: n.attr("gamma", _SELU_GAMMA) * torch.where(
        x > 0, x, n.attr("alpha", _SELU_ALPHA) * (torch.exp(x) - 1)),
    "Celu": lambda n, x: F.celu(x, n.attr("alpha", 1.0)),
    "ThresholdedRelu": lambda n, x: torch.where(x > n.attr("alpha", 1.0), x, torch.zeros_like(x)),
    "Sigmoid": lambda n, x: torch.sigmoid(x),
    "HardSigmoid": _hard_sigmoid,
    "HardSwish": lambda n, x: F.hardswish(x),
    "Tanh": lambda n, x: torch.tanh(x),
    "Gelu": lambda n, x: F.gelu(x, approximate=n.attr("approximate", "none")),
    "Erf": lambda n, x: torch.erf(x),
    "Softplus": lambda n, x: F.softplus(x),
    "Softsign": lambda n, x: F.softsign(x),
    "Mish": lambda n, x: F.mish(x),
    "Exp": lambda n, x: torch.exp(x),
    "Log": lambda n, x: torch.log(x),
    "Sqrt": lambda n, x: torch.sqrt(x),
    "Abs": lambda n, x: torch.abs(x),
    "Neg": lambda n, x: torch.neg(x),
    "Reciprocal": lambda n, x: torch.reciprocal(x),
    "Floor": lambda n, x: torch.floor(x),
    "Ceil": lambda n, x: torch.ceil(x),
    "Round": lambda n, x: torch.round(x),  # half to even, as ONNX
    "Sign": lambda n, x: torch.sign(x),
    "Sin": lambda n, x: torch.sin(x),
    "Cos": lambda n, x: torch.cos(x),
    "Not": lambda n, x: torch.logical_not(x),
    "IsNaN": lambda n, x: torch.isnan(x),
    "IsInf": _is_inf,
    "Identity": lambda n, x: x,
    "Shrink": _shrink,
})


def _div(a: Tensor, b: Tensor) -> Tensor:
    if a.is_floating_point() or b.is_floating_point():
        return a / b
    return torch.div(a, b, rounding_mode="trunc")


#: Binary broadcasting ops: (node, a, b) -> y.
BINARY: Mapping[str, Callable[[OpNode, Tensor, Tensor], Tensor]] = MappingProxyType({
    "Add": lambda n, a, b: a + b,
    "Sub": lambda n, a, b: a - b,
    "Mul": lambda n, a, b: a * b,
    "Div": lambda n, a, b: _div(a, b),
    "Pow": lambda n, a, b: torch.pow(a, b).to(a.dtype),
    "PRelu": lambda n, a, b: torch.where(a >= 0, a, a * b),
    "Equal": lambda n, a, b: a == b,
    "Greater": lambda n, a, b: a > b,
    "GreaterOrEqual": lambda n, a, b: a >= b,
    "Less": lambda n, a, b: a < b,
    "LessOrEqual": lambda n, a, b: a <= b,
    "And": lambda n, a, b: torch.logical_and(a, b),
    "Or": lambda n, a, b: torch.logical_or(a, b),
    "Xor": lambda n, a, b: torch.logical_xor(a, b),
    "Mod": lambda n, a, b: torch.fmod(a, b) if n.attr("fmod", 0) else torch.remainder(a, b),
    "BitShift": lambda n, a, b: (torch.bitwise_left_shift(a, b) if n.attr("direction") == "LEFT"
                                 else torch.bitwise_right_shift(a, b)),
})


def _binary(fn: Callable[[OpNode, Tensor, Tensor], Tensor]) -> OpFn:
    def op(node: OpNode, inputs: Sequence[Tensor | None]) -> Outputs:
        return (fn(node, inputs[0], inputs[1]),)

    return op


def variadic(reduce: Callable[[Tensor, Tensor], Tensor], mean: bool = False) -> OpFn:
    """Max/Min/Sum/Mean over any number of broadcasting inputs."""

    def op(node: OpNode, inputs: Sequence[Tensor | None]) -> Outputs:  # noqa: ARG001 - table signature
        present = [t for t in inputs if t is not None]
        out = functools.reduce(reduce, present)
        return (out / len(present) if mean else out,)

    return op


def where(node: OpNode, inputs: Sequence[Tensor | None]) -> Outputs:  # noqa: ARG001 - table signature
    """ONNX Where."""
    return (torch.where(inputs[0].bool(), inputs[1], inputs[2]),)


def clip(node: OpNode, inputs: Sequence[Tensor | None]) -> Outputs:  # noqa: ARG001 - table signature
    """ONNX Clip (min/max inputs, either may be omitted)."""
    x = inputs[0]
    low = inputs[1] if len(inputs) > 1 else None
    high = inputs[2] if len(inputs) > 2 else None
    if low is not None:
        x = torch.maximum(x, low.to(x.dtype))
    if high is not None:
        x = torch.minimum(x, high.to(x.dtype))
    return (x,)


def dropout(node: OpNode, inputs: Sequence[Tensor | None]) -> Outputs:
    """ONNX Dropout at inference: identity (and an all-true mask when asked for)."""
    x = inputs[0]
    return (x, torch.ones_like(x, dtype=torch.bool)) if node.n_outputs > 1 else (x,)


def _softmax_axis(node: OpNode, x: Tensor) -> int:
    return node.attr("axis", -1 if node.opset >= 13 else 1) % max(x.dim(), 1)


def softmax(node: OpNode, inputs: Sequence[Tensor | None]) -> Outputs:
    """ONNX Softmax."""
    return (torch.softmax(inputs[0], dim=_softmax_axis(node, inputs[0])),)


def log_softmax(node: OpNode, inputs: Sequence[Tensor | None]) -> Outputs:
    """ONNX LogSoftmax."""
    return (torch.log_softmax(inputs[0], dim=_softmax_axis(node, inputs[0])),)


def hardmax(node: OpNode, inputs: Sequence[Tensor | None]) -> Outputs:
    """ONNX Hardmax: one-hot of the first maximum along the axis."""
    x = inputs[0]
    axis = _softmax_axis(node, x)
    return (F.one_hot(x.argmax(dim=axis), x.shape[axis]).movedim(-1, axis).to(x.dtype),)


def _reduce_axes(node: OpNode, inputs: Sequence[Tensor | None], x: Tensor) -> tuple[int, ...] | None:
    given = ints(inputs[1]) if len(inputs) > 1 and inputs[1] is not None else node.attr("axes", None)
    if not given:
        return None if node.attr("noop_with_empty_axes", 0) else tuple(range(x.dim()))
    return tuple(a % x.dim() for a in given)


_REDUCERS: Mapping[str, Callable[[Tensor, tuple[int, ...], bool], Tensor]] = MappingProxyType({
    "ReduceMean": lambda x, d, k: x.mean(dim=d, keepdim=k),
    "ReduceSum": lambda x, d, k: x.sum(dim=d, keepdim=k),
    "ReduceMax": lambda x, d, k: x.amax(dim=d, keepdim=k),
    "ReduceMin": lambda x, d, k: x.amin(dim=d, keepdim=k),
    "ReduceProd": lambda x, d, k: functools.reduce(lambda t, a: t.prod(dim=a, keepdim=True), d, x)
    if k else functools.reduce(lambda t, a: t.prod(dim=a, keepdim=True), d, x).squeeze(d),
    "ReduceL1": lambda x, d, k: x.abs().sum(dim=d, keepdim=k),
    "ReduceL2": lambda x, d, k: (x * x).sum(dim=d, keepdim=k).sqrt(),
    "ReduceLogSum": lambda x, d, k: x.sum(dim=d, keepdim=k).log(),
    "ReduceLogSumExp": lambda x, d, k: torch.logsumexp(x, dim=d, keepdim=k),
    "ReduceSumSquare": lambda x, d, k: (x * x).sum(dim=d, keepdim=k),
})


def reduce(node: OpNode, inputs: Sequence[Tensor | None]) -> Outputs:
    """ONNX Reduce* (axes attribute or input, keepdims, noop_with_empty_axes)."""
    x = inputs[0]
    axes = _reduce_axes(node, inputs, x)
    if axes is None:
        return (x,)
    return (_REDUCERS[node.op_type](x, axes, bool(node.attr("keepdims", 1))),)


def arg_extreme(node: OpNode, inputs: Sequence[Tensor | None]) -> Outputs:
    """ONNX ArgMax/ArgMin (``keepdims``, ``select_last_index``)."""
    x = inputs[0]
    axis = node.attr("axis", 0) % x.dim()
    keep = bool(node.attr("keepdims", 1))
    last = bool(node.attr("select_last_index", 0))
    source = x.flip(axis) if last else x
    index = source.argmax(dim=axis, keepdim=keep) if node.op_type == "ArgMax" else \
        source.argmin(dim=axis, keepdim=keep)
    return (x.shape[axis] - 1 - index if last else index,)


def table() -> dict[str, OpFn]:
    """The elementwise, activation, softmax and reduction part of the op table."""
    ops: dict[str, OpFn] = {name: _unary(fn) for name, fn in UNARY.items()}
    ops.update({name: _binary(fn) for name, fn in BINARY.items()})
    ops.update({"Max": variadic(torch.maximum), "Min": variadic(torch.minimum),
                "Sum": variadic(torch.add), "Mean": variadic(torch.add, mean=True),
                "Where": where, "Clip": clip, "Dropout": dropout,
                "Softmax": softmax, "LogSoftmax": log_softmax, "Hardmax": hardmax,
                "ArgMax": arg_extreme, "ArgMin": arg_extreme})
    ops.update({name: reduce for name in _REDUCERS})
    return ops

