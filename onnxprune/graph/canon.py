"""Name-free canonical keys of small labeled multigraphs (motif candidates).

A candidate is an ``nx.MultiDiGraph`` whose nodes carry a ``role`` (``entry``/``exit``/
``inner``) and whose edges carry a ``label``. Weisfeiler-Lehman colour refinement over roles and
edge labels (in and out neighbourhoods kept apart) usually gives every node its own colour;
then the coloured edge list is an exact canonical form. Otherwise (symmetric branches) the key
is the WL hash, and candidates with equal hashes are checked for labeled isomorphism (VF2), so
two non-isomorphic graphs never share a key.
"""

from __future__ import annotations

import hashlib
import logging

import networkx as nx
from networkx.algorithms import isomorphism

logger = logging.getLogger(__name__)


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def wl_labels(graph: nx.MultiDiGraph) -> dict[object, str]:
    """Weisfeiler-Lehman colour refinement over roles and edge labels, run to a stable partition.

    In and out neighbourhoods are kept apart; the colours depend on structure and labels only.
    """
    labels = {n: _digest(str(d.get("role", ""))) for n, d in graph.nodes(data=True)}
    classes = len(set(labels.values()))
    for _ in range(graph.number_of_nodes()):
        new = {}
        for n in graph.nodes:
            ins = sorted((d["label"], labels[u]) for u, _, d in graph.in_edges(n, data=True))
            outs = sorted((d["label"], labels[v]) for _, v, d in graph.out_edges(n, data=True))
            new[n] = _digest(repr((labels[n], ins, outs)))
        labels = new
        if len(set(labels.values())) == classes:
            break
        classes = len(set(labels.values()))
    return labels


def wl_hash(graph: nx.MultiDiGraph) -> str:
    """Weisfeiler-Lehman hash of a role/label-annotated multigraph (independent of node names)."""
    labels = wl_labels(graph)
    return _digest(repr((graph.number_of_nodes(), graph.number_of_edges(), sorted(labels.values()))))


def exact_key(graph: nx.MultiDiGraph) -> str | None:
    """Complete canonical key when colour refinement separates every node, else ``None``.

    With all colours distinct, the sorted list of ``(colour(u), colour(v), label)`` edges names
    the graph up to isomorphism exactly, so no isomorphism test is needed.
    """
    labels = wl_labels(graph)
    if len(set(labels.values())) < graph.number_of_nodes():
        return None
    edges = sorted((labels[u], labels[v], d["label"]) for u, v, d in graph.edges(data=True))
    return "c" + _digest(repr(edges))


_EDGE_MATCH = isomorphism.categorical_multiedge_match("label", None)


def _node_match(a: dict[str, object], b: dict[str, object]) -> bool:
    return a.get("role") == b.get("role")


class MotifTable:
    """Assigns canonical keys to candidate graphs; isomorphic candidates share a key.

    Not thread-safe; one table per hierarchy build.
    """

    def __init__(self) -> None:
        self._reps: dict[str, list[tuple[str, nx.MultiDiGraph]]] = {}

    def key(self, graph: nx.MultiDiGraph) -> str:
        """Canonical key of ``graph``: exact when refinement is discrete, else WL hash + VF2."""
        exact = exact_key(graph)
        if exact is not None:
            self._reps.setdefault(exact, [(exact, graph)])
            return exact
        base = wl_hash(graph)
        reps = self._reps.setdefault(base, [])
        for key, rep in reps:
            if nx.is_isomorphic(rep, graph, node_match=_node_match, edge_match=_EDGE_MATCH):
                return key
        key = base if not reps else f"{base}~{len(reps)}"
        if reps:
            logger.debug("WL hash collision on %s: new variant %s", base, key)
        reps.append((key, graph))
        return key

    def representative(self, key: str) -> nx.MultiDiGraph:
        """The first graph registered under ``key``."""
        base = key.split("~", 1)[0]
        return next(rep for k, rep in self._reps[base] if k == key)
