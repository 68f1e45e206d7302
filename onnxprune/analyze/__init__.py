"""Analyze stage: Model -> channel couplings -> prunable groups (plus cost and importance).

Public face: :func:`analyze`, the types in :mod:`onnxprune.analyze.types`, and
:mod:`onnxprune.analyze.cost` / :mod:`onnxprune.analyze.importance`.
"""

from __future__ import annotations

import logging

import onnx

from onnxprune.analyze.context import AnalysisContext
from onnxprune.analyze.groups import build_analysis
from onnxprune.analyze.rules import rule_for
from onnxprune.analyze.types import Analysis, ChannelRef, Group, Labels, Link
from onnxprune.load import Model

__all__ = ["Analysis", "ChannelRef", "Group", "Labels", "Link", "analyze"]

logger = logging.getLogger(__name__)


def _outer_names(graph: onnx.GraphProto) -> set[str]:
    """Names a subgraph reads from its enclosing scope (recursively)."""
    local = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    local |= {o for n in graph.node for o in n.output}
    used: set[str] = set()
    for node in graph.node:
        used.update(i for i in node.input if i)
        for a in node.attribute:
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                used |= _outer_names(sub)
    return used - local


def analyze(model: Model) -> Analysis:
    """Find every group of channels that must be pruned together.

    Walks the graph in topological order applying the rule of each op type
    (:data:`onnxprune.analyze.rules.RULES`). Channels touching an op without a rule, a
    subgraph, or a graph output are frozen, with the reason recorded on their group.

    Args:
        model: A normalized model from :func:`onnxprune.load.load`.

    Returns:
        The :class:`Analysis` (groups, labels, edits for the rewrite).
    """
    ctx = AnalysisContext(model)
    for node in model.proto.graph.node:
        subgraph_reads: set[str] = set()
        for a in node.attribute:
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                subgraph_reads |= _outer_names(sub)
        for name in subgraph_reads:
            if ctx.label(name) is not None:
                ctx.freeze(ctx.labels[name].ids, f"{node.op_type} '{node.name}' reads '{name}' in a subgraph")
        rule = rule_for(node)
        if rule is None:
            ctx.freeze_inputs(node, f"{node.op_type} '{node.name}' has no channel rule"
                              + (f" (domain '{node.domain}')" if node.domain not in ("", "ai.onnx") else ""))
            continue
        rule(node, ctx)
    for out in model.proto.graph.output:
        lab = ctx.label(out.name)
        if lab is not None:
            ctx.freeze(lab.ids, f"graph output '{out.name}' keeps its shape")
    analysis = build_analysis(ctx)
    logger.info("%d groups (%d prunable)", len(analysis.groups), len(analysis.prunable_groups))
    return analysis
