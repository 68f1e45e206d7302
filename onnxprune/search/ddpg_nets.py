"""The DDPG networks and their two losses' building blocks (AGMC / AMC).

- :class:`Actor` ``mu(s) = max_ratio * sigmoid(MLP(s))`` and :class:`Critic` ``Q(s, a)``, two
  hidden layers each, initialized as in the DDPG paper; :func:`soft_update` of target copies.
- :func:`rescaled_actor_loss`: the policy loss taken *through* Algorithm 1. The environment
  rescales every action vector to the resource target before it builds the candidate, so the
  policy that acts on the model is ``R(mu(s_0), ..., mu(s_{G-1}))``, not ``mu`` alone. The
  deterministic policy gradient of that composed policy is ``dQ/da' * dR/da``; ``R`` is
  linearized as the scaling that keeps the episode's weighted removal
  ``sum_t W_t a'_t`` (``W_t``: the group's share of the resource, as in Algorithm 1) at the value
  of the stored, rescaled episode:

      a'_t = a_t * L / sum_u W_u a_u,     L = sum_u W_u a*_u  (a*: the stored applied actions)

  so asking for more everywhere changes nothing (``a' (k a) = a' (a)``) and only the allocation
  between groups gets a gradient. Without it the critic's per-group signal ("this group pruned
  less scores better") is true for every group at once and the actor drifts to its bound: a
  uniform plan plus noise (seen on ResNet-56 with both states). A small penalty
  ``level * (sum_u W_u a_u / L - 1)^2`` keeps the requested level near the target so the
  sigmoid stays out of saturation.

Shapes: ``E`` episodes of ``G`` groups, states ``[E * G, D]`` in episode-major order.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """``target <- (1 - tau) target + tau source``, parameter by parameter."""
    for t, s in zip(target.parameters(), source.parameters()):
        t.mul_(1.0 - tau).add_(s, alpha=tau)


def _mlp(sizes: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


@torch.no_grad()
def _init(module: nn.Sequential, generator: torch.Generator) -> None:
    """Glorot hidden layers, zero biases, a last layer in ``U(-3e-3, 3e-3)`` (DDPG paper)."""
    linears = [m for m in module if isinstance(m, nn.Linear)]
    for layer in linears[:-1]:
        nn.init.xavier_uniform_(layer.weight, generator=generator)
        layer.bias.zero_()
    linears[-1].weight.uniform_(-3e-3, 3e-3, generator=generator)
    linears[-1].bias.zero_()


class Actor(nn.Module):
    """``mu(s) = max_ratio * sigmoid(MLP(s))``: the fraction of the group's channels to remove.

    With ``action_dim = 3`` (joint search) it also gives the weight and activation bit actions,
    ``sigmoid`` in ``[0, 1]``: ``[B, 3]`` rows ``(ratio, w, a)``.
    """

    def __init__(self, state_dim: int, hidden: int, max_ratio: float, generator: torch.Generator,
                 action_dim: int = 1) -> None:
        super().__init__()
        self.max_ratio, self.action_dim = max_ratio, action_dim
        self.net = _mlp((state_dim, hidden, hidden, action_dim))
        _init(self.net, generator)

    def forward(self, state: Tensor) -> Tensor:
        """``[B, D] -> [B]`` actions in ``[0, max_ratio]`` (joint: ``[B, 3]``)."""
        out = torch.sigmoid(self.net(state))
        if self.action_dim == 1:
            return self.max_ratio * out.squeeze(-1)
        return torch.cat([self.max_ratio * out[:, :1], out[:, 1:]], dim=1)


class Critic(nn.Module):
    """``Q(s, a) = MLP([s, a / max_ratio])`` with two hidden layers."""

    def __init__(self, state_dim: int, hidden: int, max_ratio: float, generator: torch.Generator,
                 action_dim: int = 1) -> None:
        super().__init__()
        self.max_ratio, self.action_dim = max_ratio, action_dim
        self.net = _mlp((state_dim + action_dim, hidden, hidden, 1))
        _init(self.net, generator)

    def forward(self, state: Tensor, action: Tensor) -> Tensor:
        """``[B, D], [B] -> [B]`` values (joint: ``[B, 3]`` actions, the ratio divided by ``max_ratio``)."""
        if self.action_dim == 1:
            return self.net(torch.cat([state, (action / self.max_ratio).unsqueeze(-1)], dim=-1)).squeeze(-1)
        scaled = torch.cat([action[:, :1] / self.max_ratio, action[:, 1:]], dim=1)
        return self.net(torch.cat([state, scaled], dim=-1)).squeeze(-1)


def rescale_linear(requested: Tensor, stored: Tensor, weights: Tensor, max_ratio: float) -> tuple[Tensor, Tensor]:
    """Algorithm 1 linearized: ``requested`` scaled to the weighted removal of ``stored``.

    Args:
        requested: ``[E, G]`` actions the actor asks for.
        stored: ``[E, G]`` the applied (rescaled) actions of the same episodes.
        weights: ``[G]`` each group's share of the resource (``W_t``).
        max_ratio: Upper bound of an action.

    Returns:
        ``([E, G] applied actions, [E] requested level / stored level)``.
    """
    level = (stored * weights).sum(dim=1, keepdim=True).clamp_min(1e-9)
    asked = (requested * weights).sum(dim=1, keepdim=True).clamp_min(1e-9)
    applied = (requested * (level / asked)).clamp(0.0, max_ratio)
    return applied, (asked / level).squeeze(1)


def rescaled_actor_loss(actor: Actor, critic: Critic, states: Tensor, stored: Tensor, weights: Tensor,
                        level: float) -> Tensor:
    """``-mean Q(s, R(mu(s))) + level * mean((asked / stored level - 1)^2)`` over whole episodes.

    Args:
        actor: The actor ``mu``.
        critic: The critic ``Q`` (not updated here; its gradient flows to the actor only).
        states: ``[E * G, D]`` the episodes' states, episode-major (detached).
        stored: ``[E, G]`` their applied actions (joint: ``[E, G, 3]``; the ratios are rescaled, the
            bit actions enter the critic as the actor asks them).
        weights: ``[G]`` resource shares ``W_t``.
        level: Weight of the level penalty.
    """
    episodes, groups = stored.shape[:2]
    if actor.action_dim == 1:
        requested = actor(states).reshape(episodes, groups)
        applied, ratio = rescale_linear(requested, stored, weights, actor.max_ratio)
        value = critic(states, applied.reshape(-1)).mean()
        return -value + level * torch.mean((ratio - 1.0) ** 2)
    requested = actor(states).reshape(episodes, groups, actor.action_dim)  # joint: bits pass as asked
    applied, ratio = rescale_linear(requested[..., 0], stored[..., 0], weights, actor.max_ratio)
    value = critic(states, torch.cat([applied.unsqueeze(-1), requested[..., 1:]], dim=-1).reshape(
        episodes * groups, -1)).mean()
    return -value + level * torch.mean((ratio - 1.0) ** 2)
