"""DDPG (AGMC): replay buffer, soft update, noise, seeded search, resume, amc/agmc states, compress."""

from __future__ import annotations

from collections.abc import Callable

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from models.export import export_onnx
from models.zoo import zoo_entries
from onnxprune import pipeline
from onnxprune.analyze import analyze
from onnxprune.analyze.cost import model_cost
from onnxprune.analyze.importance import weight_importance
from onnxprune.evaluate import DataSpec, make_preprocess
from onnxprune.load import load
from onnxprune.rewrite import prune_model
from onnxprune.search.baselines import SearchState
from onnxprune.search.ddpg import (DDPGAgent, DDPGConfig, ReplayBuffer, ddpg_search, default_warmup, noise_sigma,
                                   soft_update, torch_threads, truncated_normal)
from onnxprune.search.env import CompressionEnv
from onnxprune.search.space import SearchSpace
from onnxprune.search.states import AGMCStates, AMCStates, make_states

SMALL = DDPGConfig(hidden=32, warmup=2, batch_size=8, buffer_size=50)


@pytest.fixture(scope="module")
def resnet20(tmp_path_factory: pytest.TempPathFactory) -> Path:
    entry = next(e for e in zoo_entries() if e.name == "resnet20")
    path = tmp_path_factory.mktemp("ddpg") / "resnet20.onnx"
    export_onnx(entry.build(0), entry.input_shape, path, exporter="torchscript")
    return path


@pytest.fixture(scope="module")
def space(resnet20: Path) -> SearchSpace:
    analysis = analyze(load(resnet20))
    return SearchSpace.build(analysis, weight_importance(analysis))


def _env(space: SearchSpace) -> CompressionEnv[onnx.ModelProto]:
    """Cheap deterministic score: channels kept by the first three convs (rewards depend on actions)."""
    return CompressionEnv(space, target=0.5, metric="macs", apply=lambda plan: prune_model(space.analysis, plan),
                          score=lambda m: float(np.mean([t.dims[0] for t in m.graph.initializer
                                                         if len(t.dims) == 4][:3]) / 16.0))


def test_replay_buffer_wraps_around_and_samples_distinct() -> None:
    buffer = ReplayBuffer(3, 2)
    for i in range(5):
        buffer.add(np.full(2, i), 0.1 * i, -i, np.full(2, i + 1), i == 4)
    assert (buffer.size, buffer.pos) == (3, 2)
    np.testing.assert_array_equal(buffer.states[:, 0], [3, 4, 2])
    np.testing.assert_allclose(buffer.actions, [0.3, 0.4, 0.2], rtol=1e-6)
    np.testing.assert_array_equal(buffer.dones, [0, 1, 0])
    s, a, r, s2, done = buffer.sample(3, np.random.default_rng(0))
    assert sorted(r.tolist()) == [-4.0, -3.0, -2.0]
    torch.testing.assert_close(s2[:, 0], s[:, 0] + 1)
    copy = ReplayBuffer(3, 2)
    copy.load_arrays(buffer.arrays())
    np.testing.assert_array_equal(copy.next_states, buffer.next_states)
    assert (copy.size, copy.pos) == (3, 2)


def test_soft_update_moves_target_by_tau() -> None:
    target, source = nn.Linear(1, 1), nn.Linear(1, 1)
    with torch.no_grad():
        target.weight.fill_(0.0), target.bias.fill_(2.0), source.weight.fill_(1.0), source.bias.fill_(0.0)
    soft_update(target, source, 0.01)
    assert target.weight.item() == pytest.approx(0.01) and target.bias.item() == pytest.approx(1.98)
    soft_update(target, source, 0.01)
    assert target.weight.item() == pytest.approx(0.0199)


def test_noise_decays_exponentially_after_warmup_and_stays_in_bounds() -> None:
    config = DDPGConfig(warmup=10, init_delta=0.5, delta_decay=0.95)
    assert noise_sigma(config, 9) == 0.0
    assert noise_sigma(config, 10) == pytest.approx(0.5)
    assert noise_sigma(config, 12) == pytest.approx(0.45125)
    assert noise_sigma(config, 110) == pytest.approx(0.5 * 0.95**100)
    rng = np.random.default_rng(0)
    draws = np.array([truncated_normal(0.75, 0.5, 0.0, 0.8, rng) for _ in range(2000)])
    assert draws.min() >= 0.0 and draws.max() <= 0.8
    assert 0.3 < draws.mean() < 0.6  # pulled below mu by the upper bound
    assert truncated_normal(0.9, 0.0, 0.0, 0.8, rng) == 0.8
    assert default_warmup(60) == 20 and default_warmup(900) == 100
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_update_uses_moving_average_baseline_and_fits_critic() -> None:
    agent = DDPGAgent(4, 0.8, DDPGConfig(hidden=16, batch_size=4, buffer_size=8, baseline_alpha=0.5, critic_lr=1e-2),
                      generator=torch.Generator().manual_seed(0), rng=np.random.default_rng(0))
    assert agent.update() is None  # fewer transitions than a batch
    for i in range(8):
        agent.buffer.add(np.full(4, 0.1 * i, np.float32), 0.4, -0.3, np.zeros(4, np.float32), True)
    agent.update()
    assert agent.baseline == pytest.approx(-0.3)
    losses = [agent.update() for _ in range(150)]
    assert losses[-1] is not None and losses[-1][0] < 1e-4  # y = r - b = 0 for terminal steps
    act = agent.act(np.zeros(4, np.float32), episode=0)  # warm-up: uniform draw
    assert 0.0 <= act <= 0.8


def test_seeded_ddpg_is_reproducible_and_resumes_exactly(space: SearchSpace) -> None:
    runs = [ddpg_search(_env(space), AMCStates(_env(space)), 5, seed=7, config=SMALL) for _ in range(2)]
    assert runs[0].best is not None and runs[1].best is not None
    assert runs[0].best.plan == runs[1].best.plan and runs[0].history == runs[1].history
    assert runs[0].next_episode == 5 and runs[0].agent == "amc"
    partial = ddpg_search(_env(space), AMCStates(_env(space)), 3, seed=7, config=SMALL)
    reloaded = SearchState.from_json(json.loads(json.dumps(partial.to_json())))
    resumed = ddpg_search(_env(space), AMCStates(_env(space)), 5, seed=7, config=SMALL, state=reloaded)
    assert resumed.history == runs[0].history and resumed.agent_state["rng"] == runs[0].agent_state["rng"]
    other = ddpg_search(_env(space), AMCStates(_env(space)), 5, seed=8, config=SMALL)
    assert other.history != runs[0].history
    base = space.cost(space.sizes).macs
    assert all(abs(macs / (0.5 * base) - 1) <= 0.01 for _, _, macs in runs[0].history)


def test_agmc_state_has_documented_shape_and_follows_actions(space: SearchSpace) -> None:
    states = AGMCStates(space, generator=torch.Generator().manual_seed(0), embed_dim=16, state_dim=8)
    assert states.dim == 24
    states.begin()
    first = states.state(0, [])
    second = states.state(1, [0.6])
    assert first.shape == second.shape == (24,) and first.dtype == np.float32
    assert np.isfinite(second).all() and 0.0 < np.abs(first[8:]).max() <= 1.0 + 1e-5  # p_t / unpruned max
    states.begin()
    np.testing.assert_array_equal(states.state(0, []), first)
    unpruned = states.state(1, [0.0])
    assert np.abs(unpruned - second).max() > 1e-4  # the decoder and the keep ratios see a_0
    again = AGMCStates(space, generator=torch.Generator().manual_seed(0), embed_dim=16, state_dim=8)
    again.begin()
    np.testing.assert_array_equal(again.state(0, []), first)
    with pytest.raises(ValueError, match="in order"):
        again.state(3, [0.1, 0.1, 0.1, 0.1])
    default = make_states("agmc", _env(space), seed=0)
    assert default.dim == 128 and make_states("amc", _env(space), seed=0).dim == 11


@pytest.fixture(scope="module")
def tiny_npz(tiny_cifar: Callable[[int], Path]) -> Path:
    return tiny_cifar(32)


@pytest.mark.parametrize("agent", ["amc", "agmc"])
def test_compress_with_ddpg_agent_gives_valid_model_on_target(resnet20: Path, tiny_npz: Path, tmp_path: Path,
                                                              agent: str) -> None:
    data = DataSpec(path=tiny_npz, preprocess=make_preprocess("cifar"))
    runs = [pipeline.compress_file(resnet20, tmp_path / f"{agent}{i}.onnx", target=0.5, agent=agent, episodes=3,
                                   warmup=1, seed=3, data=data) for i in range(2)]
    assert runs[0].best.plan == runs[1].best.plan and runs[0].agent == agent and runs[0].episodes == 3
    report = runs[0]
    assert abs(report.after.macs / (0.5 * report.before.macs) - 1) <= 0.01
    assert abs(model_cost(load(report.output)).macs / (0.5 * report.before.macs) - 1) <= 0.01
    onnx.checker.check_model(onnx.load(report.output), full_check=True)
    session = ort.InferenceSession(str(report.output), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    assert session.run(None, {session.get_inputs()[0].name: x})[0].shape == (1, 10)


def test_compress_ddpg_resume_after_interrupt(resnet20: Path, tiny_npz: Path, tmp_path: Path) -> None:
    data = DataSpec(path=tiny_npz, preprocess=make_preprocess("cifar"))
    kwargs = dict(target=0.5, agent="amc", episodes=4, warmup=1, seed=2, data=data)
    full = pipeline.compress_file(resnet20, tmp_path / "full.onnx", **kwargs)

    def stop(episode, state, candidate, best) -> None:  # noqa: ANN001 - test callback
        if episode.index == 1:
            raise KeyboardInterrupt

    out = tmp_path / "cut.onnx"
    with pytest.raises(KeyboardInterrupt):
        pipeline.compress_file(resnet20, out, on_episode=stop, **kwargs)
    seen: list[int] = []
    resumed = pipeline.compress_file(resnet20, out, resume=True, on_episode=lambda e, *_: seen.append(e.index),
                                     **kwargs)
    assert seen == [2, 3] and resumed.best.plan == full.best.plan and resumed.episodes == 4


def test_replay_holds_the_applied_actions_and_their_states(space: SearchSpace) -> None:
    """The buffer stores Algorithm 1's rescaled actions (what was built), with states replayed on them."""
    env = _env(space)
    seen: list = []
    config = DDPGConfig(hidden=32, warmup=1, batch_size=8, buffer_size=200)
    state = ddpg_search(env, AMCStates(env), 3, seed=3, config=config,
                        on_episode=lambda episode, *_: seen.append(episode))
    learner = DDPGAgent(11, space.max_ratio, config, generator=torch.Generator().manual_seed(0),
                        rng=np.random.default_rng(0))
    learner.load_json(state.agent_state)
    steps = len(space)
    stored = learner.buffer.arrays()
    actions = np.asarray(stored["actions"])[:3 * steps].reshape(3, steps)
    for row, episode in zip(actions, seen):
        np.testing.assert_allclose(row, episode.actions, atol=1e-6)
        assert np.abs(np.asarray(episode.requested) - np.asarray(episode.actions)).max() > 1e-3  # really rescaled
    states = np.asarray(stored["states"])[:steps]
    replayed = [env.state(t, list(seen[0].actions[:t])) for t in range(steps)]
    np.testing.assert_allclose(states, np.stack(replayed), atol=1e-6)
