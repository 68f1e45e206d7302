"""Feature matrices of the computational graph (static part computed once, dynamic part per call).

Node (feature map) features, in :data:`NODE_FEATURES` order: one-hot of the producing op type
over :data:`~onnxprune.graph.ops.OP_VOCAB` (``Input`` for graph inputs, ``Other`` for unknown
ops), producer kernel / 7, stride / 4, depthwise and grouped flags, log-scaled channels, height
and width relative to the largest, graph input / output flags, then the dynamic part: kept
fraction, bit-width / 32, and the producer's remaining share of the model's MACs and params.

Edge (operation) features, in :data:`EDGE_FEATURES` order: op one-hot, kernel, stride, flags,
log-scaled input and output channels, then kept input / output fraction, bit-width / 32 and
remaining MACs / params share.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from onnxprune.graph.ops import OP_INDEX, OP_VOCAB, OpInfo, Shape, channels_of, spatial_of

logger = logging.getLogger(__name__)

OP_FEATURES: tuple[str, ...] = tuple(f"op={name}" for name in OP_VOCAB) + (
    "kernel", "stride", "depthwise", "grouped")
NODE_FEATURES: tuple[str, ...] = OP_FEATURES + (
    "channels", "height", "width", "is_input", "is_output", "keep", "bits", "macs", "params")
EDGE_FEATURES: tuple[str, ...] = OP_FEATURES + (
    "channels_in", "channels_out", "keep_in", "keep_out", "bits", "macs", "params")


def op_type_features(op: OpInfo | None) -> np.ndarray:
    """Name-free features of an op (or of a graph input when ``op`` is None), :data:`OP_FEATURES`."""
    vec = np.zeros(len(OP_FEATURES), dtype=np.float32)
    if op is None:
        vec[OP_INDEX["Input"]] = 1.0
        return vec
    vec[OP_INDEX.get(op.op_type, OP_INDEX["Other"])] = 1.0
    base = len(OP_VOCAB)
    vec[base] = max(op.kernel, default=0) / 7.0
    vec[base + 1] = max(op.stride, default=0) / 4.0
    vec[base + 2] = float(op.depthwise)
    vec[base + 3] = float(op.groups > 1 and not op.depthwise)
    return vec


def _log_scale(values: np.ndarray) -> np.ndarray:
    top = math.log2(1.0 + float(values.max(initial=1.0)))
    return np.log2(1.0 + values) / max(top, 1.0)


def static_node_features(shapes: Sequence[Shape], ops: Sequence[OpInfo], producer: np.ndarray,
                         is_input: np.ndarray, is_output: np.ndarray) -> np.ndarray:
    """``[N, len(NODE_FEATURES) - 4]`` static node features."""
    op_feats = np.stack([op_type_features(None)] + [op_type_features(op) for op in ops])
    channels = np.asarray([channels_of(s) for s in shapes], dtype=np.float64)
    hw = np.asarray([spatial_of(s) for s in shapes], dtype=np.float64).reshape(-1, 2)
    hw = hw / np.maximum(hw.max(axis=0, initial=1.0), 1.0)
    cols = [op_feats[producer + 1], _log_scale(channels)[:, None], hw,
            is_input[:, None].astype(np.float64), is_output[:, None].astype(np.float64)]
    return np.concatenate(cols, axis=1).astype(np.float32)


def static_op_features(ops: Sequence[OpInfo]) -> np.ndarray:
    """``[O, len(OP_FEATURES) + 2]`` static op features (type features, log channels in/out)."""
    if not ops:
        return np.zeros((0, len(OP_FEATURES) + 2), dtype=np.float32)
    c_in = _log_scale(np.asarray([o.c_in for o in ops], dtype=np.float64))
    c_out = _log_scale(np.asarray([o.c_out for o in ops], dtype=np.float64))
    types = np.stack([op_type_features(op) for op in ops])
    return np.concatenate([types, c_in[:, None], c_out[:, None]], axis=1).astype(np.float32)


def shares(values: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """Remaining share of each op: ``values * factor / sum(values)`` (0 when the total is 0)."""
    total = float(values.sum())
    return (values * factor / total) if total > 0 else np.zeros_like(factor)
