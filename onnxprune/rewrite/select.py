"""Emit the smallest layout-friendly ONNX expression of a channel selection ``y[..., j, ...] = x[..., src[j], ...]``.

``src[j] == -1`` is a constant fill. In order of preference: Identity, Slice (arithmetic
progression), and runs: ``src`` cut into maximal runs of consecutive channels, each a Slice of
``x`` (or ``x`` itself), the fills around it a Pad, the runs joined by one Concat. The option-A
shortcut (all of ``x`` with fills on both sides) is the one-run case: one Pad. Only a selection of
more than :data:`MAX_RUNS` runs (a scattered permutation) is a Gather: from ``x`` itself when
every channel is real, else from ``x`` padded with one fill channel.

Why not always one Gather: ONNX Runtime's layout passes (NCHWc for float convolutions on CPU,
NHWC for int8 ``QLinearConv``) cannot move a channel Gather, so one Gather in a residual stream
pins the whole stream to NCHW with a transpose pair around every block (pruned ResNet-56 int8:
19 Transposes; as runs: 2, as in the unpruned model). Slice, Pad and Concat they move freely.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

#: A selection with more runs of consecutive channels than this is emitted as one Gather.
MAX_RUNS = 16


def _progression(src: np.ndarray) -> int | None:
    """Step of an increasing arithmetic progression, else None."""
    if src.size == 1:
        return 1
    steps = np.diff(src)
    return int(steps[0]) if steps[0] > 0 and np.all(steps == steps[0]) else None


def runs(src: np.ndarray) -> tuple[int, list[tuple[int, int, int]]]:
    """``src`` as (leading fills, runs): each run ``(start, stop, fills after it)`` takes ``x[start:stop]``.

    Example: ``[-1, -1, 3, 4, 5, -1, 9, -1]`` -> ``(2, [(3, 6, 1), (9, 10, 1)])``.
    """
    real = src >= 0
    lead = int(np.argmax(real)) if real.any() else src.size
    pieces: list[list[int]] = []
    for s in (int(v) for v in src[lead:]):
        if s < 0:
            pieces[-1][2] += 1
        elif pieces and pieces[-1][2] == 0 and s == pieces[-1][1]:
            pieces[-1][1] += 1
        else:
            pieces.append([s, s + 1, 0])
    return lead, [(a, b, f) for a, b, f in pieces]


def emit_select(graph: gs.Graph, x: gs.Variable, y: gs.Variable, *, axis: int, rank: int, size: int,
                src: np.ndarray, fill: float, dtype: np.dtype, prefix: str) -> None:
    """Add nodes computing ``y`` from ``x`` (``size`` channels on ``axis``) to ``graph``."""
    def const(name: str, value: np.ndarray) -> gs.Constant:
        return gs.Constant(f"{prefix}_{name}", np.asarray(value))

    def pads(name: str, before: int, after: int) -> gs.Constant:
        p = np.zeros(2 * rank, dtype=np.int64)
        p[axis], p[rank + axis] = before, after
        return const(name, p)

    def node(op: str, name: str, inputs: list[gs.Tensor], output: gs.Variable, **attrs: object) -> None:
        graph.nodes.append(gs.Node(op, f"{prefix}_{name}", attrs=attrs, inputs=inputs, outputs=[output]))

    fill_value = const("fill", np.array(fill, dtype=dtype))
    real = src >= 0
    step = _progression(src) if real.all() else None
    if step == 1 and src.size == size and src[0] == 0:
        node("Identity", "identity", [x], y)
        return
    if step is not None and step > 1:
        node("Slice", "slice", [x, const("starts", np.array([src[0]], np.int64)),
                                const("ends", np.array([src[-1] + 1], np.int64)),
                                const("axes", np.array([axis], np.int64)), const("steps", np.array([step], np.int64))], y)
        return
    lead, pieces = runs(src)
    if pieces and len(pieces) > MAX_RUNS and real.all():  # scattered, nothing to fill: one Gather from x
        node("Gather", "gather", [x, const("indices", src.astype(np.int64))], y, axis=axis)
        return
    if not pieces or len(pieces) > MAX_RUNS:
        augmented = gs.Variable(f"{prefix}_augmented", dtype=dtype)
        node("Pad", "augment", [x, pads("pads", 0, 1), fill_value], augmented, mode="constant")
        node("Gather", "gather", [augmented, const("indices", np.where(real, src, size).astype(np.int64))], y, axis=axis)
        return
    one = len(pieces) == 1
    parts: list[gs.Tensor] = []
    for i, (start, stop, after) in enumerate(pieces):
        tag = "" if one else str(i)
        before = lead if i == 0 else 0
        part = x
        if (start, stop) != (0, size):
            part = y if one and not (before or after) else gs.Variable(f"{prefix}_run{tag}", dtype=dtype)
            node("Slice", f"slice{tag}", [x, const(f"starts{tag}", np.array([start], np.int64)),
                                          const(f"ends{tag}", np.array([stop], np.int64)),
                                          const(f"axes{tag}", np.array([axis], np.int64))], part)
        if before or after:
            padded = y if one else gs.Variable(f"{prefix}_padded{tag}", dtype=dtype)
            node("Pad", f"pad{tag}", [part, pads(f"pads{tag}", before, after), fill_value], padded, mode="constant")
            part = padded
        parts.append(part)
    if not one:
        node("Concat", "concat", parts, y, axis=axis)
