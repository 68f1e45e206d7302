"""Computational graph: structure, features, group mapping and in-place state updates."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from models.resnet_cifar import resnet_cifar
from onnxprune.analyze import analyze
from onnxprune.compat import make_model
from onnxprune.errors import PlanError
from onnxprune.graph import EDGE_FEATURES, NODE_FEATURES, OP_VOCAB, build_graph
from onnxprune.load import normalize


@dataclass(frozen=True)
class Ref:
    tensor: str
    axis: int
    start: int
    stop: int


@dataclass(frozen=True)
class FakeGroup:
    id: int
    members: tuple[Ref, ...]
    producers: tuple[str, ...]
    consumers: tuple[str, ...]


def _torch_macs(module: nn.Module, hw: int = 32) -> int:
    """Conv/Linear MACs of a CIFAR ResNet computed from the torch modules (independent of ONNX)."""
    total, size = 0, hw
    for name, m in module.named_modules():
        if isinstance(m, nn.Conv2d):
            if m.stride[0] == 2:
                size //= 2
            total += m.out_channels * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1] * size * size
        elif isinstance(m, nn.Linear):
            total += m.in_features * m.out_features
    return total


def test_resnet20_structure_and_macs(zoo_model) -> None:
    cg = build_graph(zoo_model("resnet20"))
    adds = [op for op in cg.ops if op.op_type == "Add"]
    assert len(adds) == 9
    for op in adds:
        assert cg.graph.in_degree(op.outputs[0]) == 2
    assert sum(op.macs for op in cg.ops) == _torch_macs(resnet_cifar(20))
    assert sum(op.kind == "weighted" for op in cg.ops) == 20
    assert cg.graph.number_of_nodes() == cg.num_nodes and cg.graph.number_of_edges() == cg.num_edges
    assert not any(t.endswith("weight") for t in cg.tensors)  # constants are not feature maps
    x, e = cg.node_features(), cg.edge_features()
    assert x.shape == (cg.num_nodes, len(NODE_FEATURES)) and e.shape == (cg.num_edges, len(EDGE_FEATURES))
    np.testing.assert_allclose(x[:, : len(OP_VOCAB)].sum(axis=1), 1.0)
    macs_col = EDGE_FEATURES.index("macs")
    per_op = np.zeros(len(cg.ops))
    per_op[cg.edge_op] = e[:, macs_col]
    assert per_op.sum() == pytest.approx(1.0, rel=1e-5)


def test_unknown_op_maps_to_other() -> None:
    nodes = [helper.make_node("Softsign", ["x"], ["y"]), helper.make_node("Relu", ["y"], ["z"])]
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in ("x", "z")]
    model = make_model(helper.make_graph(nodes, "g", vi[:1], vi[1:]),
                              opset_imports=[helper.make_opsetid("", 17)])
    cg = build_graph(normalize(model))
    x = cg.node_features()
    assert x[cg.row["y"], OP_VOCAB.index("Other")] == 1.0 and x[cg.row["z"], OP_VOCAB.index("Relu")] == 1.0
    assert x[cg.row["x"], OP_VOCAB.index("Input")] == 1.0


def _concat_model() -> onnx.ModelProto:
    """Two convs (4 and 6 channels) concatenated, then a 1x1 conv: two groups share one tensor."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=s).astype(np.float32), n)
             for n, s in (("w1", (4, 3, 1, 1)), ("w2", (6, 3, 1, 1)), ("w3", (5, 10, 1, 1)))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="c1"),
             helper.make_node("Conv", ["x", "w2"], ["b"], name="c2"),
             helper.make_node("Concat", ["a", "b"], ["cat"], axis=1, name="cat"),
             helper.make_node("Conv", ["cat", "w3"], ["y"], name="c3")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, 4, 4])], inits)
    return make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_group_mapping_and_inplace_update() -> None:
    cg = build_graph(normalize(_concat_model()))
    groups = (FakeGroup(0, (Ref("a", 1, 0, 4), Ref("cat", 1, 0, 4), Ref("w1", 0, 0, 4)), ("c1",), ("c3",)),
              FakeGroup(1, (Ref("b", 1, 0, 6), Ref("cat", 1, 4, 10)), ("c2",), ("c3",)))
    cg = cg.with_groups(groups)
    el = cg.group_elements(0)
    assert set(el.nodes) == {"a", "cat"} and set(el.ops) == {"c1", "c3"}
    assert {(u, v) for u, v, _ in el.edges} == {("x", "a"), ("cat", "y")}
    graph_before, static_before = cg.graph, cg.node_static.copy()
    macs = np.asarray([op.macs for op in cg.ops], dtype=float)
    cg.set_keep({0: 0.5})
    keep = cg.state.tensor_keep
    assert keep[cg.row["a"]] == 0.5 and keep[cg.row["b"]] == 1.0
    assert keep[cg.row["cat"]] == pytest.approx((2 + 6) / 10)
    cg.set_keep({1: 0.5})
    assert keep is not cg.state.tensor_keep and cg.state.tensor_keep[cg.row["cat"]] == pytest.approx(0.5)
    expected = (macs[0] * 0.5 + macs[1] * 0.5 + macs[3] * 0.5) / macs.sum()
    assert cg.op_dynamic()[:, 3].sum() == pytest.approx(expected)
    cg.set_bits({1: 8})
    assert cg.state.tensor_bits[cg.row["cat"]] == pytest.approx((4 * 32 + 6 * 8) / 10)
    x = cg.node_features()
    assert x[cg.row["b"], NODE_FEATURES.index("bits")] == pytest.approx(0.25)
    assert cg.graph is graph_before and np.array_equal(cg.node_static, static_before)
    with pytest.raises(PlanError):
        cg.set_keep({0: 1.5})
    with pytest.raises(PlanError):
        cg.set_keep({7: 0.5})


def test_analyze_groups_map_onto_graph(zoo_model) -> None:
    model = zoo_model("resnet20")
    analysis = analyze(model)
    cg = build_graph(model).with_groups(analysis.groups)
    for group in analysis.groups:
        el = cg.group_elements(group.id)
        assert set(el.nodes) == {m.tensor for m in group.members if m.tensor in cg.row}
        assert set(el.ops) == set(group.producers) | set(group.consumers)
        assert el.edges and all(cg.graph.edges[e]["op"] in el.ops for e in el.edges)
    inner = next(g for g in analysis.prunable_groups if len(g.producers) == 1 and len(g.consumers) == 1)
    before = cg.op_dynamic()[:, 3].sum()
    cg.set_keep({inner.id: 0.25})
    removed = sum(cg.ops[cg.op_row[n]].macs for n in (*inner.producers, *inner.consumers)) * 0.75
    total = sum(op.macs for op in cg.ops)
    assert before - cg.op_dynamic()[:, 3].sum() == pytest.approx(removed / total, rel=1e-5)
    for m in inner.members:
        if m.tensor in cg.row:
            assert cg.state.tensor_keep[cg.row[m.tensor]] == pytest.approx(0.25)
