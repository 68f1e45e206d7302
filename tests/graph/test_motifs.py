"""Motif hierarchy: ResNet / MobileNetV2 block counts, name and exporter independence."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from models.export import export_onnx
from onnxprune.compat import make_model
from onnxprune.graph import SINK, SOURCE, Hierarchy, build_graph, build_hierarchy
from onnxprune.load import normalize


def _hier(model) -> Hierarchy:
    return build_hierarchy(build_graph(model))


def _motif_with(hier: Hierarchy, count: int):
    found = [m for m in hier.level(2).motifs if m.count == count]
    assert len(found) == 1, [(m.count, m.label) for m in hier.level(2).motifs]
    return found[0]


def _assert_covers(hier: Hierarchy) -> None:
    """Every flat edge lies in exactly one instance of each level."""
    for k in (1, 2):
        member = hier.edge_membership(k)
        assert (member >= 0).all()
        assert sum(len(i.edges) for i in hier.level(k).instances) == member.size


@pytest.mark.parametrize(("depth", "identity"), [(20, 7), (56, 25)])
def test_resnet_blocks(zoo_model, depth: int, identity: int) -> None:
    hier = _hier(zoo_model(f"resnet{depth}"))
    assert hier.level(2).counts() == (identity, 2, 1, 1)
    ident, down = _motif_with(hier, identity), _motif_with(hier, 2)
    assert ident.fat and down.fat and ident.roles == {"body"} == down.roles
    assert (ident.ops("Conv"), ident.ops("Add"), ident.ops("Pad")) == (2, 1, 0)
    down_sigs = hier.motif_signatures(2, down.id)
    assert down_sigs["Conv/k3x3/s2x2"] == 1 and down_sigs["Conv/k3x3/s1x1"] == 1
    assert down.ops("Pad") == 1 and down.ops("Slice") == 2
    roles = Counter(role for m in hier.level(2).motifs if m.count == 1 for role in m.roles)
    assert roles == {"stem": 1, "head": 1}
    top = hier.level(2).graph
    assert (top.number_of_nodes(), top.number_of_edges()) == (identity + 2 + 3, identity + 2 + 2)
    _assert_covers(hier)


def test_identity_block_key_is_shared_across_depths(zoo_model) -> None:
    keys20 = {m.count: m.key for m in _hier(zoo_model("resnet20")).level(2).motifs}
    keys56 = {m.count: m.key for m in _hier(zoo_model("resnet56")).level(2).motifs}
    assert keys20[7] == keys56[25] and keys20[2] == keys56[2]


def test_mobilenetv2_inverted_residuals(zoo_model) -> None:
    hier = _hier(zoo_model("mobilenetv2"))
    blocks = hier.level(2).motifs
    with_skip = [m for m in blocks if m.fat and m.ops("Add") == 1 and m.ops("Conv") == 3]
    without = [m for m in blocks if not m.fat and m.ops("Add") == 0 and m.ops("Conv") == 3]
    assert len(with_skip) == 1 and len(without) == 1
    for motif in (with_skip[0], without[0]):
        sigs = hier.motif_signatures(2, motif.id)
        assert sum(c for s, c in sigs.items() if s.endswith("/dw")) == 1
        assert sum(c for s, c in sigs.items() if s.startswith("Conv/k1x1")) == 2
        assert motif.count == 2 and motif.ops("Clip") == 2
    assert hier.motif_signatures(2, without[0].id)["Conv/k3x3/s2x2/dw"] == 1
    _assert_covers(hier)


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2"])
def test_torchscript_and_dynamo_agree(zoo_model, name: str) -> None:
    ts, dyn = _hier(zoo_model(name, "torchscript")), _hier(zoo_model(name, "dynamo"))
    for k in (1, 2):
        assert ts.level(k).counts() == dyn.level(k).counts()
    assert sorted(m.key for m in ts.level(2).motifs if "body" in m.roles) == sorted(
        m.key for m in dyn.level(2).motifs if "body" in m.roles)


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2"])
def test_detection_ignores_names_and_node_order(zoo_model, renamed, name: str) -> None:
    model = zoo_model(name)
    ref = _hier(model)
    for seed in range(2):
        other = _hier(normalize(renamed(model.proto, np.random.default_rng(seed))))
        for k in (1, 2):
            assert [(m.count, m.key) for m in other.level(k).motifs] == [(m.count, m.key) for m in ref.level(k).motifs]


class _SiluBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x)
        h = h * torch.sigmoid(h)
        return x + self.conv2(h)


def test_compound_activation_stays_inside_blocks() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.SiLU(), _SiluBlock(), nn.SiLU(), _SiluBlock(),
                        nn.SiLU(), _SiluBlock(), nn.SiLU()).eval()
    hier = _hier(normalize(export_onnx(net, (1, 3, 8, 8))))
    assert hier.level(2).counts() == (3, 1)  # stem, then 3 blocks each ending with x * sigmoid(x)
    block, stem = hier.level(2).motifs
    assert block.roles == {"body", "head"} and stem.roles == {"stem"}
    assert (block.ops("Conv"), block.ops("Sigmoid"), block.ops("Mul"), block.ops("Add")) == (2, 2, 2, 1)
    assert (stem.ops("Conv"), stem.ops("Sigmoid"), stem.ops("Mul")) == (1, 1, 1)


def _two_in_two_out() -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones((4, 4, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Relu", ["a"], ["ra"]), helper.make_node("Relu", ["b"], ["rb"]),
             helper.make_node("Add", ["ra", "rb"], ["s"]), helper.make_node("Conv", ["s", "w"], ["c"]),
             helper.make_node("Relu", ["c"], ["y1"]), helper.make_node("Sigmoid", ["c"], ["y2"])]
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4, 2, 2]) for n in ("a", "b", "y1", "y2")]
    graph = helper.make_graph(nodes, "g", vi[:2], vi[2:], [w])
    return make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_multi_input_output_uses_virtual_endpoints() -> None:
    hier = _hier(normalize(_two_in_two_out()))
    top = hier.level(2)
    entries = {i.entry for i in top.instances}
    exits = {i.exit for i in top.instances}
    assert SOURCE in entries and SINK in exits
    assert {i.role for i in top.instances} <= {"stem", "head", "body", "whole"}
    _assert_covers(hier)
