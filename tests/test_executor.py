"""Candidate evaluation backends (``compress --backend``): same results everywhere, lost workers re-run."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from onnxprune import pipeline
from onnxprune.analyze import analyze
from onnxprune.analyze.importance import weight_importance
from onnxprune.cli import main
from onnxprune.errors import BackendError
from onnxprune.evaluate import DataSpec, Runtime
from onnxprune.execute import CandidateTask, ExecutorSettings, LocalExecutor, ProcessExecutor, check_settings
from onnxprune.execute.base import Evaluator
from onnxprune.load import load
from onnxprune.pipeline.candidates import CandidateSpec
from onnxprune.plan import Plan
from onnxprune.search.baselines import SearchState, random_search
from onnxprune.search.env import CompressionEnv, Episode
from onnxprune.search.space import SearchSpace

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "digits_cnn.onnx"
EPISODES = 6
SEED = 3


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits validation split as model inputs (float32 NCHW, pixels / 16) with labels."""
    from models.digits import PIXEL_SCALE, digits_split

    split = digits_split()
    path = tmp_path_factory.mktemp("digits") / "val.npz"
    images = split.val_images.astype(np.float32)[:, None] / np.float32(PIXEL_SCALE)
    np.savez(path, images=images, labels=split.val_labels)
    return path


@pytest.fixture(scope="module")
def spec(digits_npz: Path) -> CandidateSpec:
    return CandidateSpec(source=MODEL, data=DataSpec(path=digits_npz), device="cpu", threads=1)


@dataclasses.dataclass(frozen=True)
class DyingSpec:
    """A worker recipe whose first worker to reach its ``after``-th candidate exits (``os._exit``) then.

    ``marker`` records that one worker died, so the replacement and the re-run candidate live.
    """

    inner: CandidateSpec
    marker: Path
    after: int = 1

    def build(self) -> Evaluator:
        evaluate = self.inner.build()
        count = [0]

        def dying(plan: Plan) -> tuple[float | None, Any]:
            count[0] += 1
            if count[0] > self.after and not self.marker.exists():
                self.marker.write_text(str(os.getpid()))
                os._exit(3)
            return evaluate(plan)

        return dying


def _env(spec: CandidateSpec, executor: Any = None) -> CompressionEnv[Plan]:
    """A random-search environment on the digits CNN; without ``executor`` the spec's evaluator runs here."""
    analysis = analyze(load(MODEL))
    space = SearchSpace.build(analysis, weight_importance(analysis), max_ratio=0.8, round_to=1)
    evaluate = spec.build()
    return CompressionEnv(space, target=0.5, metric="macs", apply=lambda plan: plan,
                          score=lambda plan: evaluate(plan)[0], executor=executor)


def _rows(episodes: list[Episode]) -> list[dict[str, Any]]:
    return [e.to_json() for e in episodes]


def _search(env: CompressionEnv[Any], state: SearchState | None = None,
            stop_after: int | None = None) -> tuple[SearchState, list[Episode]]:
    seen: list[Episode] = []

    def record(episode: Episode, _state: SearchState, _candidate: Any, _best: bool) -> None:
        seen.append(episode)
        if stop_after is not None and len(seen) >= stop_after:
            raise KeyboardInterrupt

    return random_search(env, EPISODES, seed=SEED, state=state, on_episode=record), seen


@pytest.fixture(scope="module")
def reference(spec: CandidateSpec) -> list[dict[str, Any]]:
    """The episodes of the seeded search evaluated in this process."""
    state, seen = _search(_env(spec))
    assert state.next_episode == EPISODES
    assert len({e.accuracy for e in seen}) > 1  # the candidates differ: a real comparison
    return _rows(seen)


@pytest.fixture(scope="module")
def ray_session() -> Iterator[Any]:
    """One local Ray (2 CPUs) for the module; skipped when Ray is not installed."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'onnxprune[ray]')")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # DyingSpec lives in this test module
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}})
    yield ray
    ray.shutdown()


def test_local_executor_keeps_the_candidate(spec: CandidateSpec) -> None:
    env = _env(spec)
    plan = env.fit([0.5] * len(env.space))[1]
    [result] = list(LocalExecutor(spec.build()).run([CandidateTask.of(7, plan)]))
    assert result.id == 7 and result.candidate is not None and 0.0 <= result.accuracy <= 1.0
    assert CandidateTask.of(7, plan).decode() == plan


@pytest.fixture(scope="module")
def pool(spec: CandidateSpec) -> Iterator[ProcessExecutor]:
    """Two worker processes shared by the process tests (startup is the slow part)."""
    executor = ProcessExecutor(spec, 2)
    yield executor
    executor.close()


def test_process_backend_matches_local_after_a_worker_is_killed(spec: CandidateSpec, pool: ProcessExecutor,
                                                               reference: list[dict[str, Any]]) -> None:
    env = _env(spec, pool)
    before = pool.pids()
    seen: list[Episode] = []

    def record(episode: Episode, _state: SearchState, _candidate: Any, _best: bool) -> None:
        seen.append(episode)
        if len(seen) == 2:  # both workers: one idle, one mid-candidate
            for pid in pool.pids():
                os.kill(pid, signal.SIGKILL)

    random_search(env, EPISODES, seed=SEED, on_episode=record)
    assert not set(before) & set(pool.pids())  # both were replaced
    assert _rows(seen) == reference


def test_worker_dying_mid_candidate_reruns_it(spec: CandidateSpec, tmp_path: Path,
                                              reference: list[dict[str, Any]]) -> None:
    marker = tmp_path / "died"
    executor = ProcessExecutor(DyingSpec(spec, marker), 1)
    try:
        _, seen = _search(_env(spec, executor))
    finally:
        executor.close()
    assert marker.exists()  # the worker exited inside its second candidate
    assert _rows(seen) == reference


def test_interrupted_batch_keeps_its_finished_part_and_resumes(spec: CandidateSpec, pool: ProcessExecutor,
                                                               tmp_path: Path,
                                                               reference: list[dict[str, Any]]) -> None:
    checkpoint = tmp_path / "state.json"
    env = _env(spec, pool)
    seen: list[Episode] = []

    def record(episode: Episode, state: SearchState, _candidate: Any, _best: bool) -> None:
        seen.append(episode)
        checkpoint.write_text(json.dumps(state.to_json()))
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        random_search(env, EPISODES, seed=SEED, on_episode=record)
    saved = SearchState.from_json(json.loads(checkpoint.read_text()))
    assert saved.next_episode == 3
    _, rest = _search(env, state=saved)  # the same pool serves the resumed batch
    assert _rows(seen + rest) == reference


def test_ddpg_warmup_and_ppo_rollouts_match_local(spec: CandidateSpec, pool: ProcessExecutor) -> None:
    from onnxprune.search.ddpg import DDPGConfig, ddpg_search
    from onnxprune.search.ppo import PPOConfig, ppo_search
    from onnxprune.search.states import make_states

    def runs(executor: Any) -> tuple[Any, Any]:
        env = _env(spec, executor)
        ddpg = ddpg_search(env, make_states("amc", env, seed=1), 5, seed=1, config=DDPGConfig(warmup=3, batch_size=4))
        env = _env(spec, executor)
        ppo, _ = ppo_search(env, 4, seed=1, config=PPOConfig(episodes_per_update=2, hidden=16, critic_hidden=16))
        return ddpg.history, ppo.history

    assert runs(pool) == runs(None)


def test_compress_process_backend_gives_the_local_report(digits_npz: Path, tmp_path: Path) -> None:
    reports = [pipeline.compress_file(MODEL, tmp_path / f"{backend}.onnx", target=0.5, agent="random", episodes=3,
                                      seed=SEED, round_to=1, data=DataSpec(path=digits_npz),
                                      runtime=Runtime(device="cpu", threads=1),
                                      executor=ExecutorSettings(backend=backend, workers=2, threads=1))
               for backend in ("local", "process")]
    assert reports[0].history == reports[1].history
    assert reports[0].best.to_json() == reports[1].best.to_json()
    assert reports[0].accuracy_after == reports[1].accuracy_after
    local, remote = (onnx.load(str(r.output)) for r in reports)
    assert local.graph.SerializeToString() == remote.graph.SerializeToString()


def test_ray_backend_matches_local_and_survives_a_lost_actor(spec: CandidateSpec, ray_session: Any, tmp_path: Path,
                                                            reference: list[dict[str, Any]]) -> None:
    from onnxprune.execute.ray_actors import RayExecutor

    marker = tmp_path / "died"
    executor = RayExecutor(DyingSpec(spec, marker), 2)
    try:
        _, seen = _search(_env(spec, executor))
    finally:
        executor.close()
    assert marker.exists()  # an actor exited inside a candidate
    assert _rows(seen) == reference
    assert ray_session.is_initialized()  # the executor leaves a Ray it did not start running


def test_backend_ray_without_ray_is_one_line(digits_npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    code = main(["compress", str(MODEL), "-o", str(tmp_path / "out.onnx"), "--target", "0.5", "--agent", "random",
                 "--data", str(digits_npz), "--backend", "ray"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "pip install 'onnxprune[ray]'" in err
    assert not (tmp_path / "out.onnx").exists()


def test_bad_backend_settings_are_refused() -> None:
    with pytest.raises(BackendError, match="--workers 0"):
        check_settings(ExecutorSettings(backend="process", workers=0))
    with pytest.raises(BackendError, match="--ray-address goes with --backend ray"):
        check_settings(ExecutorSettings(backend="process", address="auto"))
    with pytest.raises(BackendError, match="--candidate-timeout"):
        check_settings(ExecutorSettings(backend="process", candidate_timeout=0))
