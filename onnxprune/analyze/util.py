"""Small helpers shared by the channel rules."""

from __future__ import annotations

from typing import Any

import onnx
from onnx import helper


def attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    """Value of attribute ``name`` of ``node`` (bytes decoded), or ``default``."""
    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def norm_axis(axis: int, rank: int) -> int:
    """Map a possibly negative axis into ``[0, rank)``."""
    return axis + rank if axis < 0 else axis


def input_at(node: onnx.NodeProto, index: int) -> str:
    """Name of input ``index`` or ``""`` when absent."""
    return node.input[index] if len(node.input) > index else ""
