"""Depth pruning: replace residual branches by constants.

Contract:
    requires: a normalized model and branches from :func:`onnxprune.analyze.blocks.find_branches`
    of that model, pairwise disjoint, at most one per ``Add``; for each, a float32 constant whose
    shape broadcasts to the branch output (the calibration mean over the batch axis, shape
    ``(1, *shape[1:])``, is the least-squares constant).
    guarantees: a new model (the input is not modified) in which each branch's nodes are removed
    and its ``Add`` input reads the constant (an initializer named ``<output>.depth_mean``);
    value_info of removed tensors is dropped and initializers no node reads any more are removed.
    The ``Add`` stays (shapes are unchanged), so every other node, name and the interface stay.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.analyze.blocks import ResidualBranch
from onnxprune.errors import PlanError

logger = logging.getLogger(__name__)


def check_disjoint(branches: Sequence[ResidualBranch]) -> None:
    """Raise PlanError when two branches share a node or an ``Add``."""
    seen: set[str] = set()
    adds: set[str] = set()
    for b in branches:
        if b.add in adds or seen.intersection(b.nodes):
            raise PlanError(f"residual branch {b.output} overlaps another dropped branch; drop one of them")
        adds.add(b.add)
        seen.update(b.nodes)


def _reads(nodes: Sequence[onnx.NodeProto]) -> set[str]:
    """Tensor names ``nodes`` read, their sub-graphs' (If/Loop/Scan bodies) included."""
    names: set[str] = set()
    for node in nodes:
        names.update(i for i in node.input if i)
        for attr in node.attribute:
            for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                names |= _reads(sub.node)
    return names


def drop_branches(model: onnx.ModelProto, branches: Sequence[ResidualBranch],
                  constants: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of ``model`` with ``branches`` replaced by ``constants[branch.output]`` (see the contract).

    Raises:
        PlanError: overlapping branches, or a branch without its constant.
    """
    check_disjoint(branches)
    missing = [b.output for b in branches if b.output not in constants]
    if missing:
        raise PlanError(f"no constant for the residual branch(es) {', '.join(missing)}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    removed = {name for b in branches for name in b.nodes}
    rename = {b.output: f"{b.output}.depth_mean" for b in branches}
    kept = [n for n in graph.node if n.name not in removed]
    dead = {t for n in graph.node if n.name in removed for t in n.output}
    for node in kept:
        for k, name in enumerate(node.input):
            if name in rename:
                node.input[k] = rename[name]
    del graph.node[:]
    graph.node.extend(kept)
    for b in branches:
        graph.initializer.append(numpy_helper.from_array(np.asarray(constants[b.output], np.float32),
                                                         rename[b.output]))
    read = _reads(graph.node) | {o.name for o in graph.output}
    freed = {i for n in model.graph.node if n.name in removed for i in n.input} - read
    initializers = [t for t in graph.initializer if t.name not in freed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    value_info = [v for v in graph.value_info if v.name not in dead]
    del graph.value_info[:]
    graph.value_info.extend(value_info)
    logger.info("dropped %d residual branch(es): %d nodes", len(branches), len(removed))
    return out
