"""The published CIFAR-10 baselines, exactly, through ``onnxprune eval`` (needs ../shared)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onnxprune.cli import main

pytestmark = [pytest.mark.shared, pytest.mark.slow]


def _export(depth: int, weights: Path, path: Path, *, dynamic_batch: bool) -> Path:
    from models.export import export_onnx
    from models.resnet_cifar import resnet_cifar

    export_onnx(resnet_cifar(depth, weights=weights), (1, 3, 32, 32), path, exporter="torchscript",
                dynamic_batch=dynamic_batch)
    return path


def _eval(model: Path, data: Path, out: Path, *extra: str) -> dict:
    assert main(["eval", str(model), "--data", str(data), "--preprocess", "cifar", "--device", "cpu",
                 "--json", str(out), *extra]) == 0
    return json.loads(out.read_text())


def test_resnet20_scores_91_73_also_with_its_batch_fixed_to_1(tmp_path: Path, cifar_test: Path,
                                                             resnet20_weights: Path) -> None:
    fixed = _export(20, resnet20_weights, tmp_path / "r20_b1.onnx", dynamic_batch=False)
    dynamic = _export(20, resnet20_weights, tmp_path / "r20.onnx", dynamic_batch=True)
    report = _eval(fixed, cifar_test, tmp_path / "r20.json", "--baseline", str(dynamic))
    assert report["samples"] == 10000
    assert report["accuracy"]["top1_correct"] == 9173 and report["accuracy"]["top1"] == 91.73
    assert report["baseline_accuracy"]["top1_correct"] == 9173  # the dynamic-batch export, batch 500
    assert report["fidelity"]["agreement"] == 1.0


def test_resnet56_scores_93_39(tmp_path: Path, cifar_test: Path, resnet56_weights: Path) -> None:
    model = _export(56, resnet56_weights, tmp_path / "r56.onnx", dynamic_batch=True)
    report = _eval(model, cifar_test, tmp_path / "r56.json")
    assert report["samples"] == 10000
    assert report["accuracy"]["top1_correct"] == 9339 and report["accuracy"]["top1"] == 93.39
