"""The per-node record the op functions receive: op type, name, parsed attributes, output count."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

#: What an op function returns: one tensor per node output (``None`` for an unused optional one).
Outputs = tuple["torch.Tensor | None", ...]

#: ONNX element types -> torch dtypes (Cast, ConstantOfShape).
ONNX_TO_TORCH: Mapping[int, torch.dtype] = MappingProxyType({
    onnx.TensorProto.FLOAT: torch.float32, onnx.TensorProto.DOUBLE: torch.float64,
    onnx.TensorProto.FLOAT16: torch.float16, onnx.TensorProto.BFLOAT16: torch.bfloat16,
    onnx.TensorProto.INT8: torch.int8, onnx.TensorProto.UINT8: torch.uint8,
    onnx.TensorProto.INT16: torch.int16, onnx.TensorProto.INT32: torch.int32,
    onnx.TensorProto.INT64: torch.int64, onnx.TensorProto.BOOL: torch.bool,
})

_MISSING = object()


def _value(attribute: onnx.AttributeProto) -> Any:
    value = helper.get_attribute_value(attribute)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode() for v in value]
    return value


@dataclass(frozen=True)
class OpNode:
    """One graph node as the interpreter runs it.

    Attributes:
        name: The node's name (unique after :func:`onnxprune.load.load`).
        op_type: ONNX op type (default domain).
        attrs: Attribute name -> Python value (strings decoded, tensors as numpy arrays).
        n_outputs: Number of outputs the graph uses or names.
        opset: The model's default-domain opset.
    """

    name: str
    op_type: str
    attrs: Mapping[str, Any]
    n_outputs: int
    opset: int

    @classmethod
    def from_proto(cls, node: onnx.NodeProto, opset: int, index: int) -> OpNode:
        """Parse ``node`` (nameless nodes are called ``<op>_<index>``, as load names them)."""
        attrs = MappingProxyType({a.name: _value(a) for a in node.attribute})
        return cls(node.name or f"{node.op_type}_{index}", node.op_type, attrs, len(node.output), opset)

    def attr(self, name: str, default: Any = _MISSING) -> Any:
        """The attribute ``name``, or ``default`` (a missing attribute without default raises KeyError)."""
        if name in self.attrs:
            return self.attrs[name]
        if default is _MISSING:
            raise KeyError(f"node '{self.name}' ({self.op_type}) has no attribute '{name}'")
        return default


def ints(value: torch.Tensor | Sequence[int] | np.ndarray | None) -> list[int] | None:
    """A constant int tensor (shape, axes, pads...) as a Python list (``None`` stays ``None``)."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return [int(v) for v in value.reshape(-1).tolist()]
    return [int(v) for v in np.asarray(value).reshape(-1).tolist()]
