"""Bad deploy flags on ``compress``/``prune``: one-line errors, exit 2, no half-written Triton entry."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from deploy_models import TinyNet, export
from onnxprune.cli import main
from onnxprune.deploy import triton
from onnxprune.io import save_model


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(dynamic-batch model, static-batch model) files."""
    folder = tmp_path_factory.mktemp("models")
    return (save_model(export(TinyNet(16)), folder / "dynamic.onnx"),
            save_model(export(TinyNet(16), dynamic=False), folder / "static.onnx"))


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


def _fails(args: list[str], capsys: pytest.CaptureFixture[str], *words: str) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("onnxprune: error:") and "\n" not in err, err
    for word in words:
        assert word in err, err
    return err


@pytest.mark.parametrize(("extra", "words"), [
    (["--triton-name", "a/b"], ("'a/b'", "path separators")),
    (["--triton-name", ".."], ("'..'",)),
    (["--max-batch", "-1"], ("--max-batch -1",)),
    (["--opset", "3"], ("--opset 3",)),
])
def test_bad_flags_fail_before_any_work(models: tuple[Path, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str], extra: list[str],
                                        words: tuple[str, ...]) -> None:
    out, repo = tmp_path / "out.onnx", tmp_path / "repo"
    _fails(["compress", str(models[0]), "-o", str(out), "--target", "0.5", "--triton-repo", str(repo), *extra],
           capsys, *words)
    assert not out.exists() and _tree(repo) == set()


def test_triton_flags_need_a_repository(models: tuple[Path, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.onnx"
    _fails(["compress", str(models[0]), "-o", str(out), "--target", "0.5", "--triton-name", "m", "--max-batch", "8"],
           capsys, "--triton-name", "--max-batch", "--triton-repo")
    assert not out.exists()


def test_fixed_batch_model_cannot_get_a_max_batch(models: tuple[Path, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out, repo = tmp_path / "out.onnx", tmp_path / "repo"
    _fails(["compress", str(models[1]), "-o", str(out), "--target", "0.5", "--triton-repo", str(repo),
            "--max-batch", "64"], capsys, "fixed batch dim", "--max-batch 0")
    assert not out.exists() and not repo.exists()
    # without --max-batch the static model is served as it is (dims include the batch)
    assert main(["compress", str(models[1]), "-o", str(out), "--target", "0.5", "--triton-repo", str(repo)]) == 0
    assert "dims: [ 1, 3, 16, 16 ]" in (repo / "out" / "config.pbtxt").read_text()


def test_existing_entry_needs_force_and_repository_must_be_a_folder(
        models: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, repo = tmp_path / "out.onnx", tmp_path / "repo"
    (repo / "m").mkdir(parents=True)
    (repo / "m" / "keep.txt").write_text("theirs")
    args = ["compress", str(models[0]), "-o", str(out), "--target", "0.5", "--triton-repo", str(repo),
            "--triton-name", "m"]
    _fails(args, capsys, "not empty", "--triton-force")
    assert not out.exists() and _tree(repo) == {"m", "m/keep.txt"}
    assert main([*args, "--triton-force"]) == 0
    assert _tree(repo / "m") == {"config.pbtxt", "1", "1/model.onnx"}
    blocker = tmp_path / "file_repo"
    blocker.write_text("not a folder")
    _fails(["compress", str(models[0]), "-o", str(tmp_path / "o2.onnx"), "--target", "0.5",
            "--triton-repo", str(blocker)], capsys, "is a file")


def test_failed_export_leaves_no_half_written_entry(models: tuple[Path, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(*_args: object, **_kwargs: object) -> Path:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(triton, "save_model", disk_full)  # config.pbtxt is written, the model is not
    out, repo = tmp_path / "out.onnx", tmp_path / "repo"
    _fails(["compress", str(models[0]), "-o", str(out), "--target", "0.5", "--triton-repo", str(repo)],
           capsys, "No space left")
    onnx.checker.check_model(onnx.load(str(out)))  # the pruned model may be written, complete
    assert _tree(repo) == set()  # no entry, no temporary folder


def test_prune_rejects_a_bad_opset_before_writing(models: tuple[Path, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "pruned.onnx"
    _fails(["prune", str(models[0]), "-o", str(out), "--opset", "200"], capsys, "--opset 200")
    assert not out.exists()
