"""The DDPG replay buffer: a ring of transitions in numpy arrays, optionally with state memos."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import Tensor

logger = logging.getLogger(__name__)


class ReplayBuffer:
    """Fixed-capacity ring buffer of ``(s, a, r, s', done)`` transitions (numpy arrays).

    With ``memo_dim > 0`` each transition also keeps the memos of ``s`` and ``s'`` (see
    :class:`~onnxprune.search.states.StateBuilder`), from which a trained encoder rebuilds them;
    with ``state_dim = 0`` the state vectors themselves are not kept (they would be stale).
    """

    def __init__(self, capacity: int, state_dim: int, memo_dim: int = 0, action_dim: int = 1) -> None:
        """Allocate ``capacity`` rows of states of size ``state_dim`` (and memos of ``memo_dim``).

        Actions are scalars, or rows of ``action_dim`` numbers when it is above 1 (joint search).
        """
        self.capacity, self.size, self.pos, self.memo_dim = capacity, 0, 0, memo_dim
        self.states = np.zeros((capacity, state_dim), np.float32)
        self.actions = np.zeros(capacity if action_dim == 1 else (capacity, action_dim), np.float32)
        self.rewards = np.zeros(capacity, np.float32)
        self.next_states = np.zeros((capacity, state_dim), np.float32)
        self.dones = np.zeros(capacity, np.float32)
        self.memos = np.zeros((capacity, memo_dim), np.float32)
        self.next_memos = np.zeros((capacity, memo_dim), np.float32)
        self.episodes = np.full(capacity, -1, np.int64)  # episode of each row (-1: not from an episode)
        self.steps = np.full(capacity, -1, np.int64)  # its group step

    def add(self, state: np.ndarray, action: float | np.ndarray, reward: float, next_state: np.ndarray, done: bool,
            memo: np.ndarray | None = None, next_memo: np.ndarray | None = None, *, episode: int = -1,
            step: int = -1) -> None:
        """Store one transition (memos ignored without ``memo_dim``), overwriting the oldest when full.

        ``episode`` and ``step`` place it in its episode, for :meth:`episode_rows`.
        """
        i = self.pos
        self.episodes[i], self.steps[i] = episode, step
        self.actions[i], self.rewards[i], self.dones[i] = action, reward, float(done)
        if self.states.shape[1]:
            self.states[i], self.next_states[i] = state, next_state
        if self.memo_dim:
            if memo is None or next_memo is None:
                raise ValueError("this buffer stores memos: pass memo and next_memo")
            self.memos[i], self.next_memos[i] = memo, next_memo
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def draw(self, batch: int, rng: np.random.Generator) -> np.ndarray:
        """Indices of ``batch`` distinct stored transitions."""
        return rng.choice(self.size, size=batch, replace=False)

    def episode_rows(self, steps: int) -> np.ndarray:
        """``[E, steps]`` rows of the episodes stored whole (the ring may have cut the oldest), by step."""
        filled = self.episodes[:self.size]
        ids, counts = np.unique(filled[filled >= 0], return_counts=True)
        whole = ids[counts == steps]
        rows = np.flatnonzero(np.isin(filled, whole))
        rows = rows[np.lexsort((self.steps[rows], self.episodes[rows]))]
        return rows.reshape(len(whole), steps)

    def take(self, idx: np.ndarray) -> tuple[Tensor, ...]:
        """Transitions ``idx`` as tensors ``(s, a, r, s', done)``."""
        return tuple(torch.from_numpy(a[idx]) for a in (self.states, self.actions, self.rewards,
                                                         self.next_states, self.dones))

    def take_memos(self, idx: np.ndarray) -> tuple[Tensor, Tensor]:
        """Memos of ``s`` and ``s'`` of transitions ``idx``."""
        return torch.from_numpy(self.memos[idx]), torch.from_numpy(self.next_memos[idx])

    def sample(self, batch: int, rng: np.random.Generator) -> tuple[Tensor, ...]:
        """``batch`` distinct stored transitions as tensors ``(s, a, r, s', done)``."""
        return self.take(self.draw(batch, rng))

    def _names(self) -> tuple[str, ...]:
        memos = ("memos", "next_memos") if self.memo_dim else ()
        return ("states", "actions", "rewards", "next_states", "dones", "episodes", "steps", *memos)

    def arrays(self) -> dict[str, Any]:
        """Contents, for a checkpoint."""
        saved: dict[str, Any] = {name: torch.from_numpy(getattr(self, name).copy()) for name in self._names()}
        return {**saved, "size": self.size, "pos": self.pos}

    def load_arrays(self, saved: dict[str, Any]) -> None:
        """Inverse of :meth:`arrays`."""
        for name in self._names():
            getattr(self, name)[...] = saved[name].numpy()
        self.size, self.pos = int(saved["size"]), int(saved["pos"])
