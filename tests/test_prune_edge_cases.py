"""Unknown ops freeze only what they touch; old opsets load; bad input fails cleanly."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.analyze import analyze
from onnxprune.cli import main
from onnxprune.compat import make_model
from onnxprune.load import load, normalize
from onnxprune.plan import Plan
from onnxprune.rewrite import prune_model
from pruning_utils import random_plan, run


def _conv(name: str, x: str, y: str, cin: int, cout: int, rng: np.random.Generator) -> tuple:
    w = numpy_helper.from_array(rng.standard_normal((cout, cin, 3, 3)).astype(np.float32), f"{name}_w")
    b = numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), f"{name}_b")
    return helper.make_node("Conv", [x, w.name, b.name], [y], name=name, pads=[1, 1, 1, 1]), [w, b]


def _model_with(op: onnx.NodeProto, extra_outputs: list[onnx.ValueInfoProto], opset: int = 13,
                domains: tuple = ()) -> onnx.ModelProto:
    """input -> conv1 (8) -> relu -> {conv2 (8) -> relu -> conv3 (4) -> output, op(...)}."""
    rng = np.random.default_rng(0)
    c1, i1 = _conv("conv1", "input", "a", 3, 8, rng)
    c2, i2 = _conv("conv2", "a_relu", "b", 8, 8, rng)
    c3, i3 = _conv("conv3", "b_relu", "output", 8, 4, rng)
    nodes = [c1, helper.make_node("Relu", ["a"], ["a_relu"], name="relu1"), c2,
             helper.make_node("Relu", ["b"], ["b_relu"], name="relu2"), c3, op]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 8, 8]),
                               *extra_outputs], initializer=i1 + i2 + i3)
    return make_model(graph, opset_imports=[helper.make_opsetid("", opset), *domains])


def test_nonzero_freezes_its_group_and_the_rest_prunes() -> None:
    op = helper.make_node("NonZero", ["a_relu"], ["nz"], name="the_nonzero")
    model = normalize(_model_with(op, [helper.make_tensor_value_info("nz", TensorProto.INT64, [4, "n"])]))
    analysis = analyze(model)
    by_producer = {g.producers[0]: g for g in analysis.groups}
    assert "NonZero 'the_nonzero' has no channel rule" in by_producer["conv1"].frozen_reason
    assert by_producer["conv2"].prunable
    pruned = prune_model(analysis, Plan(keep={by_producer["conv2"].id: (0, 3, 5)}))
    onnx.checker.check_model(pruned, full_check=True)
    conv2_w = next(i for i in pruned.graph.initializer if i.name.startswith("conv2") and len(i.dims) == 4)
    assert list(conv2_w.dims) == [3, 8, 3, 3]
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    assert run(pruned, {"input": x})[0].shape == (1, 4, 8, 8)


def test_custom_domain_op_is_named_in_the_frozen_reason() -> None:
    op = helper.make_node("MyOp", ["a_relu"], ["custom"], name="custom1", domain="com.example")
    model = normalize(_model_with(op, [helper.make_tensor_value_info("custom", TensorProto.FLOAT, [1, 8, 8, 8])],
                                  domains=(helper.make_opsetid("com.example", 1),)))
    analysis = analyze(model)
    frozen = [g for g in analysis.groups if g.frozen_reason and "MyOp" in g.frozen_reason]
    assert len(frozen) == 1 and frozen[0].producers == ("conv1",) and "com.example" in frozen[0].frozen_reason
    pruned = prune_model(analysis, random_plan(analysis, np.random.default_rng(0), p_prune=1.0))
    onnx.checker.check_model(pruned)
    assert any(n.op_type == "MyOp" for n in pruned.graph.node)


@pytest.mark.parametrize("opset", [8, 9])
def test_old_opsets_load_and_prune(opset: int) -> None:
    op = helper.make_node("Relu", ["b_relu"], ["side"], name="side")
    raw = _model_with(op, [helper.make_tensor_value_info("side", TensorProto.FLOAT, [1, 8, 8, 8])], opset=opset)
    raw.ir_version = 3  # old exporters list initializers as graph inputs
    raw.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                           for t in raw.graph.initializer)
    model = normalize(raw)
    assert model.original_opset == opset
    analysis = analyze(model)
    prunable = analysis.prunable_groups
    assert [g.producers for g in prunable] == [("conv1",)]
    pruned = prune_model(analysis, Plan(keep={prunable[0].id: (1, 2)}))
    onnx.checker.check_model(pruned, full_check=True)
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    assert [o.shape for o in run(pruned, {"input": x})] == [(1, 4, 8, 8), (1, 8, 8, 8)]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def good_model(tmp_path: Path) -> Path:
    op = helper.make_node("Identity", ["b_relu"], ["side"], name="side")
    path = tmp_path / "good.onnx"
    onnx.save(_model_with(op, [helper.make_tensor_value_info("side", TensorProto.FLOAT, [1, 8, 8, 8])]), str(path))
    return path


def _fails_cleanly(args: list[str], out: Path, capsys: pytest.CaptureFixture[str], needle: str) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err
    assert not out.exists()


def test_bad_inputs_fail_with_one_line(tmp_path: Path, good_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.onnx"
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a model at all \x00\x01\x02" * 10)
    _fails_cleanly(["prune", str(junk), "-o", str(out)], out, capsys, "ONNX")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good_model.read_bytes()[: good_model.stat().st_size // 2])
    _fails_cleanly(["prune", str(truncated), "-o", str(out)], out, capsys, "truncated.onnx")
    _fails_cleanly(["prune", str(tmp_path / "missing.onnx"), "-o", str(out)], out, capsys, "no such file")
    before = _digest(good_model)
    for ratio in ("1.0", "-0.1", "abc"):
        _fails_cleanly(["prune", str(good_model), "--ratio", ratio, "-o", str(out)], out, capsys, "--ratio")
    _fails_cleanly(["prune", str(good_model), "-o", str(good_model)], out, capsys, "input model")
    assert _digest(good_model) == before


def test_external_data_missing_or_outside(tmp_path: Path, good_model: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "ext"
    folder.mkdir()
    model = onnx.load(str(good_model))
    onnx.save(model, str(folder / "m.onnx"), save_as_external_data=True, location="m.data", size_threshold=0)
    assert load(folder / "m.onnx").proto.graph.initializer[0].HasField("raw_data")
    out = tmp_path / "out.onnx"
    (folder / "m.data").rename(tmp_path / "m.data")
    _fails_cleanly(["prune", str(folder / "m.onnx"), "-o", str(out)], out, capsys, "missing")
    for tensor in model.graph.initializer:
        tensor.ClearField("raw_data")
    evil = onnx.load(str(folder / "m.onnx"), load_external_data=False)
    for tensor in evil.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../m.data"
    onnx.save(evil, str(folder / "evil.onnx"))
    _fails_cleanly(["prune", str(folder / "evil.onnx"), "-o", str(out)], out, capsys, "outside")


def _select_model(select: list[onnx.NodeProto], consts: list[onnx.TensorProto], mid: int, opset: int = 13
                  ) -> onnx.ModelProto:
    """input -> conv c1 (8 ch, 1x1) -> <select nodes: a -> b> -> conv c2 (mid -> 4) -> output."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 3, 1, 1)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((4, mid, 1, 1)).astype(np.float32), "w2")
    nodes = [helper.make_node("Conv", ["input", "w1"], ["a"], name="c1"), *select,
             helper.make_node("Conv", ["b", "w2"], ["output"], name="c2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 4, 4])],
                              initializer=[w1, w2, *consts])
    return make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _ints(name: str, values: list[int]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


@pytest.mark.parametrize("case", ["slice_without_axes", "gather", "split_num_outputs"])
def test_channel_selections_rewrite_exactly(case: str) -> None:
    """Kept channels of c1 are removed, and the selection still feeds c2 the right ones."""
    if case == "slice_without_axes":  # axes default to (0, 1): batch and channel [1:7]
        raw = _select_model([helper.make_node("Slice", ["a", "st", "en"], ["b"], name="sel")],
                            [_ints("st", [0, 1]), _ints("en", [1, 7])], 6)
        chosen = [1, 2, 3, 4, 5, 6]
    elif case == "gather":
        raw = _select_model([helper.make_node("Gather", ["a", "idx"], ["b"], name="sel", axis=1)],
                            [_ints("idx", [6, 0, 3, -1])], 4)
        chosen = [6, 0, 3, 7]
    else:  # opset 18 Split with num_outputs: the second half goes on
        raw = _select_model([helper.make_node("Split", ["a"], ["h0", "b"], name="sel", axis=1, num_outputs=2)],
                            [], 4, opset=18)
        chosen = [4, 5, 6, 7]
    model = normalize(raw)
    analysis = analyze(model)
    group = next(g for g in analysis.groups if g.producers == ("c1",))
    keep = (0, 2, 3, 6, 7)
    pruned = prune_model(analysis, Plan(keep={group.id: keep}))
    onnx.checker.check_model(pruned, full_check=True)
    # reference: zero the removed channels of c1 in the unpruned model
    zeroed = onnx.ModelProto()
    zeroed.CopyFrom(model.proto)
    w1 = next(t for t in zeroed.graph.initializer if t.name == "w1")
    value = numpy_helper.to_array(w1).copy()
    value[[c for c in range(8) if c not in keep]] = 0
    w1.CopyFrom(numpy_helper.from_array(value, "w1"))
    x = np.random.default_rng(3).standard_normal((1, 3, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(run(pruned, {"input": x})[0], run(zeroed, {"input": x})[0], rtol=1e-5, atol=1e-5)
    c2 = next(t for t in pruned.graph.initializer if len(t.dims) == 4 and t.dims[0] == 4)
    assert c2.dims[1] == sum(1 for c in chosen if c in keep)
