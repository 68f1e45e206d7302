"""Group index and mutable compression state of a :class:`~onnxprune.graph.CompGraph`.

The state holds one keep ratio and one bit-width per group and derives, by a few vectorized
numpy passes (no ONNX, no graph rebuild), what they imply per feature map (kept fraction of
its elements, mean bit-width) and per op (kept input/output fraction, remaining MACs factor).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

import numpy as np

from onnxprune.errors import PlanError
from onnxprune.graph.ops import OpInfo, Shape

logger = logging.getLogger(__name__)

FLOAT_BITS = 32.0


class GroupLike(Protocol):
    """What the graph needs of an :class:`onnxprune.analyze.Group`."""

    id: int
    members: Sequence[Any]  # ChannelRef(tensor, axis, start, stop)
    producers: Sequence[str]
    consumers: Sequence[str]


@dataclass(frozen=True)
class GroupIndex:
    """Where each group lives in the graph.

    Attributes:
        group_ids: Group ids, by position.
        node_rows: Per group, rows of the feature maps carrying its channels.
        op_rows: Per group, rows of its producer and consumer ops.
        edge_rows: Per group, rows of the edges of those ops.
        axis_tensor: ``[A]`` tensor row of each (tensor, axis) that groups touch.
        axis_size: ``[A]`` size of that axis.
        slice_axis: ``[S]`` axis entry of each member span.
        slice_group: ``[S]`` group position of each member span.
        slice_width: ``[S]`` width (``stop - start``) of each member span.
    """

    group_ids: tuple[int, ...]
    node_rows: tuple[np.ndarray, ...]
    op_rows: tuple[np.ndarray, ...]
    edge_rows: tuple[np.ndarray, ...]
    axis_tensor: np.ndarray
    axis_size: np.ndarray
    slice_axis: np.ndarray
    slice_group: np.ndarray
    slice_width: np.ndarray

    @classmethod
    def empty(cls) -> GroupIndex:
        """An index without groups."""
        none = np.zeros(0, dtype=np.int64)
        return cls((), (), (), (), none, none, none, none, none)

    def position(self, group_id: int) -> int:
        """Position of ``group_id``; raises :class:`PlanError` if unknown."""
        pos = self._positions.get(int(group_id))
        if pos is None:
            raise PlanError(f"group {group_id} is not in the graph's groups; use an id from "
                            "analyze(model).groups")
        return pos

    @cached_property
    def _positions(self) -> dict[int, int]:
        return {gid: i for i, gid in enumerate(self.group_ids)}


def build_group_index(groups: Iterable[GroupLike], row: Mapping[str, int], op_row: Mapping[str, int],
                      shapes: Sequence[Shape], edge_op: np.ndarray) -> GroupIndex:
    """Map groups onto graph elements (tensors -> nodes, producer/consumer names -> op edges)."""
    ids: list[int] = []
    node_rows: list[np.ndarray] = []
    op_rows: list[np.ndarray] = []
    edge_rows: list[np.ndarray] = []
    axis_of: dict[tuple[int, int], int] = {}
    slices: list[tuple[int, int, int]] = []
    for pos, group in enumerate(groups):
        ids.append(int(group.id))
        spans = {(m.tensor, int(m.axis), int(m.start), int(m.stop)) for m in group.members}
        nodes = sorted({row[t] for t, *_ in spans if t in row})
        for tensor, axis, start, stop in sorted(spans):
            if tensor not in row:
                continue  # weights and other constants are not feature maps
            t_row = row[tensor]
            axis = axis % max(len(shapes[t_row]), 1)
            key = (t_row, axis)
            if key not in axis_of:
                axis_of[key] = len(axis_of)
            slices.append((axis_of[key], pos, stop - start))
        op_set = sorted({op_row[n] for n in (*group.producers, *group.consumers) if n in op_row})
        node_rows.append(np.asarray(nodes, dtype=np.int64))
        op_rows.append(np.asarray(op_set, dtype=np.int64))
        edge_rows.append(np.flatnonzero(np.isin(edge_op, op_set)).astype(np.int64))
    if len(set(ids)) != len(ids):
        raise PlanError("group ids are not unique; pass the groups of one analyze() result")
    keys = sorted(axis_of, key=axis_of.__getitem__)
    axis_size = [int(shapes[t][a] or 0) if a < len(shapes[t]) else 0 for t, a in keys]
    arr = np.asarray(slices, dtype=np.int64).reshape(-1, 3)
    return GroupIndex(tuple(ids), tuple(node_rows), tuple(op_rows), tuple(edge_rows),
                      np.asarray([t for t, _ in keys], dtype=np.int64), np.asarray(axis_size, dtype=np.int64),
                      arr[:, 0].copy(), arr[:, 1].copy(), arr[:, 2].copy())


class GraphState:
    """Keep ratios and bit-widths per group and their per-tensor / per-op consequences.

    Attributes:
        index: The group index.
        keep: ``[G]`` keep ratio of each group (1 = unpruned).
        bits: ``[G]`` bit-width of each group (32 = float).
        tensor_keep: ``[N]`` kept fraction of each feature map's elements.
        tensor_bits: ``[N]`` mean bit-width of each feature map's channels.
        op_keep_in: ``[O]`` kept fraction of each op's first operand.
        op_keep_out: ``[O]`` kept fraction of each op's first result.
        op_macs_factor: ``[O]`` remaining fraction of each op's MACs and params.
        op_bits: ``[O]`` bit-width of each op's first result.
    """

    def __init__(self, index: GroupIndex, n_tensors: int, ops: Sequence[OpInfo],
                 row: Mapping[str, int]) -> None:
        self.index = index
        self.keep = np.ones(len(index.group_ids))
        self.bits = np.full(len(index.group_ids), FLOAT_BITS)
        self._n = n_tensors
        self._in_row = np.asarray([row[o.inputs[0]] if o.inputs else -1 for o in ops], dtype=np.int64)
        self._out_row = np.asarray([row[o.outputs[0]] if o.outputs else -1 for o in ops], dtype=np.int64)
        self._depthwise = np.asarray([o.depthwise for o in ops], dtype=bool)
        self.tensor_keep = np.ones(n_tensors)
        self.tensor_bits = np.full(n_tensors, FLOAT_BITS)
        self.op_keep_in = np.ones(len(ops))
        self.op_keep_out = np.ones(len(ops))
        self.op_macs_factor = np.ones(len(ops))
        self.op_bits = np.full(len(ops), FLOAT_BITS)
        self._refresh()

    def set_keep(self, ratios: Mapping[int, float]) -> None:
        """Set keep ratios in ``[0, 1]`` for the named groups and refresh derived arrays."""
        for gid, ratio in ratios.items():
            if not 0.0 <= float(ratio) <= 1.0:
                raise PlanError(f"keep ratio {ratio} of group {gid} is outside [0, 1]; pass a fraction kept")
            self.keep[self.index.position(gid)] = float(ratio)
        self._refresh()

    def set_bits(self, bits: Mapping[int, float]) -> None:
        """Set bit-widths in ``[1, 32]`` for the named groups and refresh derived arrays."""
        for gid, value in bits.items():
            if not 1.0 <= float(value) <= FLOAT_BITS:
                raise PlanError(f"bit-width {value} of group {gid} is outside [1, 32]; pass e.g. 8 or 4")
            self.bits[self.index.position(gid)] = float(value)
        self._refresh()

    def _refresh(self) -> None:
        idx = self.index
        size = idx.axis_size.astype(np.float64)
        covered = np.bincount(idx.slice_axis, weights=idx.slice_width, minlength=size.size)
        kept = np.bincount(idx.slice_axis, weights=idx.slice_width * self.keep[idx.slice_group],
                           minlength=size.size)
        bit_sum = np.bincount(idx.slice_axis, weights=idx.slice_width * self.bits[idx.slice_group],
                              minlength=size.size)
        rest = np.clip(size - covered, 0.0, None)
        frac = np.divide(rest + kept, size, out=np.ones_like(size), where=size > 0)
        self.tensor_keep = np.ones(self._n)
        np.multiply.at(self.tensor_keep, idx.axis_tensor, np.clip(frac, 0.0, 1.0))
        num = np.bincount(idx.axis_tensor, weights=bit_sum + rest * FLOAT_BITS, minlength=self._n)
        den = np.bincount(idx.axis_tensor, weights=np.maximum(size, covered), minlength=self._n)
        self.tensor_bits = np.divide(num, den, out=np.full(self._n, FLOAT_BITS), where=den > 0)
        self.op_keep_in = np.where(self._in_row >= 0, self.tensor_keep[self._in_row], 1.0)
        self.op_keep_out = np.where(self._out_row >= 0, self.tensor_keep[self._out_row], 1.0)
        self.op_macs_factor = np.where(self._depthwise, self.op_keep_out, self.op_keep_in * self.op_keep_out)
        self.op_bits = np.where(self._out_row >= 0, self.tensor_bits[self._out_row], FLOAT_BITS)
