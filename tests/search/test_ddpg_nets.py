"""DDPG networks: the actor loss taken through Algorithm 1 (linearized) and whole-episode replay."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from onnxprune.search.ddpg_nets import Actor, Critic, rescale_linear, rescaled_actor_loss
from onnxprune.search.replay import ReplayBuffer


def test_rescale_linear_keeps_the_stored_level_and_ignores_the_requested_one() -> None:
    gen = torch.Generator().manual_seed(0)
    weights = torch.rand(6, generator=gen) + 0.1
    stored = 0.5 * torch.rand(2, 6, generator=gen)
    requested = 0.3 * torch.rand(2, 6, generator=gen) + 0.05
    applied, ratio = rescale_linear(requested, stored, weights, max_ratio=10.0)
    torch.testing.assert_close((applied * weights).sum(1), (stored * weights).sum(1))
    again, _ = rescale_linear(2.5 * requested, stored, weights, max_ratio=10.0)
    torch.testing.assert_close(again, applied)  # asking for more everywhere changes nothing
    torch.testing.assert_close(ratio, (requested * weights).sum(1) / (stored * weights).sum(1))


def test_gradient_through_the_rescaling_has_no_component_along_the_request() -> None:
    gen = torch.Generator().manual_seed(1)
    weights = torch.rand(5, generator=gen) + 0.1
    stored = 0.4 * torch.rand(1, 5, generator=gen)
    requested = (0.3 * torch.rand(1, 5, generator=gen) + 0.1).requires_grad_(True)
    applied, _ = rescale_linear(requested, stored, weights, max_ratio=10.0)
    (applied * torch.arange(1.0, 6.0)).sum().backward()
    assert requested.grad is not None
    assert float((requested.grad * requested.detach()).sum()) == pytest.approx(0.0, abs=1e-6)
    assert float(requested.grad.abs().max()) > 1e-3  # the allocation still has a gradient


def _fit_actor(through_rescale: bool, steps: int = 300) -> np.ndarray:
    """Train an actor against a fixed critic ``Q = -sum_t c_t a_t`` (group 0 most sensitive)."""
    groups, gen = 4, torch.Generator().manual_seed(0)
    states = torch.eye(groups)  # one-hot state per group
    cost = torch.tensor([4.0, 2.0, 1.0, 0.5])
    actor = Actor(groups, 16, 0.8, gen)
    critic = Critic(groups, 16, 0.8, gen)
    with torch.no_grad():  # Q(s, a) = -c_t * a / 0.8 exactly: a linear last layer over [s, a]
        critic.net = torch.nn.Sequential(torch.nn.Linear(groups + 1, 1, bias=False))
        critic.net[0].weight.zero_()
        critic.net[0].weight[0, groups] = -1.0

    class Sensitive(torch.nn.Module):
        max_ratio = 0.8

        def forward(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
            return critic(s, a) * (s @ cost)

    stored = torch.full((1, groups), 0.5)
    weights = torch.full((groups,), 0.25)
    opt = torch.optim.Adam(actor.parameters(), lr=1e-2)
    for _ in range(steps):
        if through_rescale:
            loss = rescaled_actor_loss(actor, Sensitive(), states, stored, weights, level=0.01)
        else:
            loss = -Sensitive()(states, actor(states)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return actor(states).numpy()


def test_actor_through_the_rescaling_learns_an_allocation_instead_of_the_bound() -> None:
    per_step = _fit_actor(through_rescale=False)
    assert per_step.max() < 0.05  # "prune less" is right for every group: all at the 0 bound
    rescaled = _fit_actor(through_rescale=True)
    assert rescaled[3] > rescaled[2] > rescaled[1] > rescaled[0]  # least sensitive pruned most
    assert 0.3 < float(rescaled.mean()) / 0.5 < 3.0  # level held near the target, no saturation


def test_episode_rows_are_the_whole_episodes_in_step_order() -> None:
    buffer = ReplayBuffer(7, 1)
    for episode in range(3):  # 9 transitions into 7 rows: episode 0 loses its first two steps
        for step in (2, 0, 1) if episode == 1 else (0, 1, 2):
            buffer.add(np.zeros(1), 0.1 * episode + 0.01 * step, 0.0, np.zeros(1), step == 2, episode=episode,
                       step=step)
    rows = buffer.episode_rows(3)
    assert rows.shape == (2, 3)
    np.testing.assert_allclose(buffer.actions[rows], [[0.10, 0.11, 0.12], [0.20, 0.21, 0.22]], atol=1e-6)
    assert buffer.episode_rows(4).shape == (0, 4)
