"""AGMC's encoder-decoder over a batch of pruned copies of one graph, trainable end to end.

A pruned model differs from the unpruned one only in the keep ratios of its groups, and the
topology is fixed per model. So a state is rebuilt from a compact *memo*
``[t, a_{t-1}, h_{t-1} (D), c_{t-1} (D), keep (G)]`` (step, previous action, the decoder's
recurrent state before the step, the keep ratio of every group in decision order):

1. :class:`GraphTensors` holds what is fixed per model: the static node features, the
   normalized adjacency of the GCN (``Â = D^-1/2 (A + I) D^-1/2`` as weighted edges, as
   :class:`~torch_geometric.nn.GCNConv` computes it) and, per read-out (group ``t``: mean over
   its feature maps; one more for the whole graph), its *receptive field*: the read-out row
   ``R_t = P_t Â`` and the nodes and edges within ``layers - 1`` hops of it, the only ones its
   value depends on (17 of 202 nodes on average for ResNet-56's groups).
   :meth:`GraphTensors.features` rebuilds the 4 dynamic node features (keep, bits, remaining
   MACs / params share of the producer) of ``B`` keep vectors at once, exactly as
   :meth:`CompGraph.node_features` does.
2. :class:`AGMCNet` runs the :class:`~onnxprune.embed.GCNEncoder`'s weights on one disjoint
   batch of the receptive fields the memos read (a block-diagonal graph, as PyG's ``Batch``):
   the first layer as ``X_static W_s + X_dyn W_d`` (the static product shared), propagation as
   one ``index_add`` over the batch's edges, and the last layer only where it is read:
   ``pool_t = (R_t H) W + b``. The results equal the encoder run on the whole pruned graph
   (tested). Then one :class:`~onnxprune.embed.LSTMDecoder` step gives ``s_t``; the state is
   ``[s_t, pool_t / scale]``.

The same function gives the acting state (batch 1, no gradient) and the replayed states of a
DDPG update (batch 64, gradient into encoder and decoder), so both agree. Gradients through
the decoder are truncated to one step: ``h_{t-1}, c_{t-1}`` are stored in the memo as they
were when the transition was collected, except at ``t = 0`` where ``(h, c)`` is recomputed from
the graph vector, so the decoder's initial layers learn too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch_geometric.nn.conv.gcn_conv import gcn_norm

from onnxprune.embed import GCNEncoder, LSTMDecoder
from onnxprune.graph import CompGraph
from onnxprune.graph.features import shares
from onnxprune.graph.state import FLOAT_BITS

logger = logging.getLogger(__name__)

#: Trailing node-feature columns that depend on the keep ratios (see NODE_FEATURES).
DYNAMIC_FEATURES = 4


@dataclass(frozen=True)
class Receptive:
    """The nodes and edges one read-out depends on (``hops``-hop closure of its nodes).

    Attributes:
        nodes: ``[V]`` global rows of the nodes, local row = position.
        src: ``[E]`` local message sources (edges of the normalized adjacency inside ``nodes``).
        dst: ``[E]`` local message targets.
        weight: ``[E]`` normalized weights (of the whole graph, so the read nodes come out exact).
        read: ``[V]`` read-out weights ``(P Â)`` of the nodes.
    """

    nodes: Tensor
    src: Tensor
    dst: Tensor
    weight: Tensor
    read: Tensor


@dataclass(frozen=True)
class FieldBatch:
    """Several receptive fields as one disjoint graph (``M`` nodes, ``E`` edges).

    Attributes:
        rows: ``[M]`` graph row of each node.
        flat: ``[M]`` ``sample * N + row``: where its dynamic features are in ``[B * N, 4]``.
        src: ``[E]`` message sources (batch rows).
        dst: ``[E]`` message targets.
        weight: ``[E]`` normalized weights.
        read: ``[M]`` read-out weight of each node.
        owner: ``[M]`` the field (read-out) each node belongs to.
    """

    rows: Tensor
    flat: Tensor
    src: Tensor
    dst: Tensor
    weight: Tensor
    read: Tensor
    owner: Tensor


@dataclass(frozen=True)
class GraphTensors:
    """Fixed tensors of one model's graph, for batched re-embedding from keep vectors.

    Attributes:
        static: ``[N, F - 4]`` static node features.
        bits: ``[N]`` bit-width / 32 of each feature map (unchanged by pruning).
        fields: Per read-out ``k``: group ``k`` for ``k < G`` (mean over its feature maps), the
            whole graph for ``k = G``; each with the nodes and edges it depends on.
        slices: ``[A, G]`` channels each group contributes to each (tensor, axis) entry.
        axis_rest: ``[A]`` channels of the axis outside every group.
        axis_size: ``[A]`` size of the axis (0 for empty).
        tensor_axes: ``[N, m]`` axis entries of each tensor, padded with ``A`` (a column of ones).
        op_in: ``[O]`` tensor row of each op's first input (-1: none).
        op_out: ``[O]`` tensor row of each op's first output (-1: none).
        depthwise: ``[O]`` depthwise flags.
        macs: ``[O]`` MACs of each op / total MACs.
        params: ``[O]`` params of each op / total params.
        producer: ``[N]`` op row producing each tensor (-1: graph input).
    """

    static: Tensor
    bits: Tensor
    fields: tuple[Receptive, ...]
    slices: Tensor
    axis_rest: Tensor
    axis_size: Tensor
    tensor_axes: Tensor
    op_in: Tensor
    op_out: Tensor
    depthwise: Tensor
    macs: Tensor
    params: Tensor
    producer: Tensor

    @property
    def num_groups(self) -> int:
        """``G``."""
        return int(self.slices.shape[1])

    @classmethod
    def build(cls, cg: CompGraph, group_ids: tuple[int, ...], edge_index: Tensor, hops: int) -> GraphTensors:
        """Tensors of ``cg`` (groups attached), keep vectors ordered as ``group_ids``.

        Args:
            cg: The computational graph with its groups (:meth:`CompGraph.with_groups`).
            group_ids: Group ids in decision order (the order of keep vectors and steps).
            edge_index: ``[2, E]`` undirected edges of the flat graph (:func:`flat_data`).
            hops: GCN layers before the read-out layer (the depth of each receptive field).
        """
        index, n = cg.groups, cg.num_nodes
        order = np.asarray([index.position(g) for g in group_ids], dtype=np.int64)
        step_of = np.empty_like(order)
        step_of[order] = np.arange(order.size)
        slices = np.zeros((index.axis_size.size, order.size), np.float32)
        np.add.at(slices, (index.slice_axis, step_of[index.slice_group]), index.slice_width)
        covered = np.bincount(index.slice_axis, weights=index.slice_width, minlength=index.axis_size.size)
        ei, ew = gcn_norm(edge_index, None, n, add_self_loops=True)
        ew = ew.float()
        node_sets = [np.asarray(index.node_rows[pos], dtype=np.int64) for pos in order] + [np.arange(n)]
        fields = tuple(_receptive(_readout_row(rows, n, ei, ew), ei, ew, hops) for rows in node_sets)
        feats = cg.node_features()
        ops = cg.ops
        return cls(static=torch.from_numpy(feats[:, :-DYNAMIC_FEATURES].copy()),
                   bits=torch.from_numpy(cg.state.tensor_bits / FLOAT_BITS).float(),
                   fields=fields,
                   slices=torch.from_numpy(slices),
                   axis_rest=torch.from_numpy(np.clip(index.axis_size - covered, 0.0, None)).float(),
                   axis_size=torch.from_numpy(index.axis_size.astype(np.float32)),
                   tensor_axes=_tensor_axes(index.axis_tensor, n, index.axis_size.size),
                   op_in=_long([cg.row[o.inputs[0]] if o.inputs else -1 for o in ops]),
                   op_out=_long([cg.row[o.outputs[0]] if o.outputs else -1 for o in ops]),
                   depthwise=torch.as_tensor([o.depthwise for o in ops], dtype=torch.bool),
                   macs=torch.from_numpy(shares(cg.op_macs, np.ones(len(ops)))).float(),
                   params=torch.from_numpy(shares(cg.op_params, np.ones(len(ops)))).float(),
                   producer=_long(cg.producer))

    def features(self, keep: Tensor) -> Tensor:
        """``[B, N, 4]`` dynamic node features of ``[B, G]`` keep vectors (as ``CompGraph.node_features``)."""
        size = self.axis_size
        frac = torch.where(size > 0, (self.axis_rest + keep @ self.slices.t()) / size.clamp(min=1.0),
                           torch.ones_like(size)).clamp(0.0, 1.0)
        frac = torch.cat([frac, torch.ones_like(frac[:, :1])], dim=1)
        tensor_keep = frac[:, self.tensor_axes].prod(dim=-1)  # [B, N]
        padded = torch.cat([tensor_keep, torch.ones_like(tensor_keep[:, :1])], dim=1)  # -1 reads a one
        keep_in, keep_out = padded[:, self.op_in], padded[:, self.op_out]
        factor = torch.where(self.depthwise, keep_out, keep_in * keep_out)
        zero = torch.zeros_like(factor[:, :1])
        macs = torch.cat([self.macs * factor, zero], dim=1)[:, self.producer]  # -1: graph input -> 0
        params = torch.cat([self.params * factor, zero], dim=1)[:, self.producer]
        return torch.stack([tensor_keep, self.bits.expand_as(tensor_keep), macs, params], dim=-1)

    def layout(self, samples: Tensor, targets: Tensor) -> FieldBatch:
        """One block-diagonal batch of the fields ``targets [K]`` of keep vectors ``samples [K]``."""
        fields = [self.fields[int(k)] for k in targets.tolist()]
        sizes = torch.tensor([len(f.nodes) for f in fields])
        starts = torch.cumsum(sizes, 0) - sizes
        edges = torch.tensor([len(f.src) for f in fields])
        shift = torch.repeat_interleave(starts, edges)
        n = self.static.shape[0]
        rows = torch.cat([f.nodes for f in fields])
        return FieldBatch(rows=rows, flat=rows + torch.repeat_interleave(samples * n, sizes),
                          src=torch.cat([f.src for f in fields]) + shift,
                          dst=torch.cat([f.dst for f in fields]) + shift,
                          weight=torch.cat([f.weight for f in fields]), read=torch.cat([f.read for f in fields]),
                          owner=torch.repeat_interleave(torch.arange(len(fields)), sizes))


def _long(values: object) -> Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.int64))


def _tensor_axes(axis_tensor: np.ndarray, n: int, pad: int) -> Tensor:
    """``[N, m]`` axis entries of each tensor, padded with ``pad``."""
    axes: list[list[int]] = [[] for _ in range(n)]
    for a, tensor in enumerate(axis_tensor):
        axes[int(tensor)].append(a)
    padded = np.full((n, max((len(a) for a in axes), default=1) or 1), pad, dtype=np.int64)
    for row, entries in enumerate(axes):
        padded[row, :len(entries)] = entries
    return torch.from_numpy(padded)


def _readout_row(rows: np.ndarray, n: int, ei: Tensor, ew: Tensor) -> Tensor:
    """``[N]`` row ``P Â`` of the mean over ``rows`` (``Â[dst, src] = w``), without an ``N x N`` matrix."""
    pool = torch.zeros(n)
    pool[torch.from_numpy(rows)] = 1.0 / max(len(rows), 1)
    return torch.zeros(n).index_add_(0, ei[0], pool[ei[1]] * ew)


def _receptive(row: Tensor, ei: Tensor, ew: Tensor, hops: int) -> Receptive:
    """The ``hops``-hop closure of the nonzero entries of read-out ``row`` and its inner edges."""
    inside = row != 0
    for _ in range(hops):
        inside = inside | torch.zeros_like(inside).index_fill_(0, ei[0][inside[ei[1]]], True)
    nodes = torch.nonzero(inside).flatten()
    local = torch.full_like(inside, -1, dtype=torch.long)
    local[nodes] = torch.arange(len(nodes))
    keep = inside[ei[0]] & inside[ei[1]]
    return Receptive(nodes=nodes, src=local[ei[0][keep]], dst=local[ei[1][keep]], weight=ew[keep], read=row[nodes])


class AGMCNet(nn.Module):
    """GCN encoder + LSTM decoder of AGMC over batches of memos (see the module docstring).

    Args:
        in_dim: Node feature size ``F``.
        hidden: GCN hidden size.
        embed_dim: Embedding size ``F'`` (``p_t``).
        state_dim: Decoder state size ``D`` (``s_t``).
        layers: GCN layers (>= 2).
        generator: Seeds the weights (encoder first, then decoder).
    """

    def __init__(self, in_dim: int, hidden: int, embed_dim: int, state_dim: int, layers: int, *,
                 generator: torch.Generator) -> None:
        super().__init__()
        if layers < 2:
            raise ValueError(f"AGMCNet needs 2 or more GCN layers, got {layers}")
        self.encoder = GCNEncoder(in_dim, hidden, embed_dim, layers, generator=generator)
        self.decoder = LSTMDecoder(embed_dim, state_dim, context_dim=embed_dim, generator=generator)
        self.state_dim, self.embed_dim = state_dim, embed_dim
        self.register_buffer("scale", torch.ones(embed_dim))

    @property
    def dim(self) -> int:
        """State size ``D + F'``."""
        return self.state_dim + self.embed_dim

    def embed(self, graph: GraphTensors, keep: Tensor, samples: Tensor, targets: Tensor) -> Tensor:
        """``[K, F']`` read-outs ``targets [K]`` (group ``k < G`` or the graph ``G``) of keep vectors ``samples``.

        Args:
            graph: The model's fixed tensors.
            keep: ``[B, G]`` keep vectors.
            samples: ``[K]`` row of ``keep`` of each read-out.
            targets: ``[K]`` which read-out.
        """
        convs = self.encoder.convs
        lay = graph.layout(samples, targets)
        w = convs[0].lin.weight
        split = w.shape[1] - DYNAMIC_FEATURES
        dynamic = graph.features(keep).reshape(-1, DYNAMIC_FEATURES)[lay.flat]
        z = (graph.static @ w[:, :split].t())[lay.rows] + dynamic @ w[:, split:].t()
        for i, conv in enumerate(convs[:-1]):
            if i > 0:
                z = conv.lin(z)
            msgs = z[lay.src] * lay.weight[:, None]
            z = torch.relu(torch.zeros_like(z).index_add_(0, lay.dst, msgs) + conv.bias)
        pooled = torch.zeros(len(targets), z.shape[1]).index_add_(0, lay.owner, z * lay.read[:, None])
        return convs[-1].lin(pooled) + convs[-1].bias

    def groups(self, graph: GraphTensors, keep: Tensor) -> Tensor:
        """``[G, F']`` raw embeddings of every group of one ``[G]`` keep vector."""
        steps = torch.arange(graph.num_groups)
        return self.embed(graph, keep.reshape(1, -1), torch.zeros_like(steps), steps)

    def forward(self, graph: GraphTensors, memo: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """States ``[B, D + F']`` of ``[B, 2 + 2D + G]`` memos and the decoder's new ``(h, c)``."""
        d, count = self.state_dim, memo.shape[0]
        steps = memo[:, 0].long()
        prev, h, c, keep = memo[:, 1], memo[:, 2:2 + d], memo[:, 2 + d:2 + 2 * d], memo[:, 2 + 2 * d:]
        first = torch.nonzero(steps == 0).flatten()  # these also read the graph vector (decoder start)
        out = self.embed(graph, keep, torch.cat([torch.arange(count), first]),
                         torch.cat([steps, torch.full_like(first, graph.num_groups)]))
        pooled = out[:count] / self.scale
        h0, c0 = self.decoder.initial(out[count:])
        mask = (steps == 0).unsqueeze(1)
        h = torch.where(mask, torch.zeros_like(h).index_copy(0, first, h0), h)
        c = torch.where(mask, torch.zeros_like(c).index_copy(0, first, c0), c)
        s_t, hc = self.decoder.step(prev, (h, c), pooled)
        return torch.cat([s_t, pooled], dim=1), hc


def make_memo(step: int, prev: float, hc: tuple[Tensor, Tensor], keep: np.ndarray) -> np.ndarray:
    """``[2 + 2D + G]`` float32 memo of one state (see the module docstring)."""
    return np.concatenate([np.asarray([step, prev], np.float32), hc[0].reshape(-1).numpy(),
                           hc[1].reshape(-1).numpy(), np.asarray(keep, np.float32)]).astype(np.float32)
