"""--opset conversion: downgrades the version converter lacks, refusals that name the blocking op."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.compat import make_model
from onnxprune.deploy.opset import convert_opset
from onnxprune.deploy.runner import output_diff
from onnxprune.errors import UnsupportedInput


def _model(node: onnx.NodeProto, opset: int, out: list[object], inits: tuple[onnx.TensorProto, ...] = ()
           ) -> onnx.ModelProto:
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)], list(inits))
    model = make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def _opset(model: onnx.ModelProto) -> int:
    return next(i.version for i in model.opset_import if i.domain in ("", "ai.onnx"))


@pytest.mark.parametrize(("node", "opset", "target", "out", "inits"), [
    (helper.make_node("Relu", ["x"], ["y"]), 14, 13, ["N", 3, 4, 5], ()),  # no converter adapter 14 -> 13
    (helper.make_node("Add", ["x", "x"], ["y"]), 14, 11, ["N", 3, 4, 5], ()),
    (helper.make_node("ReduceMean", ["x", "axes"], ["y"]), 18, 13, ["N", 1, 4, 5],
     (numpy_helper.from_array(np.array([1], np.int64), "axes"),)),  # axes input -> attribute (converter)
])
def test_downgrades_keep_outputs(node: onnx.NodeProto, opset: int, target: int, out: list[object],
                                 inits: tuple[onnx.TensorProto, ...]) -> None:
    model = _model(node, opset, out, inits)
    converted = convert_opset(model, target, np.random.default_rng(0))
    assert _opset(converted) == target and _opset(model) == opset
    onnx.checker.check_model(converted, full_check=True)
    assert output_diff(model, converted, np.random.default_rng(1), batch=3)[0] <= 1e-6


@pytest.mark.parametrize(("node", "opset", "target", "words"), [
    (helper.make_node("HardSwish", ["x"], ["y"]), 14, 13, "HardSwish does not exist at opset 13"),
    # Softmax-11 flattens from the axis on, Softmax-13 does not: the converter relabels it anyway
    (helper.make_node("Softmax", ["x"], ["y"], axis=1), 13, 11, "the outputs change"),
    (helper.make_node("Relu", ["x"], ["y"]), 14, 99, "from opset 14 to 99"),
])
def test_impossible_conversions_are_refused_in_one_line(node: onnx.NodeProto, opset: int, target: int,
                                                        words: str) -> None:
    with pytest.raises(UnsupportedInput, match=words) as info:
        convert_opset(_model(node, opset, ["N", 3, 4, 5]), target, np.random.default_rng(0))
    assert "\n" not in str(info.value) and "--opset" in str(info.value)
