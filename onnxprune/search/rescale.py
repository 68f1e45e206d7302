"""AGMC's Algorithm 1: adjust per-group actions so the pruned model hits a resource target.

``target`` is the fraction of the resource removed (``--target 0.5``: half the MACs). With
per-group sizes ``W_t`` (the share of the resource touching group ``t``) and actions ``a_t``
(fractions removed), while the removed share is short of the target by ``rest``, the rest is
distributed in proportion to the actions, ``a_t += (rest * a_t / sum(a)) / W_t``, clipped at
``max_ratio``, and the cost is measured again *exactly* (the cost of a layer depends on both of
its groups, so the linear step is only an estimate). If a few rounds do not land within ``tol``,
a bisection on a global scale ``s`` of the actions (``clip(s * a)``) finds the crossing, and a last
greedy pass moves single groups by one rounding step to the closest achievable value.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from onnxprune.analyze.cost import group_shares
from onnxprune.errors import PlanError
from onnxprune.search.space import METRICS, SearchSpace

logger = logging.getLogger(__name__)

_FLOOR = 1e-3  # smallest action given to a group when every action is zero


@dataclass(frozen=True)
class Rescaled:
    """Actions that meet the target and what they cost.

    Attributes:
        actions: Fractions removed per group (after rounding to keep counts).
        keeps: Units kept per group.
        value: Resource of the pruned model (MACs, params or predicted milliseconds).
        base: Resource of the unpruned model.
        goal: ``(1 - target) * base``.
        rounds: Exact cost evaluations used.
    """

    actions: tuple[float, ...]
    keeps: tuple[int, ...]
    value: float
    base: float
    goal: float
    rounds: int

    @property
    def error(self) -> float:
        """Relative miss, ``value / goal - 1``."""
        return self.value / self.goal - 1.0


class _Meter:
    """Exact resource of keep counts, with a cache and an evaluation count."""

    def __init__(self, space: SearchSpace, metric: str) -> None:
        self.space, self.metric = space, metric
        self.cache: dict[tuple[int, ...], float] = {}

    def __call__(self, keeps: tuple[int, ...]) -> float:
        if keeps not in self.cache:
            self.cache[keeps] = self.space.measure(keeps, self.metric)
        return self.cache[keeps]


def group_weights(space: SearchSpace, metric: str) -> np.ndarray:
    """``W_t``: share of the unpruned resource touching each group of the space.

    For ``latency`` (no closed form) it is measured: the predicted time saved by pruning group
    ``t`` alone to ``max_ratio``, divided by ``max_ratio`` and the unpruned time.
    """
    if metric not in METRICS:
        raise PlanError(f"--metric {metric} is not supported; use one of {', '.join(METRICS)}")
    if metric == "latency":
        full = space.measure(space.sizes, metric)
        saved = [full - space.measure(space.sizes[:i] + (space.min_keep(i),) + space.sizes[i + 1:], metric)
                 for i in range(len(space))]
        return np.maximum(np.asarray(saved) / (space.max_ratio * max(full, 1e-12)), 1e-9)
    shares = group_shares(space.analysis)
    column = METRICS.index(metric)
    raw = np.array([shares[g][column] for g in space.group_ids], dtype=np.float64)
    total = max(space.measure(space.sizes, metric), 1.0)
    return np.maximum(raw / total, 1e-9)


def _bisect(space: SearchSpace, meter: _Meter, actions: np.ndarray, goal: float, tol: float,
            steps: int = 30) -> np.ndarray:
    """Global scale ``s`` of ``actions`` with the value closest to ``goal`` (stops once within ``tol``)."""
    base = np.maximum(actions, _FLOOR)
    lo, hi = 0.0, space.max_ratio / float(base.min())

    def value(s: float) -> float:
        return meter(space.keeps(np.clip(s * base, 0.0, space.max_ratio)))

    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        if abs(value(mid) - goal) <= tol * goal:
            return np.clip(mid * base, 0.0, space.max_ratio)
        if value(mid) > goal:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda s: abs(value(s) - goal))
    return np.clip(best * base, 0.0, space.max_ratio)


def _polish(space: SearchSpace, meter: _Meter, keeps: list[int], goal: float, tol: float) -> list[int]:
    """Greedy single-group moves of one rounding step toward ``goal``."""
    step = space.round_to
    for _ in range(4 * len(space)):
        current = abs(meter(tuple(keeps)) - goal)
        if current <= tol * goal:
            break
        best, best_gap = None, current
        for i, size in enumerate(space.sizes):
            if size <= step:
                continue
            for k in (keeps[i] - step, keeps[i] + step):
                if space.min_keep(i) <= k <= size:
                    trial = keeps[:i] + [k] + keeps[i + 1:]
                    gap = abs(meter(tuple(trial)) - goal)
                    if gap < best_gap:
                        best, best_gap = trial, gap
        if best is None:
            break
        keeps = best
    return keeps


def reachable(space: SearchSpace, target: float, metric: str, tol: float = 0.01, *,
              meter: _Meter | None = None) -> bool:
    """Whether removing ``target`` of ``metric`` is possible with every group at ``space.max_ratio``.

    Args:
        space: The search space (its rounding decides the smallest widths).
        target: Fraction of the resource to remove.
        metric: ``macs``, ``params`` or ``latency``.
        tol: Allowed relative miss of the goal value.
        meter: A meter of ``space`` already made (its cache is reused).
    """
    meter = meter if meter is not None else _Meter(space, metric)
    base = meter(tuple(space.sizes))
    return meter(space.keeps([space.max_ratio] * len(space))) <= (1.0 - target) * base * (1.0 + tol)


def rescale(space: SearchSpace, actions: Sequence[float], target: float, *, metric: str = "macs",
            tol: float = 0.01, rounds: int = 6, quiet: bool = False) -> Rescaled:
    """Adjust ``actions`` so the pruned model keeps ``1 - target`` of the resource (within ``tol``).

    Args:
        space: The groups and their rounding.
        actions: Requested fractions removed per group (any real numbers; clipped).
        target: Fraction of the resource to remove, in ``(0, 1)``.
        metric: ``macs``, ``params`` or ``latency``.
        tol: Allowed relative miss of the goal value.
        rounds: Proportional (Algorithm 1) rounds before the bisection.
        quiet: Do not log a miss (for probes that handle it themselves).

    Returns:
        The :class:`Rescaled` actions; ``error`` is within ``tol`` unless rounding forbids it.

    Raises:
        PlanError: The target cannot be reached even at ``max_ratio`` everywhere.
    """
    if not 0.0 < target < 1.0:
        raise PlanError(f"--target {target} is outside (0, 1); pass the fraction of {metric} to remove")
    meter = _Meter(space, metric)
    base = meter(tuple(space.sizes))
    goal = (1.0 - target) * base
    floor = meter(space.keeps([space.max_ratio] * len(space)))
    if not reachable(space, target, metric, tol, meter=meter):
        raise PlanError(f"--target {target} cannot be reached: at --max-ratio {space.max_ratio} at most "
                        f"{1 - floor / base:.1%} of {metric} can be removed; lower --target or raise --max-ratio")
    weights = group_weights(space, metric)
    a = np.clip(np.nan_to_num(np.asarray(actions, dtype=np.float64)), 0.0, space.max_ratio)
    for _ in range(rounds):
        value = meter(space.keeps(a))
        if abs(value - goal) <= tol * goal:
            break
        if value < goal:  # overshoot: Algorithm 1 only adds; the bisection below scales down
            break
        if a.sum() <= 0.0:
            a = np.full_like(a, _FLOOR)
        rest = (value - goal) / base
        a = np.clip(a + rest * (a / a.sum()) / weights, 0.0, space.max_ratio)
    keeps = list(space.keeps(a))
    if abs(meter(tuple(keeps)) - goal) > tol * goal:
        a = _bisect(space, meter, a, goal, tol)
        keeps = _polish(space, meter, list(space.keeps(a)), goal, tol)
    value = meter(tuple(keeps))
    if abs(value - goal) > tol * goal and not quiet:
        logger.warning("rescaled %s is %.2f %% off the goal (rounding to %d)", metric,
                       100 * (value / goal - 1), space.round_to)
    return Rescaled(actions=space.actions_of(keeps), keeps=tuple(keeps), value=value, base=base, goal=goal,
                    rounds=len(meter.cache))
