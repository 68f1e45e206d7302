"""Deployable QDQ models and the ``quantize`` command (issue 16 acceptance: int8 QDQ, bad input)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from evaluate_models import raw_images, tiny_classifier
from quant_models import ZOO, feeds_for

from onnxprune.cli import main
from onnxprune.evaluate import Runtime
from onnxprune.quantize import QuantPlan, find_layers, uniform_plan
from onnxprune.quantize.deploy import to_qdq
from onnxprune.quantize.fallback import fall_back, rank_layers

RT = Runtime("cpu", 1)


@pytest.mark.parametrize("name", ZOO)
def test_int8_qdq_of_every_zoo_model_is_valid_and_runs(zoo_model, name):
    _, model = zoo_model(name)
    layers = [q.node for q in find_layers(model.proto)]
    x = feeds_for(model.proto, 16)
    result = to_qdq(model.proto, uniform_plan(layers, 8, 8), x)
    onnx.checker.check_model(result.model, full_check=True)
    ops = Counter(n.op_type for n in result.model.graph.node)
    assert ops["DequantizeLinear"] >= len(layers) and ops["QuantizeLinear"] >= 1
    assert [i.name for i in result.model.graph.input] == [i.name for i in model.proto.graph.input]
    got, want = RT.create(result.model).run(x)[0], RT.create(model.proto).run(x)[0]
    assert got.shape == want.shape and np.isfinite(got).all()
    assert result.bits == {n: (8, 8) for n in layers}


def test_int4_weights_write_opset_21_and_shrink(zoo_model):
    _, model = zoo_model("vgg_bn")
    layers = [q.node for q in find_layers(model.proto)]
    x = feeds_for(model.proto, 16)
    int8 = to_qdq(model.proto, uniform_plan(layers, 8, 8), x)
    int4 = to_qdq(model.proto, uniform_plan(layers, 4, 8), x)
    assert int4.opset == 21 and int4.bits == {n: (4, 8) for n in layers}
    onnx.checker.check_model(int4.model)
    kinds = Counter(t.data_type for t in int4.model.graph.initializer)
    assert kinds[onnx.TensorProto.INT4] >= len(layers) - 1  # every conv weight (ORT may keep one odd layer)
    assert int4.model.ByteSize() < 0.75 * int8.model.ByteSize()
    assert RT.create(int4.model).run(x)[0].shape == RT.create(int8.model).run(x)[0].shape


def test_fallback_moves_the_most_sensitive_layers_first():
    plan = QuantPlan({"a": (8, 8), "b": (4, 8), "c": (8, 8)})
    order = rank_layers(plan, lambda p: {"a": 0.1, "b": 3.0, "c": 0.5}[p.quantized[0]])
    assert order == ("b", "c", "a")
    scores = {("a", "b", "c"): 0.80, ("a", "c"): 0.89, ("a",): 0.899}
    result = fall_back(plan, order, lambda p: scores[p.quantized], baseline=0.90, max_drop=0.002)
    assert result.fallen_back == ("b", "c") and result.accuracy == 0.899
    assert result.plan == QuantPlan({"a": (8, 8)})


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return tiny_classifier(tmp_path / "m.onnx", seed=3)


@pytest.fixture
def calib(tmp_path: Path) -> Path:
    path = tmp_path / "calib.npz"
    np.savez(path, images=raw_images(64, seed=1), labels=np.arange(64) % 10)
    return path


def test_quantize_command_writes_int8_and_simulated_models(tmp_path, model, calib):
    for extra, mode in (([], "deploy"), (["--simulate", "--bits", "3", "--a-bits", "6"], "simulate")):
        out, report = tmp_path / f"{mode}.onnx", tmp_path / f"{mode}.json"
        assert main(["quantize", str(model), "-o", str(out), "--calib", str(calib), "--preprocess", "cifar",
                     "--data", str(calib), "--val-size", "32", "--json", str(report), *extra]) == 0
        data = json.loads(report.read_text())
        onnx.checker.check_model(onnx.load(out))
        assert data["mode"] == mode and data["accuracy_after"] is not None
        bits = {tuple(v) for v in data["written"].values()}
        assert bits == ({(8, 8)} if mode == "deploy" else {(3, 6)})
        expected = 1 - 64 / 1024 if mode == "deploy" else None
        if expected is not None:
            assert data["bops"]["reduction_vs_float32"] == pytest.approx(expected)


@pytest.mark.parametrize("extra, words", [
    (["--bits", "7"], "--bits 7"),
    (["--a-bits", "12"], "--a-bits 12"),
    (["--keep-float", "nope"], "--keep-float"),
    (["--max-drop", "0.01", "--val-size", "0"], "--val-size"),
])
def test_bad_options_are_one_line_exit_2(tmp_path, model, calib, capsys, extra, words):
    out = tmp_path / "o.onnx"
    code = main(["quantize", str(model), "-o", str(out), "--calib", str(calib), "--preprocess", "cifar", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "Traceback" not in err and words in err
    assert not out.exists()


def test_plan_with_unknown_layers_and_bad_bits_is_one_line_exit_2(tmp_path, model, calib, capsys):
    out = tmp_path / "o.onnx"
    for layers, words in (({"nope": {"w": 8, "a": 8}}, "unknown layer"), ({"x": {"w": 9, "a": 8}}, "weight bits 9")):
        plan = tmp_path / "bits.json"
        plan.write_text(json.dumps({"format": "onnxprune-bits-1", "layers": layers}))
        code = main(["quantize", str(model), "-o", str(out), "--calib", str(calib), "--plan", str(plan)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and "\n" not in err and words in err
        assert not out.exists()


def test_calibration_data_of_the_wrong_shape_is_one_line_exit_2(tmp_path, model, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((8, 5, 7), dtype=np.uint8))
    out = tmp_path / "o.onnx"
    code = main(["quantize", str(model), "-o", str(out), "--calib", str(bad)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "Traceback" not in err
    assert not out.exists()


def test_analyze_lists_layers_with_stored_bits(tmp_path, model, calib):
    q = tmp_path / "q.onnx"
    assert main(["quantize", str(model), "-o", str(q), "--calib", str(calib), "--preprocess", "cifar",
                 "--bits", "4"]) == 0
    for path, bits in ((model, (32, 32)), (q, (4, 8))):
        report = tmp_path / f"{path.stem}.analyze.json"
        assert main(["analyze", str(path), "--layers", "--json", str(report)]) == 0
        layers = json.loads(report.read_text())["layers"]
        assert layers and {(r["w_bits"], r["a_bits"]) for r in layers} == {bits}
        assert all(r["quantizable"] == (path == model) for r in layers)


def test_four_bit_matmuls_become_matmulnbits(zoo_model):
    _, model = zoo_model("transformer")
    layers = find_layers(model.proto)
    matmuls = [q.node for q in layers if q.op_type == "MatMul"]
    assert matmuls
    x = feeds_for(model.proto, 4)
    result = to_qdq(model.proto, QuantPlan({q.node: (4 if q.op_type == "MatMul" else 8, 8) for q in layers}), x)
    ops = Counter(n.op_type for n in result.model.graph.node)
    assert ops["MatMulNBits"] == len(matmuls)
    assert all(result.bits[n] == (4, 32) for n in matmuls)
    got, want = RT.create(result.model).run(x)[0], RT.create(model.proto).run(x)[0]
    assert np.abs(got - want).max() < 0.5 * np.abs(want).max()  # 4-bit weights: same outputs, coarsely


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2", "densenet", "mlp"])
def test_pruned_then_quantized_is_valid_and_close_to_the_pruned_model(tmp_path, zoo_model, name):
    from onnxprune.load import load
    from onnxprune.pipeline import prune_file

    path, _ = zoo_model(name)
    pruned = tmp_path / "pruned.onnx"
    report = prune_file(path, pruned, ratio=0.5)
    assert report.after.macs < report.before.macs
    model = load(pruned)
    layers = [q.node for q in find_layers(model.proto)]
    x = feeds_for(model.proto, 16)
    result = to_qdq(model.proto, uniform_plan(layers, 8, 8), x)
    onnx.checker.check_model(result.model, full_check=True)
    got, want = RT.create(result.model).run(x)[0], RT.create(model.proto).run(x)[0]
    assert np.abs(got - want).max() < 0.25 * np.abs(want).max()  # int8 of random weights: same outputs, roughly


def test_int4_qdq_uses_the_standard_domain(zoo_model):
    _, model = zoo_model("resnet20")
    layers = [q.node for q in find_layers(model.proto)]
    result = to_qdq(model.proto, uniform_plan(layers, 4, 8), feeds_for(model.proto, 8))
    assert result.opset == 21
    assert {n.domain for n in result.model.graph.node if "Quantize" in n.op_type} <= {"", "ai.onnx"}
