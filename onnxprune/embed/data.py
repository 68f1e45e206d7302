"""Tensors the encoders read, built from a :class:`~onnxprune.graph.CompGraph` and its hierarchy.

Both builders only read arrays (no ONNX); after :meth:`CompGraph.set_keep` they are rebuilt in
milliseconds, which is how a pruned model is re-embedded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch_geometric.data import Data
from torch_geometric.utils import coalesce, scatter, to_undirected

from onnxprune.graph import CompGraph
from onnxprune.graph.features import op_type_features, shares
from onnxprune.graph.hierarchy import Hierarchy
from onnxprune.graph.ops import WEIGHTED
from onnxprune.graph.state import FLOAT_BITS

logger = logging.getLogger(__name__)

#: Features of one top-level edge (a block instance), beyond its motif embedding.
INSTANCE_FEATURES: tuple[str, ...] = ("macs", "params", "keep", "bits", "weighted_ops")


def flat_data(cg: CompGraph, *, undirected: bool = True) -> Data:
    """The flat graph as a PyG ``Data``.

    Args:
        cg: The computational graph (its current keep ratios / bit-widths are used).
        undirected: Symmetrize and merge parallel edges (edge features averaged), as GCNs need.

    Returns:
        ``Data(x [N, len(NODE_FEATURES)], edge_index [2, E'], edge_attr [E', len(EDGE_FEATURES)])``.
    """
    x = torch.from_numpy(cg.node_features())
    edge_index = torch.from_numpy(np.stack([cg.edge_src, cg.edge_dst]))
    edge_attr = torch.from_numpy(cg.edge_features())
    if undirected:
        edge_index, edge_attr = to_undirected(edge_index, edge_attr, num_nodes=cg.num_nodes, reduce="mean")
    else:
        edge_index, edge_attr = coalesce(edge_index, edge_attr, num_nodes=cg.num_nodes, reduce="mean")
    return Data(x=x, edge_index=edge_index, edge_attr=edge_attr, num_nodes=cg.num_nodes)


@dataclass(frozen=True)
class MotifGraphs:
    """The distinct motifs of one level, as one batch of disjoint graphs.

    Attributes:
        edge_index: ``[2, E]`` edges (nodes numbered across the batch).
        edge_child: ``[E]`` index of each edge's child in the level below (level 1: a row of
            ``HierInputs.signature_x``; level 2: a level-1 motif id).
        batch: ``[N]`` motif id of each node.
        num_motifs: Number of motifs ``M``.
    """

    edge_index: torch.Tensor
    edge_child: torch.Tensor
    batch: torch.Tensor
    num_motifs: int


@dataclass(frozen=True)
class HierInputs:
    """Inputs of :class:`~onnxprune.embed.MGNN`.

    Attributes:
        signature_x: ``[S, len(OP_FEATURES)]`` name-free features of each distinct op label.
        motifs: One :class:`MotifGraphs` per level, bottom-up.
        x: ``[N_top, len(NODE_FEATURES)]`` features of the top-level nodes (block boundaries).
        edge_index: ``[2, E_top]`` top-level edges (block instances), entry -> exit.
        edge_motif: ``[E_top]`` motif id (top level) of each instance.
        edge_attr: ``[E_top, len(INSTANCE_FEATURES)]`` current state of each instance.
    """

    signature_x: torch.Tensor
    motifs: tuple[MotifGraphs, ...]
    x: torch.Tensor
    edge_index: torch.Tensor
    edge_motif: torch.Tensor
    edge_attr: torch.Tensor


def _motif_graphs(hier: Hierarchy, k: int) -> MotifGraphs:
    src: list[int] = []
    dst: list[int] = []
    child: list[int] = []
    batch: list[int] = []
    for motif in hier.level(k).motifs:
        base = len(batch)
        batch.extend([motif.id] * motif.graph.number_of_nodes())
        for u, v, d in motif.graph.edges(data=True):
            src.append(base + u)
            dst.append(base + v)
            child.append(int(d["child"]))
    return MotifGraphs(edge_index=torch.tensor([src, dst], dtype=torch.long).reshape(2, -1),
                       edge_child=torch.tensor(child, dtype=torch.long),
                       batch=torch.tensor(batch, dtype=torch.long), num_motifs=len(hier.level(k).motifs))


def _instance_features(cg: CompGraph, hier: Hierarchy) -> np.ndarray:
    """``[E_top, len(INSTANCE_FEATURES)]``: MACs / params share, mean keep and bits of weighted ops."""
    instances = hier.top.instances
    pairs = {(i, int(o)) for i, inst in enumerate(instances) for o in cg.edge_op[list(inst.edges)]}
    inst_idx, op_idx = (np.asarray(a, dtype=np.int64) for a in zip(*sorted(pairs))) if pairs else (
        np.zeros(0, np.int64), np.zeros(0, np.int64))
    st = cg.state
    weighted = np.asarray([cg.ops[o].kind == WEIGHTED for o in op_idx], dtype=np.float64)
    n = len(instances)
    macs = np.bincount(inst_idx, shares(cg.op_macs, st.op_macs_factor)[op_idx], minlength=n)
    params = np.bincount(inst_idx, shares(cg.op_params, st.op_macs_factor)[op_idx], minlength=n)
    count = np.bincount(inst_idx, weighted, minlength=n)
    keep = np.bincount(inst_idx, weighted * st.op_keep_out[op_idx], minlength=n)
    bits = np.bincount(inst_idx, weighted * st.op_bits[op_idx], minlength=n)
    keep = np.divide(keep, count, out=np.ones(n), where=count > 0)
    bits = np.divide(bits, count, out=np.full(n, FLOAT_BITS), where=count > 0) / FLOAT_BITS
    scale = max(float(count.max(initial=1.0)), 1.0)
    return np.stack([macs, params, keep, bits, count / scale], axis=1).astype(np.float32)


def hier_inputs(cg: CompGraph, hier: Hierarchy) -> HierInputs:
    """Build the m-GNN inputs of ``cg`` (current state) and its hierarchy ``hier``."""
    sig_x = np.stack([op_type_features(cg.ops[o]) for o in hier.signature_op])
    top = hier.top
    nodes = list(top.graph.nodes)
    index = {v: i for i, v in enumerate(nodes)}
    feats = cg.node_features()
    x = np.zeros((len(nodes), feats.shape[1]), dtype=np.float32)
    real = [(i, cg.row[v]) for i, v in enumerate(nodes) if v in cg.row]
    if real:
        rows, cols = zip(*real)
        x[list(rows)] = feats[list(cols)]
    edge_index = [[index[i.entry] for i in top.instances], [index[i.exit] for i in top.instances]]
    return HierInputs(
        signature_x=torch.from_numpy(sig_x),
        motifs=tuple(_motif_graphs(hier, lvl.level) for lvl in hier.levels),
        x=torch.from_numpy(x), edge_index=torch.tensor(edge_index, dtype=torch.long).reshape(2, -1),
        edge_motif=torch.tensor([i.motif for i in top.instances], dtype=torch.long),
        edge_attr=torch.from_numpy(_instance_features(cg, hier)))


def group_pool_index(cg: CompGraph, hier: Hierarchy | None = None) -> torch.Tensor:
    """``[2, P]`` pairs (group position, node) telling which embedded nodes describe each group.

    Without ``hier``: the flat feature maps carrying the group's channels (rows of
    :func:`flat_data`). With ``hier``: the entry and exit nodes of every top-level instance that
    contains one of the group's op edges (rows of ``HierInputs.x``).
    """
    pairs: set[tuple[int, int]] = set()
    index = cg.groups
    if hier is None:
        for pos, rows in enumerate(index.node_rows):
            pairs.update((pos, int(r)) for r in rows)
    else:
        member = hier.edge_membership(len(hier.levels))
        top = {v: i for i, v in enumerate(hier.top.graph.nodes)}
        for pos, edges in enumerate(index.edge_rows):
            for inst_id in set(member[edges].tolist()):
                inst = hier.top.instances[inst_id]
                pairs.update(((pos, top[inst.entry]), (pos, top[inst.exit])))
    return torch.tensor(sorted(pairs), dtype=torch.long).reshape(-1, 2).t().contiguous()


def pool_groups(nodes: torch.Tensor, index: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Mean of ``nodes [N, F]`` over each group's nodes (``index`` from :func:`group_pool_index`) -> ``[G, F]``."""
    return scatter(nodes[index[1]], index[0], dim=0, dim_size=num_groups, reduce="mean")
