"""``onnxprune compress --reconstruct``: the best candidate is repaired before it is saved."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from evaluate_models import bare_logits, cifar_preprocessed, raw_images, tiny_classifier

from onnxprune.cli import main

IMAGES = 60


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """The tiny classifier and images labelled with its own predictions (it scores 100 %)."""
    model = tiny_classifier(tmp_path / "m.onnx", seed=5)
    images = raw_images(IMAGES, seed=2)
    x = cifar_preprocessed(images)
    labels = bare_logits(model, x).argmax(1)
    data = tmp_path / "val.npz"
    np.savez(data, images=images, labels=labels)
    np.savez(tmp_path / "calib.npz", images=raw_images(IMAGES, seed=3))
    return model, data, x, labels


def _compress(model: Path, out: Path, data: Path, *extra: str) -> dict:
    report = out.with_suffix(".json")
    assert main(["compress", str(model), "-o", str(out), "--target", "0.5", "--agent", "uniform", "--data", str(data),
                 "--preprocess", "cifar", "--json", str(report), *extra]) == 0
    return json.loads(report.read_text())


@pytest.mark.parametrize("extra", [["--reconstruct-candidates", "0"], ["--reconstruct-candidates", "20"], []])
def test_compress_reconstruct_scores_at_least_the_unrepaired(tmp_path: Path, setup, extra: list[str]) -> None:
    model, data, x, labels = setup
    plain = _compress(model, tmp_path / "plain.onnx", data)
    calib = tmp_path / "calib.npz"
    fixed = _compress(model, tmp_path / "fixed.onnx", data, "--reconstruct", "--calib", str(calib), *extra)
    assert fixed["best"]["keeps"] == plain["best"]["keeps"]
    want = bare_logits(model, x)
    got_plain, got_fixed = bare_logits(tmp_path / "plain.onnx", x), bare_logits(tmp_path / "fixed.onnx", x)
    acc_plain = 100.0 * np.mean(got_plain.argmax(1) == labels)
    acc_fixed = 100.0 * np.mean(got_fixed.argmax(1) == labels)
    assert acc_plain < 100.0  # pruning alone loses accuracy here
    assert acc_fixed >= acc_plain
    assert np.square(got_fixed - want).mean() < np.square(got_plain - want).mean()
    assert fixed["accuracy_after"] == pytest.approx(acc_fixed)
    assert fixed["accuracy_unrepaired"] is not None and fixed["accuracy_after"] >= fixed["accuracy_unrepaired"]
    assert plain["accuracy_unrepaired"] is None
    if extra[-1:] == ["0"]:  # candidates scored unrepaired
        assert fixed["accuracy_unrepaired"] == pytest.approx(acc_plain)
    else:  # candidates repaired (by default with --reconstruct), so the searched score is the repaired one
        assert fixed["accuracy_unrepaired"] > acc_plain


def test_compress_calibrates_apart_from_the_validation_split(tmp_path: Path, setup,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """One file for --data and --calib: the calibration images are the ones --val-split leaves out."""
    model, data, _, _ = setup
    out = tmp_path / "o.onnx"
    code = main(["compress", str(model), "-o", str(out), "--target", "0.5", "--agent", "uniform", "--data", str(data),
                 "--preprocess", "cifar", "--reconstruct", "--calib", str(data)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "--val-split" in err and not out.exists()
    report = _compress(model, out, data, "--val-split", "40", "--reconstruct", "--calib", str(data), "--calib-size", "30")
    assert report["accuracy_after"] is not None and out.exists()


def test_compress_reconstruct_without_calib_is_one_line_exit_2(tmp_path: Path, setup,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    model, data, _, _ = setup
    code = main(["compress", str(model), "-o", str(tmp_path / "o.onnx"), "--target", "0.5", "--reconstruct"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "--calib" in err
    assert not (tmp_path / "o.onnx").exists()
