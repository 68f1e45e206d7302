"""Encoders: documented shapes, seeded determinism, permutation invariance, re-embedding, AMC state."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch_geometric.utils import to_dense_adj

from models.export import export_onnx
from models.resnet_cifar import resnet_cifar
from onnxprune.analyze import analyze
from onnxprune.embed import (AMC_FEATURES, INSTANCE_FEATURES, MGNN, DiffPoolEncoder, GCNEncoder, HierInputs,
                             LSTMDecoder, MotifGraphs, amc_layers, amc_state, flat_data, group_layers,
                             group_pool_index, hier_inputs, make_generator, pool_groups)
from onnxprune.embed.agmc import _run
from onnxprune.graph import NODE_FEATURES, CompGraph, Hierarchy, build_graph, build_hierarchy
from onnxprune.load import Model, normalize

HIDDEN = 32


@pytest.fixture(scope="module")
def resnet20_model() -> Model:
    return normalize(export_onnx(resnet_cifar(20, seed=0), (1, 3, 32, 32)))


@pytest.fixture(scope="module")
def resnet20(resnet20_model: Model) -> tuple[CompGraph, Hierarchy]:
    cg = build_graph(resnet20_model)
    return cg, build_hierarchy(cg)


def _permute(x: torch.Tensor, edge_index: torch.Tensor, perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Node ``i`` of the result is node ``perm[i]`` of the input."""
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(perm.numel())
    return x[perm], inverse[edge_index]


def test_flat_encoder_shapes_and_permutation(resnet20) -> None:
    cg, _ = resnet20
    data = flat_data(cg)
    perm = torch.randperm(data.num_nodes, generator=torch.Generator().manual_seed(1))
    px, pe = _permute(data.x, data.edge_index, perm)
    gcn = GCNEncoder(data.num_features, HIDDEN, 16, generator=make_generator(0))
    pool = DiffPoolEncoder(data.num_features, HIDDEN, 16, clusters=(8, 3), generator=make_generator(0))
    with torch.no_grad():
        out, pout = gcn(data.x, data.edge_index), gcn(px, pe)
        d_out, d_pout = pool(data.x, data.edge_index), pool(px, pe)
    assert out.nodes.shape == (cg.num_nodes, 16) and out.graph.shape == (1, 16)
    assert d_out.nodes.shape == (cg.num_nodes, 16) and d_out.graph.shape == (1, 16)
    torch.testing.assert_close(pout.graph, out.graph, atol=1e-5, rtol=0)
    torch.testing.assert_close(d_pout.graph, d_out.graph, atol=1e-5, rtol=0)
    torch.testing.assert_close(pout.nodes, out.nodes[perm], atol=1e-5, rtol=0)
    assert out.graph.abs().sum() > 0 and torch.isfinite(d_out.link_loss) and d_out.entropy_loss > 0


def test_sparse_diffpool_link_loss_matches_dense(resnet20) -> None:
    cg, _ = resnet20
    data = flat_data(cg)
    pool = DiffPoolEncoder(data.num_features, HIDDEN, 16, clusters=(8,), generator=make_generator(3))
    with torch.no_grad():
        _, _, adj_small, link, _ = pool._sparse_pool(data.x, data.edge_index)
        dense = to_dense_adj(data.edge_index, max_num_nodes=data.num_nodes)[0]
        m = torch.softmax(_run(pool.pool0, data.x, data.edge_index), dim=-1)
        expected = torch.linalg.norm(dense - m @ m.t()) / data.num_nodes**2
        torch.testing.assert_close(link, expected, atol=1e-6, rtol=1e-4)
        torch.testing.assert_close(adj_small, m.t() @ dense @ m, atol=1e-4, rtol=1e-4)


def test_seeded_determinism(resnet20) -> None:
    cg, hier = resnet20
    data, inputs = flat_data(cg), hier_inputs(cg, hier)
    with torch.no_grad():
        a = GCNEncoder(data.num_features, generator=make_generator(5))(data.x, data.edge_index).graph
        b = GCNEncoder(data.num_features, generator=make_generator(5))(data.x, data.edge_index).graph
        c = GCNEncoder(data.num_features, generator=make_generator(6))(data.x, data.edge_index).graph
        m1 = MGNN(HIDDEN, generator=make_generator(5))(inputs).graph
        m2 = MGNN(HIDDEN, generator=make_generator(5))(inputs).graph
        m3 = MGNN(HIDDEN, generator=make_generator(6))(inputs).graph
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert torch.equal(m1, m2) and not torch.allclose(m1, m3)


def test_mgnn_shapes_and_permutation(resnet20) -> None:
    cg, hier = resnet20
    inputs = hier_inputs(cg, hier)
    model = MGNN(HIDDEN, generator=make_generator(0))
    n_top = hier.top.graph.number_of_nodes()
    assert inputs.x.shape == (n_top, len(NODE_FEATURES))
    assert inputs.edge_attr.shape == (hier.top.graph.number_of_edges(), len(INSTANCE_FEATURES))
    gen = torch.Generator().manual_seed(2)
    perm = torch.randperm(n_top, generator=gen)
    px, pe = _permute(inputs.x, inputs.edge_index, perm)
    edge_perm = torch.randperm(pe.size(1), generator=gen)
    motifs = []
    for graphs in inputs.motifs:  # shuffle the nodes inside the motif batch too
        mp = torch.randperm(graphs.batch.numel(), generator=gen)
        batch, edges = _permute(graphs.batch, graphs.edge_index, mp)
        motifs.append(MotifGraphs(edges, graphs.edge_child, batch, graphs.num_motifs))
    shuffled = HierInputs(inputs.signature_x, tuple(motifs), px, pe[:, edge_perm], inputs.edge_motif[edge_perm],
                          inputs.edge_attr[edge_perm])
    with torch.no_grad():
        out, pout = model(inputs), model(shuffled)
    assert out.nodes.shape == (n_top, HIDDEN) and out.graph.shape == (HIDDEN,)
    assert [m.shape for m in out.motifs] == [(len(lvl.motifs), HIDDEN) for lvl in hier.levels]
    torch.testing.assert_close(pout.graph, out.graph, atol=1e-5, rtol=0)
    torch.testing.assert_close(pout.nodes, out.nodes[perm], atol=1e-5, rtol=0)


@dataclass(frozen=True)
class _Ref:
    tensor: str
    axis: int
    start: int
    stop: int


@dataclass(frozen=True)
class _Group:
    id: int
    members: tuple[_Ref, ...]
    producers: tuple[str, ...]
    consumers: tuple[str, ...]


def test_reembedding_after_keep_update(resnet20) -> None:
    cg, hier = resnet20
    stem = cg.ops[0]
    local = cg.with_groups([_Group(0, (_Ref(stem.outputs[0], 1, 0, stem.c_out),), (stem.name,), ())])
    model = MGNN(HIDDEN, generator=make_generator(0))
    before = hier_inputs(local, hier)
    local.set_keep({0: 0.5})
    after = hier_inputs(local, hier)
    assert torch.equal(before.signature_x, after.signature_x) and torch.equal(before.edge_index, after.edge_index)
    changed = (before.edge_attr != after.edge_attr).any(dim=1)
    assert changed.sum() == 1 and hier.top.instances[int(changed.nonzero())].role == "stem"
    with torch.no_grad():
        assert not torch.allclose(model(before).graph, model(after).graph)


def test_lstm_decoder_steps_match_forward() -> None:
    dec = LSTMDecoder(16, 8, context_dim=3, generator=make_generator(0))
    gen = torch.Generator().manual_seed(0)
    graph, actions = torch.randn(2, 16, generator=gen), torch.rand(2, 5, generator=gen)
    ctx = torch.randn(2, 5, 3, generator=gen)
    with torch.no_grad():
        states = dec(graph, actions, ctx)
        hc, prev, stepped = dec.initial(graph), torch.zeros(2), []
        for t in range(5):
            s, hc = dec.step(prev, hc, ctx[:, t])
            stepped.append(s)
            prev = actions[:, t]
    assert states.shape == (2, 5, 8)
    torch.testing.assert_close(states, torch.stack(stepped, dim=1))


def test_amc_state(resnet20) -> None:
    cg, _ = resnet20
    layers = amc_layers(cg)
    assert len(layers) == 20
    raw = amc_state(cg, actions=[0.5, 0.25], normalize=False)
    assert raw.shape == (20, len(AMC_FEATURES))
    flops = raw[:, AMC_FEATURES.index("flops")]
    assert raw[0, AMC_FEATURES.index("n")] == 16 and raw[0, AMC_FEATURES.index("c")] == 3
    assert raw[2, AMC_FEATURES.index("reduced")] == pytest.approx(flops[0] * 0.5 + flops[1] * 0.25)
    assert raw[2, AMC_FEATURES.index("a_prev")] == 0.25 and raw[3, AMC_FEATURES.index("a_prev")] == 0.0
    np.testing.assert_allclose(raw[:, AMC_FEATURES.index("rest")], flops.sum() - np.cumsum(flops), rtol=1e-6)
    norm = amc_state(cg)
    assert norm.max() == pytest.approx(1.0) and norm.min() >= 0.0


def test_per_group_states_from_analysis(resnet20_model, resnet20) -> None:
    cg, hier = resnet20
    groups = analyze(resnet20_model).groups
    local = cg.with_groups(groups)
    n = len(groups)
    inputs = hier_inputs(local, hier)
    mgnn = MGNN(HIDDEN, generator=make_generator(0))
    dec = LSTMDecoder(HIDDEN, 16, context_dim=HIDDEN, generator=make_generator(0))
    top_index, flat_index = group_pool_index(local, hier), group_pool_index(local)
    assert set(top_index[0].tolist()) == set(range(n)) == set(flat_index[0].tolist())
    with torch.no_grad():
        out = mgnn(inputs)
        context = pool_groups(out.nodes, top_index, n)
        states = dec(out.graph.unsqueeze(0), torch.zeros(1, n), context.unsqueeze(0))
        flat_ctx = pool_groups(GCNEncoder(len(NODE_FEATURES), generator=make_generator(0))(
            *_xy(flat_data(local))).nodes, flat_index, n)
    assert context.shape == (n, HIDDEN) and flat_ctx.shape == (n, 64) and states.shape == (1, n, 16)
    assert len(group_layers(local)) == n and amc_state(local, group_layers(local)).shape == (n, len(AMC_FEATURES))


def _xy(data) -> tuple[torch.Tensor, torch.Tensor]:
    return data.x, data.edge_index
