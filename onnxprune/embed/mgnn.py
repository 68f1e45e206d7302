"""Multi-stage GNN (m-GNN) of GNN-RL over the motif hierarchy."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing, global_mean_pool
from torch_geometric.utils import degree

from onnxprune.embed.data import INSTANCE_FEATURES, HierInputs
from onnxprune.embed.init import reset_parameters_
from onnxprune.graph.features import NODE_FEATURES, OP_FEATURES

logger = logging.getLogger(__name__)


class MotifConv(MessagePassing):
    r"""Motif message passing of GNN-RL, with edge features gating the messages.

    .. math::
        \mathbf{h}_i' = \frac{1}{c_i} \Big( \sum_{(j \to i) = k} \mathbf{W}_{\rightarrow}
        (\mathbf{h}_j \circ \mathbf{e}_k) + \sum_{(i \to j) = k} \mathbf{W}_{\leftarrow}
        (\mathbf{h}_j \circ \mathbf{e}_k) \Big) + \mathbf{W}_0 \mathbf{h}_i

    where :math:`\mathbf{e}_k` is the feature (motif embedding) of edge :math:`k`,
    :math:`\circ` the element-wise product and :math:`c_i` the number of edges at :math:`i`.
    Messages flow both along and against the edge direction, each with its own weight;
    ``root_weight=False`` drops :math:`\mathbf{W}_0`, and with a single direction that is the
    paper's :math:`\mathbf{h}_i' = \sum_j (1/c_i)\, \mathbf{W} (\mathbf{h}_j \circ \mathbf{e}_k)`.

    Args:
        channels: Size :math:`F` of node and edge features.
        out_channels: Output size :math:`F'`.
        root_weight: Add the node's own transformed features.

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, F)`, edge indices :math:`(2, |\mathcal{E}|)`,
          edge features :math:`(|\mathcal{E}|, F)`
        - **output:** node features :math:`(|\mathcal{V}|, F')`
    """

    def __init__(self, channels: int, out_channels: int, *, root_weight: bool = True) -> None:
        super().__init__(aggr="add")
        self.lin_fwd = nn.Linear(channels, out_channels, bias=False)
        self.lin_bwd = nn.Linear(channels, out_channels, bias=False)
        self.lin_root = nn.Linear(channels, out_channels) if root_weight else None

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        """Apply one round of motif message passing (see the class docstring)."""
        n = x.size(0)
        fwd = self.propagate(edge_index, x=x, edge_attr=edge_attr, size=(n, n))
        bwd = self.propagate(edge_index.flip(0), x=x, edge_attr=edge_attr, size=(n, n))
        count = (degree(edge_index[1], n) + degree(edge_index[0], n)).clamp(min=1.0).unsqueeze(-1)
        out = (self.lin_fwd(fwd) + self.lin_bwd(bwd)) / count
        return out + self.lin_root(x) if self.lin_root is not None else out

    def message(self, x_j: Tensor, edge_attr: Tensor) -> Tensor:
        """Message :math:`\\mathbf{h}_j \\circ \\mathbf{e}_k`."""
        return x_j * edge_attr


@dataclass(frozen=True)
class MGNNOutput:
    """Result of :class:`MGNN`.

    Attributes:
        nodes: ``[N_top, F]`` embeddings of the top-level nodes.
        graph: ``[F]`` graph embedding (mean of ``nodes``).
        motifs: Per level, ``[M_l, F]`` embeddings of the distinct motifs.
    """

    nodes: Tensor
    graph: Tensor
    motifs: tuple[Tensor, ...]


class MGNN(nn.Module):
    r"""m-GNN of GNN-RL: embed each distinct motif once, then the upper graph.

    Stage one, level by level from the bottom: every distinct motif graph starts from one
    learned node state :math:`\mathbf{h}^{(0)}`, its edges carry the embeddings of the children
    (level 1: :math:`\mathbf{U}_{op}\mathbf{o}` of the op features; level 2: level-1 motif
    embeddings), ``layers`` :class:`MotifConv` rounds with ReLU follow, and mean pooling gives
    the motif embedding :math:`\mathbf{m}`. Stage two runs ``layers`` rounds on the top graph:

    .. math::
        \mathbf{h}^{(0)}_i = \mathrm{ReLU}(\mathbf{U}_x \mathbf{x}_i), \quad
        \mathbf{e}_k = \mathbf{m}_{\mathrm{motif}(k)} + \mathbf{U}_f \mathbf{f}_k, \quad
        \mathbf{h}_i^{(l+1)} = \mathrm{ReLU}\big(\mathrm{MotifConv}(\mathbf{h}^{(l)}, \mathbf{e})_i\big),
        \quad \mathbf{g} = \frac{1}{|\mathcal{V}|}\sum_i \mathbf{h}^{(L)}_i

    where :math:`\mathbf{f}_k` are the instance's current features (MACs share, keep ratio, ...).

    Args:
        hidden: Embedding size :math:`F`.
        levels: Number of motif levels (2 for :func:`~onnxprune.graph.motifs.build_hierarchy`).
        layers: Message-passing rounds per stage.
        node_dim: Size of the top-level node features.
        op_dim: Size of the op features.
        instance_dim: Size of the instance features.
        generator: Seeds the parameters (same generator state -> same module).

    Shapes:
        - **input:** :class:`~onnxprune.embed.data.HierInputs` with :math:`N` top nodes,
          :math:`E` top edges and :math:`M_l` motifs on level :math:`l`
        - **output:** :class:`MGNNOutput`: nodes :math:`(N, F)`, graph :math:`(F,)`,
          motifs :math:`(M_l, F)` per level
    """

    def __init__(self, hidden: int = 64, levels: int = 2, layers: int = 2, *, generator: torch.Generator,
                 node_dim: int = len(NODE_FEATURES), op_dim: int = len(OP_FEATURES),
                 instance_dim: int = len(INSTANCE_FEATURES)) -> None:
        super().__init__()
        self.op_proj = nn.Linear(op_dim, hidden)
        self.motif_init = nn.ParameterList(nn.Parameter(torch.zeros(hidden)) for _ in range(levels))
        self.motif_convs = nn.ModuleList(nn.ModuleList(MotifConv(hidden, hidden) for _ in range(layers))
                                         for _ in range(levels))
        self.node_proj = nn.Linear(node_dim, hidden)
        self.instance_proj = nn.Linear(instance_dim, hidden)
        self.top_convs = nn.ModuleList(MotifConv(hidden, hidden) for _ in range(layers))
        reset_parameters_(self, generator)

    def embed_motifs(self, inputs: HierInputs) -> tuple[Tensor, ...]:
        """Stage one: ``[M_l, F]`` embedding of every distinct motif, per level."""
        child = self.op_proj(inputs.signature_x)
        out = []
        for level, graphs in enumerate(inputs.motifs):
            h = self.motif_init[level].expand(graphs.batch.numel(), -1)
            edge = child[graphs.edge_child]
            for conv in self.motif_convs[level]:
                h = torch.relu(conv(h, graphs.edge_index, edge))
            child = global_mean_pool(h, graphs.batch, size=graphs.num_motifs)
            out.append(child)
        return tuple(out)

    def forward(self, inputs: HierInputs) -> MGNNOutput:
        """Embed the hierarchy (see the class docstring)."""
        motifs = self.embed_motifs(inputs)
        h = torch.relu(self.node_proj(inputs.x))
        edge = motifs[-1][inputs.edge_motif] + self.instance_proj(inputs.edge_attr)
        for conv in self.top_convs:
            h = torch.relu(conv(h, inputs.edge_index, edge))
        return MGNNOutput(nodes=h, graph=h.mean(dim=0), motifs=motifs)
