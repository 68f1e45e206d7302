"""Residual branches: the sub-graphs that depth pruning can replace by a constant.

Contract:
    requires: a normalized model (:class:`onnxprune.load.Model`: checked, topologically sorted,
    static shapes at batch 1 where they are known).
    guarantees: :func:`find_branches` returns every ``Add`` input whose producing sub-graph is a
    *residual branch*, in graph order, and never modifies the model. A branch of ``Add(a, b)`` on
    input ``b`` is the set of nodes that ``b`` depends on and ``a`` does not; it qualifies when

    - it holds at least one weighted op (``Conv``, ``ConvTranspose``, ``Gemm``, ``MatMul``): a
      branch without MACs is not worth a constant;
    - the partner ``a`` carries data (a graph input or a node's output, not an initializer: the
      bias ``Add`` of a Linear layer is not a residual);
    - it is closed: each of its tensors is consumed only inside the branch, except ``b``, which
      the ``Add`` alone consumes; none is a graph output; the branch reads only the tensors that
      ``a`` also depends on (its entry), graph inputs, and initializers;
    - ``b`` and the ``Add``'s output have the same static shape (so a constant of ``b``'s shape
      without its batch axis broadcasts exactly as ``b`` did, and ``a`` keeps the output shape).

    The rule is per op (``Add`` with a partner of the full shape), never per model: a ResNet
    block's conv branch, an option-A shortcut block's branch (the partner is the strided
    Slice + Pad) and a transformer's attention or MLP branch all qualify; a projection shortcut
    (``Conv`` on the partner side) is a branch too, and so is the main path beside it.

Worked example (a ResNet basic block)::

    x -> Conv(c1) -> Relu(r1) -> Conv(c2) -> y ; Add(x, y) -> Relu
    find_branches(...) -> [ResidualBranch(add="Add", input_index=1, output="y", nodes=("c1", "r1", "c2"),
                                          macs=<c1 + c2>)]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import onnx

from onnxprune.analyze.cost import node_macs
from onnxprune.load import Model

WEIGHTED = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


@dataclass(frozen=True)
class ResidualBranch:
    """One droppable residual branch.

    Attributes:
        add: Name of the ``Add`` node it feeds.
        input_index: Which input of the ``Add`` it produces (0 or 1).
        output: The branch's output tensor (that ``Add`` input).
        nodes: Names of the branch's nodes, in graph order.
        macs: MACs of its nodes at batch 1 (what dropping it saves).
        shape: Static shape of ``output`` at batch 1.
    """

    add: str
    input_index: int
    output: str
    nodes: tuple[str, ...]
    macs: int
    shape: tuple[int, ...]


def _ancestors(tensor: str, producer: Mapping[str, onnx.NodeProto]) -> set[str]:
    """Names of the nodes ``tensor`` depends on."""
    seen: set[str] = set()
    stack = [tensor]
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        stack.extend(i for i in node.input if i)
    return seen


def _closed(members: set[str], output: str, add: str, nodes: Mapping[str, onnx.NodeProto],
            consumers: Mapping[str, list[str]], graph_outputs: set[str]) -> bool:
    """Whether no tensor made inside ``members`` leaks out, except ``output`` into ``add`` alone."""
    for name in members:
        for tensor in nodes[name].output:
            if not tensor:
                continue
            if tensor in graph_outputs:
                return False
            users = consumers.get(tensor, [])
            if tensor == output:
                if users != [add]:
                    return False
            elif any(u not in members for u in users):
                return False
    return True


def find_branches(model: Model) -> tuple[ResidualBranch, ...]:
    """Every residual branch of ``model`` (see the module contract), in graph order."""
    graph = model.proto.graph
    nodes = {n.name: n for n in graph.node}
    order = {n.name: k for k, n in enumerate(graph.node)}
    producer = {t: n for n in graph.node for t in n.output if t}
    consumers: dict[str, list[str]] = {}
    for n in graph.node:
        for t in dict.fromkeys(i for i in n.input if i):
            consumers.setdefault(t, []).append(n.name)
    graph_outputs = {o.name for o in graph.output}
    data = {i.name for i in graph.input} | set(producer)  # tensors that carry data, not constants
    found: list[ResidualBranch] = []
    for add in graph.node:
        if add.op_type != "Add" or len(add.input) != 2 or add.input[0] == add.input[1]:
            continue
        out_shape = model.shapes.get(add.output[0])
        for index in (0, 1):
            mine, other = add.input[index], add.input[1 - index]
            if other not in data:  # Add(x, bias): a bias, not a skip path
                continue
            shape = model.shapes.get(mine)
            if shape is None or out_shape is None or tuple(shape) != tuple(out_shape) or None in shape:
                continue
            members = _ancestors(mine, producer) - _ancestors(other, producer)
            if not members or not any(nodes[m].op_type in WEIGHTED for m in members):
                continue
            if not _closed(members, mine, add.name, nodes, consumers, graph_outputs):
                continue
            ordered = tuple(sorted(members, key=order.__getitem__))
            macs = sum(node_macs(nodes[m], model.shapes.get) for m in ordered)
            found.append(ResidualBranch(add=add.name, input_index=index, output=mine, nodes=ordered, macs=macs,
                                        shape=tuple(int(d) for d in shape)))
    return tuple(found)
