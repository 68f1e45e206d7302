"""Policy search: Algorithm 1 rescaling, rewards, the environment, baselines and `compress`."""

from __future__ import annotations

from collections.abc import Callable

import logging
import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from models.export import export_onnx
from models.zoo import zoo_entries
from onnxprune import pipeline
from onnxprune.analyze import analyze
from onnxprune.analyze.cost import model_cost
from onnxprune.analyze.importance import weight_importance
from onnxprune.cli import main
from onnxprune.errors import PlanError
from onnxprune.evaluate import DataSpec, make_preprocess
from onnxprune.load import load, normalize
from onnxprune.rewrite import prune_model
from onnxprune.search.baselines import random_search, uniform_search
from onnxprune.search.env import STATE_FEATURES, CompressionEnv
from onnxprune.search.rescale import Rescaled, rescale
from onnxprune.search.reward import r_err, r_flops, r_param
from onnxprune.search.space import SearchSpace


def _export(name: str, path: Path) -> Path:
    entry = next(e for e in zoo_entries() if e.name == name)
    export_onnx(entry.build(0), entry.input_shape, path, exporter="torchscript")
    return path


@pytest.fixture(scope="module")
def resnet20(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export("resnet20", tmp_path_factory.mktemp("search") / "resnet20.onnx")


@pytest.fixture(scope="module")
def space(resnet20: Path) -> SearchSpace:
    analysis = analyze(load(resnet20))
    return SearchSpace.build(analysis, weight_importance(analysis))


@pytest.fixture(scope="module")
def tiny_npz(tiny_cifar: Callable[[int], Path]) -> Path:
    return tiny_cifar(48)


def _accuracy_env(space: SearchSpace, target: float = 0.5) -> CompressionEnv[onnx.ModelProto]:
    """An environment with a cheap deterministic score (fraction of channels kept in group 0)."""
    return CompressionEnv(space, target=target, metric="macs", apply=lambda plan: prune_model(space.analysis, plan),
                          score=lambda m: float(np.mean([t.dims[0] for t in m.graph.initializer
                                                         if len(t.dims) == 4][:3]) / 16.0))


@pytest.mark.parametrize("metric", ["macs", "params"])
@pytest.mark.parametrize("target", [0.3, 0.5, 0.7])
def test_rescale_hits_target_on_random_actions(space: SearchSpace, metric: str, target: float) -> None:
    base = getattr(space.cost(space.sizes), metric)
    for seed in range(10):
        actions = np.random.default_rng(seed).uniform(0.0, 0.8, len(space))
        fitted = rescale(space, actions, target, metric=metric)
        measured = getattr(space.cost(fitted.keeps), metric)
        assert measured == fitted.value
        assert abs(measured / ((1 - target) * base) - 1) <= 0.01, (seed, measured, base)
        assert all(space.min_keep(i) <= k <= s for i, (k, s) in enumerate(zip(fitted.keeps, space.sizes)))


def test_rescale_with_rounding_and_zero_actions(space: SearchSpace) -> None:
    rounded = SearchSpace.build(space.analysis, weight_importance(space.analysis), round_to=4)
    fitted = rescale(rounded, np.zeros(len(rounded)), 0.5)
    assert all(k % 4 == 0 for k in fitted.keeps)
    assert abs(fitted.error) <= 0.01


def test_rescale_rejects_unreachable_target(space: SearchSpace) -> None:
    with pytest.raises(PlanError, match="cannot be reached"):
        rescale(space, np.zeros(len(space)), 0.99)


def test_rewards() -> None:
    assert r_err(0.25, 100, 10) == -0.25
    assert r_flops(0.25, 1000, 10) == pytest.approx(-0.25 * math.log(1000))
    assert r_param(0.5, 1000, 100) == pytest.approx(-0.5 * math.log(100))


def test_env_steps_through_groups_and_meets_target(space: SearchSpace) -> None:
    env = _accuracy_env(space)
    state = env.reset()
    assert state.shape == (len(STATE_FEATURES),)
    assert state[0] == 0.0 and state[-1] == 0.0
    episode = None
    for t in range(len(space)):
        assert state is not None
        state, episode = env.step(0.3)
        if t < len(space) - 1:
            assert episode is None and state is not None
            assert state[-1] == pytest.approx(0.3)  # a_{t-1}
            assert state[0] == pytest.approx((t + 1) / (len(space) - 1))  # t, normalized
    assert episode is not None and episode.accuracy is not None
    assert episode.reward == pytest.approx(-(1 - episode.accuracy))
    base = space.cost(space.sizes).macs
    assert abs(episode.macs / (0.5 * base) - 1) <= 0.01
    with pytest.raises(PlanError):
        env.step(0.1)


def test_random_search_is_reproducible_and_resumable(space: SearchSpace) -> None:
    first = random_search(_accuracy_env(space), 4, seed=3)
    second = random_search(_accuracy_env(space), 4, seed=3)
    assert first.best is not None and second.best is not None
    assert first.best.plan == second.best.plan and first.history == second.history
    partial = random_search(_accuracy_env(space), 2, seed=3)
    resumed = random_search(_accuracy_env(space), 4, seed=3, state=type(partial).from_json(partial.to_json()))
    assert resumed.history == first.history and resumed.best.plan == first.best.plan
    other = random_search(_accuracy_env(space), 4, seed=4)
    assert other.history != first.history
    best_reward = max(h[0] for h in first.history)
    assert first.best.reward == best_reward
    assert uniform_search(_accuracy_env(space)).next_episode == 1


def _check_model(path: Path, input_shape: tuple[int, ...]) -> np.ndarray:
    onnx.checker.check_model(onnx.load(path), full_check=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal(input_shape).astype(np.float32)
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_compress_without_data(resnet20: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, report = tmp_path / "out.onnx", tmp_path / "report.json"
    assert main(["compress", str(resnet20), "--target", "0.5", "-o", str(out), "--json", str(report)]) == 0
    assert "data-free" in capsys.readouterr().out
    assert _check_model(out, (1, 3, 32, 32)).shape == (1, 10)
    before, after = model_cost(load(resnet20)).macs, model_cost(load(out)).macs
    assert abs(after / (0.5 * before) - 1) <= 0.01
    assert not (tmp_path / "out.onnx.search.json").exists()


def test_compress_random_search_with_data(resnet20: Path, tiny_npz: Path, tmp_path: Path) -> None:
    data = DataSpec(path=tiny_npz, preprocess=make_preprocess("cifar"))
    runs = [pipeline.compress_file(resnet20, tmp_path / f"r{i}.onnx", target=0.4, agent="random", episodes=3,
                                   seed=1, data=data) for i in range(2)]
    assert runs[0].best.plan == runs[1].best.plan
    report = runs[0]
    assert report.episodes == 3 and not report.data_free
    assert report.accuracy_before is not None and 0 <= report.accuracy_after <= 100
    assert abs(report.after.macs / (0.6 * report.before.macs) - 1) <= 0.01
    assert _check_model(report.output, (1, 3, 32, 32)).shape == (1, 10)
    assert [g.after for g in report.groups] == list(report.best.keeps)


def test_compress_resume_after_interrupt(resnet20: Path, tiny_npz: Path, tmp_path: Path) -> None:
    data = DataSpec(path=tiny_npz, preprocess=make_preprocess("cifar"))
    full = pipeline.compress_file(resnet20, tmp_path / "full.onnx", target=0.5, agent="random", episodes=4,
                                  seed=2, data=data)

    def stop_after_two(episode, state, candidate, best) -> None:  # noqa: ANN001 - test callback
        if episode.index == 1:
            raise KeyboardInterrupt

    out = tmp_path / "cut.onnx"
    with pytest.raises(KeyboardInterrupt):
        pipeline.compress_file(resnet20, out, target=0.5, agent="random", episodes=4, seed=2, data=data,
                               on_episode=stop_after_two)
    assert out.exists() and (tmp_path / "cut.onnx.search.json").exists()  # best so far + checkpoint
    with pytest.raises(PlanError, match="other settings"):
        pipeline.compress_file(resnet20, out, target=0.5, agent="random", episodes=4, seed=5, data=data,
                               resume=True)
    seen: list[int] = []
    resumed = pipeline.compress_file(resnet20, out, target=0.5, agent="random", episodes=4, seed=2, data=data,
                                     resume=True, on_episode=lambda e, *_: seen.append(e.index))
    assert seen == [2, 3]
    assert resumed.best.plan == full.best.plan and resumed.episodes == 4
    assert not (tmp_path / "cut.onnx.search.json").exists()


def test_rounding_misses_warn_once_per_run(space: SearchSpace, caplog: pytest.LogCaptureFixture) -> None:
    """Candidates that rounding keeps over 1 % off the target: one warning per run, the rest at debug level."""
    env = CompressionEnv(space, target=0.5, metric="macs", apply=lambda plan: None, score=None)
    miss = Rescaled(actions=(), keeps=(), value=110.0, base=200.0, goal=100.0, rounds=1)
    hit = Rescaled(actions=(), keeps=(), value=100.5, base=200.0, goal=100.0, rounds=1)
    with caplog.at_level(logging.DEBUG, logger="onnxprune.search.env"):
        for fitted in (hit, miss, miss, hit, miss):
            env._note_miss(fitted)
    noted = [r for r in caplog.records if "off the goal" in r.getMessage()]
    assert env.missed == 3 and [r.levelno for r in noted] == [logging.WARNING, logging.DEBUG, logging.DEBUG]
    assert "10.00 % off" in noted[0].getMessage()
