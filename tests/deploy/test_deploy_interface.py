"""restore_interface / check_interface: names, dtypes, symbolic dims, versions, metadata, external data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxprune import __version__
from onnxprune.compat import make_model
from onnxprune.deploy.interface import check_interface, restore_interface
from onnxprune.deploy.runner import max_abs_diff, random_feeds, run_ort
from onnxprune.errors import UnsupportedInput
from onnxprune.io import save_model
from onnxprune.load import load, read


def _dims(value: onnx.ValueInfoProto) -> list[object]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


@pytest.fixture(scope="module")
def restored(original: onnx.ModelProto, compressed: onnx.ModelProto) -> onnx.ModelProto:
    return restore_interface(original, compressed,
                             extra_metadata={"plan": '{"keep": {}}', "target": "ort-cpu", "accuracy": "0.912"})


def test_raw_compressed_model_mismatches_are_listed(original: onnx.ModelProto, compressed: onnx.ModelProto) -> None:
    problems = check_interface(original, compressed)
    text = "\n".join(problems)
    assert "input names ['input'] != ['x']" in text
    assert "output names ['logits'] != ['y']" in text
    assert "FLOAT[batch, 3, 16, 16] != FLOAT[1, 3, 16, 16]" in text
    assert "metadata 'author'" in text and "opset 17 != 18" in text


def test_restored_interface_equals_original(original: onnx.ModelProto, restored: onnx.ModelProto) -> None:
    assert [i.name for i in restored.graph.input] == ["input"]
    assert [o.name for o in restored.graph.output] == ["logits"]
    assert _dims(restored.graph.input[0]) == ["batch", 3, 16, 16]
    assert _dims(restored.graph.output[0]) == ["batch", 10]
    assert restored.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    # only the opset differs: not converted without --opset; IR kept from the original
    assert check_interface(original, restored) == ["opset 17 != 18"]
    assert restored.ir_version == original.ir_version
    assert restored.model_version == 3
    assert len(restored.graph.value_info) == 0


def test_restored_metadata_keeps_original_props_and_adds_onnxprune(restored: onnx.ModelProto) -> None:
    props = {p.key: p.value for p in restored.metadata_props}
    assert props["author"] == "tests" and props["labels"] == "cifar10"
    assert props["onnxprune.version"] == __version__
    assert props["onnxprune.plan"] == '{"keep": {}}'
    assert props["onnxprune.target"] == "ort-cpu" and props["onnxprune.accuracy"] == "0.912"


def test_restored_model_runs_dynamic_batch_with_compressed_outputs(compressed: onnx.ModelProto,
                                                                   restored: onnx.ModelProto) -> None:
    rng = np.random.default_rng(0)
    for batch in (1, 7, 64):
        feeds = random_feeds(restored, rng, batch=batch)
        (out,) = run_ort(restored, feeds).outputs
        assert out.shape == (batch, 10)
    feeds = random_feeds(restored, rng, batch=1)
    expected = run_ort(compressed, {"x": feeds["input"]}).outputs[0]
    np.testing.assert_allclose(run_ort(restored, feeds).outputs[0], expected, atol=1e-6)


def test_opset_converted_only_when_asked(original: onnx.ModelProto, compressed: onnx.ModelProto,
                                         restored: onnx.ModelProto) -> None:
    converted = restore_interface(original, compressed, opset=17)
    assert check_interface(original, converted) == []
    assert max_abs_diff(converted, restored, np.random.default_rng(1), batch=3) < 1e-5


def test_dtype_difference_gets_a_cast(original: onnx.ModelProto) -> None:
    half = make_model(helper.make_graph(
        [helper.make_node("Relu", ["a"], ["b"])], "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT16, [1, 3])],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT16, [1, 3])]),
        opset_imports=[helper.make_opsetid("", 17)])
    ref = make_model(helper.make_graph(
        [helper.make_node("Relu", ["a"], ["b"])], "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n", 3])]),
        opset_imports=[helper.make_opsetid("", 17)])
    fixed = restore_interface(ref, half)
    assert check_interface(ref, fixed) == []
    assert [n.op_type for n in fixed.graph.node] == ["Cast", "Relu", "Cast"]
    x = np.array([[-1.0, 0.5, 2.0]] * 4, np.float32)
    (out,) = run_ort(fixed, {"a": x}).outputs
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, np.maximum(x, 0), atol=1e-3)


def test_changed_static_dim_or_rank_is_refused(original: onnx.ModelProto, compressed: onnx.ModelProto) -> None:
    wrong = onnx.ModelProto()
    wrong.CopyFrom(compressed)
    wrong.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 9
    with pytest.raises(UnsupportedInput, match="dim 1 is 9 in the compressed model, 10"):
        restore_interface(original, wrong)
    wrong.graph.output[0].type.tensor_type.shape.dim.add().dim_value = 1
    with pytest.raises(UnsupportedInput, match="rank 3 in the compressed model, 2"):
        restore_interface(original, wrong)


@pytest.mark.parametrize("auto", [False, True], ids=["forced", "above-limit"])
def test_external_data_round_trip(tmp_path: Path, restored: onnx.ModelProto, auto: bool) -> None:
    # save_model(external_data=None) switches above the protobuf limit; the test lowers the limit
    path = save_model(restored, tmp_path / "big.onnx", external_data=None if auto else True,
                      proto_limit=1024 if auto else 2**31 - 1)
    data = tmp_path / "big.onnx.data"
    assert data.is_file() and data.stat().st_size > 1000
    stub = onnx.load(str(path), load_external_data=False)
    assert any(t.data_location == TensorProto.EXTERNAL for t in stub.graph.initializer)
    as_is = read(path)
    assert check_interface(restored, as_is) == []
    assert max_abs_diff(restored, as_is, np.random.default_rng(2), batch=7) == 0.0
    normalized = load(path)
    assert {p.key: p.value for p in normalized.proto.metadata_props}["onnxprune.version"] == __version__
    assert max_abs_diff(restored, normalized.proto, np.random.default_rng(3), batch=7) < 1e-5
