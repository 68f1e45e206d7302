"""Finalists: a search keeps its best distinct plans; compress re-ranks them after the final repair."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from evaluate_models import bare_logits, cifar_preprocessed, raw_images, tiny_classifier, two_conv_classifier

from onnxprune.cli import main
from onnxprune.plan import Plan
from onnxprune.search.baselines import TOP_EPISODES, SearchState
from onnxprune.search.env import Episode


def _episode(index: int, keep: int, reward: float, macs: int = 100) -> Episode:
    plan = Plan(keep={0: tuple(range(keep))})
    return Episode(index=index, requested=(0.5,), actions=(0.5,), keeps=(keep,), plan=plan, macs=macs,
                   params=10, accuracy=1.0 + reward, reward=reward)


def test_top_keeps_the_best_distinct_plans_best_first() -> None:
    state = SearchState(agent="random", seed=0)
    rewards = [-0.5, -0.2, -0.9, -0.2, -0.1, -0.3, -0.4, -0.05]
    keeps = [1, 2, 3, 2, 4, 5, 6, 7]  # episode 3 repeats episode 1's plan
    for i, (r, k) in enumerate(zip(rewards, keeps)):
        state, _ = state.record(_episode(i, k, r))
    assert [e.index for e in state.top] == [7, 4, 1, 5, 6]
    assert len(state.top) == TOP_EPISODES and state.top[0] == state.best
    assert len({e.keeps for e in state.top}) == len(state.top)
    again = SearchState.from_json(json.loads(json.dumps(state.to_json())))
    assert again.top == state.top
    old = state.to_json()
    del old["top"]  # a checkpoint written before finalists existed
    assert SearchState.from_json(old).top == ()


def test_a_repeated_plan_with_a_better_reward_replaces_its_entry() -> None:
    state = SearchState(agent="random", seed=0)
    for i, (k, r) in enumerate([(1, -0.5), (2, -0.4), (1, -0.1)]):
        state, _ = state.record(_episode(i, k, r))
    assert [(e.index, e.keeps) for e in state.top] == [(2, (1,)), (1, (2,))]


@pytest.mark.parametrize("finalists", ["1", "3"])
def test_compress_saves_the_best_repaired_finalist(tmp_path: Path, finalists: str) -> None:
    model = two_conv_classifier(tmp_path / "m.onnx", seed=5)
    images = raw_images(60, seed=2)
    labels = bare_logits(model, cifar_preprocessed(images)).argmax(1)
    np.savez(tmp_path / "val.npz", images=images, labels=labels)
    np.savez(tmp_path / "calib.npz", images=raw_images(40, seed=3))
    out, report = tmp_path / "o.onnx", tmp_path / "o.json"
    assert main(["compress", str(model), "-o", str(out), "--target", "0.5", "--agent", "random", "--episodes", "8",
                 "--data", str(tmp_path / "val.npz"), "--preprocess", "cifar", "--reconstruct", "--calib",
                 str(tmp_path / "calib.npz"), "--reconstruct-candidates", "0", "--finalists", finalists,
                 "--json", str(report)]) == 0
    got = json.loads(report.read_text())
    rows = got["finalists"]
    assert len(rows) == int(finalists)
    searched = [r["searched"] for r in rows]
    assert searched == sorted(searched, reverse=True)  # best first
    final = [max(r["repaired"], r["searched"]) for r in rows]
    assert got["accuracy_after"] == pytest.approx(max(final))
    assert got["best"]["index"] == rows[int(np.argmax(final))]["episode"]
    saved = 100.0 * np.mean(bare_logits(out, cifar_preprocessed(images)).argmax(1) == labels)
    assert saved == pytest.approx(got["accuracy_after"])


def test_finalists_out_of_range_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tiny_classifier(tmp_path / "m.onnx", seed=5)
    code = main(["compress", str(model), "-o", str(tmp_path / "o.onnx"), "--target", "0.5", "--finalists", "9"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "--finalists" in err
