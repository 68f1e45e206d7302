"""Inputs below opset 13 that the pruned model cannot go back to: written upgraded with one notice
(recorded in the report and the ``onnxprune.opset`` prop); ``--keep-opset`` refuses; ``--opset`` forces."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest

from old_opset_models import fire_opset9, mnist_opset8
from onnxprune.cli import main
from onnxprune.deploy.runner import output_diff, random_feeds, run_ort
from onnxprune.io import save_model
from onnxprune.pipeline import prune_file
from onnxprune.pipeline.deploying import DeployOptions

#: Models the pruned (upgraded) model cannot go back to: (builder, opset, classes).
BUILDERS: dict[str, tuple[Callable[[], onnx.ModelProto], int, int]] = {
    "mnist_opset8_reflect_pad": (lambda: mnist_opset8(pad=True), 8, 10),  # Pad-2 -> Pad-13: pads become an input
    "fire_opset9": (fire_opset9, 9, 10),  # Squeeze-1 -> Squeeze-13: axes become an input
}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def old_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, int]:
    """(file, its opset, classes) of each old-opset model."""
    build, opset, classes = BUILDERS[request.param]
    return save_model(build(), tmp_path_factory.mktemp(request.param) / f"{request.param}.onnx"), opset, classes


def _opset(model: onnx.ModelProto) -> int:
    return next(i.version for i in model.opset_import if i.domain in ("", "ai.onnx"))


def _opset_prop(model: onnx.ModelProto) -> dict[str, object]:
    return json.loads({p.key: p.value for p in model.metadata_props}["onnxprune.opset"])


def _stderr_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def test_default_writes_the_upgraded_opset_with_one_notice(old_model: tuple[Path, int, int], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    source, opset, classes = old_model
    before = source.read_bytes()
    out, report = tmp_path / "pruned.onnx", tmp_path / "report.json"
    assert main(["prune", str(source), "-o", str(out), "--ratio", "0.3", "--json", str(report)]) == 0
    err = _stderr_lines(capsys)
    assert len(err) == 1 and err[0].startswith("onnxprune: note: wrote opset 13"), err
    assert f"input's opset {opset}" in err[0] and "--keep-opset" in err[0]
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert _opset(model) == 13 and source.read_bytes() == before
    recorded = json.loads(report.read_text())["opset"]
    assert recorded == _opset_prop(model)
    assert (recorded["source"], recorded["written"], recorded["forced"]) == (opset, 13, False) and recorded["reason"]
    (probs,) = run_ort(model, random_feeds(model, np.random.default_rng(0))).outputs
    assert probs.shape == (1, classes) and np.isfinite(probs).all()
    assert json.loads(report.read_text())["after"]["macs"] < json.loads(report.read_text())["before"]["macs"]


def test_opset_13_is_forced_without_a_notice_and_matches_the_default(
        old_model: tuple[Path, int, int], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source, opset, _ = old_model
    default, forced = tmp_path / "default.onnx", tmp_path / "forced.onnx"
    assert main(["prune", str(source), "-o", str(default), "--ratio", "0.3"]) == 0
    capsys.readouterr()
    assert main(["prune", str(source), "-o", str(forced), "--ratio", "0.3", "--opset", "13"]) == 0
    assert _stderr_lines(capsys) == []
    a, b = onnx.load(str(default)), onnx.load(str(forced))
    onnx.checker.check_model(b, full_check=True)
    assert _opset(b) == 13 and _opset_prop(b) == {"source": opset, "written": 13, "forced": True, "reason": None}
    assert output_diff(a, b, np.random.default_rng(1))[0] == 0.0


def test_keep_opset_refuses_in_one_line_and_writes_nothing(old_model: tuple[Path, int, int], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    source, opset, _ = old_model
    out = tmp_path / "kept.onnx"
    assert main(["prune", str(source), "-o", str(out), "--ratio", "0.3", "--keep-opset", "--json",
                 str(tmp_path / "r.json")]) == 2
    err = _stderr_lines(capsys)
    assert len(err) == 1 and err[0].startswith("onnxprune: error:"), err
    assert f"input's opset {opset}" in err[0] and "--keep-opset" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_keep_opset_and_opset_together_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = save_model(fire_opset9(), tmp_path / "fire.onnx")
    assert main(["prune", str(source), "-o", str(tmp_path / "o.onnx"), "--keep-opset", "--opset", "13"]) == 2
    err = _stderr_lines(capsys)
    assert len(err) == 1 and "--keep-opset" in err[0] and "--opset 13" in err[0]
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize(("build", "opset", "ir", "batch"), [
    (mnist_opset8, 8, 3, 1),  # IR 3: the initializers are graph inputs again
    (lambda: fire_opset9(squeeze=False), 9, 4, 3),  # Flatten instead of Squeeze
])
def test_an_old_opset_that_can_be_kept_is_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               build: Callable[[], onnx.ModelProto], opset: int, ir: int,
                                               batch: int) -> None:
    source = save_model(build(), tmp_path / "old.onnx")
    for flags in ([], ["--keep-opset"]):
        out = tmp_path / f"kept{len(flags)}.onnx"
        assert main(["prune", str(source), "-o", str(out), "--ratio", "0.3", *flags]) == 0
        assert _stderr_lines(capsys) == []
        model = onnx.load(str(out))
        onnx.checker.check_model(model, full_check=True)
        assert (_opset(model), model.ir_version) == (opset, ir)
        assert _opset_prop(model) == {"source": opset, "written": opset, "forced": False, "reason": None}
        (out_values,) = run_ort(model, random_feeds(model, np.random.default_rng(0), batch=batch)).outputs
        assert out_values.shape == (batch, 10) and np.isfinite(out_values).all()


def test_opset_8_output_lists_its_initializers_as_inputs(tmp_path: Path) -> None:
    source = save_model(fire_opset9(squeeze=False), tmp_path / "fire.onnx")
    out, default = tmp_path / "o8.onnx", tmp_path / "o9.onnx"
    assert main(["prune", str(source), "-o", str(out), "--ratio", "0.3", "--opset", "8"]) == 0
    assert main(["prune", str(source), "-o", str(default), "--ratio", "0.3"]) == 0
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert (_opset(model), model.ir_version) == (8, 3)
    assert {t.name for t in model.graph.initializer} <= {i.name for i in model.graph.input}
    assert output_diff(onnx.load(str(default)), model, np.random.default_rng(2), batch=2)[0] <= 1e-6


def test_compress_writes_the_upgraded_opset_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = save_model(fire_opset9(), tmp_path / "fire.onnx")
    out, report = tmp_path / "c.onnx", tmp_path / "c.json"
    assert main(["compress", str(source), "-o", str(out), "--target", "0.3", "--json", str(report)]) == 0
    err = _stderr_lines(capsys)
    assert len(err) == 1 and err[0].startswith("onnxprune: note: wrote opset 13"), err
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert _opset(model) == 13 and json.loads(report.read_text())["opset"]["written"] == 13
    assert main(["compress", str(source), "-o", str(tmp_path / "k.onnx"), "--target", "0.3", "--keep-opset"]) == 2
    assert len(_stderr_lines(capsys)) == 1 and not (tmp_path / "k.onnx").exists()


def test_the_api_logs_the_notice_and_reports_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = save_model(mnist_opset8(pad=True), tmp_path / "mnist.onnx")
    with caplog.at_level("INFO", logger="onnxprune.pipeline.deploying"):
        report = prune_file(source, tmp_path / "p.onnx", ratio=0.3, deploy=DeployOptions())
    assert report.opset is not None and report.opset.upgraded
    assert (report.opset.source, report.opset.written) == (8, 13)
    notices = [r.getMessage() for r in caplog.records if r.name == "onnxprune.pipeline.deploying"
               and "wrote opset 13" in r.getMessage()]
    assert notices == [report.opset.notice()]
