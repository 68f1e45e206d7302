"""The compression environment: one decision per prunable group, AMC's handcrafted state.

An episode visits the prunable groups in topological order (``reset`` then one ``step`` per
group), or takes one action vector at once (:meth:`CompressionEnv.evaluate`, GNN-RL style).
At the end the actions are rescaled to the target (:func:`~onnxprune.search.rescale.rescale`),
the candidate is built with the ``apply`` callable, scored with ``score`` and rewarded.

State per group (He et al., AMC): ``(t, n, c, h, w, stride, k, FLOPs(t), reduced, rest, a_{t-1})``
where ``n``/``c`` are the output/input channels of the group's first producer, ``h``/``w`` its
input's spatial size, ``FLOPs(t)`` the MACs touching the group, ``reduced`` the MACs already
removed by earlier decisions (``sum_{i<t} FLOPs(i) a_i``), ``rest`` the MACs of later groups,
and ``a_{t-1}`` the previous action. Each column is divided by its maximum over the groups.

Joint search (``bits``, a :class:`~onnxprune.search.bits.BitSpace`): an action is a triple
``(ratio, w, a)`` per group (bit actions in ``[0, 1]``), the episode is fitted by
:func:`~onnxprune.search.rescale.rescale_joint` and the plan carries the layers' bits; the AMC
state gains ``w_prev = w_bits / 8`` and ``a_prev = a_bits / 16`` of the previous group's choice
(:data:`JOINT_STATE_FEATURES`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from onnxprune.analyze.cost import group_shares
from onnxprune.errors import PlanError
from onnxprune.execute.base import CandidateResult, CandidateTask, Executor
from onnxprune.execute.local import LocalExecutor
from onnxprune.plan import Plan
from onnxprune.search.bits import BitSpace, JointMeter
from onnxprune.search.rescale import JointRescaled, Rescaled, rescale, rescale_joint
from onnxprune.search.reward import RewardFn, r_err
from onnxprune.search.space import SearchSpace

logger = logging.getLogger(__name__)

Candidate = TypeVar("Candidate")
STATE_FEATURES: tuple[str, ...] = ("t", "n", "c", "h", "w", "stride", "k", "flops", "reduced", "rest", "a_prev")
JOINT_STATE_FEATURES: tuple[str, ...] = (*STATE_FEATURES, "w_prev", "abits_prev")

#: Called by :meth:`CompressionEnv.evaluate_many` per episode, in submission order, with the candidate
#: model when it was built in this process (``None`` when a worker built it).
OnResult = Callable[["Episode", Any], None]


@dataclass(frozen=True)
class Episode:
    """One evaluated candidate.

    Attributes:
        index: Episode number (0-based).
        requested: Actions the agent asked for.
        actions: Actions after rescaling to the target (fractions removed).
        keeps: Units kept per group.
        plan: The plan built from ``keeps``.
        macs: MACs of the candidate.
        params: Parameters of the candidate.
        accuracy: Validation top-1 in ``[0, 1]``, or ``None`` without data.
        reward: The reward (0 without data).
        latency: Predicted milliseconds (when the space has a latency table).
        bits: Per-group ``(w_bits, a_bits)`` applied (joint search; empty otherwise).
        joint: The joint metric (``bops`` / ``bytes``) of the candidate (joint search).
    """

    index: int
    requested: tuple[float, ...]
    actions: tuple[float, ...]
    keeps: tuple[int, ...]
    plan: Plan
    macs: int
    params: int
    accuracy: float | None
    reward: float
    latency: float | None = None
    bits: tuple[tuple[int, int], ...] = ()
    joint: float | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"index": self.index, "requested": list(self.requested), "actions": list(self.actions),
                "keeps": list(self.keeps), "plan": self.plan.to_json(), "macs": self.macs,
                "params": self.params, "accuracy": self.accuracy, "reward": self.reward,
                "latency": self.latency, "bits": [list(b) for b in self.bits], "joint": self.joint}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Episode:
        """Inverse of :meth:`to_json`."""
        return cls(index=int(obj["index"]), requested=tuple(obj["requested"]), actions=tuple(obj["actions"]),
                   keeps=tuple(int(k) for k in obj["keeps"]), plan=Plan.from_json(obj["plan"]),
                   macs=int(obj["macs"]), params=int(obj["params"]), accuracy=obj["accuracy"],
                   reward=float(obj["reward"]), latency=obj.get("latency"),
                   bits=tuple((int(w), int(a)) for w, a in obj.get("bits", ())), joint=obj.get("joint"))


def _conv_facts(space: SearchSpace, gid: int) -> tuple[float, float, float, float, float, float]:
    """``(n, c, h, w, stride, k)`` of the first Conv/Gemm producer of group ``gid``."""
    model = space.analysis.model
    nodes = {n.name: n for n in model.proto.graph.node}
    group = space.analysis.groups[gid]
    for name in group.producers:
        node = nodes.get(name)
        if node is None or node.op_type not in ("Conv", "Gemm", "MatMul", "ConvTranspose"):
            continue
        weight = model.shapes.get(node.input[1]) or ()
        x = model.shapes.get(node.input[0]) or ()
        spatial = [d or 1 for d in x[2:]] if node.op_type.startswith("Conv") else [1, 1]
        strides = next((list(a.ints) for a in node.attribute if a.name == "strides"), [1])
        kernel = [d or 1 for d in weight[2:]] or [1]
        h, w = (spatial + [1, 1])[:2]
        c = float(weight[1] if len(weight) > 1 and weight[1] else 1)
        return float(group.size), c, float(h), float(w), float(max(strides or [1])), float(max(kernel))
    return float(group.size), 1.0, 1.0, 1.0, 1.0, 1.0


def static_features(space: SearchSpace) -> np.ndarray:
    """``[G, 8]``: ``t, n, c, h, w, stride, k, FLOPs(t)`` per group (unnormalized)."""
    shares = group_shares(space.analysis)
    rows = [(float(t), *_conv_facts(space, gid), float(shares[gid][0])) for t, gid in enumerate(space.group_ids)]
    return np.asarray(rows, dtype=np.float64)


class CompressionEnv(Generic[Candidate]):
    """Episodes of per-group actions ending in a scored, rescaled candidate."""

    def __init__(self, space: SearchSpace, *, target: float, metric: str,
                 apply: Callable[[Plan], Candidate], score: Callable[[Candidate], float] | None,
                 reward: RewardFn = r_err, bits: BitSpace | None = None, executor: Executor | None = None) -> None:
        """Set up the environment.

        Args:
            space: Groups, rounding and the exact cost model.
            target: Fraction of ``metric`` to remove.
            metric: ``macs``, ``params`` or ``latency`` (predicted by ``space.latency``).
            apply: Builds the candidate model of a plan (e.g. rewrite, plus reconstruction).
            score: Validation top-1 of a candidate in ``[0, 1]``; ``None`` for data-free runs.
            reward: Reward of ``(error, macs, params, latency)``.
            bits: The joint search's bit space (``metric`` then ``bops`` or ``bytes``); ``None``:
                pruning only.
            executor: Where :meth:`evaluate_many` scores candidates (:mod:`onnxprune.execute`);
                ``None``: in this process with ``apply`` and ``score``.
        """
        if (bits is None) != (metric not in ("bops", "bytes")):
            raise PlanError(f"--metric {metric}: bops and bytes go with --quantize, and --quantize needs one of them")
        self.space, self.target, self.metric = space, target, metric
        self.apply, self.score, self.reward = apply, score, reward
        self.features = static_features(space)
        self.scale = np.maximum(np.abs(self.features).max(axis=0), 1e-12)
        self.flops = self.features[:, 7]
        self.episodes = 0
        self.missed = 0  # candidates whose rounding kept them more than 1 % off the target
        self._actions: list[Any] = []
        self.bits = bits
        self.meter = JointMeter(bits) if bits is not None else None
        self.executor: Executor = executor if executor is not None else LocalExecutor(self._evaluate_plan)

    @property
    def action_dim(self) -> int:
        """Numbers per group action: 1 (ratio) or 3 (ratio, weight bits, activation bits)."""
        return 1 if self.bits is None else 3

    @property
    def prune_metric(self) -> str:
        """The metric Algorithm 1's group shares are measured in (``macs`` for ``bops``, ``params`` for ``bytes``)."""
        return {"bops": "macs", "bytes": "params"}.get(self.metric, self.metric)

    @property
    def state_dim(self) -> int:
        """Length of a state vector."""
        return len(STATE_FEATURES if self.bits is None else JOINT_STATE_FEATURES)

    def bit_features(self, action: Any) -> tuple[float, float]:
        """``(w_bits / 8, a_bits / 16)`` a joint action asks for (``(0, 0)`` for ``None``)."""
        if action is None or self.bits is None:
            return 0.0, 0.0
        w, a = np.ravel(np.asarray(action, dtype=np.float64))[1:3]
        return self.bits.w_set[self.bits.index(w, "w")] / 8.0, self.bits.a_set[self.bits.index(a, "a")] / 16.0

    def state(self, t: int, actions: Sequence[Any]) -> np.ndarray:
        """Normalized AMC state of group ``t`` given the earlier actions (floats, or joint triples)."""
        total = max(float(self.flops.sum()), 1.0)
        ratios = ratios_of(actions[:t])
        reduced = float(np.dot(self.flops[:t], ratios)) / total
        rest = float(self.flops[t + 1:].sum()) / total
        prev = float(ratios[t - 1]) if t > 0 else 0.0
        extra = list(self.bit_features(actions[t - 1] if t > 0 else None)) if self.bits is not None else []
        return np.concatenate([self.features[t] / self.scale, [reduced, rest, prev], extra]).astype(np.float32)

    def clip_action(self, action: Any) -> Any:
        """``action`` inside its bounds: a float in ``[0, max_ratio]``, or a joint triple with bits in ``[0, 1]``."""
        if self.bits is None:
            return float(np.clip(np.ravel(np.asarray(action, dtype=np.float64))[0], 0.0, self.space.max_ratio))
        arr = np.ravel(np.asarray(action, dtype=np.float64))
        if arr.size != 3:
            raise PlanError(f"a joint action has 3 numbers (ratio, weight bits, activation bits), not {arr.size}")
        return np.array([np.clip(arr[0], 0.0, self.space.max_ratio), *np.clip(arr[1:], 0.0, 1.0)])

    def applied(self, episode: Episode) -> list[Any]:
        """The episode's actions as applied (rescaled ratios; joint: with the bins of the bits applied)."""
        if self.bits is None:
            return [float(a) for a in episode.actions]
        bits = self.bits
        return [np.array([r, bits.action_of(bits.w_set.index(w), "w"), bits.action_of(bits.a_set.index(a), "a")])
                for r, (w, a) in zip(episode.actions, episode.bits)]

    def reset(self) -> np.ndarray:
        """Start an episode; returns the first group's state."""
        self._actions = []
        return self.state(0, [])

    def step(self, action: float) -> tuple[np.ndarray | None, Episode | None]:
        """Take the action of the current group.

        Returns:
            ``(next state, None)`` mid-episode; ``(None, episode)`` after the last group.
        """
        if len(self._actions) >= len(self.space):
            raise PlanError("the episode is over; call reset() first")
        self._actions.append(self.clip_action(action))
        t = len(self._actions)
        if t < len(self.space):
            return self.state(t, self._actions), None
        return None, self.evaluate(self._actions)

    def evaluate(self, actions: Sequence[float]) -> Episode:
        """Rescale ``actions`` to the target, build and score the candidate (one whole episode)."""
        episode, _ = self.evaluate_with_candidate(actions)
        return episode

    def _note_miss(self, fitted: Rescaled) -> None:
        """Warn once per run when channel rounding keeps a candidate over 1 % off the target (then debug)."""
        if abs(fitted.value - fitted.goal) <= 0.01 * fitted.goal:
            return
        self.missed += 1
        logger.log(logging.WARNING if self.missed == 1 else logging.DEBUG,
                   "episode %d: rescaled %s is %.2f %% off the goal (rounding to %d); the report gives the %s "
                   "reached, further misses are logged at debug level", self.episodes, self.metric,
                   100.0 * abs(fitted.value - fitted.goal) / fitted.goal, self.space.round_to, self.metric)

    def fit(self, actions: Sequence[Any]) -> tuple[Rescaled, Plan, JointRescaled | None]:
        """Rescale ``actions`` to the target: the pruning part, the plan (with bits when joint) and the joint fit."""
        if self.bits is None or self.meter is None:
            fitted = rescale(self.space, [float(a) for a in actions], self.target, metric=self.metric, quiet=True)
            return fitted, self.space.plan(fitted.keeps), None
        arr = np.stack([self.clip_action(a) for a in actions])
        joint = rescale_joint(self.bits, self.meter, arr, self.target)
        plan = self.space.plan(joint.prune.keeps)
        return joint.prune, Plan(keep=plan.keep, bits=self.bits.layer_bits(joint.bits)), joint

    def _evaluate_plan(self, plan: Plan) -> tuple[float | None, Candidate]:
        """Build and score ``plan``'s candidate in this process."""
        candidate = self.apply(plan)
        return (self.score(candidate) if self.score is not None else None), candidate

    def evaluate_with_candidate(self, actions: Sequence[Any]) -> tuple[Episode, Candidate]:
        """As :meth:`evaluate`, also returning the candidate (to save the best one); always in this process."""
        fitted, plan, joint = self.fit(actions)
        self._note_miss(fitted)
        accuracy, candidate = self._evaluate_plan(plan)
        return self._episode(self.episodes, actions, fitted, plan, joint, accuracy), candidate

    def evaluate_many(self, batch: Sequence[Sequence[Any]], *, start: int,
                      on_result: OnResult | None = None) -> list[Episode]:
        """Evaluate a batch of action vectors as episodes ``start, start + 1, ...`` on the executor.

        Every vector is fitted here, in order (rescaling, plan, cost and predicted latency are the
        main process's, so they never depend on the backend); only the plans travel to the
        executor. Episodes are recorded in submission order: ``on_result`` sees episode ``i`` as
        soon as episodes ``start..i`` are all scored, so a checkpoint written there keeps the
        finished part of a batch.

        Returns:
            The episodes in submission order.
        """
        fits = []
        for offset, actions in enumerate(batch):
            self.episodes = start + offset
            fitted, plan, joint = self.fit(actions)
            self._note_miss(fitted)
            fits.append((actions, fitted, plan, joint))
        tasks = [CandidateTask.of(start + i, plan) for i, (_, _, plan, _) in enumerate(fits)]
        done: dict[int, CandidateResult] = {}
        episodes: list[Episode] = []
        results = self.executor.run(tasks)
        try:
            for result in results:
                done[result.id] = result
                while start + len(episodes) in done:
                    ready = done.pop(start + len(episodes))
                    actions, fitted, plan, joint = fits[len(episodes)]
                    episode = self._episode(ready.id, actions, fitted, plan, joint, ready.accuracy)
                    episodes.append(episode)
                    if on_result is not None:
                        on_result(episode, ready.candidate)
        finally:  # an interrupted batch: the executor drops its candidates in flight now, not at garbage collection
            close = getattr(results, "close", None)
            if close is not None:
                close()
        self.episodes = start + len(episodes)
        return episodes

    def _episode(self, index: int, actions: Sequence[Any], fitted: Rescaled, plan: Plan,
                 joint: JointRescaled | None, accuracy: float | None) -> Episode:
        """The episode of a fitted, scored candidate (cost and latency computed here)."""
        cost = self.space.plan_cost(plan)
        latency = self.space.measure(fitted.keeps, "latency") if self.space.latency is not None else None
        reward = self.reward(1.0 - accuracy, cost.macs, cost.params, latency) if accuracy is not None else 0.0
        episode = Episode(index=index, requested=tuple(float(a) for a in np.ravel(np.asarray(actions, float))),
                          actions=fitted.actions, keeps=fitted.keeps, plan=plan, macs=cost.macs,
                          params=cost.params, accuracy=accuracy, reward=reward, latency=latency,
                          bits=joint.bits if joint else (), joint=joint.value if joint else None)
        self.episodes = index + 1
        logger.info("episode %d: reward %.4f, %s MACs%s", episode.index, reward, f"{cost.macs:,}",
                    f", {joint.value:,.0f} {self.metric}" if joint else "")
        return episode


def ratios_of(actions: Sequence[Any]) -> np.ndarray:
    """The pruning ratios of actions that are floats or joint triples (first entry)."""
    if not len(actions):
        return np.zeros(0)
    return np.asarray([float(np.ravel(np.asarray(a, dtype=np.float64))[0]) for a in actions])
