"""simplify: equal outputs (1e-5), never more nodes, interface and Q/DQ kept."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from deploy_models import TinyNet, export, qdq_model
from onnxprune.compat import make_model
from onnxprune.deploy.interface import check_interface
from onnxprune.deploy.runner import max_abs_diff, random_feeds, run_ort
from onnxprune.deploy.simplify import simplify

HAS_ONNXSLIM = importlib.util.find_spec("onnxslim") is not None


def _cluttered() -> onnx.ModelProto:
    """Identity chains, a foldable constant branch, a Shape->Reshape chain and a dead node."""
    c = numpy_helper.from_array(np.arange(4, dtype=np.float32), "c")
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    shape_idx = numpy_helper.from_array(np.array([1], np.int64), "idx")
    minus1 = numpy_helper.from_array(np.array([-1], np.int64), "minus1")
    nodes = [
        helper.make_node("Identity", ["x"], ["x1"], name="id1"),
        helper.make_node("Identity", ["x1"], ["x2"], name="id2"),
        helper.make_node("Mul", ["c", "two"], ["c2"], name="const_mul"),  # foldable
        helper.make_node("Add", ["x2", "c2"], ["s"], name="add"),
        helper.make_node("Shape", ["s"], ["shp"], name="shape"),
        helper.make_node("Gather", ["shp", "idx"], ["width"], name="gather", axis=0),  # static 4
        helper.make_node("Concat", ["minus1", "width"], ["new_shape"], name="concat", axis=0),
        helper.make_node("Reshape", ["s", "new_shape"], ["r"], name="reshape"),
        helper.make_node("Exp", ["s"], ["unused"], name="dead"),
        helper.make_node("Relu", ["r"], ["y0"], name="relu"),
        helper.make_node("Identity", ["y0"], ["y"], name="id_out"),
    ]
    graph = helper.make_graph(nodes, "cluttered", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
                              [c, two, shape_idx, minus1])
    model = make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.metadata_props.add(key="k", value="v")
    onnx.checker.check_model(model)
    return model


def _assert_simplified(model: onnx.ModelProto, *, batch: int = 3, scale: float = 1.0) -> onnx.ModelProto:
    """Never more nodes, same interface, outputs within 1e-5 * scale (ORT optimizations off)."""
    simple = simplify(model)
    assert len(simple.graph.node) <= len(model.graph.node)
    assert check_interface(model, simple) == []  # names, dims, metadata, opset, IR
    onnx.checker.check_model(simple)
    for b in (1, batch):
        assert max_abs_diff(model, simple, np.random.default_rng(b), batch=b) <= 1e-5 * scale
    return simple


def test_cluttered_graph_loses_identities_constants_and_dead_nodes() -> None:
    model = _cluttered()
    simple = _assert_simplified(model)
    ops = [n.op_type for n in simple.graph.node]
    # graph-surgeon folds the Shape chain to a constant [-1, 4]; onnxslim also drops that no-op Reshape
    assert ops == (["Add", "Relu"] if HAS_ONNXSLIM else ["Add", "Reshape", "Relu"])
    assert simple.graph.output[0].name == "y" and simple.graph.node[-1].output[0] == "y"


@pytest.mark.parametrize("view_flatten", [False, True], ids=["flatten", "view"])
def test_torch_exports_never_grow_and_keep_outputs(view_flatten: bool) -> None:
    model = export(TinyNet(12, view_flatten=view_flatten))
    simple = _assert_simplified(model, batch=5)
    if view_flatten:  # x.view(x.size(0), -1) exports a Shape chain that stays dynamic
        assert len(simple.graph.node) <= len(model.graph.node)


def test_quantized_model_keeps_its_qdq_nodes() -> None:
    for model in (qdq_model(), qdq_model(quantize_activation=True), qdq_model(qtype=TensorProto.INT4)):
        simple = _assert_simplified(model)
        count = [n.op_type for n in model.graph.node].count("DequantizeLinear")
        assert [n.op_type for n in simple.graph.node].count("DequantizeLinear") == count


def test_a_slimmer_result_that_drops_qdq_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxslim")
    model = qdq_model()

    def folds_qdq(m: onnx.ModelProto) -> onnx.ModelProto:  # what a careless optimizer might do
        out = onnx.ModelProto()
        out.CopyFrom(m)
        out.graph.node[0].op_type = "Identity"
        del out.graph.node[0].input[1:]
        return out

    monkeypatch.setattr("onnxslim.slim", folds_qdq)
    simple = simplify(model)
    assert [n.op_type for n in simple.graph.node] == ["DequantizeLinear", "Conv"]


def test_input_is_not_modified() -> None:
    model = _cluttered()
    before = model.SerializeToString()
    simplify(model)
    assert model.SerializeToString() == before


def test_zoo_models_if_available() -> None:
    zoo = pytest.importorskip("models.zoo", reason="the test zoo (models/zoo.py) is not in this checkout")
    export_onnx = pytest.importorskip("models.export").export_onnx
    wanted = {"resnet20", "mobilenetv2", "transformer"}
    entries = [e for e in zoo.zoo_entries() if e.name in wanted]
    assert len(entries) == len(wanted)
    for entry in entries:
        model = export_onnx(entry.build(0), entry.input_shape, dynamic_batch=True)
        # BatchNorm folded into Conv rounds differently: 1e-5 relative to the output magnitude
        feeds = random_feeds(model, np.random.default_rng(0), batch=2)
        magnitude = max(float(np.abs(o).max()) for o in run_ort(model, feeds).outputs)
        simple = _assert_simplified(model, batch=2, scale=max(1.0, magnitude))
        assert len(simple.graph.node) < len(model.graph.node)
        if HAS_ONNXSLIM:  # BatchNorm folded into the convolutions
            assert "BatchNormalization" not in {n.op_type for n in simple.graph.node}
