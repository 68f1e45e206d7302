"""GNN-RL's plan critic: an off-policy value of the applied plan, for an interpolated policy gradient.

**Why.** PPO's likelihood-ratio gradient uses each rollout once: with ``G`` groups and four episodes
per update it is a finite difference along four random directions of a ``G``-dimensional action,
and the clipped ratio lets the mean move only a fraction of the noise per update. On ResNet-56
(30 groups, 60 episodes) that was too little: at seed 0 the mean never left the uniform plan (reward
of the last 10 episodes 74.9 % vs 77.4 % for the first 10) and the result tied random search.
The DDPG agents (AGMC, AMC) learn from the same budget because their critic regresses *every*
episode so far on the applied actions and the actor climbs the critic's gradient.

**What.** The interpolated policy gradient (Gu et al., 2017, "Interpolated Policy Gradient") adds
that off-policy term to the on-policy one:

    loss = PPO's clipped surrogate + critic_weight * ( -Q(R(m)) + level * (asked / stored level - 1)^2 )

where ``m`` is the policy mean (the requested removed fractions of the rollout's last steps), ``R``
AGMC's Algorithm 1 linearized (:func:`~onnxprune.search.ddpg_nets.rescale_linear`: scale the request
to the weighted removal of the stored episode, so only the allocation between groups gets a
gradient) and ``Q`` this critic:

    Q(a) = sum_t q([x_t, e_t, a_t / max_ratio]),   x_t = (t / (G - 1), W_t, log2(width_t) / 12)

one small MLP ``q`` shared by the groups (``t`` the group's topological position, ``W_t`` its share
of the resource, ``e_t`` a learned 8-number embedding of group ``t``: the critic is fitted per search
and never transferred, and a position alone could not tell apart blocks that are equal in shape
but not in sensitivity), fitted by least squares to the standardized rewards of every episode so far
(:class:`PlanReplay`). An additive model estimates each group's marginal effect from all episodes
at once, which is what makes it data-efficient; the position feature tells identical blocks apart.

Shapes: ``E`` episodes, ``G`` groups; actions ``[E, G]``, features ``[G, 3]``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from onnxprune.search.ddpg_nets import rescale_linear
from onnxprune.search.gnn_policy import static_group_features
from onnxprune.search.space import SearchSpace

logger = logging.getLogger(__name__)

EMBEDDING = 8  # width of the learned per-group embedding e_t


def plan_features(space: SearchSpace, metric: str) -> Tensor:
    """``[G, 3]`` critic features per group: position, resource share ``W_t``, log2 width / 12."""
    position = np.arange(len(space), dtype=np.float64) / max(len(space) - 1, 1)
    rows = np.concatenate([position[:, None], static_group_features(space, metric)], axis=1)
    return torch.as_tensor(rows, dtype=torch.float32)


class PlanCritic(nn.Module):
    """``Q(a) = sum_t q([x_t, e_t, a_t / max_ratio])`` over the groups of one model.

    Args:
        features: ``[G, F]`` per-group features (:func:`plan_features`).
        hidden: Width of ``q``'s two hidden layers.
        max_ratio: Upper bound of an action (actions are divided by it).
        generator: Seeds the parameters.
    """

    def __init__(self, features: Tensor, hidden: int, max_ratio: float, generator: torch.Generator) -> None:
        super().__init__()
        self.register_buffer("features", features.clone())
        self.max_ratio = max_ratio
        self.embedding = nn.Parameter(0.1 * torch.randn(features.shape[0], EMBEDDING, generator=generator))
        self.q = nn.Sequential(nn.Linear(features.shape[1] + EMBEDDING + 1, hidden), nn.Tanh(), nn.Linear(hidden, hidden),
                               nn.Tanh(), nn.Linear(hidden, 1))
        with torch.no_grad():
            for layer in self.q:
                if isinstance(layer, nn.Linear):
                    nn.init.xavier_uniform_(layer.weight, generator=generator)
                    layer.bias.zero_()

    def forward(self, actions: Tensor) -> Tensor:
        """``[E, G] -> [E]`` values of the applied plans."""
        episodes, groups = actions.shape
        rows = torch.cat([self.features.expand(episodes, groups, -1), self.embedding.expand(episodes, groups, -1),
                          (actions / self.max_ratio).unsqueeze(-1)], dim=-1)
        return self.q(rows).squeeze(-1).sum(dim=1)


class PlanReplay:
    """Applied plans and rewards of the episodes so far (the newest ``capacity``)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.actions: list[tuple[float, ...]] = []
        self.rewards: list[float] = []

    def __len__(self) -> int:
        return len(self.rewards)

    def add(self, actions: Sequence[float], reward: float) -> None:
        """Store one episode's applied actions and reward, dropping the oldest past ``capacity``."""
        self.actions.append(tuple(float(a) for a in actions))
        self.rewards.append(float(reward))
        del self.actions[:-self.capacity], self.rewards[:-self.capacity]

    def tensors(self) -> tuple[Tensor, Tensor]:
        """``([E, G] actions, [E] standardized rewards clipped to +-3)``."""
        rewards = np.asarray(self.rewards, dtype=np.float64)
        scaled = (rewards - rewards.mean()) / (rewards.std() + 1e-8) if len(rewards) > 1 else rewards * 0.0
        return (torch.tensor(self.actions, dtype=torch.float32),
                torch.as_tensor(np.clip(scaled, -3.0, 3.0), dtype=torch.float32))

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"capacity": self.capacity, "actions": [list(a) for a in self.actions], "rewards": self.rewards}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> PlanReplay:
        """Inverse of :meth:`to_json`."""
        replay = cls(int(obj["capacity"]))
        for actions, reward in zip(obj["actions"], obj["rewards"]):
            replay.add(actions, reward)
        return replay


def fit_critic(critic: PlanCritic, optimizer: torch.optim.Optimizer, replay: PlanReplay, steps: int) -> float:
    """``steps`` full-batch Adam steps of least squares on the replay; returns the last loss."""
    actions, targets = replay.tensors()
    loss = torch.zeros(())
    for _ in range(steps):
        loss = torch.mean((critic(actions) - targets) ** 2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return float(loss.detach())


def critic_actor_loss(critic: PlanCritic, requested: Tensor, stored: Tensor, weights: Tensor, level: float) -> Tensor:
    """``-mean Q(R(requested)) + level * mean((asked / stored level - 1)^2)``.

    Args:
        critic: The plan critic (only ``requested``'s gradient is used: the gradients this leaves on the
            critic's parameters are cleared by :func:`fit_critic` before its next step).
        requested: ``[E, G]`` the policy's requested removed fractions (with gradients).
        stored: ``[E, G]`` the applied actions of the same episodes (their level is kept).
        weights: ``[G]`` resource shares ``W_t``.
        level: Weight of the level penalty.
    """
    applied, ratio = rescale_linear(requested, stored, weights, critic.max_ratio)
    return -critic(applied).mean() + level * torch.mean((ratio - 1.0) ** 2)
