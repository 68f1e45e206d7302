"""AMC's handcrafted per-layer state, the baseline the learned embeddings are compared with."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from onnxprune.errors import PlanError
from onnxprune.graph import CompGraph
from onnxprune.graph.ops import WEIGHTED, spatial_of

logger = logging.getLogger(__name__)

#: Columns of :func:`amc_state`, in order (He et al., AMC, 2018).
AMC_FEATURES: tuple[str, ...] = ("t", "n", "c", "h", "w", "stride", "k", "flops", "reduced", "rest",
                                 "a_prev")


def amc_layers(cg: CompGraph) -> tuple[str, ...]:
    """Op keys of the weighted ops (Conv, Gemm, MatMul with a weight), in topological order."""
    return tuple(op.name for op in cg.ops if op.kind == WEIGHTED)


def group_layers(cg: CompGraph) -> tuple[str, ...]:
    """One layer per attached group: its first weighted producer (else its first op)."""
    out = []
    for gid, rows in zip(cg.groups.group_ids, cg.groups.op_rows):
        ops = [cg.ops[r] for r in sorted(rows.tolist())]
        if not ops:
            raise PlanError(f"group {gid} has no op in the graph; rebuild the graph from the analyzed model")
        out.append(next((op.name for op in ops if op.kind == WEIGHTED), ops[0].name))
    return tuple(out)


def amc_state(cg: CompGraph, layers: Sequence[str] | None = None, actions: Sequence[float] | None = None,
              *, normalize: bool = True) -> np.ndarray:
    """AMC's state ``(t, n, c, h, w, stride, k, FLOPs(t), reduced, rest, a_{t-1})`` per layer.

    ``n``/``c`` are output/input channels, ``h``/``w`` the input's spatial size, ``FLOPs(t)`` the
    layer's MACs, ``reduced`` the MACs removed from earlier layers (``sum_{i<t} FLOPs(i) a_i``),
    ``rest`` the MACs of later layers and ``a_{t-1}`` the previous action, with actions given
    as fractions removed (AGMC's convention).

    Args:
        cg: The computational graph (unpruned sizes are used).
        layers: Op keys in decision order (default :func:`amc_layers`).
        actions: Actions already taken, ``a_0 .. a_{k-1}`` for ``k <= len(layers)``; missing
            ones count as 0.
        normalize: Divide each column by its maximum over the layers (as AMC does).

    Returns:
        ``[T, 11]`` float32 array, columns in :data:`AMC_FEATURES` order.

    Raises:
        PlanError: If a layer name is unknown or there are more actions than layers.
    """
    names = tuple(layers) if layers is not None else amc_layers(cg)
    unknown = [n for n in names if n not in cg.op_row]
    if unknown:
        raise PlanError(f"unknown layer(s) {unknown[:3]}; use names from amc_layers(graph)")
    acts = np.zeros(len(names))
    given = np.asarray(list(actions or ()), dtype=np.float64)
    if given.size > len(names):
        raise PlanError(f"{given.size} actions for {len(names)} layers; pass at most one per layer")
    acts[: given.size] = given
    rows = []
    for t, name in enumerate(names):
        op = cg.ops[cg.op_row[name]]
        h, w = spatial_of(cg.shapes[cg.row[op.inputs[0]]]) if op.inputs else (1, 1)
        rows.append([t, op.c_out, op.c_in, h, w, max(op.stride, default=1), max(op.kernel, default=1),
                     op.macs, 0.0, 0.0, 0.0])
    state = np.asarray(rows, dtype=np.float64).reshape(-1, len(AMC_FEATURES))
    flops = state[:, 7]
    state[:, 8] = np.concatenate([[0.0], np.cumsum(flops * acts)[:-1]]) if len(names) else []
    state[:, 9] = flops.sum() - np.cumsum(flops)
    state[:, 10] = np.concatenate([[0.0], acts[:-1]]) if len(names) else []
    if normalize and len(names):
        top = state.max(axis=0)
        state = np.divide(state, top, out=np.zeros_like(state), where=top > 0)
    return state.astype(np.float32)
