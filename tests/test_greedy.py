"""ThiNet-style greedy channel selection (``--criterion greedy``)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune.analyze import analyze
from onnxprune.analyze.importance import greedy_order, weight_importance
from onnxprune.compat import make_model
from onnxprune.load import normalize
from onnxprune.pipeline import group_scores
from onnxprune.plan import ratio_plan
from onnxprune.rewrite import prune_model
from pruning_utils import run


def test_greedy_order_follows_cancelling_pairs() -> None:
    m = np.diag([2.0, 1.0, 3.0, 1.5])
    m[0, 1] = m[1, 0] = -1.0  # channels 0 and 1 cancel in part: once 1 is gone, removing 0 costs nothing
    assert greedy_order(m).tolist() == [1, 0, 3, 2]
    assert greedy_order(np.diag([2.0, 1.0, 3.0, 1.5])).tolist() == [1, 3, 0, 2]


def _cancelling_model(rng: np.random.Generator) -> onnx.ModelProto:
    """x(3) -> 1x1 Conv A (6) -> 1x1 Conv B (4): A's channels 4 and 5 are equal with large filters, and
    B reads them with opposite weights (they cancel); B barely reads channel 2."""
    wa = rng.standard_normal((6, 3, 1, 1))
    wa[4] = wa[5] = 3.0 * rng.standard_normal((3, 1, 1))
    wb = rng.standard_normal((4, 6, 1, 1))
    wb[:, 2] *= 0.01
    wb[:, 5] = -wb[:, 4]
    wb[:, 4] *= 0.1
    wb[:, 5] *= 0.1
    nodes = [helper.make_node("Conv", ["x", "wa"], ["h"], name="A"), helper.make_node("Conv", ["h", "wb"], ["y"], name="B")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 4, 4])],
                              [numpy_helper.from_array(wa.astype(np.float32), "wa"),
                               numpy_helper.from_array(wb.astype(np.float32), "wb")])
    model = make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_greedy_removes_the_cancelling_pair_and_the_unread_channel() -> None:
    rng = np.random.default_rng(0)
    analysis = analyze(normalize(_cancelling_model(rng)))
    gid = next(g.id for g in analysis.prunable_groups if "A" in g.producers)
    feeds = {"x": rng.standard_normal((50, 3, 4, 4)).astype(np.float32)}
    prunable = [g.prunable for g in analysis.groups]
    greedy = ratio_plan(group_scores(analysis, "greedy", feeds, threads=1, seed=1), prunable, 0.5)
    l1 = ratio_plan(weight_importance(analysis, "l1"), prunable, 0.5)
    assert greedy.keep[gid] == (0, 1, 3)
    assert l1.keep[gid] != (0, 1, 3)
    test = {"x": rng.standard_normal((5, 3, 4, 4)).astype(np.float32)}
    want = run(analysis.model.proto, test)[0]
    err_greedy = np.abs(run(prune_model(analysis, greedy), test)[0] - want).max()
    err_l1 = np.abs(run(prune_model(analysis, l1), test)[0] - want).max()
    assert err_greedy < 0.1 < err_l1
