"""Weights stored quantized (QDQ format): an integer initializer read through a DequantizeLinear.

A QDQ model (e.g. from ``onnxruntime.quantization.quantize_static(quant_format=QDQ)``) keeps
each Conv/Gemm/MatMul weight and bias as an integer initializer followed by
``DequantizeLinear(data, scale, zero_point, axis)``; the layer reads the DQ's float output.
The channel rules see through that DQ: the integer data is sliced like a float weight, and a
per-axis ``scale``/``zero_point`` is sliced with it when the sliced axis is the DQ's ``axis``.

Supported: int8/uint8/int16/uint16/int32 and int4/uint4 (opset 21) data, per-tensor or per-axis
(1-D) scale and zero point that are initializers, a DQ whose output feeds exactly one node.
Anything else (blocked quantization, float8 data, a DQ shared by several nodes, a scale computed
at run time) is reported by :func:`dq_weight_problem` and freezes the channels it touches.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.analyze.util import attr, input_at, norm_axis

QUANT_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
_T = onnx.TensorProto
#: Integer element types whose DequantizeLinear data the rewrite slices.
INTEGER_TYPES = frozenset({_T.INT8, _T.UINT8, _T.INT16, _T.UINT16, _T.INT32, _T.INT4, _T.UINT4})


@dataclass(frozen=True)
class QuantizedWeight:
    """A constant weight stored as ``DequantizeLinear(data, scale, zero_point)``.

    Attributes:
        node: Name of the DequantizeLinear node.
        data: Integer initializer (input 0).
        scale: Scale initializer (input 1).
        zero_point: Zero-point initializer (input 2), ``""`` when absent.
        axis: Quantization axis of ``data`` for a per-axis (1-D) scale; ``None`` when per-tensor.
        shape: Shape of ``data`` (and of the dequantized weight).
    """

    node: str
    data: str
    scale: str
    zero_point: str
    axis: int | None
    shape: tuple[int, ...]


def _quant_axis(node: onnx.NodeProto, scale: onnx.TensorProto, rank: int) -> int | None:
    """Per-axis quantization axis, or None for a per-tensor scale (rank 0, or one entry)."""
    if len(scale.dims) == 0 or int(np.prod(scale.dims)) == 1:
        return None
    return norm_axis(int(attr(node, "axis", 1)), rank)


def dq_weight_problem(node: onnx.NodeProto, inits: Mapping[str, onnx.TensorProto], uses: int) -> str | None:
    """Why the DequantizeLinear ``node`` cannot be sliced as a constant weight (None: it can).

    Args:
        node: A DequantizeLinear node.
        inits: Initializers by name.
        uses: How many node inputs (and graph outputs) read ``node``'s output.
    """
    data = inits.get(node.input[0])
    scale = inits.get(input_at(node, 1))
    zero_point = input_at(node, 2)
    where = f"DequantizeLinear '{node.name}'"
    if data is None:
        return f"{where} dequantizes a tensor computed at run time, not an integer initializer"
    if data.data_type not in INTEGER_TYPES:
        kind = onnx.helper.tensor_dtype_to_string(data.data_type)
        return f"{where} dequantizes {kind} data (only int8/uint8/int16/uint16/int32/int4/uint4 are sliced)"
    if scale is None or (zero_point and zero_point not in inits):
        return f"{where} has a scale or zero point computed at run time"
    if int(attr(node, "block_size", 0)) or len(scale.dims) > 1:
        return f"{where} uses blocked quantization (block_size), which is not supported"
    if uses != 1:
        return f"{where} output is read by {uses} consumers (a shared quantized weight)"
    return None


def dq_weight(node: onnx.NodeProto, inits: Mapping[str, onnx.TensorProto]) -> QuantizedWeight:
    """Describe a DequantizeLinear for which :func:`dq_weight_problem` found no problem."""
    data, scale = inits[node.input[0]], inits[node.input[1]]
    return QuantizedWeight(node=node.name, data=data.name, scale=scale.name, zero_point=input_at(node, 2),
                           axis=_quant_axis(node, scale, len(data.dims)), shape=tuple(int(d) for d in data.dims))


def dequantize(node: onnx.NodeProto, inits: Mapping[str, onnx.TensorProto]) -> np.ndarray | None:
    """Float64 value ``(data - zero_point) * scale`` of a DequantizeLinear of initializers, else None."""
    names = [n for n in node.input if n]
    if any(n not in inits for n in names) or int(attr(node, "block_size", 0)):
        return None
    data = numpy_helper.to_array(inits[node.input[0]]).astype(np.float64)
    scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
    zp = numpy_helper.to_array(inits[names[2]]).astype(np.float64) if len(names) > 2 else np.zeros(1)
    if scale.ndim > 1:
        return None
    if scale.size > 1:
        shape = [1] * data.ndim
        shape[norm_axis(int(attr(node, "axis", 1)), data.ndim)] = scale.size
        scale = scale.reshape(shape)
        zp = zp.reshape(shape) if zp.size > 1 else zp.reshape(-1)[0]
    else:
        scale, zp = scale.reshape(-1)[0], zp.reshape(-1)[0]
    return (data - zp) * scale


def weight_value(name: str, inits: Mapping[str, onnx.TensorProto],
                 producers: Mapping[str, onnx.NodeProto]) -> np.ndarray | None:
    """Float64 value of a constant weight: an initializer, or the dequantized output of a DQ of one."""
    if name in inits:
        return numpy_helper.to_array(inits[name]).astype(np.float64)
    node = producers.get(name)
    if node is not None and node.op_type == "DequantizeLinear" and node.domain in ("", "ai.onnx"):
        return dequantize(node, inits)
    return None
