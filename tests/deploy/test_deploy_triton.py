"""Triton export: config.pbtxt parsed with Triton's ModelConfig protobuf, layout, batching, errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxprune.cli import main
from onnxprune.compat import make_model
from onnxprune.deploy.interface import restore_interface
from onnxprune.deploy.runner import random_feeds, run_ort
from onnxprune.deploy.triton import TritonOptions, export_triton
from onnxprune.errors import OutputError, UnsupportedInput
from onnxprune.io import save_model

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                       reason="needs tritonclient[grpc] (the dev extra)")
text_format = pytest.importorskip("google.protobuf.text_format")


def _parse(path: Path) -> object:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def served(original: onnx.ModelProto, compressed: onnx.ModelProto) -> onnx.ModelProto:
    """The compressed model with the original's interface (what compress would export)."""
    return restore_interface(original, compressed, extra_metadata={"target": "triton"})


def test_config_parses_and_matches_the_model(tmp_path: Path, served: onnx.ModelProto) -> None:
    options = TritonOptions(name="tiny_pruned", max_batch=64, instances=2, kind="cpu", dynamic_batching=True)
    result = export_triton(served, tmp_path / "repo", options)
    config = _parse(result.config_path)
    assert config.name == "tiny_pruned" and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 64
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == \
        [("input", model_config_pb2.TYPE_FP32, [3, 16, 16])]
    assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == \
        [("logits", model_config_pb2.TYPE_FP32, [10])]
    assert [(g.count, g.kind) for g in config.instance_group] == [(2, model_config_pb2.ModelInstanceGroup.KIND_CPU)]
    assert config.HasField("dynamic_batching")


def test_layout_is_tritons_and_model_runs_at_1_7_64(tmp_path: Path, served: onnx.ModelProto) -> None:
    repo = tmp_path / "repo"
    export_triton(served, repo, TritonOptions(name="m", max_batch=64))
    # <repo>/<name>/config.pbtxt and <repo>/<name>/<version>/model.onnx, nothing else
    assert _files(repo) == {"m/config.pbtxt", "m/1/model.onnx"}
    shipped = onnx.load(str(repo / "m" / "1" / "model.onnx"))
    assert shipped.SerializeToString() == served.SerializeToString()
    props = {p.key: p.value for p in shipped.metadata_props}
    assert props["author"] == "tests" and props["onnxprune.target"] == "triton"
    rng = np.random.default_rng(0)
    for batch in (1, 7, 64):
        (out,) = run_ort(shipped, random_feeds(shipped, rng, batch=batch)).outputs
        assert out.shape == (batch, 10)


def test_static_batch_needs_max_batch_zero(tmp_path: Path, compressed: onnx.ModelProto) -> None:
    result = export_triton(compressed, tmp_path, TritonOptions(name="static", max_batch=0))
    config = _parse(result.config_path)
    assert config.max_batch_size == 0
    assert list(config.input[0].dims) == [1, 3, 16, 16] and list(config.output[0].dims) == [1, 10]
    with pytest.raises(UnsupportedInput, match="fixed batch dim"):
        export_triton(compressed, tmp_path, TritonOptions(name="static2", max_batch=8))
    assert not (tmp_path / "static2").exists()


@pytest.mark.parametrize("name", ["", "a/b", "../up", "a\\b", ".", ".."])
def test_bad_names_write_nothing(tmp_path: Path, served: onnx.ModelProto, name: str) -> None:
    with pytest.raises(OutputError, match="not a plain folder name"):
        export_triton(served, tmp_path / "repo", TritonOptions(name=name, max_batch=4))
    assert not (tmp_path / "repo").exists() and not (tmp_path / "up").exists()


def test_existing_output_needs_force(tmp_path: Path, served: onnx.ModelProto) -> None:
    target = tmp_path / "m"
    (target / "7").mkdir(parents=True)
    (target / "7" / "old.txt").write_text("keep me")
    with pytest.raises(OutputError, match="pass --force"):
        export_triton(served, tmp_path, TritonOptions(name="m", max_batch=4))
    assert _files(tmp_path) == {"m/7/old.txt"}
    export_triton(served, tmp_path, TritonOptions(name="m", max_batch=4), force=True)
    assert _files(tmp_path) == {"m/config.pbtxt", "m/1/model.onnx"}
    assert sorted(os.listdir(tmp_path)) == ["m"]  # no temporary folders left behind


def test_input_without_rank_is_refused(tmp_path: Path) -> None:
    graph = helper.make_graph([helper.make_node("Relu", ["a"], ["b"])], "g",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("b", TensorProto.FLOAT, None)])
    model = make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedInput, match="input 'a' has no static rank"):
        export_triton(model, tmp_path / "repo", TritonOptions(name="norank"))
    assert not (tmp_path / "repo").exists()


def test_failure_while_writing_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             served: onnx.ModelProto) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise OutputError("disk full (simulated)")

    monkeypatch.setattr("onnxprune.deploy.triton.save_model", broken)
    with pytest.raises(OutputError, match="simulated"):
        export_triton(served, tmp_path, TritonOptions(name="m", max_batch=4))
    assert os.listdir(tmp_path) == []


def test_external_data_uses_the_directory_form(tmp_path: Path, served: onnx.ModelProto) -> None:
    export_triton(served, tmp_path, TritonOptions(name="big", max_batch=8, external_data=True))
    assert _files(tmp_path) == {"big/config.pbtxt", "big/1/model.onnx/model.onnx",
                                "big/1/model.onnx/model.onnx.data"}
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "big/1/model.onnx/model.onnx"), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"input": np.zeros((7, 3, 16, 16), np.float32)})
    assert out.shape == (7, 10)


def test_cli_export_and_one_line_errors(tmp_path: Path, served: onnx.ModelProto,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = save_model(served, tmp_path / "model.onnx")
    repo = tmp_path / "repo"
    args = ["export-triton", str(path), "--name", "cli_model", "--max-batch", "64", "-o", str(repo)]
    assert main(args + ["--dynamic-batching", "--instances", "1", "--kind", "gpu"]) == 0
    config = _parse(repo / "cli_model" / "config.pbtxt")
    assert config.max_batch_size == 64 and list(config.input[0].dims) == [3, 16, 16]
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    capsys.readouterr()
    assert main(args) == 2  # exists, no --force
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--force" in err
    assert main(["export-triton", str(path), "--name", "x/y", "-o", str(repo)]) == 2
    assert sorted(os.listdir(repo)) == ["cli_model"]
