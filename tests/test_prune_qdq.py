"""Pruning models already quantized to QDQ (ONNX Runtime ``quantize_static``, per-channel int8).

- ``prune --ratio 0.5`` on QDQ zoo models: valid, runs in ORT, groups are not frozen by Q/DQ,
  weights stay int8 behind DequantizeLinear with per-channel scales sliced along, the cost
  report's params shrink as the integer weights do.
- Zero-channel invariant: channels zeroed in the float model before quantizing have int8
  weights 0; pruning exactly those channels of the QDQ model leaves its outputs unchanged.
- Int4 weights (opset 21), the dequantized importance, and the freeze reasons of
  unsupported patterns, on small hand-built graphs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from pruning_utils import linked_closure, prune_units, random_feeds, random_plan, run, zeroed_model, zoo_model
from qdq_utils import quantize_qdq

from models.zoo import zoo_entries
from onnxprune.analyze import Analysis, analyze
from onnxprune.analyze.cost import estimate_cost, model_cost
from onnxprune.analyze.importance import weight_importance
from onnxprune.analyze.qdq import weight_value
from onnxprune.cli import main
from onnxprune.load import normalize
from onnxprune.plan import Plan
from onnxprune.rewrite import prune_model
from onnxprune.rewrite.prune import tensor_masks, unit_mask

ACCEPTANCE = ["resnet20", "vgg_bn", "mobilenetv2", "mlp"]
NAMES = [e.name for e in zoo_entries()]
_QDQ_FREEZE = ("QuantizeLinear '", "DequantizeLinear '")


def _qdq(name: str) -> onnx.ModelProto:
    return quantize_qdq(zoo_model(name, "torchscript"))


def _qdq_reasons(analysis: Analysis) -> list[str]:
    return [r for r in analysis.frozen if any(q in r for q in _QDQ_FREEZE)]


def _layer_weights(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, onnx.TensorProto, onnx.TensorProto, int]]:
    """(layer, integer data, scale, axis) of every Conv/Gemm/MatMul weight behind a DequantizeLinear."""
    inits = {t.name: t for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    found = []
    for node in model.graph.node:
        dq = producers.get(node.input[1]) if node.op_type in ("Conv", "Gemm", "MatMul") else None
        if dq is not None and dq.op_type == "DequantizeLinear":
            axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
            found.append((node, inits[dq.input[0]], inits[dq.input[1]], axis))
    return found


@pytest.mark.parametrize("name", ACCEPTANCE)
def test_prune_ratio_half_of_qdq_model(tmp_path: Path, name: str) -> None:
    source = tmp_path / "qdq.onnx"
    onnx.save(_qdq(name), source)
    float_groups = len(analyze(normalize(zoo_model(name, "torchscript"))).prunable_groups)
    analysis = analyze(normalize(onnx.load(source)))
    assert _qdq_reasons(analysis) == []
    assert len(analysis.prunable_groups) == float_groups > 0
    out, report = tmp_path / "pruned.onnx", tmp_path / "report.json"
    assert main(["prune", str(source), "--ratio", "0.5", "-o", str(out), "--json", str(report)]) == 0
    pruned = onnx.load(out)
    onnx.checker.check_model(pruned, full_check=True)
    feeds = random_feeds(analysis.model, np.random.default_rng(0))
    assert [o.shape for o in run(pruned, feeds)] == [o.shape for o in run(analysis.model.proto, feeds)]
    layers, before = _layer_weights(pruned), _layer_weights(analysis.model.proto)
    assert len(layers) == len(before) > 0
    for node, data, scale, axis in layers:
        assert data.data_type == TensorProto.INT8, node.name
        assert list(scale.dims) == [data.dims[axis]], node.name  # per-channel scale sliced with the weight
    assert sum(np.prod(d.dims) for _, d, _, _ in layers) < 0.6 * sum(np.prod(d.dims) for _, d, _, _ in before)
    cost = json.loads(report.read_text())
    assert cost["after"]["params"] == model_cost(normalize(pruned)).params < cost["before"]["params"]
    assert cost["after"]["macs"] == model_cost(normalize(pruned)).macs < cost["before"]["macs"]


def _zero_units(analysis: Analysis) -> np.ndarray:
    """Global units whose every weighted producer has zero (dequantized) filters and bias,
    and whose Pad-linked source unit is zero too."""
    graph = analysis.model.proto.graph
    inits = {t.name: t for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    nodes = {n.name: n for n in graph.node}
    zero = np.ones(analysis.unit_group.size, dtype=bool)
    for root in analysis.roots:
        if root.weight is None:
            continue
        filters = np.moveaxis(weight_value(root.weight, inits, producers), root.weight_axis, 0)
        node = nodes[root.node]
        live = np.abs(filters.reshape(filters.shape[0], -1)).sum(axis=1) > 0
        if len(node.input) > 2 and node.input[2]:
            live |= np.abs(weight_value(node.input[2], inits, producers)).reshape(-1) > 0
        units = analysis.atom_unit[root.first_atom:root.first_atom + root.size]
        zero[units[live]] = False
    links = [(analysis.group_units[k.out_group][k.out_unit], analysis.group_units[k.in_group][k.in_unit])
             for k in analysis.links]
    for _ in range(len(links) + 1):
        for out_unit, in_unit in links:
            zero[out_unit] &= zero[in_unit]
    return zero


def _zero_plan(analysis: Analysis) -> tuple[Plan, int]:
    """Plan pruning exactly the zero units of every prunable group, and how many it prunes."""
    zero = _zero_units(analysis)
    keep, count = {}, 0
    for group in analysis.prunable_groups:
        flags = zero[analysis.group_units[group.id]]
        if flags.any() and not flags.all():
            keep[group.id] = tuple(int(i) for i in np.flatnonzero(~flags))
            count += int(flags.sum())
    return Plan(keep=keep), count


def _zeroed_qdq(name: str, rng: np.random.Generator) -> tuple[onnx.ModelProto, int]:
    """A random plan's channels zeroed in the float model, then quantized; and the channel count."""
    model = normalize(zoo_model(name, "torchscript"))
    analysis = analyze(model)
    plan = random_plan(analysis, rng, p_prune=0.9)
    zero = linked_closure(analysis, prune_units(analysis, plan))
    return quantize_qdq(zeroed_model(analysis, zero)), int(zero.sum())


@pytest.mark.parametrize("name", NAMES)
def test_pruning_zero_channels_of_qdq_model_keeps_outputs(name: str) -> None:
    rng = np.random.default_rng(11)
    qdq, zeroed = _zeroed_qdq(name, rng)
    model = normalize(qdq)
    analysis = analyze(model)
    assert _qdq_reasons(analysis) == []
    if not analysis.prunable_groups or zeroed == 0:
        pytest.skip(f"{name} has no prunable group")
    plan, count = _zero_plan(analysis)
    assert count == zeroed  # exactly the channels zeroed before quantizing have int8 weights 0
    pruned = prune_model(analysis, plan)
    onnx.checker.check_model(pruned, full_check=True)
    assert estimate_cost(analysis, tensor_masks(analysis, unit_mask(analysis, plan))) == model_cost(normalize(pruned))
    feeds = random_feeds(model, rng)
    for ref, out in zip(run(model.proto, feeds), run(pruned, feeds)):
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(ref).max())))


def _dq(name: str, data: np.ndarray, scale: np.ndarray, dtype: int, axis: int = 0) -> tuple[list, onnx.NodeProto]:
    """Initializers and DequantizeLinear node of a quantized constant ``name`` (zero point 0)."""
    tensors = [helper.make_tensor(f"{name}_q", dtype, data.shape, data.ravel().tolist()),
               numpy_helper.from_array(scale.astype(np.float32), f"{name}_s"),
               helper.make_tensor(f"{name}_z", dtype, scale.shape, [0] * scale.size)]
    return tensors, helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"], [name],
                                     name=f"{name}_dq", axis=axis)


def _handmade(weight_type: int, opset: int, dead: tuple[int, ...] = ()) -> onnx.ModelProto:
    """x -> Conv(QDQ w, int32 bias) -> Relu -> Q/DQ per channel (axis 1) -> depthwise Conv(QDQ w)
    -> Conv 1x1 (QDQ w) -> y; output channels ``dead`` of the first conv have zero weights and bias."""
    rng = np.random.default_rng(5)
    low, high = (-8, 8) if weight_type == TensorProto.INT4 else (-127, 128)
    w1 = rng.integers(low, high, size=(6, 3, 3, 3))
    b1 = rng.integers(-50, 50, size=6)
    w1[list(dead)], b1[list(dead)] = 0, 0
    inits, nodes = [], []
    for name, data, dtype in (("w1", w1, weight_type), ("b1", b1, TensorProto.INT32),
                              ("w2", rng.integers(low, high, size=(6, 1, 3, 3)), weight_type),
                              ("w3", rng.integers(low, high, size=(4, 6, 1, 1)), weight_type)):
        tensors, node = _dq(name, data, rng.uniform(0.01, 0.05, size=data.shape[0]), dtype)
        inits += tensors
        nodes.append(node)
    act_scale = numpy_helper.from_array(rng.uniform(0.02, 0.06, size=6).astype(np.float32), "a_s")
    act_zero = helper.make_tensor("a_z", TensorProto.UINT8, [6], rng.integers(0, 20, size=6).tolist())
    nodes += [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
              helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
              helper.make_node("QuantizeLinear", ["r1", "a_s", "a_z"], ["q1"], name="q1", axis=1),
              helper.make_node("DequantizeLinear", ["q1", "a_s", "a_z"], ["d1"], name="d1", axis=1),
              helper.make_node("Conv", ["d1", "w2"], ["c2"], name="dw", group=6, pads=[1, 1, 1, 1]),
              helper.make_node("Conv", ["c2", "w3"], ["y"], name="conv3")]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
                              inits + [act_scale, act_zero])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize(("weight_type", "opset"), [(TensorProto.INT8, 13), (TensorProto.INT4, 21)])
def test_handmade_qdq_slices_int_weights_scales_and_depthwise(weight_type: int, opset: int) -> None:
    dead = (1, 4)
    model = normalize(_handmade(weight_type, opset, dead))
    analysis = analyze(model)
    assert analysis.frozen == ("graph output 'y' keeps its shape",)
    (group,) = analysis.prunable_groups
    assert group.size == 6 and set(group.producers) == {"conv1", "dw"}
    plan = Plan(keep={group.id: (0, 2, 3, 5)})
    pruned = prune_model(analysis, plan)
    onnx.checker.check_model(pruned, full_check=True)
    inits = {t.name: t for t in pruned.graph.initializer}
    nodes = {n.name: n for n in pruned.graph.node}
    for dq, dims, scale in (("w1_dq", [4, 3, 3, 3], 4), ("b1_dq", [4], 4), ("w2_dq", [4, 1, 3, 3], 4),
                            ("w3_dq", [4, 4, 1, 1], 4), ("q1", None, 4), ("d1", None, 4)):
        data, s, z = (inits.get(n) for n in nodes[dq].input)
        assert list(s.dims) == [scale] and list(z.dims) == [scale], dq
        if dims is not None:
            assert list(data.dims) == dims and data.data_type in (weight_type, TensorProto.INT32), dq
    assert next(a.i for a in nodes["dw"].attribute if a.name == "group") == 4
    feeds = random_feeds(model, np.random.default_rng(2))
    np.testing.assert_allclose(run(pruned, feeds)[0], run(model.proto, feeds)[0], rtol=1e-5, atol=1e-5)


def test_l1_importance_reads_dequantized_weights() -> None:
    model = normalize(_handmade(TensorProto.INT8, 13))
    analysis = analyze(model)
    inits = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.proto.graph.initializer}
    expected = np.zeros(6)
    for name in ("w1", "w2"):
        expected += np.abs(inits[f"{name}_q"] * inits[f"{name}_s"][:, None, None, None]).sum(axis=(1, 2, 3))
    (group,) = analysis.prunable_groups
    np.testing.assert_allclose(weight_importance(analysis, "l1")[group.id], expected, rtol=1e-6)


def test_unsupported_qdq_patterns_freeze_with_a_reason() -> None:
    shared = _handmade(TensorProto.INT8, 13)
    shared.graph.node.append(helper.make_node("Conv", ["d1", "w2"], ["y2"], name="dw2", group=6, pads=[1, 1, 1, 1]))
    shared.graph.node.append(helper.make_node("ReduceSum", ["y2"], ["s2"], name="sum2", keepdims=1))
    shared.graph.node.append(helper.make_node("Add", ["y", "s2"], ["y_out"], name="add_out"))
    shared.graph.output[0].name = "y_out"
    reasons = analyze(normalize(shared)).frozen
    assert any("DequantizeLinear 'w2_dq' output is read by 2 consumers" in r for r in reasons)

    blocked = _handmade(TensorProto.INT8, 21)
    q1 = next(n for n in blocked.graph.node if n.name == "w1_dq")
    inits = {t.name: t for t in blocked.graph.initializer}
    inits["w1_s"].CopyFrom(numpy_helper.from_array(np.full((6, 3, 3, 3), 0.01, np.float32), "w1_s"))
    inits["w1_z"].CopyFrom(helper.make_tensor("w1_z", TensorProto.INT8, [6, 3, 3, 3], [0] * 162))
    q1.attribute.append(helper.make_attribute("block_size", 1))
    q1.attribute[0].i = 3  # axis 3 (blocks of 1 along the kernel width)
    analysis = analyze(normalize(blocked))
    assert not analysis.prunable_groups
    assert any("uses blocked quantization (block_size), which is not supported" in r for r in analysis.frozen)

    runtime = _handmade(TensorProto.INT8, 13)
    inits = {t.name: t for t in runtime.graph.initializer}
    w3 = numpy_helper.to_array(inits["w3_q"]).astype(np.float32) * 0.02
    runtime.graph.initializer.append(numpy_helper.from_array(w3, "w3_float"))
    runtime.graph.node.insert(0, helper.make_node("QuantizeLinear", ["w3_float", "w3_s", "w3_z"], ["w3_rt"],
                                                  name="w3_quant", axis=0))
    next(n for n in runtime.graph.node if n.name == "w3_dq").input[0] = "w3_rt"
    reasons = analyze(normalize(runtime)).frozen
    assert any("reads a weight quantized at run time by QuantizeLinear 'w3_quant'" in r for r in reasons)
