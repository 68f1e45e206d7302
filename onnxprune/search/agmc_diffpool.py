"""AGMC's DiffPool encoder-decoder (the paper's encoder for large graphs), over batches of memos.

The memos are those of :mod:`onnxprune.search.agmc_net` (``[t, a_{t-1}, h_{t-1}, c_{t-1}, keep]``).
DiffPool's soft cluster assignments mix every node of the graph, so the receptive-field trick of
:class:`~onnxprune.search.agmc_net.AGMCNet` does not apply: each memo's whole pruned graph (the
static node features plus the 4 dynamic ones rebuilt from its keep vector by
:meth:`GraphTensors.features`) goes through the :class:`~onnxprune.embed.DiffPoolEncoder`, ``B``
memos as one ``[B, N, F]`` batch of graphs of one topology. From its output:

* ``g_t``: the graph vector of the graph as pruned so far (divided by ``graph_scale``);
* ``p_t``: the mean of the first-level node embeddings over the feature maps of group ``t``
  (divided by ``scale``), as the mean-pool state's ``p_t``;
* the decoder starts from the raw graph vector of the unpruned graph at ``t = 0`` and steps
  ``s_t = Dec(s_{t-1}, a_{t-1}, [p_t, g_t])``: the DiffPool graph embedding enters every step;
* the state is ``[s_t, p_t]`` (size ``D + F'``, as with mean pooling), and the batch's DiffPool
  auxiliary loss (link prediction + entropy, summed over levels) comes with it for training.

Both scales are fixed on the unpruned graph with the initial weights (``scale``: per-column
maximum over the groups; ``graph_scale``: the largest entry of ``g``, one value for every column so
that no near-zero column is blown up) and travel with the weights.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from onnxprune.embed import DiffPoolEncoder, LSTMDecoder
from onnxprune.graph import CompGraph
from onnxprune.search.agmc_net import GraphTensors

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DiffPoolGraph:
    """Fixed tensors of one model's graph for the DiffPool state.

    Attributes:
        tensors: Static features and the keep -> dynamic features map (no receptive fields needed).
        edge_index: ``[2, E]`` undirected edges of the flat graph.
        members: ``[G, N]`` mean-pooling weights of each group's feature maps, in decision order.
    """

    tensors: GraphTensors
    edge_index: Tensor
    members: Tensor

    @property
    def num_groups(self) -> int:
        """``G``."""
        return int(self.members.shape[0])

    @classmethod
    def build(cls, cg: CompGraph, group_ids: tuple[int, ...], edge_index: Tensor) -> DiffPoolGraph:
        """Tensors of ``cg`` (groups attached), steps ordered as ``group_ids``."""
        index = cg.groups
        members = np.zeros((len(group_ids), cg.num_nodes), np.float32)
        for step, gid in enumerate(group_ids):
            rows = np.asarray(index.node_rows[index.position(gid)], dtype=np.int64)
            members[step, rows] = 1.0 / max(rows.size, 1)
        return cls(tensors=GraphTensors.build(cg, group_ids, edge_index, hops=0), edge_index=edge_index,
                   members=torch.from_numpy(members))


class AGMCDiffPoolNet(nn.Module):
    """DiffPool encoder + LSTM decoder of AGMC over batches of memos (see the module docstring).

    Args:
        in_dim: Node feature size ``F``.
        hidden: DiffPool hidden size.
        embed_dim: Embedding size ``F'`` (``p_t`` and ``g_t``).
        state_dim: Decoder state size ``D`` (``s_t``).
        clusters: Cluster counts of DiffPool's intermediate levels.
        layers: GCN layers of the first level's embed and pool networks.
        generator: Seeds the weights (encoder first, then decoder).
    """

    def __init__(self, in_dim: int, hidden: int, embed_dim: int, state_dim: int, clusters: tuple[int, ...],
                 layers: int, *, generator: torch.Generator) -> None:
        super().__init__()
        self.encoder = DiffPoolEncoder(in_dim, hidden, embed_dim, clusters, layers, generator=generator)
        self.decoder = LSTMDecoder(embed_dim, state_dim, context_dim=2 * embed_dim, generator=generator)
        self.state_dim, self.embed_dim = state_dim, embed_dim
        self.register_buffer("scale", torch.ones(embed_dim))
        self.register_buffer("graph_scale", torch.ones(embed_dim))

    @property
    def dim(self) -> int:
        """State size ``D + F'``."""
        return self.state_dim + self.embed_dim

    def encode(self, graph: DiffPoolGraph, keep: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``[B, N, F']`` node and ``[B, F']`` graph embeddings of ``[B, G]`` keep vectors, and the auxiliary loss."""
        static = graph.tensors.static
        x = torch.cat([static.expand(keep.shape[0], -1, -1), graph.tensors.features(keep)], dim=-1)
        out = self.encoder(x, graph.edge_index)
        if out.link_loss is None or out.entropy_loss is None:
            raise TypeError("DiffPoolEncoder must return its auxiliary losses")
        return out.nodes, out.graph, out.link_loss + out.entropy_loss

    @torch.no_grad()
    def calibrate(self, graph: DiffPoolGraph) -> None:
        """Fix ``scale`` and ``graph_scale`` on the unpruned graph (see the module docstring)."""
        nodes, whole, _ = self.encode(graph, torch.ones(1, graph.num_groups))
        self.scale.copy_((graph.members @ nodes[0]).abs().max(dim=0).values.clamp(min=1e-6))
        self.graph_scale.fill_(float(whole.abs().max().clamp(min=1e-6)))

    def run(self, graph: DiffPoolGraph, memo: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor], Tensor]:
        """States ``[B, D + F']`` of ``[B, 2 + 2D + G]`` memos, the decoder's new ``(h, c)`` and the auxiliary loss."""
        d = self.state_dim
        steps = memo[:, 0].long()
        prev, h, c, keep = memo[:, 1], memo[:, 2:2 + d], memo[:, 2 + d:2 + 2 * d], memo[:, 2 + 2 * d:]
        nodes, whole, aux = self.encode(graph, keep)
        pooled = torch.einsum("bn,bnf->bf", graph.members[steps], nodes) / self.scale
        h0, c0 = self.decoder.initial(whole)  # used where t = 0: the unpruned graph's vector
        first = (steps == 0).unsqueeze(1)
        h, c = torch.where(first, h0, h), torch.where(first, c0, c)
        s_t, hc = self.decoder.step(prev, (h, c), torch.cat([pooled, whole / self.graph_scale], dim=1))
        return torch.cat([s_t, pooled], dim=1), hc, aux

    def forward(self, graph: DiffPoolGraph, memo: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """States and ``(h, c)`` of :meth:`run` (as :meth:`AGMCNet.forward`)."""
        states, hc, _ = self.run(graph, memo)
        return states, hc
