"""``onnxprune prune`` repair and criterion options through ``cli.main`` on a tiny Conv -> GAP -> Gemm model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from evaluate_models import bare_logits, cifar_preprocessed, raw_images, tiny_classifier
from onnx import numpy_helper

from onnxprune.cli import main
from onnxprune.evaluate.data import split_indices
from onnxprune.rewrite.capture import make_session, with_outputs

IMAGES = 40


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return tiny_classifier(tmp_path / "m.onnx", seed=3)


@pytest.fixture
def calib(tmp_path: Path) -> Path:
    path = tmp_path / "calib.npz"
    np.savez(path, images=raw_images(IMAGES, seed=1), labels=np.arange(IMAGES) % 10)
    return path


def _prune(model: Path, out: Path, *extra: str) -> dict:
    report = out.with_suffix(".json")
    plan = out.with_suffix(".plan.json")
    assert main(["prune", str(model), "-o", str(out), "--ratio", "0.5", "--json", str(report),
                 "--save-plan", str(plan), *extra]) == 0
    return {**json.loads(report.read_text()), "kept": json.loads(plan.read_text())["keep"]}


def _kept(report: dict) -> list[int]:
    (kept,) = report["kept"].values()
    return sorted(kept)


def _top3(scores: np.ndarray) -> list[int]:
    return sorted(int(i) for i in np.argsort(-scores, kind="stable")[:3])


def _features(model: Path, images: np.ndarray) -> np.ndarray:
    """The Gemm's input (GAP of the Relu) on preprocessed images."""
    session = make_session(with_outputs(onnx.load(str(model)), ["f"]), 1)
    return session.run(["f"], {"input": cifar_preprocessed(images)})[0]


def test_each_criterion_keeps_its_top_scores(tmp_path: Path, model: Path, calib: Path) -> None:
    w = numpy_helper.to_array(onnx.load(str(model)).graph.initializer[0]).reshape(6, -1).astype(np.float64)
    dist = np.sqrt(np.maximum(np.square(w).sum(1)[:, None] + np.square(w).sum(1)[None] - 2 * w @ w.T, 0))
    images = raw_images(IMAGES, seed=1)[split_indices(IMAGES, 25, np.random.default_rng(4))]
    expected = {"l1": _top3(np.abs(w).sum(1)), "l2": _top3(np.sqrt(np.square(w).sum(1))),
                "fpgm": _top3(dist.sum(1)), "bn": _top3(np.abs(w).sum(1)),  # no BN: falls back to L1
                "activation": _top3(np.abs(_features(model, images)).mean(0))}
    for criterion, want in expected.items():
        report = _prune(model, tmp_path / f"{criterion}.onnx", "--criterion", criterion, "--calib", str(calib),
                        "--calib-size", "25", "--seed", "4", "--preprocess", "cifar")
        assert _kept(report) == want, criterion
        assert report["repaired_layers"] == 0
    assert len({tuple(v) for v in expected.values()}) >= 2  # the criteria do disagree on this model


def test_reconstruct_brings_logits_closer(tmp_path: Path, model: Path, calib: Path) -> None:
    plain = _prune(model, tmp_path / "plain.onnx")
    fixed = _prune(model, tmp_path / "fixed.onnx", "--reconstruct", "--calib", str(calib), "--preprocess", "cifar")
    assert fixed["repaired_layers"] == 1 and _kept(fixed) == _kept(plain)
    x = cifar_preprocessed(raw_images(IMAGES, seed=1))
    want = bare_logits(model, x)
    err_plain = np.square(bare_logits(tmp_path / "plain.onnx", x) - want).mean()
    err_fixed = np.square(bare_logits(tmp_path / "fixed.onnx", x) - want).mean()
    assert err_fixed < 0.5 * err_plain


def test_bias_correct_restores_mean_logits_on_the_calibration_set(tmp_path: Path, model: Path, calib: Path) -> None:
    report = _prune(model, tmp_path / "bias.onnx", "--bias-correct", "--calib", str(calib), "--preprocess", "cifar",
                    "--calib-size", str(IMAGES))
    assert report["repaired_layers"] == 1
    x = cifar_preprocessed(raw_images(IMAGES, seed=1))
    want = bare_logits(model, x).mean(0)
    np.testing.assert_allclose(bare_logits(tmp_path / "bias.onnx", x).mean(0), want, atol=1e-4)
    _prune(model, tmp_path / "plain.onnx")
    assert np.abs(bare_logits(tmp_path / "plain.onnx", x).mean(0) - want).max() > 1e-2


@pytest.mark.parametrize("option", [["--reconstruct"], ["--bias-correct"], ["--criterion", "activation"]])
def test_repair_without_calib_is_one_line_exit_2(tmp_path: Path, model: Path, option: list[str],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["prune", str(model), "-o", str(tmp_path / "o.onnx"), *option])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "\n" not in err and "Traceback" not in err and "--calib" in err
    assert not (tmp_path / "o.onnx").exists()


def test_bad_calib_size_is_one_line_exit_2(tmp_path: Path, model: Path, calib: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["prune", str(model), "-o", str(tmp_path / "o.onnx"), "--reconstruct", "--calib", str(calib),
                 "--calib-size", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "--calib-size" in err
