"""The search space: one action per prunable group, mapped to keep counts, a plan and its exact cost.

An *action* is the fraction of a group's channels removed, in ``[0, max_ratio]``. It becomes a
*keep count* through :func:`onnxprune.plan.keep_count` (rounded to ``round_to``), and the kept
units are the highest-importance ones. Costs come from :func:`onnxprune.analyze.cost.estimate_cost`
on keep masks, so they equal the cost of the rewritten model without rewriting it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from onnxprune.analyze.cost import Cost, estimate_cost, pruned_shapes
from onnxprune.analyze.types import Analysis
from onnxprune.errors import PlanError
from onnxprune.plan import Plan, keep_count
from onnxprune.rewrite.prune import repair_plan, tensor_masks, unit_mask
from onnxprune.search.latency import LatencyModel
from onnxprune.search.widths import WidthMenu, snap

logger = logging.getLogger(__name__)

METRICS: tuple[str, ...] = ("macs", "params", "latency")


def metric_value(cost: Cost, metric: str) -> int:
    """The resource ``metric`` (``macs`` or ``params``) of ``cost``."""
    if metric not in ("macs", "params"):
        raise PlanError(f"--metric {metric} is not supported; use one of {', '.join(METRICS)}")
    return int(getattr(cost, metric))


@dataclass(frozen=True)
class SearchSpace:
    """Prunable groups in topological order and how actions become plans.

    Attributes:
        analysis: The analyzed model.
        group_ids: Ids of the prunable groups, in topological order (decision order).
        sizes: Units per group, aligned with ``group_ids``.
        scores: Unit importance per group (higher is kept first), aligned with ``group_ids``.
        max_ratio: Largest fraction of a group's channels that may be removed.
        round_to: Keep counts are multiples of this (where the group is large enough).
        latency: Predicts the latency of a candidate (needed by the ``latency`` metric).
        menu: Allowed widths per group (ascending, aligned with ``group_ids``; a measured
            :class:`~onnxprune.search.widths.WidthMenu`): keep counts snap to the nearest one.
            ``None``: every multiple of ``round_to``.
    """

    analysis: Analysis
    group_ids: tuple[int, ...]
    sizes: tuple[int, ...]
    scores: tuple[np.ndarray, ...]
    max_ratio: float = 0.8
    round_to: int = 1
    latency: LatencyModel | None = None
    menu: tuple[tuple[int, ...], ...] | None = None

    @classmethod
    def build(cls, analysis: Analysis, scores: Sequence[np.ndarray], *, max_ratio: float = 0.8,
              round_to: int = 1, latency: LatencyModel | None = None) -> SearchSpace:
        """Make the space of every prunable group from per-group scores (all groups, by id)."""
        if not 0.0 < max_ratio < 1.0:
            raise PlanError(f"--max-ratio {max_ratio} is outside (0, 1); pass the largest fraction to remove")
        keep_count(1, 0.0, round_to)  # validates round_to
        groups = analysis.prunable_groups
        if not groups:
            raise PlanError("the model has no prunable channel group; run `onnxprune analyze` to see why")
        return cls(analysis=analysis, group_ids=tuple(g.id for g in groups), sizes=tuple(g.size for g in groups),
                   scores=tuple(np.asarray(scores[g.id]) for g in groups), max_ratio=max_ratio, round_to=round_to,
                   latency=latency)

    def __len__(self) -> int:
        return len(self.group_ids)

    def with_menu(self, menu: WidthMenu) -> SearchSpace:
        """This space with keep counts limited to ``menu``'s widths (no width below :meth:`min_keep`)."""
        allowed = []
        for i, gid in enumerate(self.group_ids):
            fewest = keep_count(self.sizes[i], self.max_ratio, self.round_to)
            widths = tuple(w for w in menu.widths(gid) if fewest <= w <= self.sizes[i])
            allowed.append(widths if widths else (self.sizes[i],))
        return replace(self, menu=tuple(allowed))

    def min_keep(self, index: int) -> int:
        """Fewest units group ``index`` (position in the space) may keep."""
        if self.menu is not None:
            return self.menu[index][0]
        return keep_count(self.sizes[index], self.max_ratio, self.round_to)

    def steps(self, index: int, keep: int) -> tuple[int, ...]:
        """The widths one step below and above ``keep`` for group ``index`` (within its limits)."""
        if self.menu is not None:
            widths = self.menu[index]
            lower = [w for w in widths if w < keep]
            upper = [w for w in widths if w > keep]
            return tuple([*lower[-1:], *upper[:1]])
        step = self.round_to
        return tuple(k for k in (keep - step, keep + step) if self.min_keep(index) <= k <= self.sizes[index])

    def keeps(self, actions: Sequence[float]) -> tuple[int, ...]:
        """Keep counts of ``actions`` (fractions removed, clipped to ``[0, max_ratio]``)."""
        if len(actions) != len(self):
            raise PlanError(f"{len(actions)} actions for {len(self)} prunable groups")
        clipped = np.clip(np.asarray(actions, dtype=np.float64), 0.0, self.max_ratio)
        keeps = tuple(keep_count(size, float(a), self.round_to) for size, a in zip(self.sizes, clipped))
        if self.menu is None:
            return keeps
        return tuple(snap(k, widths) for k, widths in zip(keeps, self.menu))

    def actions_of(self, keeps: Sequence[int]) -> tuple[float, ...]:
        """Fractions removed that the keep counts amount to."""
        return tuple(1.0 - k / s for k, s in zip(keeps, self.sizes))

    def plan(self, keeps: Sequence[int]) -> Plan:
        """Plan keeping the ``keeps[i]`` highest-scoring units of each group (repaired if needed)."""
        keep: dict[int, tuple[int, ...]] = {}
        for gid, size, score, count in zip(self.group_ids, self.sizes, self.scores, keeps):
            if not 1 <= count <= size:
                raise PlanError(f"group {gid} would keep {count} of {size} channels")
            if count < size:
                order = np.argsort(-score, kind="stable")[:count]
                keep[gid] = tuple(sorted(int(i) for i in order))
        plan = Plan(keep=keep)
        kept = unit_mask(self.analysis, plan)
        masks = tensor_masks(self.analysis, kept)
        if any(m.size and not m.any() for m in masks.values()):
            plan = repair_plan(self.analysis, plan)
        return plan

    def plan_cost(self, plan: Plan) -> Cost:
        """Exact cost of the model ``plan`` would produce."""
        return estimate_cost(self.analysis, tensor_masks(self.analysis, unit_mask(self.analysis, plan)))

    def cost(self, keeps: Sequence[int]) -> Cost:
        """Exact cost of the model with these keep counts."""
        return self.plan_cost(self.plan(keeps))

    def measure(self, keeps: Sequence[int], metric: str) -> float:
        """Resource ``metric`` of the model with these keep counts (``latency``: predicted ms)."""
        if metric != "latency":
            return float(metric_value(self.cost(keeps), metric))
        if self.latency is None:
            raise PlanError("--metric latency needs a measured latency table; build the space with latency=")
        masks = tensor_masks(self.analysis, unit_mask(self.analysis, self.plan(keeps)))
        return self.latency.predict(pruned_shapes(self.analysis, masks))
