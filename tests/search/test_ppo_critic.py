"""GNN-RL's plan critic: replay, least-squares fit, the critic term's gradient, old agent files."""

from __future__ import annotations

import io
from dataclasses import asdict

import numpy as np
import pytest
import torch

from onnxprune.embed import make_generator
from onnxprune.search.ppo import AgentCheckpoint
from onnxprune.search.ppo_config import PPOConfig
from onnxprune.search.ppo_critic import PlanCritic, PlanReplay, critic_actor_loss, fit_critic


def _features(groups: int) -> torch.Tensor:
    position = torch.linspace(0, 1, groups)
    return torch.stack([position, torch.full((groups,), 1.0 / groups), torch.full((groups,), 0.5)], dim=1)


def test_replay_keeps_the_newest_and_standardizes() -> None:
    replay = PlanReplay(capacity=3)
    for i in range(5):
        replay.add([0.1 * i, 0.2], reward=float(i))
    assert len(replay) == 3 and replay.rewards == [2.0, 3.0, 4.0]
    actions, targets = replay.tensors()
    assert actions.shape == (3, 2) and actions[0, 0].item() == pytest.approx(0.2)
    np.testing.assert_allclose(targets.numpy(), [-1.2247449, 0.0, 1.2247449], rtol=1e-5)
    again = PlanReplay.from_json(replay.to_json())
    assert again.actions == replay.actions and again.rewards == replay.rewards and again.capacity == 3


def test_critic_learns_which_groups_are_sensitive() -> None:
    groups, rng = 12, np.random.default_rng(0)
    sensitivity = np.exp(rng.normal(0.0, 1.0, groups))
    replay = PlanReplay(capacity=500)
    for _ in range(200):
        plan = rng.uniform(0.0, 0.8, groups)
        replay.add(plan, -float((sensitivity * plan ** 2).sum()))
    critic = PlanCritic(_features(groups), 32, 0.8, make_generator(0))
    optimizer = torch.optim.Adam(critic.parameters(), lr=1e-2)
    assert fit_critic(critic, optimizer, replay, 600) < 0.05  # of a unit-variance target
    held = rng.uniform(0.0, 0.8, (100, groups))
    truth = -(sensitivity * held ** 2).sum(axis=1)
    predicted = critic(torch.as_tensor(held, dtype=torch.float32)).detach().numpy()
    assert np.corrcoef(truth, predicted)[0, 1] > 0.95
    point = torch.full((1, groups), 0.4, requires_grad=True)
    critic(point).sum().backward()
    # the critic's gradient says "prune less" hardest where the true gradient -2 s a is steepest
    assert np.corrcoef(point.grad.numpy()[0], -sensitivity)[0, 1] > 0.95


def test_critic_term_moves_only_the_allocation() -> None:
    groups = 6
    critic = PlanCritic(_features(groups), 16, 0.8, make_generator(1))
    weights = torch.tensor([0.3, 0.1, 0.2, 0.1, 0.2, 0.1])
    stored = torch.tensor([[0.5, 0.4, 0.5, 0.3, 0.6, 0.2]])
    requested = torch.tensor([[0.3, 0.2, 0.3, 0.2, 0.3, 0.1]], requires_grad=True)
    critic_actor_loss(critic, requested, stored, weights, level=0.0).backward()
    grad = requested.grad
    assert grad.abs().max() > 1e-4
    # asking for k times more everywhere is rescaled away: no gradient along the request itself
    assert float((grad * requested.detach()).sum()) == pytest.approx(0.0, abs=1e-6)
    requested.grad = None
    critic_actor_loss(critic, requested, stored, weights, level=1.0).backward()
    assert float((requested.grad * requested.detach()).sum()) < -1e-3  # the penalty raises a low request


def test_agent_files_without_the_critic_load_as_plain_ppo() -> None:
    config = asdict(PPOConfig(hidden=8))
    for key in ("critic_weight", "critic_hidden", "critic_lr", "critic_steps", "critic_start", "replay_size",
                "level_penalty"):
        config.pop(key)
    buffer = io.BytesIO()
    torch.save({"format": 1, "config": config, "policy": {}, "optimizer": {}, "rng": torch.zeros(3),
                "search": "{}", "updates": 2, "extra": "{}"}, buffer)
    agent, extra = AgentCheckpoint.from_bytes(buffer.getvalue())
    assert agent.config.critic_weight == 0.0 and agent.config.hidden == 8 and agent.updates == 2
    assert agent.critic == {} and agent.replay == {} and extra == {}
