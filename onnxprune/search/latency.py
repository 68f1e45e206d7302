"""Latency model of a pruned candidate: a per-layer table measured on the device, summed.

**Model.** Only ``Conv`` and ``Gemm`` nodes are timed. Each one is described by a *layer key*
(op, kernel, strides, pads, dilations, group, the unpruned input and output channels and the
input's spatial size), so identical layers share one table entry. An entry holds the median
time of a tiny single-node model at a grid of kept input widths x kept output widths (e.g. 20,
40, ..., 100 % of the channels); depthwise convolutions have one tied width. A candidate's
latency is the sum over its Conv/Gemm nodes of the entry bilinearly interpolated at the node's
pruned widths (clamped to the measured grid). Other ops (BatchNorm, ReLU, Add, pooling) are not
counted, nor are grouped (not depthwise) convolutions: the metric is the time of the layers
whose width pruning changes. A node whose pruned shapes are unknown counts at full width.
The table is built by :func:`onnxprune.pipeline.latency_table.measure_table`; this module only
reads it.

**Whole-model correction.** The sum misses what lies between the timed layers: fixed per-run
overhead, memory-bound ops on the residual widths, layout reorders, and a layer in a graph runs
at another speed than alone. A :class:`Correction` ``measured_ms = scale * table_ms + offset`` is
fitted (:func:`fit_correction`) to whole models timed end to end on the device (the unpruned
model, uniform probes, the written candidate) by :mod:`onnxprune.pipeline.latency_fit`; with it
:meth:`LatencyModel.predict` is in measured milliseconds, so a latency target is a target on the
measured model. A positive ``offset`` is time pruning does not remove: the same target then
needs a deeper cut of the timed layers.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from onnxprune.analyze.types import Analysis
from onnxprune.errors import PlanError

logger = logging.getLogger(__name__)

ShapeOf = Callable[[str], "tuple[int | None, ...] | None"]
TIMED_OPS: tuple[str, ...] = ("Conv", "Gemm")


@dataclass(frozen=True)
class Layer:
    """A timed node's description.

    Attributes:
        key: The layer key (equal keys share a table entry).
        op: ``Conv`` or ``Gemm``.
        c_in: Unpruned input channels (Gemm: input features).
        c_out: Unpruned output channels (Gemm: output features).
        spatial: Input spatial size (empty for Gemm).
        attrs: ONNX attributes of the node (kernel_shape, strides, pads, dilations, group, trans*).
        weight: Unpruned weight shape.
        bias: Whether the node has a bias input.
        depthwise: ``group == c_in == c_out`` (input and output widths are tied).
    """

    key: str
    op: str
    c_in: int
    c_out: int
    spatial: tuple[int, ...]
    attrs: Mapping[str, Any]
    weight: tuple[int, ...]
    bias: bool
    depthwise: bool


def describe(node: onnx.NodeProto, shape_of: ShapeOf) -> Layer | None:
    """The :class:`Layer` of a Conv/Gemm ``node`` under ``shape_of`` (``None`` if not timed)."""
    if node.op_type not in TIMED_OPS or len(node.input) < 2:
        return None
    x, w = shape_of(node.input[0]), shape_of(node.input[1])
    if not x or not w or any(d is None or d < 1 for d in (*x, *w)):
        return None
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    attrs = {k: list(v) if isinstance(v, (list, tuple)) else v.decode() if isinstance(v, bytes) else v
             for k, v in attrs.items()}
    if node.op_type == "Conv":
        group = int(attrs.get("group", 1))
        c_in, c_out, spatial = int(x[1]), int(w[0]), tuple(int(d) for d in x[2:])
        depthwise = group > 1 and group == c_in == c_out
        if group > 1 and not depthwise:
            return None
    else:
        if len(x) != 2:
            return None
        c_in = int(x[0] if attrs.get("transA") else x[1])
        c_out = int(w[0] if attrs.get("transB") else w[1])
        spatial, depthwise = (), False
    plain = {k: v for k, v in sorted(attrs.items()) if k != "group"}
    key = f"{node.op_type}|in{c_in}|out{c_out}|x{list(spatial)}|{plain}|dw{int(depthwise)}|b{int(len(node.input) > 2)}"
    return Layer(key=key, op=node.op_type, c_in=c_in, c_out=c_out, spatial=spatial, attrs=attrs,
                 weight=tuple(int(d) for d in w), bias=len(node.input) > 2 and bool(node.input[2]), depthwise=depthwise)


@dataclass(frozen=True)
class TableEntry:
    """Measured times of one layer key.

    Attributes:
        widths_in: Kept input widths measured (one value ``0`` for depthwise: tied to the output).
        widths_out: Kept output widths measured.
        ms: ``[len(widths_in)][len(widths_out)]`` median milliseconds.
    """

    widths_in: tuple[int, ...]
    widths_out: tuple[int, ...]
    ms: tuple[tuple[float, ...], ...]

    def at(self, c_in: float, c_out: float) -> float:
        """Bilinear interpolation (clamped to the grid) at the given widths."""
        grid = np.asarray(self.ms, dtype=np.float64)
        cols = np.array([np.interp(c_out, self.widths_out, row) for row in grid])
        if len(self.widths_in) == 1:
            return float(cols[0])
        return float(np.interp(c_in, self.widths_in, cols))

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"widths_in": list(self.widths_in), "widths_out": list(self.widths_out),
                "ms": [list(r) for r in self.ms]}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> TableEntry:
        """Inverse of :meth:`to_json`."""
        return cls(tuple(int(v) for v in obj["widths_in"]), tuple(int(v) for v in obj["widths_out"]),
                   tuple(tuple(float(v) for v in r) for r in obj["ms"]))


@dataclass(frozen=True)
class LatencyTable:
    """Per-layer-key measurements on one device.

    Attributes:
        device: Where it was measured (runtime, provider, threads, CPU).
        entries: Layer key -> :class:`TableEntry`.
    """

    device: str
    entries: Mapping[str, TableEntry]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"device": self.device, "entries": {k: e.to_json() for k, e in sorted(self.entries.items())}}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> LatencyTable:
        """Inverse of :meth:`to_json`."""
        try:
            return cls(str(obj["device"]), {k: TableEntry.from_json(e) for k, e in obj["entries"].items()})
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanError(f"malformed latency table ({exc}); delete the .latency.json file to measure again") from exc


@dataclass(frozen=True)
class Correction:
    """Whole-model latency from the table's sum: ``scale * table_ms + offset``.

    Attributes:
        scale: Measured milliseconds per table millisecond.
        offset: Measured milliseconds no timed layer accounts for.
        points: ``(table_ms, measured_ms)`` pairs it was fitted to.
    """

    scale: float = 1.0
    offset: float = 0.0
    points: tuple[tuple[float, float], ...] = ()

    def __call__(self, table_ms: float) -> float:
        """Predicted whole-model milliseconds of a candidate whose table sum is ``table_ms``."""
        return self.scale * table_ms + self.offset

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"scale": self.scale, "offset": self.offset, "points": [list(p) for p in self.points]}


def fit_correction(points: Sequence[tuple[float, float]]) -> Correction:
    """Least-squares ``measured = scale * table + offset`` through ``(table_ms, measured_ms)`` points.

    With one point, or a fit whose scale or offset comes out negative (noise on nearly equal
    table sums), the offset is pinned at the smallest non-negative value that fits: a pure ratio
    through the origin, or the intercept with the scale clipped at zero.

    Raises:
        PlanError: no points.
    """
    if not points:
        raise PlanError("a latency correction needs at least one whole-model measurement")
    table = np.array([p[0] for p in points], dtype=np.float64)
    measured = np.array([p[1] for p in points], dtype=np.float64)
    frozen = tuple((float(t), float(m)) for t, m in points)
    if len(points) >= 2 and np.ptp(table) > 1e-9:
        scale, offset = np.polyfit(table, measured, 1)
        if scale > 0 and offset >= 0:
            return Correction(float(scale), float(offset), frozen)
    ratio = float(measured.sum() / max(table.sum(), 1e-12))
    return Correction(ratio, 0.0, frozen)


class LatencyModel:
    """Predicted milliseconds of a pruned model: the table's entries summed over its Conv/Gemm nodes.

    With a :class:`Correction`, :meth:`predict` is the corrected whole-model figure.
    """

    def __init__(self, analysis: Analysis, table: LatencyTable, correction: Correction | None = None) -> None:
        """Match the model's timed nodes to the table's entries (raises if one is missing)."""
        self.table = table
        self.correction = correction
        shapes = analysis.model.shapes.get
        self.nodes: list[tuple[onnx.NodeProto, Layer]] = []
        for node in analysis.model.proto.graph.node:
            layer = describe(node, shapes)
            if layer is None:
                continue
            if layer.key not in table.entries:
                raise PlanError(f"the latency table has no entry for {node.name} ({layer.key}); "
                                "delete the .latency.json file to measure again")
            self.nodes.append((node, layer))

    def corrected(self, correction: Correction | None) -> LatencyModel:
        """The same model and table with another correction."""
        other = copy.copy(self)
        other.correction = correction
        return other

    def predict(self, shape_of: ShapeOf) -> float:
        """Milliseconds of the model whose tensor shapes ``shape_of`` gives (e.g. ``pruned_shapes``).

        The table's sum, through the correction when there is one.
        """
        total = self.table_ms(shape_of)
        return self.correction(total) if self.correction is not None else total

    def table_ms(self, shape_of: ShapeOf) -> float:
        """The table's sum over the timed nodes (no correction)."""
        total = 0.0
        for node, layer in self.nodes:
            x, w = shape_of(node.input[0]), shape_of(node.input[1])
            entry = self.table.entries[layer.key]
            if not x or not w or any(d is None for d in (*x, *w)):
                total += entry.at(layer.c_in, layer.c_out)
                continue
            if layer.op == "Conv":
                c_in, c_out = float(x[1]), float(w[0])  # type: ignore[arg-type]
            else:
                c_in = float(x[0] if layer.attrs.get("transA") else x[1])  # type: ignore[arg-type]
                c_out = float(w[0] if layer.attrs.get("transB") else w[1])  # type: ignore[arg-type]
            total += entry.at(c_in, c_out)
        return total
