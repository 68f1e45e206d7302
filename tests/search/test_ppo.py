"""GNN-RL (PPO over the m-GNN policy): GAE, seeded runs, resume, topology transfer, permutation equivariance."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from models.export import export_onnx
from models.resnet_cifar import resnet_cifar
from models.zoo import zoo_entries
from onnxprune import pipeline
from onnxprune.analyze import analyze
from onnxprune.analyze.cost import model_cost
from onnxprune.analyze.importance import weight_importance
from onnxprune.embed import make_generator
from onnxprune.errors import PlanError
from onnxprune.evaluate import DataSpec, make_preprocess
from onnxprune.load import load
from onnxprune.pipeline.gnnrl import agent_path, read_agent
from onnxprune.rewrite import prune_model
from onnxprune.search.env import CompressionEnv
from onnxprune.search.gnn_policy import GNNPolicy, PolicyGraph
from onnxprune.search.ppo import PPOConfig, centered_ranks, gae, ppo_search
from onnxprune.search.space import SearchSpace

FAST = PPOConfig(steps=2, episodes_per_update=2, update_epochs=2, minibatches=2, hidden=32, critic_start=2)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ppo")
    for depth in (20, 32):
        export_onnx(resnet_cifar(depth, seed=0), (1, 3, 32, 32), root / f"resnet{depth}.onnx")
    return {f"resnet{d}": root / f"resnet{d}.onnx" for d in (20, 32)}


@pytest.fixture(scope="module")
def data(tiny_cifar: Callable[[int], Path]) -> DataSpec:
    return DataSpec(path=tiny_cifar(32), preprocess=make_preprocess("cifar"))


def _check(path: Path, report: pipeline.compressing.CompressReport, target: float) -> None:
    onnx.checker.check_model(onnx.load(path), full_check=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    assert session.run(None, {session.get_inputs()[0].name: x})[0].shape == (1, 10)
    before, after = model_cost(load(report.source)).macs, model_cost(load(path)).macs
    assert abs(after / ((1 - target) * before) - 1) <= 0.01


def test_gae_on_hand_made_numbers() -> None:
    rewards, values = np.array([0.0, 0.0, 1.0, 0.0, 2.0]), np.array([0.5, 0.6, 0.7, 0.1, 0.2])
    adv, ret = gae(rewards, values, np.array([0, 0, 1, 0, 1]), 5.0, gamma=0.9, lam=0.8)
    # episode 2: d4 = 2 - 0.2; d3 = 0.9 * 0.2 - 0.1; episode 1: d2 = 1 - 0.7, d1 = 0.9 * 0.7 - 0.6, d0 = 0.9 * 0.6 - 0.5
    expected = [0.04 + 0.72 * (0.03 + 0.72 * 0.3), 0.03 + 0.72 * 0.3, 0.3, 0.08 + 0.72 * 1.8, 1.8]
    np.testing.assert_allclose(adv, expected, atol=1e-12)
    np.testing.assert_allclose(ret, adv + values, atol=1e-12)
    boot, _ = gae(rewards[3:], values[3:], np.array([0, 0]), 1.0, gamma=0.9, lam=0.8)  # last step bootstraps
    np.testing.assert_allclose(boot, [0.08 + 0.72 * 2.7, 2.0 + 0.9 * 1.0 - 0.2], atol=1e-12)


def test_seeded_run_is_reproducible_and_meets_target(models: dict[str, Path], data: DataSpec, tmp_path: Path) -> None:
    runs = [pipeline.compress_file(models["resnet20"], tmp_path / f"r{i}.onnx", target=0.5, agent="gnnrl",
                                   episodes=3, seed=4, data=data, ppo=FAST) for i in range(2)]
    assert runs[0].best.plan == runs[1].best.plan and runs[0].best.requested == runs[1].best.requested
    assert runs[0].episodes == 3 and runs[0].agent == "gnnrl"
    _check(runs[0].output, runs[0], 0.5)
    agent, extra = read_agent(agent_path(runs[0].output))
    assert agent.updates == 2 and agent.config == FAST and extra["run"]["agent"] == "gnnrl"


def test_resume_continues_identically(models: dict[str, Path], data: DataSpec, tmp_path: Path) -> None:
    full = pipeline.compress_file(models["resnet20"], tmp_path / "full.onnx", target=0.4, agent="gnnrl", episodes=4,
                                  seed=1, data=data, ppo=FAST)

    def stop(episode, *_: object) -> None:  # noqa: ANN001 - test callback
        if episode.index == 2:
            raise KeyboardInterrupt

    out = tmp_path / "cut.onnx"
    with pytest.raises(KeyboardInterrupt):
        pipeline.compress_file(models["resnet20"], out, target=0.4, agent="gnnrl", episodes=4, seed=1, data=data,
                               ppo=FAST, on_episode=stop)
    assert read_agent(agent_path(out))[0].updates == 1  # checkpoint at the update after episode 1
    seen: list[int] = []
    resumed = pipeline.compress_file(models["resnet20"], out, target=0.4, agent="gnnrl", episodes=4, seed=1,
                                     data=data, ppo=FAST, resume=True, on_episode=lambda e, *_: seen.append(e.index))
    assert seen == [2, 3]
    assert resumed.best.plan == full.best.plan and resumed.episodes == 4
    with pytest.raises(PlanError, match="other settings"):
        pipeline.compress_file(models["resnet20"], out, target=0.4, agent="gnnrl", episodes=4, seed=1, data=data,
                               ppo=replace(FAST, steps=3), resume=True)


def test_policy_transfers_to_a_deeper_resnet(models: dict[str, Path], data: DataSpec, tmp_path: Path) -> None:
    small = pipeline.compress_file(models["resnet20"], tmp_path / "r20.onnx", target=0.5, agent="gnnrl", episodes=2,
                                   seed=0, data=data, ppo=FAST)
    trained = agent_path(small.output)
    kwargs = {"target": 0.5, "agent": "gnnrl", "episodes": 2, "seed": 0, "data": data, "ppo": replace(FAST, hidden=8)}
    moved = pipeline.compress_file(models["resnet32"], tmp_path / "r32.onnx", policy=trained, **kwargs)
    fresh = pipeline.compress_file(models["resnet32"], tmp_path / "f32.onnx", **kwargs)
    _check(moved.output, moved, 0.5)
    assert len(moved.groups) > len(small.groups)
    assert read_agent(agent_path(moved.output))[0].config.hidden == 32  # network shape from the loaded agent
    assert moved.best.requested != fresh.best.requested
    with pytest.raises(PlanError, match="not an onnxprune gnnrl agent"):
        pipeline.compress_file(models["resnet32"], tmp_path / "bad.onnx", policy=models["resnet20"], **kwargs)


def _cheap_env(analysis, target: float, round_to: int = 1) -> CompressionEnv:  # noqa: ANN001
    space = SearchSpace.build(analysis, weight_importance(analysis), round_to=round_to)
    return CompressionEnv(space, target=target, metric="macs", apply=lambda plan: prune_model(analysis, plan),
                          score=lambda m: float(len(m.graph.node)) / 1000.0)


def test_resnet_agent_transfers_to_a_zoo_model(models: dict[str, Path], tmp_path: Path) -> None:
    _, trained = ppo_search(_cheap_env(analyze(load(models["resnet20"])), 0.5), 2, seed=0, config=FAST)
    entry = next(e for e in zoo_entries() if e.name == "mobilenetv2")
    export_onnx(entry.build(0), entry.input_shape, tmp_path / "m.onnx")
    env = _cheap_env(analyze(load(tmp_path / "m.onnx")), 0.3, round_to=4)
    firsts: list[tuple[float, ...]] = []
    state, agent = ppo_search(env, 2, seed=0, config=FAST, transfer=trained,
                              on_episode=lambda e, *_: firsts.append(e.requested))
    assert state.best is not None and agent.updates == 1
    space = env.space
    assert abs(state.best.macs / (0.7 * space.cost(space.sizes).macs) - 1) <= 0.01
    assert all(k % 4 == 0 or k == s for k, s in zip(state.best.keeps, space.sizes))
    fresh, _ = ppo_search(env, 1, seed=0, config=FAST)
    assert fresh.best is not None and fresh.best.requested != firsts[0]  # the transferred weights act


def test_group_permutation_permutes_the_action_distribution(models: dict[str, Path]) -> None:
    analysis = analyze(load(models["resnet20"]))
    space = SearchSpace.build(analysis, weight_importance(analysis))
    perm = np.random.default_rng(0).permutation(len(space))
    shuffled = replace(space, group_ids=tuple(space.group_ids[i] for i in perm),
                       sizes=tuple(space.sizes[i] for i in perm), scores=tuple(space.scores[i] for i in perm))
    removed = np.random.default_rng(1).uniform(0.0, 0.6, len(space))
    policy = GNNPolicy(32, 2, max_ratio=0.8, init_std=0.1, generator=make_generator(0))
    with torch.no_grad():
        torch.nn.init.normal_(policy.actor[-1].weight, generator=make_generator(1))  # spread the means
        dist, value = policy(PolicyGraph(space, "macs").observe(removed, 0.5, 0.5))
        pdist, pvalue = policy(PolicyGraph(shuffled, "macs").observe(removed[perm], 0.5, 0.5))
    assert dist.mean.std() > 1e-3  # the groups do get different actions
    torch.testing.assert_close(pdist.mean, dist.mean[torch.as_tensor(perm)], atol=1e-5, rtol=0)
    torch.testing.assert_close(pdist.stddev, dist.stddev[torch.as_tensor(perm)], atol=1e-5, rtol=0)
    torch.testing.assert_close(pvalue, value, atol=1e-5, rtol=0)


def test_mirrored_episodes_share_negated_noise(models: dict[str, Path]) -> None:
    env = _cheap_env(analyze(load(models["resnet20"])), 0.5)
    config = replace(FAST, steps=1, episodes_per_update=4, mirrored=True, init_std=0.1)
    requested: list[np.ndarray] = []
    ppo_search(env, 4, seed=3, config=config, on_episode=lambda e, *_: requested.append(np.array(e.requested)))
    a = np.stack(requested)  # one rollout: the policy (its mean m) is the same for all four episodes
    inside = np.all((a > 0.0) & (a < env.space.max_ratio), axis=0)  # entries the [0, max_ratio] clip left alone
    assert inside.sum() >= len(env.space) // 2
    # episodes (0, 1) and (2, 3) are pairs m + s z, m - s z: each pair averages to m; the pairs' noises differ
    np.testing.assert_allclose((a[0] + a[1])[inside], (a[2] + a[3])[inside], atol=1e-6)
    assert np.abs(a[0] - a[2])[inside].max() > 1e-3
    plain: list[np.ndarray] = []
    ppo_search(env, 2, seed=3, config=replace(config, mirrored=False),
               on_episode=lambda e, *_: plain.append(np.array(e.requested)))
    np.testing.assert_allclose(plain[0], a[0], atol=1e-7)  # the first episode draws as without mirroring
    assert np.abs((plain[0] + plain[1] - a[0] - a[1])[inside]).max() > 1e-3


def test_centered_ranks_on_hand_made_numbers() -> None:
    rewards = np.array([0.0, 0.9, 0.0, 0.1, 0.5, 0.5, 0.7])
    dones = np.array([0, 1, 0, 1, 1, 1, 1])
    # final rewards 0.9, 0.1, 0.5, 0.5, 0.7 -> ranks 4, 0, 1.5, 1.5, 3 of 0..4
    np.testing.assert_allclose(centered_ranks(rewards, dones), [0.0, 0.5, 0.0, -0.5, -0.125, -0.125, 0.25])
    np.testing.assert_allclose(centered_ranks(np.array([0.3]), np.array([1])), [0.0])
    collapsed = centered_ranks(np.array([0.8, 0.81, 0.1, 0.79]), np.ones(4))
    np.testing.assert_allclose(collapsed, [2 / 3 - 0.5, 0.5, -0.5, 1 / 3 - 0.5])  # the outlier is only last

