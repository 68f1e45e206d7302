"""Emit the smallest ONNX expression of a channel selection ``y[..., j, ...] = x[..., src[j], ...]``.

``src[j] == -1`` is a constant fill. In order of preference: Identity, Slice (arithmetic
progression), Pad (all of ``x`` with fills on both sides: the option-A shortcut), and the
general case, a Gather from ``x`` padded with one fill channel (a zero-augmented tensor).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs


def _progression(src: np.ndarray) -> int | None:
    """Step of an increasing arithmetic progression, else None."""
    if src.size == 1:
        return 1
    steps = np.diff(src)
    return int(steps[0]) if steps[0] > 0 and np.all(steps == steps[0]) else None


def emit_select(graph: gs.Graph, x: gs.Variable, y: gs.Variable, *, axis: int, rank: int, size: int,
                src: np.ndarray, fill: float, dtype: np.dtype, prefix: str) -> None:
    """Add nodes computing ``y`` from ``x`` (``size`` channels on ``axis``) to ``graph``."""
    def const(name: str, value: np.ndarray) -> gs.Constant:
        return gs.Constant(f"{prefix}_{name}", np.asarray(value))

    def pads(before: int, after: int) -> gs.Constant:
        p = np.zeros(2 * rank, dtype=np.int64)
        p[axis], p[rank + axis] = before, after
        return const("pads", p)

    fill_value = const("fill", np.array(fill, dtype=dtype))
    real = src >= 0
    if real.all():
        step = _progression(src)
        if step == 1 and src.size == size and src[0] == 0:
            graph.nodes.append(gs.Node("Identity", f"{prefix}_identity", inputs=[x], outputs=[y]))
        elif step is not None:
            ins = [x, const("starts", np.array([src[0]], np.int64)),
                   const("ends", np.array([src[-1] + 1], np.int64)), const("axes", np.array([axis], np.int64)),
                   const("steps", np.array([step], np.int64))]
            graph.nodes.append(gs.Node("Slice", f"{prefix}_slice", inputs=ins, outputs=[y]))
        else:
            graph.nodes.append(gs.Node("Gather", f"{prefix}_gather", attrs={"axis": axis},
                                       inputs=[x, const("indices", src.astype(np.int64))], outputs=[y]))
        return
    lead = int(np.argmax(real)) if real.any() else src.size
    body = src[lead:lead + size]
    if body.size == size and np.array_equal(body, np.arange(size)) and not real[lead + size:].any():
        graph.nodes.append(gs.Node("Pad", f"{prefix}_pad", attrs={"mode": "constant"},
                                   inputs=[x, pads(lead, src.size - lead - size), fill_value], outputs=[y]))
        return
    augmented = gs.Variable(f"{prefix}_augmented", dtype=dtype)
    graph.nodes.append(gs.Node("Pad", f"{prefix}_augment", attrs={"mode": "constant"},
                               inputs=[x, pads(0, 1), fill_value], outputs=[augmented]))
    indices = np.where(real, src, size).astype(np.int64)
    graph.nodes.append(gs.Node("Gather", f"{prefix}_gather", attrs={"axis": axis},
                               inputs=[augmented, const("indices", indices)], outputs=[y]))
