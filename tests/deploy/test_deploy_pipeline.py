"""Deployment through the main commands: ``compress``/``prune`` keep the interface, tag metadata,
honour ``--opset`` and write a Triton repository that serves batch 1, 7 and 64."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from models.export import export_onnx
from models.zoo import zoo_entries
from onnxprune import __version__
from onnxprune.cli import main
from onnxprune.deploy import check_interface
from onnxprune.deploy.runner import output_diff, random_feeds, run_ort
from onnxprune.io import save_model
from onnxprune.plan import Plan

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                       reason="needs tritonclient[grpc] (the dev extra)")
text_format = pytest.importorskip("google.protobuf.text_format")

USER_PROPS = {"author": "tests", "labels": "cifar10"}


def _resnet20(dynamic_batch: bool) -> onnx.ModelProto:
    entry = next(e for e in zoo_entries() if e.name == "resnet20")
    model = export_onnx(entry.build(0), entry.input_shape, dynamic_batch=dynamic_batch)
    for key, value in USER_PROPS.items():
        model.metadata_props.add(key=key, value=value)
    model.metadata_props.add(key="onnxprune.accuracy", value="99.99")  # stale: from an earlier run
    return model


@pytest.fixture(scope="module")
def user_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dynamic-batch ResNet-20 with the user's metadata props (and a stale onnxprune prop)."""
    return save_model(_resnet20(True), tmp_path_factory.mktemp("user") / "resnet20.onnx")


@pytest.fixture(scope="module")
def compressed(user_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """``onnxprune compress`` data-free with ``--triton-repo``: (output, model folder, JSON report)."""
    out = tmp_path_factory.mktemp("compress")
    args = ["compress", str(user_model), "-o", str(out / "r20_pruned.onnx"), "--target", "0.5",
            "--triton-repo", str(out / "repo"), "--max-batch", "64", "--json", str(out / "report.json")]
    assert main(args) == 0
    return out / "r20_pruned.onnx", out / "repo" / "r20_pruned", json.loads((out / "report.json").read_text())


def _props(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _interface(model: onnx.ModelProto) -> list[tuple[str, int, list[str]]]:
    values = list(model.graph.input) + list(model.graph.output)
    return [(v.name, v.type.tensor_type.elem_type,
             [d.dim_param or str(d.dim_value) for d in v.type.tensor_type.shape.dim]) for v in values]


def test_compressed_triton_model_serves_batches_1_7_64(compressed: tuple[Path, Path, dict]) -> None:
    output, model_dir, report = compressed
    assert report["triton_dir"] == str(model_dir)
    assert _files(model_dir) == {"config.pbtxt", "1/model.onnx"}
    config = text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert (config.name, config.platform, config.max_batch_size) == ("r20_pruned", "onnxruntime_onnx", 64)
    assert [(t.name, list(t.dims)) for t in config.input] == [("input", [3, 32, 32])]
    assert [(t.name, list(t.dims)) for t in config.output] == [("output", [10])]
    shipped = onnx.load(str(model_dir / "1" / "model.onnx"))
    assert shipped.SerializeToString() == onnx.load(str(output)).SerializeToString()
    rng = np.random.default_rng(0)
    for batch in (1, 7, 64):
        (logits,) = run_ort(shipped, random_feeds(shipped, rng, batch=batch)).outputs
        assert logits.shape == (batch, 10) and np.isfinite(logits).all()


def test_compressed_keeps_interface_and_tags_metadata(user_model: Path, compressed: tuple[Path, Path, dict]) -> None:
    original, shipped = onnx.load(str(user_model)), onnx.load(str(compressed[0]))
    report = compressed[2]
    assert _interface(shipped) == _interface(original)
    assert _interface(shipped)[0][2] == ["batch", "3", "32", "32"]  # the dynamic batch stays dynamic
    assert check_interface(original, shipped) == []  # names, dtypes, dims, user props, opset, IR version
    props = _props(shipped)
    assert {k: props[k] for k in USER_PROPS} == USER_PROPS
    assert props["onnxprune.version"] == __version__ and props["onnxprune.command"] == "compress"
    assert (props["onnxprune.target"], props["onnxprune.metric"]) == ("0.5", "macs")
    assert "onnxprune.accuracy" not in props  # data-free: nothing measured, the stale prop is dropped
    plan = Plan.from_json(json.loads(props["onnxprune.plan"]))
    widths = {g["id"]: (g["before"], g["after"]) for g in report["groups"]}
    assert {gid: len(keep) for gid, keep in plan.keep.items()} == {gid: widths[gid][1] for gid in plan.keep}
    assert all(before == after for gid, (before, after) in widths.items() if gid not in plan.keep)  # kept whole
    assert report["round_to"] == 8 and all(a % 8 == 0 for _, a in widths.values())  # the default: fast widths
    assert report["after"]["macs"] < report["before"]["macs"]


def test_simplification_never_adds_nodes_and_keeps_outputs(user_model: Path, tmp_path: Path,
                                                           compressed: tuple[Path, Path, dict]) -> None:
    plain = tmp_path / "plain.onnx"
    assert main(["compress", str(user_model), "-o", str(plain), "--target", "0.5", "--no-simplify"]) == 0
    simple, unsimplified = onnx.load(str(compressed[0])), onnx.load(str(plain))
    assert len(simple.graph.node) <= len(unsimplified.graph.node)
    assert not any(n.op_type == "Identity" for n in simple.graph.node)
    diff, scale = output_diff(unsimplified, simple, np.random.default_rng(1), batch=7)
    assert diff <= 1e-5 * max(1.0, scale)


def test_compress_to_an_older_opset(user_model: Path, tmp_path: Path, compressed: tuple[Path, Path, dict]) -> None:
    old = tmp_path / "opset13.onnx"
    assert main(["compress", str(user_model), "-o", str(old), "--target", "0.5", "--opset", "13"]) == 0
    model, newer = onnx.load(str(old)), onnx.load(str(compressed[0]))
    assert [(i.domain, i.version) for i in model.opset_import if i.domain in ("", "ai.onnx")] == [("", 13)]
    assert model.ir_version <= newer.ir_version
    assert _interface(model) == _interface(newer)
    diff, scale = output_diff(newer, model, np.random.default_rng(2), batch=7)
    assert diff <= 1e-5 * max(1.0, scale)


def test_impossible_opset_fails_in_one_line_before_writing(user_model: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "old.onnx"
    for opset in ("7", "99"):
        assert main(["compress", str(user_model), "-o", str(out), "--target", "0.5", "--opset", opset]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("onnxprune: error:") and "\n" not in err and "opset" in err
    assert not out.exists() and not out.with_name(out.name + ".search.json").exists()


def test_prune_output_carries_metadata(user_model: Path, tmp_path: Path) -> None:
    out, plan_file = tmp_path / "pruned.onnx", tmp_path / "plan.json"
    assert main(["prune", str(user_model), "-o", str(out), "--ratio", "0.25", "--save-plan", str(plan_file)]) == 0
    original, pruned = onnx.load(str(user_model)), onnx.load(str(out))
    assert check_interface(original, pruned) == []
    props = _props(pruned)
    assert {k: props[k] for k in USER_PROPS} == USER_PROPS
    assert (props["onnxprune.command"], props["onnxprune.ratio"], props["onnxprune.criterion"]) == \
        ("prune", "0.25", "l1")
    assert json.loads(props["onnxprune.plan"]) == json.loads(plan_file.read_text())
    assert "onnxprune.accuracy" not in props


def test_compress_with_data_records_the_measured_accuracy(user_model: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    data = tmp_path / "val.npz"
    np.savez(data, images=rng.integers(0, 256, size=(48, 32, 32, 3), dtype=np.uint8),
             labels=rng.integers(0, 10, size=48))
    out, report = tmp_path / "scored.onnx", tmp_path / "scored.json"
    assert main(["compress", str(user_model), "-o", str(out), "--target", "0.3", "--data", str(data),
                 "--preprocess", "cifar", "--agent", "random", "--episodes", "2", "--device", "cpu",
                 "--json", str(report)]) == 0
    written = json.loads(report.read_text())
    assert _props(onnx.load(str(out)))["onnxprune.accuracy"] == f"{written['accuracy_after']:.2f}"
    assert written["provider"] == "CPUExecutionProvider"


def test_compress_device_cuda_without_the_gpu_package_is_a_one_line_error(
        user_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here: --device cuda is valid")
    out = tmp_path / "c.onnx"
    assert main(["compress", str(user_model), "-o", str(out), "--target", "0.3", "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "onnxruntime-gpu" in err[0] and "--device cpu" in err[0]
    assert not out.exists()


def test_input_below_opset_13_comes_back_to_its_opset(tmp_path: Path) -> None:
    entry = next(e for e in zoo_entries() if e.name == "resnet20")
    source = save_model(export_onnx(entry.build(0), entry.input_shape, dynamic_batch=True, opset=11),
                        tmp_path / "opset11.onnx")
    kept, upgraded = tmp_path / "kept.onnx", tmp_path / "upgraded.onnx"
    assert main(["prune", str(source), "-o", str(kept), "--ratio", "0.5"]) == 0  # load upgrades it to 13
    assert main(["prune", str(source), "-o", str(upgraded), "--ratio", "0.5", "--opset", "13"]) == 0
    original, old, new = (onnx.load(str(p)) for p in (source, kept, upgraded))
    assert check_interface(original, old) == []  # opset 11 and the input's IR version
    assert [i.version for i in new.opset_import if i.domain in ("", "ai.onnx")] == [13]
    diff, scale = output_diff(new, old, np.random.default_rng(4), batch=7)
    assert diff <= 1e-5 * max(1.0, scale)
