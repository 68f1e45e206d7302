"""Baseline agents: uniform ratio and random search, both rescaled to the target.

Both return a :class:`SearchState`, the JSON-serializable progress of a search: the next
episode, the best episode so far and a short history. Random search draws episode ``i``'s
actions from its own generator ``default_rng((seed, i))``, so a run resumed from a checkpoint
at episode ``i`` continues exactly as the uninterrupted run would.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from onnxprune.errors import PlanError
from onnxprune.search.env import CompressionEnv, Episode

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchState:
    """Progress of a search, enough to resume it.

    Attributes:
        agent: Agent name (``uniform``, ``random``, ``amc``).
        seed: The run's seed.
        next_episode: Episodes done so far.
        best: The best episode (highest reward, then fewest MACs), or ``None`` before the first.
        history: ``(reward, accuracy, macs)`` per episode.
        agent_state: Agent-specific resumable state (JSON-ready), if any.
        top: The best episodes with distinct plans, best first (at most :data:`TOP_EPISODES`):
            the finalists a final, more thorough repair re-ranks.
    """

    agent: str
    seed: int
    next_episode: int = 0
    best: Episode | None = None
    history: tuple[tuple[float, float | None, int], ...] = ()
    agent_state: Any = None
    top: tuple[Episode, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"agent": self.agent, "seed": self.seed, "next_episode": self.next_episode,
                "best": self.best.to_json() if self.best else None,
                "history": [list(h) for h in self.history], "agent_state": self.agent_state,
                "top": [e.to_json() for e in self.top]}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> SearchState:
        """Inverse of :meth:`to_json`."""
        try:
            return cls(agent=str(obj["agent"]), seed=int(obj["seed"]), next_episode=int(obj["next_episode"]),
                       best=Episode.from_json(obj["best"]) if obj.get("best") else None,
                       history=tuple((float(r), a, int(m)) for r, a, m in obj.get("history", ())),
                       agent_state=obj.get("agent_state"),
                       top=tuple(Episode.from_json(e) for e in obj.get("top", ())))
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanError(f"malformed search checkpoint ({exc}); delete it or run without --resume") from exc

    def record(self, episode: Episode) -> tuple[SearchState, bool]:
        """State after ``episode``; the flag says whether it is the new best."""
        better = self.best is None or _rank(episode) > _rank(self.best)
        others = [e for e in self.top if _key(e) != _key(episode)]
        if len(others) < len(self.top) and any(_key(e) == _key(episode) and _rank(e) >= _rank(episode)
                                               for e in self.top):
            others = list(self.top)  # the same plan is already there with a reward at least as high
        else:
            others.append(episode)
        top = tuple(sorted(others, key=_rank, reverse=True)[:TOP_EPISODES])
        return replace(self, next_episode=episode.index + 1, best=episode if better else self.best,
                       history=self.history + ((episode.reward, episode.accuracy, episode.macs),), top=top), better


TOP_EPISODES = 5
"""Finalists a search keeps (:attr:`SearchState.top`)."""


def _key(episode: Episode) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...]]:
    """What makes two episodes the same candidate: keep counts and (joint search) bits."""
    return episode.keeps, episode.bits


def _rank(episode: Episode) -> tuple[float, int]:
    """Higher is better: the reward, then fewer MACs."""
    return episode.reward, -episode.macs


#: Called after every episode with ``(episode, new state, candidate, is_best)``.
OnEpisode = Callable[[Episode, SearchState, Any, bool], None]


def episode_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of episode ``index`` of a run seeded with ``seed``."""
    return np.random.default_rng((seed, index))


def _run(env: CompressionEnv[Any], state: SearchState, actions: np.ndarray,
         on_episode: OnEpisode | None) -> SearchState:
    env.episodes = state.next_episode
    episode, candidate = env.evaluate_with_candidate(actions.tolist())
    state, better = state.record(episode)
    if on_episode is not None:
        on_episode(episode, state, candidate, better)
    return state


def uniform_search(env: CompressionEnv[Any], *, seed: int = 0, on_episode: OnEpisode | None = None) -> SearchState:
    """One episode: the same ratio in every group, rescaled to the target.

    Joint search: every group also asks for the allowed widths closest to 8 bits (int8, the
    usual uniform quantization), then :func:`~onnxprune.search.rescale.rescale_joint` fits it.
    """
    actions = np.full(len(env.space), min(env.target, env.space.max_ratio))
    if env.bits is not None:
        bits = env.bits
        w = bits.action_of(int(np.argmin([abs(b - 8) for b in bits.w_set])), "w")
        a = bits.action_of(int(np.argmin([abs(b - 8) for b in bits.a_set])), "a")
        actions = np.stack([actions, np.full(len(actions), w), np.full(len(actions), a)], axis=1)
    return _run(env, SearchState(agent="uniform", seed=seed), actions, on_episode)


def random_search(env: CompressionEnv[Any], episodes: int, *, seed: int, state: SearchState | None = None,
                  on_episode: OnEpisode | None = None) -> SearchState:
    """``episodes`` random action vectors (uniform in ``[0, max_ratio]``), rescaled; best by reward.

    Joint search: each group's two bit actions are uniform in ``[0, 1]`` too (drawn after the ratios).

    Args:
        env: The environment.
        episodes: Total episodes of the run (a resumed run does only the rest).
        seed: Seed of the run.
        state: A checkpointed state to resume from.
        on_episode: Progress / checkpoint callback.
    """
    if episodes < 1:
        raise PlanError(f"--episodes {episodes}: give 1 or more")
    state = state or SearchState(agent="random", seed=seed)
    batch = [random_actions(env, seed, index) for index in range(state.next_episode, episodes)]
    return run_batch(env, state, batch, on_episode)


def random_actions(env: CompressionEnv[Any], seed: int, index: int) -> np.ndarray:
    """Episode ``index``'s random action vector (``[G]``, or ``[G, 3]`` for a joint search)."""
    rng = episode_rng(seed, index)
    actions = rng.uniform(0.0, env.space.max_ratio, len(env.space))
    if env.bits is not None:
        actions = np.concatenate([actions[:, None], rng.uniform(0.0, 1.0, (len(env.space), 2))], axis=1)
    return actions


def run_batch(env: CompressionEnv[Any], state: SearchState, batch: list[np.ndarray],
              on_episode: OnEpisode | None) -> SearchState:
    """Evaluate ``batch`` as the next episodes on ``env``'s executor, recording each in order.

    ``on_episode`` (the checkpoint) runs after every episode, so an interrupted batch keeps its
    finished prefix; it gets the candidate model only when it was built in this process.
    """
    current = [state]

    def record(episode: Episode, candidate: Any) -> None:
        current[0], better = current[0].record(episode)
        if on_episode is not None:
            on_episode(episode, current[0], candidate, better)

    env.evaluate_many([a.tolist() for a in batch], start=state.next_episode, on_result=record)
    return current[0]
