"""Channel importance, aggregated over every coupled member of a group.

Contract: every function returns, for each group, one non-negative score per unit (local
order); the plan keeps the highest scores.

* ``l1`` / ``l2`` / ``fpgm`` (:func:`weight_importance`): a unit's score sums its atoms' filter
  scores over every producer in the group (all convs of a residual stream, every block of a
  grouped conv); Pad roots contribute nothing. A QDQ weight (integer initializer behind a
  DequantizeLinear) is scored on its dequantized values ``(q - zero_point) * scale``. FPGM scores a filter by the sum of its
  Euclidean distances to the other filters of the same producer (He et al. 2019): filters
  nearest the geometric median are the most replaceable and score lowest.
* ``bn`` (:func:`bn_importance`): ``|gamma|`` of every BatchNormalization / InstanceNormalization
  scale or per-channel constant ``Mul`` on the group's tensors, summed; groups without one
  fall back to L1.
* activation (:func:`activation_importance`): mean ``|x|`` per channel of the tensors the
  group's consumers read, measured elsewhere (the rewrite stage captures them) and passed in.
* ``greedy`` (:func:`greedy_importance`): ThiNet (Luo et al. 2017): channels are removed one by
  one, each time the one that keeps the summed squared change of the consumers' outputs
  (without re-fitting) smallest; a unit scores its step in that order.
"""

from __future__ import annotations

from types import MappingProxyType

import logging
from collections.abc import Callable, Mapping

import numpy as np
from onnx import numpy_helper

from onnxprune.analyze.qdq import weight_value
from onnxprune.analyze.types import Analysis, SliceConst
from onnxprune.errors import PlanError

logger = logging.getLogger(__name__)

Criterion = Callable[[np.ndarray], np.ndarray]


def _l1(filters: np.ndarray) -> np.ndarray:
    return np.abs(filters).reshape(filters.shape[0], -1).sum(axis=1)


def _l2(filters: np.ndarray) -> np.ndarray:
    return np.sqrt(np.square(filters).reshape(filters.shape[0], -1).sum(axis=1))


def _fpgm(filters: np.ndarray) -> np.ndarray:
    flat = filters.reshape(filters.shape[0], -1)
    sq = np.square(flat).sum(axis=1)
    dist2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * flat @ flat.T, 0.0)
    return np.sqrt(dist2).sum(axis=1)


CRITERIA: Mapping[str, Criterion] = MappingProxyType({"l1": _l1, "l2": _l2, "fpgm": _fpgm})
#: Every name accepted by ``--criterion`` (``bn`` and ``activation`` need more than weights).
ALL_CRITERIA: tuple[str, ...] = ("l1", "l2", "fpgm", "bn", "activation", "greedy")
_SCALE_OPS = {"BatchNormalization": (1,), "InstanceNormalization": (1,), "Mul": (0, 1)}


def weight_importance(analysis: Analysis, criterion: str = "l1") -> tuple[np.ndarray, ...]:
    """Per-group unit scores from producer filter norms.

    Args:
        analysis: The model's analysis.
        criterion: ``"l1"``, ``"l2"`` (norm of each output filter) or ``"fpgm"``.

    Returns:
        ``scores[g][u]`` for every group ``g`` and local unit ``u``.
    """
    if criterion not in CRITERIA:
        raise PlanError(f"unknown criterion '{criterion}'; choose one of {sorted(CRITERIA)}")
    norm = CRITERIA[criterion]
    graph = analysis.model.proto.graph
    inits = {t.name: t for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output if o}
    unit_score = np.zeros(analysis.unit_group.size, dtype=np.float64)
    name, weight = "", None  # one weight at a time: float64 copies of all would double a large model
    for root in analysis.roots:
        if root.weight is None:
            continue
        if root.weight != name:  # a QDQ weight is scored dequantized: (int - zero_point) * scale
            name, weight = root.weight, weight_value(root.weight, inits, producers)
        if weight is None:
            continue
        filters = np.moveaxis(weight, root.weight_axis, 0)
        scores = norm(filters)
        if scores.size != root.size:  # grouped ConvTranspose: per-group output axis
            scores = np.tile(scores, root.size // max(scores.size, 1))[:root.size]
        units = analysis.atom_unit[root.first_atom:root.first_atom + root.size]
        np.add.at(unit_score, units, scores)
    return tuple(unit_score[units] for units in analysis.group_units)


def _split(analysis: Analysis, unit_score: np.ndarray) -> tuple[np.ndarray, ...]:
    return tuple(unit_score[units] for units in analysis.group_units)


def _add_labeled(analysis: Analysis, unit_score: np.ndarray, tensor: str, values: np.ndarray) -> bool:
    """Add per-position ``values`` of ``tensor`` to the units its labels name; False if unlabeled."""
    lab = analysis.labels.get(tensor)
    if lab is None or lab.ids.size != values.size:
        return False
    ok = lab.ids >= 0
    np.add.at(unit_score, analysis.atom_unit[lab.ids[ok]], values[ok])
    return True


def bn_importance(analysis: Analysis) -> tuple[np.ndarray, ...]:
    """Per-group unit scores from normalization / per-channel scales (``|gamma|``).

    Every BatchNormalization or InstanceNormalization scale and every constant per-channel
    ``Mul`` factor sliced with a group's channels adds ``|value|`` to its units. Groups with no
    such scale use their L1 scores instead.
    """
    nodes = {n.name: n for n in analysis.model.proto.graph.node}
    inits = {t.name: t for t in analysis.model.proto.graph.initializer}
    unit_score = np.zeros(analysis.unit_group.size, dtype=np.float64)
    for edit in analysis.edits:
        if not isinstance(edit, SliceConst):
            continue
        node = nodes.get(edit.node)
        if node is None or edit.index not in _SCALE_OPS.get(node.op_type, ()):
            continue
        name = node.input[edit.index]
        if name not in inits:
            continue
        value = np.moveaxis(numpy_helper.to_array(inits[name]).astype(np.float64), edit.axis, 0)
        _add_labeled(analysis, unit_score, edit.mask_of, np.abs(value.reshape(value.shape[0], -1)).mean(axis=1))
    scores = _split(analysis, unit_score)
    l1 = weight_importance(analysis, "l1")
    missing = [g for g, s in enumerate(scores) if s.size and not s.any()]
    if missing:
        logger.info("bn criterion: %d groups have no normalization scale, using L1 there", len(missing))
    return tuple(l1[g] if g in missing else s for g, s in enumerate(scores))


def activation_importance(analysis: Analysis, channel_means: Mapping[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    """Per-group unit scores from measured activations.

    Args:
        analysis: The model's analysis.
        channel_means: Tensor name -> mean ``|x|`` per position of its labeled axis (from
            :func:`onnxprune.rewrite.capture.channel_means` on calibration data).

    Returns:
        ``scores[g][u]``: the sum over the given tensors of the unit's channel means; groups
        none of whose tensors were measured fall back to L1.
    """
    unit_score = np.zeros(analysis.unit_group.size, dtype=np.float64)
    for tensor, values in channel_means.items():
        _add_labeled(analysis, unit_score, tensor, np.asarray(values, dtype=np.float64))
    scores = _split(analysis, unit_score)
    l1 = weight_importance(analysis, "l1")
    return tuple(l1[g] if s.size and not s.any() else s for g, s in enumerate(scores))


def greedy_order(m: np.ndarray) -> np.ndarray:
    """Units in ThiNet removal order: each step adds the unit that keeps ``1_T' M 1_T`` smallest."""
    size = m.shape[0]
    removed = np.zeros(size, dtype=bool)
    cross = np.zeros(size)  # sum_{t in T} M[u, t]
    order = []
    diag = np.diag(m).copy()
    for _ in range(size):
        cost = np.where(removed, np.inf, 2.0 * cross + diag)
        unit = int(np.argmin(cost))
        order.append(unit)
        removed[unit] = True
        cross += m[:, unit]
    return np.asarray(order, dtype=np.int64)


def greedy_importance(analysis: Analysis, grams: Mapping[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    """Per-group unit scores from ThiNet-style greedy selection (the rank in removal order).

    Args:
        analysis: The model's analysis.
        grams: Consumer input tensor -> ``M`` over its channels (``M[c, d]``: overlap of channels
            ``c`` and ``d``'s contributions to the consumers' outputs, from
            :func:`onnxprune.rewrite.greedy.contribution_grams`).

    Returns:
        ``scores[g][u]``: ``1 + `` the step at which unit ``u`` is removed (the first removed scores
        1), after summing ``M`` over every tensor carrying the group; groups none of whose
        tensors were measured fall back to L1.
    """
    mats = [np.zeros((units.size, units.size)) for units in analysis.group_units]
    local = np.zeros(analysis.unit_group.size, dtype=np.int64)
    for units in analysis.group_units:
        local[units] = np.arange(units.size)
    seen = set()
    for tensor, m in grams.items():
        lab = analysis.labels.get(tensor)
        if lab is None or lab.ids.size != m.shape[0]:
            continue
        pos = np.flatnonzero(lab.ids >= 0)
        units = analysis.atom_unit[lab.ids[pos]]
        for gid in np.unique(analysis.unit_group[units]):
            sel = analysis.unit_group[units] == gid
            idx = local[units[sel]]
            np.add.at(mats[gid], (idx[:, None], idx[None, :]), m[np.ix_(pos[sel], pos[sel])])
            seen.add(int(gid))
    l1 = weight_importance(analysis, "l1")
    scores = []
    for gid, mat in enumerate(mats):
        if gid not in seen or mat.size == 0:
            scores.append(l1[gid])
            continue
        score = np.empty(mat.shape[0])
        score[greedy_order(mat)] = np.arange(1, mat.shape[0] + 1, dtype=np.float64)
        scores.append(score)
    return tuple(scores)


def consumer_inputs(analysis: Analysis) -> tuple[str, ...]:
    """Labeled tensors read by the consumers (Conv/Gemm/MatMul) of prunable groups, sorted."""
    nodes = {n.name: n for n in analysis.model.proto.graph.node}
    names = {nodes[c].input[0] for g in analysis.prunable_groups for c in g.consumers if c in nodes}
    return tuple(sorted(n for n in names if n in analysis.labels))


def importance(analysis: Analysis, criterion: str, channel_means: Mapping[str, np.ndarray] | None = None,
               grams: Mapping[str, np.ndarray] | None = None) -> tuple[np.ndarray, ...]:
    """Per-group unit scores for any name of :data:`ALL_CRITERIA`.

    Args:
        analysis: The model's analysis.
        criterion: ``l1``, ``l2``, ``fpgm``, ``bn``, ``activation`` or ``greedy``.
        channel_means: Measured activations, required for ``activation``.
        grams: Measured contribution overlaps, required for ``greedy``.

    Raises:
        PlanError: unknown criterion, or ``activation`` / ``greedy`` without measurements.
    """
    if criterion == "bn":
        return bn_importance(analysis)
    if criterion == "activation":
        if channel_means is None:
            raise PlanError("--criterion activation needs calibration data; pass --calib FILE.npz")
        return activation_importance(analysis, channel_means)
    if criterion == "greedy":
        if grams is None:
            raise PlanError("--criterion greedy needs calibration data; pass --calib FILE.npz")
        return greedy_importance(analysis, grams)
    return weight_importance(analysis, criterion)
