"""AGMC's Algorithm 1: adjust per-group actions so the pruned model hits a resource target.

``target`` is the fraction of the resource removed (``--target 0.5``: half the MACs). With
per-group sizes ``W_t`` (the share of the resource touching group ``t``) and actions ``a_t``
(fractions removed), while the removed share is short of the target by ``rest``, the rest is
distributed in proportion to the actions, ``a_t += (rest * a_t / sum(a)) / W_t``, clipped at
``max_ratio``, and the cost is measured again *exactly* (the cost of a layer depends on both of
its groups, so the linear step is only an estimate). If a few rounds do not land within ``tol``,
a bisection on a global scale ``s`` of the actions (``clip(s * a)``) finds the crossing, and a last
greedy pass moves single groups by one rounding step to the closest achievable value.

The joint search (``--quantize``, ``bops`` / ``bytes`` targets) extends it in
:func:`rescale_joint`: the agent's bits are taken as asked, the pruning ratios are rescaled to
the target at those bits, and bits move only when the bits alone overshoot the goal (raised) or
max-ratio pruning cannot reach it (lowered); its docstring gives the exact rule and an example.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from onnxprune.analyze.cost import group_shares
from onnxprune.errors import PlanError
from onnxprune.search.bits import PRUNE_METRIC, BitSpace, JointMeter
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
    for _ in range(4 * len(space)):
        current = abs(meter(tuple(keeps)) - goal)
        if current <= tol * goal:
            break
        best, best_gap = None, current
        for i, size in enumerate(space.sizes):
            if space.menu is None and size <= space.round_to:
                continue
            for k in space.steps(i, keeps[i]):
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
            tol: float = 0.01, rounds: int = 6, quiet: bool = False,
            meter: Callable[[tuple[int, ...]], float] | None = None, goal: float | None = None) -> Rescaled:
    """Adjust ``actions`` so the pruned model keeps ``1 - target`` of the resource (within ``tol``).

    Args:
        space: The groups and their rounding.
        actions: Requested fractions removed per group (any real numbers; clipped).
        target: Fraction of the resource to remove, in ``(0, 1)``.
        metric: ``macs``, ``params`` or ``latency``.
        tol: Allowed relative miss of the goal value.
        rounds: Proportional (Algorithm 1) rounds before the bisection.
        quiet: Do not log a miss (for probes that handle it themselves).
        meter: Exact resource of keep counts (default: ``space.measure`` of ``metric``; the joint
            search passes the BOPs or bytes at fixed bits, :func:`rescale_joint`).
        goal: Resource to land on (default ``(1 - target)`` times the unpruned resource).

    Returns:
        The :class:`Rescaled` actions; ``error`` is within ``tol`` unless rounding forbids it.

    Raises:
        PlanError: The target cannot be reached even at ``max_ratio`` everywhere.
    """
    if not 0.0 < target < 1.0:
        raise PlanError(f"--target {target} is outside (0, 1); pass the fraction of {metric} to remove")
    meter = _Meter(space, metric) if meter is None else meter
    base = meter(tuple(space.sizes))
    goal = (1.0 - target) * base if goal is None else goal
    floor = meter(space.keeps([space.max_ratio] * len(space)))
    if floor > goal * (1.0 + tol):
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
                    rounds=len(getattr(meter, "cache", ())))


@dataclass(frozen=True)
class JointRescaled:
    """A joint (pruning + bits) choice that meets a ``bops`` / ``bytes`` target.

    Attributes:
        prune: The pruning part (its ``value`` / ``goal`` are the joint metric's).
        bits: Per-group ``(w_bits, a_bits)`` applied.
        value: The joint metric of the choice.
        base: The joint metric of the unpruned float32 model.
        goal: ``(1 - target) * base``.
        raised: Bit steps added because the asked bits alone were under the goal.
        lowered: Bit steps removed because max-ratio pruning could not reach the goal.
    """

    prune: Rescaled
    bits: tuple[tuple[int, int], ...]
    value: float
    base: float
    goal: float
    raised: int = 0
    lowered: int = 0


def _bit_step(bits: BitSpace, meter: JointMeter, keeps: tuple[int, ...], idx: np.ndarray, *,
              down: bool) -> np.ndarray | None:
    """One bit step of :func:`rescale_joint` (``idx``: ``[G, 2]`` bin indices), or ``None`` if none is left.

    Down: the group with the largest metric at ``keeps`` lowers the one of its widths whose step
    removes more (ties: weights); a group at its lowest widths passes to the next largest.
    Up: the single step (any group, weights or activations) that adds the least, ties by group
    then weights first.
    """
    kinds = (0, 1) if bits.metric == "bops" else (0,)
    sets = (bits.w_set, bits.a_set)
    now = meter.value(keeps, bits.bits(idx[:, 0], idx[:, 1]))

    def moved(t: int, k: int) -> np.ndarray | None:
        new = idx[t, k] + (-1 if down else 1)
        if not 0 <= new < len(sets[k]):
            return None
        out = idx.copy()
        out[t, k] = new
        return out

    def delta(cand: np.ndarray) -> float:
        return abs(meter.value(keeps, bits.bits(cand[:, 0], cand[:, 1])) - now)

    if down:
        order = np.argsort(-meter.group_values(keeps, bits.bits(idx[:, 0], idx[:, 1])), kind="stable")
        for t in order:
            options = [c for c in (moved(int(t), k) for k in kinds) if c is not None]
            if options:
                return max(options, key=delta)  # max keeps the first (weights) on ties
        return None
    options = [c for t in range(len(idx)) for c in (moved(t, k) for k in kinds) if c is not None]
    return min(options, key=delta) if options else None


def joint_floor(bits: BitSpace, meter: JointMeter) -> float:
    """The smallest joint metric reachable: every group at ``max_ratio`` and at its lowest widths."""
    space = bits.space
    return meter.value(space.keeps([space.max_ratio] * len(space)), [(bits.w_set[0], bits.a_set[0])] * len(space))


def rescale_joint(bits: BitSpace, meter: JointMeter, actions: np.ndarray, target: float, *,
                  tol: float = 0.01) -> JointRescaled:
    """Algorithm 1 for a ``bops`` / ``bytes`` target: bits as asked, pruning rescaled, bits moved if needed.

    The goal is ``(1 - target)`` of the unpruned float32 metric (float = 32 x 32 bits, 4 bytes a
    param). ``actions`` is ``[G, 3]``: the fraction removed and the weight / activation bit
    actions (in ``[0, 1]``, :meth:`~onnxprune.search.bits.BitSpace.index`) of each group. Rule:

    1. Bits as asked. If the unpruned model at these bits is within ``tol`` of the goal: no pruning.
    2. Under the goal by more than ``tol`` (the bits alone overshoot): raise bits one step at a
       time, each time the step that adds the least (any group; weights or activations; ties:
       earlier group, weights first), until the unpruned model is at ``goal * (1 - tol)`` or
       more; stop there if within ``tol``, else go to 4. If every width is at its largest, the
       result stays under the goal (no pruning).
    3. Over the goal even with every group pruned at ``max_ratio``: lower bits one step at a
       time: the group whose layers cost most at max-ratio pruning lowers the one of its two
       widths whose step removes more (ties: weights; only weights count for ``bytes``), until
       max-ratio pruning reaches ``goal * (1 + tol)``.
    4. Prune: :func:`rescale` of the requested ratios to the goal at the bits now fixed
       (Algorithm 1 with the exact joint meter, then bisection and single-group polish).

    Worked example (BOPs, one layer per group, MACs 100, 200, 700 unpruned, target 0.97: the
    float model has 1,024,000 BOPs, goal 30,720; suppose max-ratio pruning keeps 40 % of each
    layer's MACs). Asked ``w = (8, 8, 8)``, ``a = (16, 16, 16)``: 128,000 BOPs unpruned, floor
    51,200 > 31,027 (goal + 1 %), so step 3: group 3 costs most (35,840 at the floor); lowering
    its activations 16 -> 8 removes 17,920, its weights 8 -> 6 only 8,960: ``a_3 = 8``, floor
    33,280. Group 3 is still largest (17,920); weights 8 -> 6 and activations 8 -> 6 both remove
    4,480: weights (tie), ``w_3 = 6``, floor 28,800 <= 31,027. Step 4 prunes the asked ratios
    to 30,720 BOPs at bits (8/16, 8/16, 6/8). Had it asked ``w = (4, 4, 4)``, ``a = (6, 6, 6)``
    (24,000 BOPs unpruned, under 30,413 = goal - 1 %), step 2 adds the cheapest steps: group 1's
    weights 4 -> 5 -> 6 -> 8 (+600, +600, +1,200), group 2's weights 4 -> 5 -> 6 (+1,200 each),
    group 1's activations 6 -> 8 (+1,600): 30,400, still under 30,413, so group 2's weights
    6 -> 8 (+2,400): 32,800, and step 4 prunes it to 30,720 at bits (8/8, 8/6, 4/6).

    Raises:
        PlanError: even every group at ``max_ratio`` and at its lowest widths misses the goal.
    """
    space = bits.space
    if not 0.0 < target < 1.0:
        raise PlanError(f"--target {target} is outside (0, 1); pass the fraction of {bits.metric} to remove")
    arr = np.asarray(actions, dtype=np.float64).reshape(len(space), 3)
    idx = np.array([[bits.index(w, "w"), bits.index(a, "a")] for w, a in arr[:, 1:]], dtype=np.int64)
    base = meter.float_value()
    goal = (1.0 - target) * base
    if joint_floor(bits, meter) > goal * (1.0 + tol):
        raise PlanError(f"--target {target} of {bits.metric} cannot be met: at --max-ratio {space.max_ratio} and the "
                        f"lowest bits at most {1 - joint_floor(bits, meter) / base:.2%} can be removed; lower --target, "
                        "allow lower bits or raise --max-ratio")
    sizes, floor_keeps = tuple(space.sizes), space.keeps([space.max_ratio] * len(space))

    def value(keeps: tuple[int, ...], at: np.ndarray) -> float:
        return meter.value(keeps, bits.bits(at[:, 0], at[:, 1]))

    raised = lowered = 0
    while value(sizes, idx) < goal * (1.0 - tol):
        step = _bit_step(bits, meter, sizes, idx, down=False)
        if step is None:
            break
        idx, raised = step, raised + 1
    while value(floor_keeps, idx) > goal * (1.0 + tol):
        step = _bit_step(bits, meter, floor_keeps, idx, down=True)
        if step is None:  # unreachable: the floor check above covers it
            raise PlanError(f"--target {target} of {bits.metric} cannot be met; lower --target")
        idx, lowered = step, lowered + 1
    fixed = idx.copy()
    unpruned = value(sizes, fixed)
    if unpruned <= goal * (1.0 + tol):
        prune = Rescaled(actions=(0.0,) * len(space), keeps=sizes, value=unpruned, base=unpruned, goal=goal, rounds=0)
    else:
        prune = rescale(space, arr[:, 0], target, metric=PRUNE_METRIC[bits.metric], tol=tol, quiet=True,
                        meter=lambda keeps: value(keeps, fixed), goal=goal)
    group_bits = bits.bits(fixed[:, 0], fixed[:, 1])
    return JointRescaled(prune=prune, bits=group_bits, value=prune.value, base=base, goal=goal, raised=raised,
                         lowered=lowered)
