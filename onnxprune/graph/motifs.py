"""Automatic motif hierarchy of a computational graph (no names, no per-architecture code).

Level 1 (compound ops): maximal chains that start at a weighted or structural op and absorb
the element-wise ops that follow it (``Conv -> BN -> ReLU``). A feature map stays inside a
chain only if it has one producer edge and one consumer edge, and that consumer is an
element-wise op with a single feature-map operand.

Level 2 (blocks): on the level-1 graph (with a virtual source and sink), the *cut* feature maps
are those every source-to-sink path crosses: the dominators of the sink. Consecutive cuts bound
single-entry / single-exit segments, either one compound op (a *step*) or a region with
parallel paths. Segments are grouped into blocks:

* a parallel region that contains a weighted op opens a new block (a residual block, an
  inverted residual with skip, an Inception cell); it takes the activation-only steps and
  compound activations (parallel regions of element-wise ops only, e.g. ``x * sigmoid(x)``)
  that follow it;
* other steps accumulate into a chain block that is closed after a *linear* step (a weighted op
  not followed by a nonlinearity, unless an activation comes next): the linear bottleneck
  that ends an inverted residual without skip, or the classifier; a local pooling step
  (``MaxPool``) also closes it, so that plain networks split into VGG-like stages.

Every instance gets a canonical key (:mod:`onnxprune.graph.canon`); equal keys form one motif,
which becomes one edge type of the level above.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

import networkx as nx
import numpy as np

from onnxprune.graph.canon import MotifTable
from onnxprune.graph.compgraph import CompGraph
from onnxprune.graph.hierarchy import (ROLE_BODY, ROLE_HEAD, ROLE_STEM, ROLE_WHOLE, SINK, SOURCE,
                                       Hierarchy, Instance, Level, Motif)
from onnxprune.graph.ops import COMMUTATIVE_OPS, ELEMENTWISE_OPS, FOLLOWER, WEIGHTED

logger = logging.getLogger(__name__)

# A piece: (entry, exit, child ids, flat edge rows). Child ids index the level below.
_Piece = tuple[str, str, tuple[int, ...], tuple[int, ...]]
_LOCAL_POOLS = frozenset({"MaxPool", "AveragePool", "LpPool"})


def _edge_labels(cg: CompGraph) -> list[str]:
    labels = []
    for op_row, slot in zip(cg.edge_op.tolist(), cg.edge_slot.tolist()):
        op = cg.ops[op_row]
        multi = len(op.inputs) > 1 and op.op_type not in COMMUTATIVE_OPS
        labels.append(op.signature + (f"@{slot}" if multi else ""))
    return labels


def _compound_ops(cg: CompGraph) -> list[_Piece]:
    """Level-1 pieces: maximal follower chains, as lists of flat edge rows."""
    n = cg.num_nodes
    in_deg = np.bincount(cg.edge_dst, minlength=n)
    out_deg = np.bincount(cg.edge_src, minlength=n)
    out_edge = np.full(n, -1, dtype=np.int64)
    out_edge[cg.edge_src] = np.arange(cg.num_edges)
    ends = {cg.row[t] for t in (*cg.inputs, *cg.outputs)}
    internal = np.zeros(n, dtype=bool)
    for v in np.flatnonzero((in_deg == 1) & (out_deg == 1)).tolist():
        prod = cg.ops[cg.producer[v]]
        cons = cg.ops[cg.edge_op[out_edge[v]]]
        internal[v] = v not in ends and len(prod.outputs) == 1 and cons.kind == FOLLOWER
    pieces = []
    for e in np.flatnonzero(~internal[cg.edge_src]).tolist():
        chain = [e]
        v = int(cg.edge_dst[e])
        while internal[v]:
            chain.append(int(out_edge[v]))
            v = int(cg.edge_dst[chain[-1]])
        pieces.append((cg.tensors[cg.edge_src[e]], cg.tensors[v], tuple(chain), tuple(chain)))
    return pieces


def _cut_segments(graph: nx.MultiDiGraph, inputs: Sequence[str],
                  outputs: Sequence[str]) -> list[tuple[str, str, list[int]]]:
    """Split a level graph at its cut nodes: ``[(entry, exit, instance ids)]`` in order."""
    dag = nx.DiGraph()
    dag.add_nodes_from(graph.nodes)
    dag.add_edges_from((u, v) for u, v in graph.edges())
    dag.add_edges_from((SOURCE, t) for t in inputs)
    sinks = set(outputs) | {v for v in graph.nodes if graph.out_degree(v) == 0}
    dag.add_edges_from((t, SINK) for t in sinks)
    idom = nx.immediate_dominators(dag, SOURCE)
    cuts = [SINK]
    while cuts[-1] != SOURCE:
        cuts.append(idom[cuts[-1]])
    cuts.reverse()
    index = {c: i for i, c in enumerate(cuts)}
    nearest: dict[str, int] = {}

    def cut_of(v: str) -> int:
        path = []
        while v not in index and v not in nearest:
            path.append(v)
            v = idom[v]
        found = index[v] if v in index else nearest[v]
        nearest.update((p, found) for p in path)
        return found

    members: list[list[int]] = [[] for _ in cuts]
    for u, _, key in graph.edges(keys=True):
        members[cut_of(u)].append(key)
    return [(cuts[i], cuts[i + 1], sorted(m)) for i, m in enumerate(members) if m]


def _segment_kind(cg: CompGraph, pieces: Sequence[_Piece], ids: Sequence[int], entry: str,
                  exit_: str) -> str:
    """``fat``, ``act`` (activation-only), ``linear`` (ends with a bare weighted op), ``pool``
    (a local pooling step) or ``plain``."""
    ops = [cg.ops[cg.edge_op[e]] for i in ids for e in pieces[i][3]]
    has_weight = any(op.kind == WEIGHTED for op in ops)
    single = len(ids) == 1 and pieces[ids[0]][0] == entry and pieces[ids[0]][1] == exit_
    if not has_weight and all(op.op_type in ELEMENTWISE_OPS for op in ops) and any(op.nonlinear for op in ops):
        return "act"
    if not single:
        return "fat" if has_weight else "plain"
    last_weight = max((i for i, op in enumerate(ops) if op.kind == WEIGHTED), default=-1)
    if last_weight >= 0 and not any(op.nonlinear for op in ops[last_weight:]):
        return "linear"
    return "pool" if not has_weight and any(op.op_type in _LOCAL_POOLS for op in ops) else "plain"


def _blocks(cg: CompGraph, pieces: Sequence[_Piece], segments: Sequence[tuple[str, str, list[int]]]
            ) -> list[list[int]]:
    """Group consecutive segments into blocks (lists of segment indices)."""
    kinds = [_segment_kind(cg, pieces, ids, a, b) for a, b, ids in segments]
    blocks: list[list[int]] = []
    current: list[int] = []
    fat_open = False
    for i, kind in enumerate(kinds):
        if kind == "fat" or (fat_open and kind != "act"):
            if current:
                blocks.append(current)
            current, fat_open = [], kind == "fat"
        current.append(i)
        nxt = kinds[i + 1] if i + 1 < len(kinds) else None
        if kind in ("linear", "pool") and nxt != "act":
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


def _block_pieces(cg: CompGraph, pieces: Sequence[_Piece]) -> list[_Piece]:
    graph = _level_graph(pieces, [0] * len(pieces))
    segments = _cut_segments(graph, cg.inputs, cg.outputs)
    out = []
    for block in _blocks(cg, pieces, segments):
        ids = tuple(sorted(i for s in block for i in segments[s][2]))
        edges = tuple(e for i in ids for e in pieces[i][3])
        out.append((segments[block[0]][0], segments[block[-1]][1], ids, edges))
    return out


def _level_graph(pieces: Sequence[_Piece], motif_of: Sequence[int]) -> nx.MultiDiGraph:
    graph = nx.MultiDiGraph()
    graph.add_edges_from((a, b, i, {"motif": m}) for i, ((a, b, _, _), m) in enumerate(zip(pieces, motif_of)))
    return graph


def _candidate(piece: _Piece, child_entries: Sequence[tuple[str, str, str, int]]) -> nx.MultiDiGraph:
    """Local graph of a piece: ``child_entries`` = (src, dst, label, child index) per child."""
    entry, exit_ = piece[0], piece[1]
    local: dict[str, int] = {entry: 0}
    graph = nx.MultiDiGraph()
    for src, dst, _, _ in child_entries:
        for v in (src, dst):
            local.setdefault(v, len(local))
    for v, i in local.items():
        graph.add_node(i, role="entry" if v == entry else "exit" if v == exit_ else "inner")
    graph.add_edges_from((local[s], local[d], {"label": lab, "child": c}) for s, d, lab, c in child_entries)
    return graph


def _raw_form(piece: _Piece, child_entries: Sequence[tuple[str, str, str, int]]) -> tuple[object, ...]:
    """Order-dependent (not canonical) form of a piece, to skip re-keying repeated instances.

    Two pieces with equal raw forms are identical graphs, so they share a key; isomorphic
    pieces with different raw forms still get the same key from :class:`MotifTable`.
    """
    local: dict[str, int] = {piece[0]: 0}
    out: list[object] = []
    for src, dst, label, _ in child_entries:
        out.append((local.setdefault(src, len(local)), local.setdefault(dst, len(local)), label))
    out.append(local.get(piece[1], -1))
    return tuple(out)


def _role(piece: _Piece, inputs: set[str], outputs: set[str]) -> str:
    stem = piece[0] in inputs or piece[0] == SOURCE
    head = piece[1] in outputs or piece[1] == SINK
    return ROLE_WHOLE if stem and head else ROLE_STEM if stem else ROLE_HEAD if head else ROLE_BODY


def _make_level(cg: CompGraph, level: int, pieces: Sequence[_Piece],
                children: Sequence[tuple[str, str, str, int]], child_keys: Sequence[str]) -> Level:
    """Key every piece, number motifs (most frequent first) and build the level graph.

    ``children[i]`` describes child ``i`` of the level below as (src, dst, key, index).
    """
    table = MotifTable()
    memo: dict[tuple[object, ...], str] = {}
    keys = []
    for piece in pieces:
        entries = [children[c] for c in piece[2]]
        raw = _raw_form(piece, entries)
        if raw not in memo:
            memo[raw] = table.key(_candidate(piece, entries))
        keys.append(memo[raw])
    counts = Counter(keys)
    order = sorted(counts, key=lambda k: (-counts[k], k))
    motif_id = {k: i for i, k in enumerate(order)}
    inputs, outputs = set(cg.inputs), set(cg.outputs)
    instances = tuple(Instance(id=i, motif=motif_id[k], entry=p[0], exit=p[1], children=p[2], edges=p[3],
                               role=_role(p, inputs, outputs)) for i, (p, k) in enumerate(zip(pieces, keys)))
    motifs = []
    for k in order:
        first = next(inst for inst in instances if inst.motif == motif_id[k])
        op_types = Counter(cg.ops[r].op_type for r in sorted({int(cg.edge_op[e]) for e in first.edges}))
        rep = table.representative(k)
        labels = [child_keys[d["child"]] for _, _, d in sorted(rep.edges(data=True), key=lambda e: e[:2])]
        label = (" > ".join(labels) if level == 1 else
                 ("fat" if rep.number_of_edges() >= rep.number_of_nodes() else "chain")
                 + "[" + ", ".join(f"{t} x{c}" for t, c in sorted(op_types.items())) + "]")
        motifs.append(Motif(id=motif_id[k], level=level, key=k, label=label, count=counts[k], graph=rep,
                            op_counts=dict(op_types),
                            roles=frozenset(i.role for i in instances if i.motif == motif_id[k])))
    return Level(level=level, graph=_level_graph(pieces, [i.motif for i in instances]),
                 instances=instances, motifs=tuple(motifs))


def build_hierarchy(cg: CompGraph) -> Hierarchy:
    """Build the two-level motif hierarchy of ``cg`` from its topology and op attributes only.

    Args:
        cg: The computational graph.

    Returns:
        The :class:`Hierarchy` (level 1: compound ops, level 2: blocks).
    """
    labels = _edge_labels(cg)
    signatures = tuple(sorted(set(labels)))
    sig_index = {s: i for i, s in enumerate(signatures)}
    edge_sig = np.asarray([sig_index[s] for s in labels], dtype=np.int64)
    sig_op = tuple(int(cg.edge_op[np.flatnonzero(edge_sig == i)[0]]) for i in range(len(signatures)))
    flat_children = [(cg.tensors[u], cg.tensors[v], labels[e], sig_index[labels[e]])
                     for e, (u, v) in enumerate(zip(cg.edge_src.tolist(), cg.edge_dst.tolist()))]
    units = _compound_ops(cg)
    level1 = _make_level(cg, 1, units, flat_children, signatures)
    unit_children = [(inst.entry, inst.exit, level1.motifs[inst.motif].key, inst.motif)
                     for inst in level1.instances]
    blocks = _block_pieces(cg, units)
    level2 = _make_level(cg, 2, blocks, unit_children, [m.label for m in level1.motifs])
    logger.info("hierarchy: %d flat edges -> %d compound ops (%d motifs) -> %d blocks (%d motifs)",
                cg.num_edges, len(level1.instances), len(level1.motifs), len(level2.instances),
                len(level2.motifs))
    return Hierarchy(levels=(level1, level2), signatures=signatures, signature_op=sig_op,
                     edge_signature=edge_sig)
