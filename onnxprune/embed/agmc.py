"""AGMC encoder-decoder: GCN + Mean Pool or GCN + DiffPool encoders, LSTM decoder."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch_geometric.nn import DenseGCNConv, GCNConv, dense_diff_pool, global_mean_pool
from torch_geometric.nn.conv.gcn_conv import gcn_norm

from onnxprune.embed.init import reset_parameters_

logger = logging.getLogger(__name__)
EPS = 1e-15


@dataclass(frozen=True)
class EncoderOutput:
    """Node embeddings ``[N, F']`` and graph embeddings ``[B, F']``; DiffPool adds its losses."""

    nodes: Tensor
    graph: Tensor
    link_loss: Tensor | None = None
    entropy_loss: Tensor | None = None


def _gcn_stack(in_dim: int, hidden: int, out_dim: int, layers: int) -> nn.ModuleList:
    dims = [in_dim] + [hidden] * (layers - 1) + [out_dim]
    return nn.ModuleList(GCNConv(a, b) for a, b in zip(dims[:-1], dims[1:]))


def _run(convs: nn.ModuleList, x: Tensor, *args: Tensor) -> Tensor:
    for i, conv in enumerate(convs):
        x = conv(x, *args)
        if i < len(convs) - 1:
            x = torch.relu(x)
    return x


def _adjacency(edge_index: Tensor, n: int, *, normalize: bool) -> Tensor:
    """Sparse ``[N, N]`` matrix ``A[dst, src]``: GCN's ``D^-1/2 (A + I) D^-1/2`` or the plain 0/1 adjacency."""
    if normalize:
        index, weight = gcn_norm(edge_index, None, n, add_self_loops=True)
    else:
        index, weight = edge_index, torch.ones(edge_index.size(1))
    return torch.sparse_coo_tensor(index.flip(0), weight.float(), (n, n), check_invariants=False).coalesce()


def _spmm(adj: Tensor, x: Tensor) -> Tensor:
    """``adj @ x`` for ``x [..., N, F]`` (leading dims: graphs of one topology) as one sparse product."""
    n, f = x.shape[-2:]
    flat = x.reshape(-1, n, f).transpose(0, 1).reshape(n, -1)
    return (adj @ flat).reshape(n, -1, f).transpose(0, 1).reshape(x.shape[:-1] + (f,))


def _run_sparse(convs: nn.ModuleList, x: Tensor, adj: Tensor) -> Tensor:
    """:func:`_run` of :class:`GCNConv` layers with the normalized adjacency ``adj`` given (batched ``x``)."""
    for i, conv in enumerate(convs):
        x = _spmm(adj, conv.lin(x)) + conv.bias
        if i < len(convs) - 1:
            x = torch.relu(x)
    return x


class GCNEncoder(nn.Module):
    r"""AGMC encoder for small graphs: GCN layers, then Mean Pool.

    .. math::
        \mathbf{H}^{(l+1)} = \sigma\big(\hat{\mathbf{D}}^{-1/2} \hat{\mathbf{A}}
        \hat{\mathbf{D}}^{-1/2} \mathbf{H}^{(l)} \mathbf{W}^{(l)}\big), \qquad
        \mathbf{g} = \frac{1}{|\mathcal{V}|} \sum_{i} \mathbf{H}^{(L)}_i

    with :math:`\hat{\mathbf{A}} = \mathbf{A} + \mathbf{I}`, :math:`\sigma` = ReLU between
    layers and none after the last.

    Args:
        in_dim: Node feature size :math:`F`.
        hidden: Hidden size.
        out_dim: Embedding size :math:`F'`.
        layers: Number of GCN layers (>= 1).
        generator: Seeds the parameters.

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, F)`, edge indices :math:`(2, |\mathcal{E}|)`
          (give both directions), optional batch vector :math:`(|\mathcal{V}|)`
        - **output:** :class:`EncoderOutput`: nodes :math:`(|\mathcal{V}|, F')`, graph :math:`(B, F')`
    """

    def __init__(self, in_dim: int, hidden: int = 64, out_dim: int = 64, layers: int = 3, *,
                 generator: torch.Generator) -> None:
        super().__init__()
        self.convs = _gcn_stack(in_dim, hidden, out_dim, layers)
        reset_parameters_(self, generator)

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor | None = None) -> EncoderOutput:
        """Embed nodes and pool them per graph."""
        nodes = _run(self.convs, x, edge_index)
        return EncoderOutput(nodes=nodes, graph=global_mean_pool(nodes, batch))


class DiffPoolEncoder(nn.Module):
    r"""AGMC encoder for large graphs: GCN + differentiable pooling down to one cluster.

    Each level :math:`l` with adjacency :math:`\mathbf{A}^{(l)}` and features :math:`\mathbf{X}^{(l)}`:

    .. math::
        \mathbf{Z} = \mathrm{GCN}_{embed}(\mathbf{A}, \mathbf{X}), \quad
        \mathbf{M} = \mathrm{softmax}(\mathrm{GCN}_{pool}(\mathbf{A}, \mathbf{X})), \quad
        \mathbf{X}' = \mathbf{M}^\top \mathbf{Z}, \quad \mathbf{A}' = \mathbf{M}^\top \mathbf{A} \mathbf{M}

    The first level stays sparse (its GCN propagation and :math:`\mathbf{A}\mathbf{M}` are sparse
    matrix products, one for a whole batch of graphs; never a dense :math:`N \times N` matrix),
    later levels are dense; the last level has one cluster, so
    :math:`\mathbf{g} = \mathbf{W}_o \sum_k \mathrm{GCN}_{embed}(\mathbf{A}, \mathbf{X})_k`.
    Link loss :math:`\lVert \mathbf{A} - \mathbf{M}\mathbf{M}^\top \rVert_F / N^2` (computed
    sparsely) and entropy loss :math:`\frac{1}{N}\sum_i H(\mathbf{M}_i)` are summed over levels.

    Args:
        in_dim: Node feature size :math:`F`.
        hidden: Hidden size.
        out_dim: Embedding size :math:`F'`.
        clusters: Cluster counts of the intermediate levels (the final single cluster is added).
        layers: GCN layers per embed / pool network.
        generator: Seeds the parameters.

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, F)` or :math:`(B, |\mathcal{V}|, F)` (``B``
          graphs of one topology), edge indices :math:`(2, |\mathcal{E}|)` of one graph (give both
          directions, no duplicates)
        - **output:** :class:`EncoderOutput`: nodes :math:`([B,] |\mathcal{V}|, F')` (first-level
          embeddings), graph :math:`(B, F')` (:math:`B = 1` for one graph), scalar losses (for a
          batch, as :func:`~torch_geometric.nn.dense_diff_pool`: link norm over the batch / :math:`B N^2`,
          entropy averaged)
    """

    def __init__(self, in_dim: int, hidden: int = 64, out_dim: int = 64, clusters: tuple[int, ...] = (32, 4),
                 layers: int = 2, *, generator: torch.Generator) -> None:
        super().__init__()
        if not clusters:
            raise ValueError("clusters must name at least one intermediate level, e.g. (32,)")
        self.embed0 = _gcn_stack(in_dim, hidden, hidden, layers)
        self.pool0 = _gcn_stack(in_dim, hidden, clusters[0], layers)
        self.embed = nn.ModuleList(DenseGCNConv(hidden, hidden) for _ in clusters[1:])
        self.pool = nn.ModuleList(DenseGCNConv(hidden, k) for k in clusters[1:])
        self.final = DenseGCNConv(hidden, hidden)
        self.out = nn.Linear(hidden, out_dim)
        self.node_out = nn.Linear(hidden, out_dim)
        reset_parameters_(self, generator)

    def _sparse_pool(self, x: Tensor, edge_index: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """First level on ``x [..., N, F]`` (leading dims: graphs of one topology); losses over the batch."""
        norm = _adjacency(edge_index, x.size(-2), normalize=True)
        z = _run_sparse(self.embed0, x, norm)
        s = torch.softmax(_run_sparse(self.pool0, x, norm), dim=-1)
        a_s = _spmm(_adjacency(edge_index, x.size(-2), normalize=False), s)  # A M
        st = s.transpose(-1, -2)
        adj = st @ a_s  # M^T A M
        x_next = st @ z
        sq = edge_index.size(1) - 2.0 * adj.diagonal(dim1=-2, dim2=-1).sum(-1) + (st @ s).pow(2).sum((-2, -1))
        graphs = float(sq.numel())  # as dense_diff_pool: norm over the batch / (B N^2)
        link = sq.clamp(min=0.0).sum().sqrt() / (graphs * float(x.size(-2)) ** 2)
        entropy = (-s * torch.log(s + EPS)).sum(dim=-1).mean()
        return z, x_next, adj, link, entropy

    def forward(self, x: Tensor, edge_index: Tensor) -> EncoderOutput:
        """Pool the graph level by level down to one vector (``x [B, N, F]``: ``B`` graphs of one topology)."""
        z, h, adj, link, entropy = self._sparse_pool(x, edge_index)
        if x.dim() == 2:
            h, adj = h.unsqueeze(0), adj.unsqueeze(0)
        for embed, pool in zip(self.embed, self.pool):
            zl = torch.relu(embed(h, adj))
            h, adj, lk, ent = dense_diff_pool(zl, adj, pool(h, adj))
            link, entropy = link + lk, entropy + ent
        graph = self.out(torch.relu(self.final(h, adj)).sum(dim=1))
        return EncoderOutput(nodes=self.node_out(torch.relu(z)), graph=graph, link_loss=link,
                             entropy_loss=entropy)


class LSTMDecoder(nn.Module):
    r"""AGMC decoder: per-step states :math:`s_t = \mathrm{Dec}(s_{t-1}, a_{t-1})` from a graph vector.

    .. math::
        (\mathbf{h}_0, \mathbf{c}_0) = (\tanh \mathbf{W}_h \mathbf{g}, \tanh \mathbf{W}_c \mathbf{g}),
        \quad (\mathbf{h}_t, \mathbf{c}_t) = \mathrm{LSTMCell}([a_{t-1} \,\Vert\, \mathbf{u}_t],
        (\mathbf{h}_{t-1}, \mathbf{c}_{t-1})), \quad \mathbf{s}_t = \mathbf{h}_t

    with :math:`a_{-1} = 0` and :math:`\mathbf{u}_t` an optional per-step context (e.g. the
    embedding of group :math:`t`'s graph elements).

    Args:
        graph_dim: Size :math:`G` of the graph vector.
        state_dim: Size :math:`D` of the states.
        context_dim: Size :math:`C` of the per-step context (0 for none).
        generator: Seeds the parameters.

    Shapes:
        - **input:** graph vector :math:`(B, G)`, actions :math:`(B, T)`, context :math:`(B, T, C)`
        - **output:** states :math:`(B, T, D)`
    """

    def __init__(self, graph_dim: int, state_dim: int = 64, context_dim: int = 0, *,
                 generator: torch.Generator) -> None:
        super().__init__()
        self.context_dim = context_dim
        self.init_h = nn.Linear(graph_dim, state_dim)
        self.init_c = nn.Linear(graph_dim, state_dim)
        self.cell = nn.LSTMCell(1 + context_dim, state_dim)
        reset_parameters_(self, generator)

    def initial(self, graph: Tensor) -> tuple[Tensor, Tensor]:
        """``(h_0, c_0)`` from the graph vector ``[B, G]``."""
        return torch.tanh(self.init_h(graph)), torch.tanh(self.init_c(graph))

    def step(self, prev_action: Tensor, hc: tuple[Tensor, Tensor],
             context: Tensor | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """One step: ``prev_action [B]`` (and ``context [B, C]``) -> ``(s_t [B, D], (h_t, c_t))``."""
        inp = prev_action.reshape(-1, 1).to(hc[0].dtype)
        if self.context_dim:
            if context is None:
                raise ValueError(f"this decoder needs a context of size {self.context_dim} per step")
            inp = torch.cat([inp, context], dim=-1)
        h, c = self.cell(inp, hc)
        return h, (h, c)

    def forward(self, graph: Tensor, actions: Tensor, context: Tensor | None = None) -> Tensor:
        """States for all steps; step ``t`` sees ``actions[:, t - 1]`` (teacher forcing)."""
        prev = torch.cat([torch.zeros_like(actions[:, :1]), actions[:, :-1]], dim=1)
        hc = self.initial(graph)
        states = []
        for t in range(actions.size(1)):
            s, hc = self.step(prev[:, t], hc, None if context is None else context[:, t])
            states.append(s)
        return torch.stack(states, dim=1)
