"""Computational graph of a model: nodes are feature maps, edges are operations.

Built once from a normalized :class:`~onnxprune.load.Model`; afterwards only the per-group
keep ratios and bit-widths change (:meth:`CompGraph.set_keep`, :meth:`CompGraph.set_bits`),
which update the graph's features in place without going back to ONNX.

Example (option-A CIFAR ResNet block, BatchNorm kept)::

    x ──Conv──> c1 ──BN──> b1 ──Relu──> r1 ──Conv──> c2 ──BN──> b2 ──Add──> s ──Relu──> y
    └─────────────────────────────────────────────────────────Add──┘

    The Add has two feature-map operands, so it gives two edges (``b2 -> s`` and ``x -> s``),
    both keyed by the same op. Weights, biases and BN statistics are constants, not nodes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

import networkx as nx
import numpy as np
import onnx

from onnxprune.errors import UnsupportedInput
from onnxprune.graph.features import shares, static_node_features, static_op_features
from onnxprune.graph.ops import OpInfo, Shape, op_info
from onnxprune.graph.state import FLOAT_BITS, GraphState, GroupIndex, GroupLike, build_group_index
from onnxprune.load import Model

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupElements:
    """The graph elements of one group: feature-map nodes, op edges and op keys."""

    nodes: tuple[str, ...]
    edges: tuple[tuple[str, str, int], ...]
    ops: tuple[str, ...]


@dataclass(frozen=True)
class CompGraph:
    """Computational graph of feature maps (nodes) and operations (edges).

    Attributes:
        graph: ``nx.MultiDiGraph``; node = tensor name with attribute ``row``; edge
            ``(src, dst, key)`` where ``key`` is the edge row, with attributes ``op`` (op key),
            ``op_type`` and ``slot`` (the operand position of ``src`` in the op).
        tensors: Tensor names by row, in topological order.
        shapes: Tensor shapes by row (batch 1).
        ops: Operations by row, in ONNX order.
        edge_src: ``[E]`` source tensor row of each edge.
        edge_dst: ``[E]`` destination tensor row of each edge.
        edge_op: ``[E]`` op row of each edge.
        edge_slot: ``[E]`` operand slot of each edge.
        producer: ``[N]`` op row producing each tensor (``-1`` for graph inputs).
        inputs: Graph input tensors.
        outputs: Graph output tensors.
        state: Mutable keep ratios / bit-widths and their per-tensor effects.
        node_static: Static part of the node features (see :mod:`onnxprune.graph.features`).
        op_static: Static part of the op features.
    """

    graph: nx.MultiDiGraph
    tensors: tuple[str, ...]
    shapes: tuple[Shape, ...]
    ops: tuple[OpInfo, ...]
    edge_src: np.ndarray
    edge_dst: np.ndarray
    edge_op: np.ndarray
    edge_slot: np.ndarray
    producer: np.ndarray
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    state: GraphState
    row: Mapping[str, int] = field(repr=False)
    op_row: Mapping[str, int] = field(repr=False)
    node_static: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0), np.float32))
    op_static: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0), np.float32))

    @property
    def num_nodes(self) -> int:
        """Number of feature maps."""
        return len(self.tensors)

    @property
    def num_edges(self) -> int:
        """Number of (operand, result) edges."""
        return int(self.edge_src.shape[0])

    def with_groups(self, groups: Iterable[GroupLike]) -> CompGraph:
        """Return a graph sharing this structure whose state knows ``groups`` (all kept, 32 bit).

        Args:
            groups: Groups from :func:`onnxprune.analyze.analyze` (anything with ``id``,
                ``members`` of ``(tensor, axis, start, stop)``, ``producers``, ``consumers``).
        """
        index = build_group_index(groups, self.row, self.op_row, self.shapes, self.edge_op)
        return replace(self, state=GraphState(index, self.num_nodes, self.ops, self.row))

    @property
    def groups(self) -> GroupIndex:
        """The group index of the state (empty if no groups were attached)."""
        return self.state.index

    def group_elements(self, group_id: int) -> GroupElements:
        """Feature-map nodes, op edges and op keys of group ``group_id``."""
        pos = self.state.index.position(group_id)
        index = self.state.index
        edges = tuple((self.tensors[self.edge_src[e]], self.tensors[self.edge_dst[e]], int(e))
                      for e in index.edge_rows[pos])
        return GroupElements(nodes=tuple(self.tensors[r] for r in index.node_rows[pos]), edges=edges,
                             ops=tuple(self.ops[r].name for r in index.op_rows[pos]))

    @property
    def op_macs(self) -> np.ndarray:
        """``[O]`` MACs of each op in the unpruned model (batch 1)."""
        return np.asarray([op.macs for op in self.ops], dtype=np.float64)

    @property
    def op_params(self) -> np.ndarray:
        """``[O]`` float parameters of each op in the unpruned model."""
        return np.asarray([op.params for op in self.ops], dtype=np.float64)

    def op_dynamic(self) -> np.ndarray:
        """``[O, 5]`` current kept input/output fraction, bits / 32, remaining MACs/params share."""
        st = self.state
        return np.stack([st.op_keep_in, st.op_keep_out, st.op_bits / FLOAT_BITS,
                         shares(self.op_macs, st.op_macs_factor),
                         shares(self.op_params, st.op_macs_factor)], axis=1).astype(np.float32)

    def node_features(self) -> np.ndarray:
        """``[N, len(NODE_FEATURES)]`` node features for the current state."""
        ops = self.op_dynamic()
        prod = np.concatenate([np.zeros((1, 2), np.float32), ops[:, 3:]])[self.producer + 1]
        dyn = np.concatenate([self.state.tensor_keep[:, None], self.state.tensor_bits[:, None] / FLOAT_BITS,
                              prod], axis=1).astype(np.float32)
        return np.concatenate([self.node_static, dyn], axis=1)

    def edge_features(self) -> np.ndarray:
        """``[E, len(EDGE_FEATURES)]`` edge (operation) features for the current state."""
        per_op = np.concatenate([self.op_static, self.op_dynamic()], axis=1)
        return per_op[self.edge_op]

    def set_keep(self, ratios: Mapping[int, float]) -> None:
        """Set keep ratios (fraction of channels kept, in ``[0, 1]``) of groups, in place."""
        self.state.set_keep(ratios)

    def set_bits(self, bits: Mapping[int, float]) -> None:
        """Set bit-widths of groups, in place."""
        self.state.set_bits(bits)


def _op_keys(nodes: Iterable[onnx.NodeProto]) -> list[str]:
    nodes = list(nodes)
    seen: dict[str, int] = {}
    for node in nodes:
        seen[node.name] = seen.get(node.name, 0) + 1
    return [n.name if n.name and seen[n.name] == 1 else f"{n.op_type}#{i}" for i, n in enumerate(nodes)]


def _constants(graph: onnx.GraphProto) -> set[str]:
    """Initializers plus every value computed only from constants."""
    const = {t.name for t in graph.initializer}
    for node in graph.node:
        if all((not t) or t in const for t in node.input):
            const.update(o for o in node.output if o)
    return const


def build_graph(model: Model) -> CompGraph:
    """Build the computational graph of ``model``.

    Args:
        model: A normalized model (:func:`onnxprune.load.load` or ``normalize``).

    Returns:
        The :class:`CompGraph` (no groups attached; see :meth:`CompGraph.with_groups`).

    Raises:
        UnsupportedInput: If the model has no feature-map input (every value is constant).
    """
    graph = model.proto.graph
    const = frozenset(_constants(graph))
    inputs = tuple(i.name for i in graph.input if i.name not in const)
    if not inputs:
        raise UnsupportedInput("the model has no non-constant input; pass a model with a graph input")
    tensors: list[str] = list(inputs)
    row = {t: i for i, t in enumerate(tensors)}
    producer = [-1] * len(tensors)
    ops: list[OpInfo] = []
    src: list[int] = []
    dst: list[int] = []
    eop: list[int] = []
    slot: list[int] = []
    for key, node in zip(_op_keys(graph.node), graph.node):
        fm_in = [(s, t) for s, t in enumerate(node.input) if t and t not in const and t in row]
        if not fm_in:
            continue
        fm_out = [t for t in node.output if t]
        info = op_info(node, key, fm_in, fm_out, model.shapes, model.dtypes, const)
        ops.append(info)
        for t in fm_out:
            row[t] = len(tensors)
            tensors.append(t)
            producer.append(len(ops) - 1)
            for s, t_in in fm_in:
                src.append(row[t_in])
                dst.append(row[t])
                eop.append(len(ops) - 1)
                slot.append(s)
    outputs = tuple(o.name for o in graph.output if o.name in row)
    shapes = tuple(tuple(model.shapes.get(t, ())) for t in tensors)
    producer_arr = np.asarray(producer, dtype=np.int64)
    flags_in = np.asarray([t in inputs for t in tensors])
    flags_out = np.asarray([t in outputs for t in tensors])
    nxg = nx.MultiDiGraph()
    nxg.add_nodes_from((t, {"row": i}) for i, t in enumerate(tensors))
    nxg.add_edges_from((tensors[u], tensors[v], e, {"op": ops[o].name, "op_type": ops[o].op_type,
                                                    "slot": s})
                       for e, (u, v, o, s) in enumerate(zip(src, dst, eop, slot)))
    cg = CompGraph(
        graph=nxg, tensors=tuple(tensors), shapes=shapes,
        ops=tuple(ops), edge_src=np.asarray(src, dtype=np.int64), edge_dst=np.asarray(dst, dtype=np.int64),
        edge_op=np.asarray(eop, dtype=np.int64), edge_slot=np.asarray(slot, dtype=np.int64),
        producer=producer_arr, inputs=inputs, outputs=outputs,
        state=GraphState(GroupIndex.empty(), len(tensors), ops, row), row=row,
        op_row={op.name: i for i, op in enumerate(ops)},
        node_static=static_node_features(shapes, ops, producer_arr, flags_in, flags_out),
        op_static=static_op_features(ops))
    logger.debug("computational graph: %d feature maps, %d edges, %d ops", cg.num_nodes, cg.num_edges,
                 len(ops))
    return cg
