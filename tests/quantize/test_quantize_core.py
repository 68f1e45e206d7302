"""Bits plans, grids, simulated models and BOPs (issue 16 acceptance: simulation and cost)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.errors import PlanError
from onnxprune.evaluate import Runtime
from onnxprune.load import load
from onnxprune.quantize import (QuantPlan, bops_report, calibrate, fake_quant_activation, find_layers,
                                quantize_weight, simulate, uniform_plan)
from quant_models import ZOO, feeds_for

RT = Runtime("cpu", 1)


def _tiny(tmp_path, seed: int = 0, cin: int = 4):
    """x(1,cin,6,6) -> Conv(8, 3x3, pad 1) -> Relu -> GlobalAveragePool -> Flatten -> Gemm(8 -> 3)."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.uniform(-1, 1, (8, cin, 3, 3)).astype(np.float32), "w")
    g = numpy_helper.from_array(rng.uniform(-1, 1, (3, 8)).astype(np.float32), "g")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["p"], name="gap"),
             helper.make_node("Flatten", ["p"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "g"], ["y"], transB=1, name="fc")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", cin, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])], [w, g])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "tiny.onnx"
    onnx.save(model, path)
    return load(path)


def test_four_bit_weights_take_exactly_16_values_per_channel(tmp_path):
    model = _tiny(tmp_path, cin=64)  # 576 weights per output channel
    sim = simulate(model.proto, QuantPlan({"conv": (4, 32)}), {})
    w = numpy_helper.to_array(next(t for t in sim.graph.initializer if t.name == "w"))
    assert [len(np.unique(w[c])) for c in range(8)] == [16] * 8
    for bits in (2, 3, 5, 6, 8):
        q = quantize_weight(np.random.default_rng(bits).uniform(-1, 1, (4, 2000)).astype(np.float32), bits, 0)
        assert [len(np.unique(row)) for row in q] == [2 ** bits] * 4


def test_simulation_equals_the_numpy_grids(tmp_path):
    model = _tiny(tmp_path)
    x = feeds_for(model.proto, 5)
    ranges = calibrate(model.proto, x, ["x", "f"], runtime=RT)
    plan = QuantPlan({"conv": (3, 6), "fc": (5, 4)})
    got = RT.create(simulate(model.proto, plan, ranges)).run(x)[0]
    w = quantize_weight(numpy_helper.to_array(model.proto.graph.initializer[0]), 3, 0)
    g = quantize_weight(numpy_helper.to_array(model.proto.graph.initializer[1]), 5, 0)
    xq = fake_quant_activation(x["x"], 6, *ranges["x"])
    import torch
    c = torch.nn.functional.conv2d(torch.from_numpy(xq), torch.from_numpy(w), padding=1).relu().mean((2, 3)).numpy()
    want = fake_quant_activation(c, 4, *ranges["f"]) @ g.T
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert ranges["f"][0] >= 0.0  # post-ReLU mean: non-negative


@pytest.mark.parametrize("name", ZOO)
def test_sixteen_bit_activations_equal_float_and_w8a8_stays_close(zoo_model, name):
    _, model = zoo_model(name)
    layers = find_layers(model.proto)
    x = feeds_for(model.proto, 8)
    ranges = calibrate(model.proto, x, [q.activation for q in layers], runtime=RT)
    ref = RT.create(model.proto).run(x)[0]
    scale = np.abs(ref).max()
    a16 = RT.create(simulate(model.proto, uniform_plan([q.node for q in layers], 32, 16), ranges)).run(x)[0]
    assert np.abs(a16 - ref).max() / scale < 1e-3
    w8a8 = RT.create(simulate(model.proto, uniform_plan([q.node for q in layers], 8, 8), ranges)).run(x)[0]
    assert np.abs(w8a8 - ref).max() / scale < 0.06  # stated tolerance: 6 % of the output's peak
    onnx.checker.check_model(simulate(model.proto, uniform_plan([q.node for q in layers], 4, 8), ranges))


def test_bops_equal_a_hand_count(tmp_path):
    model = _tiny(tmp_path)
    conv_macs, fc_macs = 8 * 4 * 9 * 36, 8 * 3
    report = bops_report(model, QuantPlan({"conv": (4, 8)}))
    assert report.bops == conv_macs * 32 + fc_macs * 1024
    assert report.bops_float32 == (conv_macs + fc_macs) * 1024
    assert report.bops_int8 == (conv_macs + fc_macs) * 64
    assert report.bytes == report.bytes_float32 - 8 * 4 * 9 * 4 + 8 * 4 * 9 // 2


def test_plan_json_round_trip_and_bad_plans(tmp_path):
    plan = QuantPlan({"conv": (4, 8), "fc": (32, 32)})
    path = tmp_path / "bits.json"
    path.write_text(json.dumps(plan.to_json()))
    assert QuantPlan.read(str(path)) == plan
    with pytest.raises(PlanError, match="weight bits 7"):
        QuantPlan({"conv": (7, 8)})
    with pytest.raises(PlanError, match="activation bits 12"):
        QuantPlan({"conv": (8, 12)})
    with pytest.raises(PlanError, match="unknown layer"):
        simulate(_tiny(tmp_path).proto, QuantPlan({"nope": (8, 8)}), {})
    with pytest.raises(PlanError, match="malformed"):
        QuantPlan.from_json({"layers": {"conv": {"w": "x"}}})


def test_calibration_methods_order(tmp_path):
    model = _tiny(tmp_path)
    x = feeds_for(model.proto, 64)
    ranges = {m: calibrate(model.proto, x, ["c"], method=m, percentile=99.0, runtime=RT)["c"]
              for m in ("minmax", "percentile", "entropy")}
    lo, hi = ranges["minmax"]
    for m in ("percentile", "entropy"):
        assert lo <= ranges[m][0] <= 0.0 <= ranges[m][1] <= hi
    assert ranges["percentile"][1] < hi  # the extreme tail is cut
