"""Plain data of the motif hierarchy (built by :func:`onnxprune.graph.motifs.build_hierarchy`).

Level 0 is the flat computational graph (edges = ONNX ops). Each level ``k >= 1`` is a graph
whose edges are *instances* of level-``k`` motifs; an instance covers a single-entry /
single-exit piece of level ``k - 1``. Level 1 motifs are compound ops (``Conv-BN-ReLU``),
level 2 motifs are blocks (a residual block, an inverted residual), stem and head.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import networkx as nx
import numpy as np

logger = logging.getLogger(__name__)

SOURCE, SINK = "<source>", "<sink>"  # virtual endpoints, used only for multi-input/output models
ROLE_STEM, ROLE_HEAD, ROLE_BODY, ROLE_WHOLE = "stem", "head", "body", "whole"


@dataclass(frozen=True)
class Motif:
    """A distinct single-entry / single-exit subgraph shape of one level.

    Attributes:
        id: Index in its level's ``motifs``.
        level: 1 (compound op) or 2 (block).
        key: Name-free canonical key (equal keys <=> labeled-isomorphic graphs).
        label: Human-readable summary.
        count: Number of instances.
        graph: The motif's internal graph: nodes ``0..n-1`` with ``role`` (``entry``, ``exit``,
            ``inner``), edges with ``label`` (child key) and ``child`` (index of the child in the
            level below: a motif id, or for level 1 an index into ``Hierarchy.signatures``).
        op_counts: Op type -> number of distinct ops of that type in one instance.
        roles: Roles of its instances (``stem``, ``head``, ``body``, ``whole``).
    """

    id: int
    level: int
    key: str
    label: str
    count: int
    graph: nx.MultiDiGraph = field(repr=False, compare=False)
    op_counts: Mapping[str, int] = field(repr=False, compare=False)
    roles: frozenset[str]

    @property
    def fat(self) -> bool:
        """True if entry and exit are joined by more than one path (e.g. a residual block)."""
        return self.graph.number_of_edges() > self.graph.number_of_nodes() - 1

    def ops(self, op_type: str) -> int:
        """Number of ops of ``op_type`` in one instance."""
        return int(self.op_counts.get(op_type, 0))


@dataclass(frozen=True)
class Instance:
    """One occurrence of a motif.

    Attributes:
        id: Index in its level's ``instances`` (and the edge key in the level graph).
        motif: Motif id in the same level.
        entry: Entry feature map (or :data:`SOURCE`).
        exit: Exit feature map (or :data:`SINK`).
        children: Instance ids of the level below (for level 1: flat edge rows).
        edges: Flat edge rows covered.
        role: ``stem``, ``head``, ``body`` or ``whole``.
    """

    id: int
    motif: int
    entry: str
    exit: str
    children: tuple[int, ...]
    edges: tuple[int, ...]
    role: str


@dataclass(frozen=True)
class Level:
    """One level of the hierarchy.

    Attributes:
        level: 1 or 2.
        graph: ``nx.MultiDiGraph``; nodes = boundary feature maps, edges ``(entry, exit, id)``
            with attribute ``motif``.
        instances: Instances, by id.
        motifs: Distinct motifs, by id (most frequent first).
    """

    level: int
    graph: nx.MultiDiGraph = field(repr=False)
    instances: tuple[Instance, ...]
    motifs: tuple[Motif, ...]

    def counts(self) -> tuple[int, ...]:
        """Instance counts per motif, largest first."""
        return tuple(sorted((m.count for m in self.motifs), reverse=True))


@dataclass(frozen=True)
class Hierarchy:
    """Motif hierarchy over a :class:`~onnxprune.graph.CompGraph`.

    Attributes:
        levels: ``levels[0]`` is level 1 (compound ops), ``levels[1]`` level 2 (blocks).
        signatures: Distinct name-free op labels of the flat edges (the level-0 alphabet).
        signature_op: Representative op row of each signature (for its features).
        edge_signature: ``[E]`` signature index of each flat edge.
    """

    levels: tuple[Level, ...]
    signatures: tuple[str, ...]
    signature_op: tuple[int, ...]
    edge_signature: np.ndarray = field(repr=False)

    @property
    def top(self) -> Level:
        """The highest level."""
        return self.levels[-1]

    def level(self, k: int) -> Level:
        """Level ``k`` (1-based)."""
        return self.levels[k - 1]

    def edge_membership(self, k: int) -> np.ndarray:
        """``[E]`` id of the level-``k`` instance covering each flat edge (a flattened view)."""
        out = np.full(self.edge_signature.shape[0], -1, dtype=np.int64)
        for inst in self.level(k).instances:
            out[list(inst.edges)] = inst.id
        return out

    def motif_signatures(self, k: int, motif_id: int) -> Counter[str]:
        """Name-free op labels (e.g. ``Conv/k3x3/s2x2/dw``) and their counts in one instance of a motif.

        An op with several feature-map operands (an ``Add``) is counted once per operand.
        """
        inst = next(i for i in self.level(k).instances if i.motif == motif_id)
        return Counter(self.signatures[self.edge_signature[e]] for e in inst.edges)

    def summary(self) -> dict[str, object]:
        """JSON-ready sizes and motif counts per level."""
        out: dict[str, object] = {}
        for lvl in self.levels:
            out[f"level{lvl.level}"] = {
                "nodes": lvl.graph.number_of_nodes(), "edges": lvl.graph.number_of_edges(),
                "motifs": [{"id": m.id, "count": m.count, "label": m.label, "roles": sorted(m.roles),
                            "nodes": m.graph.number_of_nodes(), "edges": m.graph.number_of_edges()}
                           for m in lvl.motifs]}
        return out
