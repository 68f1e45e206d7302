"""Channel importance from producer weights, aggregated over every member of a group.

Contract: returns, for each group, one non-negative score per unit (local order). A unit's
score sums its atoms' filter norms over every producer in the group (all convs of a
residual stream, every block of a grouped conv); Pad roots contribute nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from onnx import numpy_helper

from onnxprune.analyze.types import Analysis
from onnxprune.errors import PlanError

Criterion = Callable[[np.ndarray], np.ndarray]


def _l1(filters: np.ndarray) -> np.ndarray:
    return np.abs(filters).reshape(filters.shape[0], -1).sum(axis=1)


def _l2(filters: np.ndarray) -> np.ndarray:
    return np.sqrt(np.square(filters).reshape(filters.shape[0], -1).sum(axis=1))


CRITERIA: dict[str, Criterion] = {"l1": _l1, "l2": _l2}


def weight_importance(analysis: Analysis, criterion: str = "l1") -> tuple[np.ndarray, ...]:
    """Per-group unit scores from producer filter norms.

    Args:
        analysis: The model's analysis.
        criterion: ``"l1"`` or ``"l2"`` (norm of each output filter).

    Returns:
        ``scores[g][u]`` for every group ``g`` and local unit ``u``.
    """
    if criterion not in CRITERIA:
        raise PlanError(f"unknown criterion '{criterion}'; choose one of {sorted(CRITERIA)}")
    norm = CRITERIA[criterion]
    inits = {t.name: t for t in analysis.model.proto.graph.initializer}
    unit_score = np.zeros(analysis.unit_group.size, dtype=np.float64)
    cache: dict[str, np.ndarray] = {}
    for root in analysis.roots:
        if root.weight is None or root.weight not in inits:
            continue
        if root.weight not in cache:
            cache[root.weight] = numpy_helper.to_array(inits[root.weight]).astype(np.float64)
        filters = np.moveaxis(cache[root.weight], root.weight_axis, 0)
        scores = norm(filters)
        if scores.size != root.size:  # grouped ConvTranspose: per-group output axis
            scores = np.tile(scores, root.size // max(scores.size, 1))[:root.size]
        units = analysis.atom_unit[root.first_atom:root.first_atom + root.size]
        np.add.at(unit_score, units, scores)
    return tuple(unit_score[units] for units in analysis.group_units)
