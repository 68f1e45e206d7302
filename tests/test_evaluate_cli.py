"""``onnxprune eval`` / ``bench`` through ``cli.main``: JSON output and one-line errors on bad data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from evaluate_models import bare_logits, cifar_preprocessed, raw_images, tiny_classifier

from onnxprune.cli import build_parser, main
from onnxprune.commands.bench import protocol_from


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return tiny_classifier(tmp_path / "m.onnx")


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _fails_with_one_line(argv: list[str], capsys: pytest.CaptureFixture[str], needle: str) -> None:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith("onnxprune: error: ") and needle in err


def test_eval_json_has_accuracy_fidelity_cost_and_run(tmp_path: Path, model: Path) -> None:
    images, labels = raw_images(30), np.arange(30) % 10
    data = _npz(tmp_path / "d.npz", images=images, labels=labels)
    out = tmp_path / "eval.json"
    assert main(["eval", str(model), "--data", str(data), "--preprocess", "cifar", "--baseline", str(model),
                 "--batch-size", "7", "--threads", "1", "--device", "cpu", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    expected = int(np.count_nonzero(bare_logits(model, cifar_preprocessed(images)).argmax(1) == labels))
    assert report["samples"] == 30 and report["accuracy"]["top1_correct"] == expected
    assert report["accuracy"]["top1"] == pytest.approx(100 * expected / 30)
    assert report["fidelity"] == {"samples": 30, "agreement": 1.0, "mse": 0.0, "cosine": 1.0}
    assert report["cost"]["bytes_on_disk"] == model.stat().st_size
    assert report["cost"]["macs"] == 3 * 9 * 6 * 64 + 6 * 10  # conv + gemm at batch 1
    assert report["run"]["threads"] == 1 and report["run"]["provider"] == "CPUExecutionProvider"
    assert report["data"]["preprocess"]["layout"] == "nchw"


def test_eval_explicit_preprocessing_equals_the_preset(tmp_path: Path, model: Path) -> None:
    data = _npz(tmp_path / "d.npz", images=raw_images(20), labels=np.arange(20) % 10)
    reports = []
    for i, flags in enumerate((["--preprocess", "cifar"],
                               ["--scale", "255", "--mean", "0.485,0.456,0.406", "--std", "0.229", "0.224",
                                "0.225", "--layout", "nchw", "--dtype", "float32"])):
        out = tmp_path / f"{i}.json"
        assert main(["eval", str(model), "--data", str(data), *flags, "--json", str(out)]) == 0
        reports.append(json.loads(out.read_text()))
    assert reports[0]["accuracy"] == reports[1]["accuracy"]


def test_bench_json_rows(tmp_path: Path, model: Path) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", str(model), "--baseline", str(model), "--batch", "1,4", "--runs", "20", "--warmup", "1",
                 "--min-time", "0", "--max-time", "0", "--tolerance", "0.5", "--threads", "1",
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [row["batch"] for row in report["rows"]] == [1, 4]
    assert report["protocol"] == {"runs": 20, "warmup": 1, "min_time": 0.0, "max_time": 0.0, "tolerance": 0.5,
                                  "blocks": 10}
    for row in report["rows"]:
        assert row["model"]["runs"] == row["baseline"]["runs"] == 20 and row["ratio"] > 0
        assert (row["blocks"], row["block_runs"]) == (10, 2)
        assert row["verdict"] in ("stable", "unstable") and row["seconds"] > 0
        assert row["model"]["ci_low_ms"] <= row["model"]["ci_high_ms"] and row["ratio_low"] <= row["ratio_high"]
        assert {"half_width", "ratio_half_width", "steal", "others"} <= set(row) | set(row["model"])
    assert report["unstable"] == [row["batch"] for row in report["rows"] if row["verdict"] == "unstable"]
    assert "warning" in report and "steal" in report and "others" in report


def test_bench_max_time_defaults_to_at_least_min_time(tmp_path: Path, model: Path) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", str(model), "--min-time", "0.01", "--runs", "6", "--tolerance", "0.9", "--threads", "1",
                 "--json", str(out)]) == 0
    assert json.loads(out.read_text())["protocol"]["max_time"] == 10.0
    long = protocol_from(build_parser().parse_args(["bench", "m.onnx", "--min-time", "12"]))
    assert (long.min_time, long.max_time) == (12.0, 12.0)  # not a refusal of --min-time 12


@pytest.mark.parametrize(("flags", "needle"), [(["--min-time", "-1"], "--min-time -1.0"),
                                               (["--min-time", "5", "--max-time", "2"], "--max-time 2.0"),
                                               (["--tolerance", "0"], "--tolerance 0.0"),
                                               (["--runs", "0"], "--runs 0")])
def test_bench_rejects_bad_protocol_flags(model: Path, flags: list[str], needle: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    _fails_with_one_line(["bench", str(model), *flags], capsys, needle)


def test_wrong_image_shape(tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _npz(tmp_path / "d.npz", images=np.zeros((4, 5, 5, 3), np.uint8), labels=np.zeros(4, np.int64))
    _fails_with_one_line(["eval", str(model), "--data", str(data), "--preprocess", "cifar"], capsys,
                         "per-sample shape (5, 5, 3) but the model input 'input' expects (3, 8, 8) in NCHW")


def test_wrong_layout_without_preprocessing(tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _npz(tmp_path / "d.npz", images=raw_images(4), labels=np.zeros(4, np.int64))
    _fails_with_one_line(["eval", str(model), "--data", str(data)], capsys,
                         "per-sample shape (8, 8, 3) but the model input 'input' expects (3, 8, 8);")


def test_images_of_a_non_numeric_dtype(tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _npz(tmp_path / "d.npz", images=np.full((4, 8, 8, 3), "a"), labels=np.zeros(4, np.int64))
    _fails_with_one_line(["eval", str(model), "--data", str(data), "--preprocess", "cifar"], capsys, "dtype <U1")


def test_dtype_the_model_does_not_take(tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _npz(tmp_path / "d.npz", images=raw_images(4), labels=np.zeros(4, np.int64))
    _fails_with_one_line(["eval", str(model), "--data", str(data), "--preprocess", "cifar", "--dtype", "float16"],
                         capsys, "--dtype float16 does not match")


def test_float_labels(tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _npz(tmp_path / "d.npz", images=raw_images(4), labels=np.full(4, 0.5))
    _fails_with_one_line(["eval", str(model), "--data", str(data), "--preprocess", "cifar"], capsys,
                         "labels have dtype float64")


def test_labels_out_of_range(tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _npz(tmp_path / "d.npz", images=raw_images(4), labels=np.array([0, 3, 10, 2]))
    _fails_with_one_line(["eval", str(model), "--data", str(data), "--preprocess", "cifar"], capsys,
                         "label 10 is out of range for a model with 10 classes")


def test_npz_with_pickled_objects(tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images = np.empty(4, dtype=object)
    images[:] = [{"evil": i} for i in range(4)]
    data = _npz(tmp_path / "d.npz", images=images, labels=np.zeros(4, np.int64))
    _fails_with_one_line(["eval", str(model), "--data", str(data), "--preprocess", "cifar"], capsys,
                         "pickled Python objects")


def test_not_an_npz(tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "d.npz").write_bytes(b"definitely not a zip")
    _fails_with_one_line(["eval", str(model), "--data", str(tmp_path / "d.npz")], capsys, "d.npz: not a .npz file")


def test_empty_folder(tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "images").mkdir()
    _fails_with_one_line(["eval", str(model), "--data", str(tmp_path / "images"), "--preprocess", "cifar"], capsys,
                         "no images found")


def test_hook_that_raises(tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hook = tmp_path / "hook.py"
    hook.write_text("def feeds():\n    raise ValueError('the database is down')\n    yield\n")
    _fails_with_one_line(["eval", str(model), "--data-module", f"{hook}:feeds"], capsys,
                         "raised ValueError: the database is down")


def test_hook_that_cannot_be_imported(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fails_with_one_line(["eval", str(model), "--data-module", "no_such_pkg_xyz.mod:feeds"], capsys,
                         "ModuleNotFoundError")


def test_no_labels_and_no_baseline(tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _npz(tmp_path / "d.npz", images=raw_images(4))
    _fails_with_one_line(["eval", str(model), "--data", str(data), "--preprocess", "cifar"], capsys,
                         "no labels and no --baseline")


def test_bad_batch_list(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fails_with_one_line(["bench", str(model), "--batch", "1,x"], capsys, "--batch 1,x")
