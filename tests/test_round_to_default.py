"""compress's default rounding: multiples of 8 where they can meet the target, else free widths (warned)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.compat import make_model
from onnxprune.io import save_model
from onnxprune.pipeline import compress_file


def _small_cnn(path: Path) -> Path:
    """conv 3->8, conv 8->16, global pool, gemm 16->10: too narrow for multiples of 8 at most targets."""
    rng = np.random.default_rng(0)
    w = {"w1": rng.standard_normal((8, 3, 3, 3)), "w2": rng.standard_normal((16, 8, 3, 3)),
         "fc": rng.standard_normal((10, 16)), "fb": rng.standard_normal(10)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc", "fb"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
                              [numpy_helper.from_array(a.astype(np.float32), n) for n, a in w.items()])
    return save_model(make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_default_falls_back_to_free_widths_where_multiples_of_8_miss_the_target(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = _small_cnn(tmp_path / "small.onnx")
    with caplog.at_level(logging.WARNING, logger="onnxprune.pipeline.compressing"):
        auto = compress_file(model, tmp_path / "auto.onnx", target=0.3, round_to=None)
    assert auto.round_to == 1 and "using free channel counts (--round-to 1)" in caplog.text
    assert abs(auto.achieved - 0.3) <= 0.02  # free widths get close; 8s could only remove 0 % or about 42 %
    forced = compress_file(model, tmp_path / "forced.onnx", target=0.3, round_to=8)  # the user's choice stands
    assert forced.round_to == 8 and all(g.after % 8 == 0 for g in forced.groups)
