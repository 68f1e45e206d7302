"""Turn the couplings recorded by the rules into :class:`Group` objects."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from onnxprune.analyze.context import AnalysisContext, UnionFind
from onnxprune.analyze.types import Analysis, ChannelRef, Group, Link


def _root_of_atom(ctx: AnalysisContext, n_atoms: int) -> np.ndarray:
    root_of = np.empty(n_atoms, dtype=np.int64)
    for r, root in enumerate(ctx.roots):
        root_of[root.first_atom:root.first_atom + root.size] = r
    return root_of


def _group_of_roots(ctx: AnalysisContext, rep: np.ndarray, root_of: np.ndarray) -> np.ndarray:
    """Roots sharing any unit form one group; ids follow the first root's order."""
    uf = UnionFind()
    uf.add(len(ctx.roots))
    for a, b in zip(root_of.tolist(), root_of[rep].tolist()):
        if a != b:
            uf.union(a, b)
    comp = uf.roots()
    _, first_index, dense = np.unique(comp, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first_index))  # dense component -> rank of its first root
    return order[dense]


def _members(ctx: AnalysisContext, atom_group: np.ndarray, n_groups: int) -> list[list[ChannelRef]]:
    members: list[list[ChannelRef]] = [[] for _ in range(n_groups)]
    for tensor, lab in ctx.labels.items():
        valid = lab.ids >= 0
        if not valid.any():
            continue
        positions = np.nonzero(valid)[0]
        groups = atom_group[lab.ids[valid]]
        for g in np.unique(groups).tolist():
            pos = positions[groups == g]
            members[g].append(ChannelRef(tensor, lab.axis, int(pos.min()), int(pos.max()) + 1))
    return members


def build_analysis(ctx: AnalysisContext) -> Analysis:
    """Assemble groups, units and links from a finished analysis context."""
    n_atoms = len(ctx.atoms.parent)
    rep = ctx.atoms.roots() if n_atoms else np.zeros(0, dtype=np.int64)
    root_of = _root_of_atom(ctx, n_atoms)
    root_group = _group_of_roots(ctx, rep, root_of) if ctx.roots else np.zeros(0, dtype=np.int64)
    atom_group = root_group[root_of] if n_atoms else np.zeros(0, dtype=np.int64)
    n_groups = int(root_group.max()) + 1 if root_group.size else 0

    reps = np.unique(rep)  # sorted: unit order = order of each unit's smallest atom
    unit_of_rep = {int(r): u for u, r in enumerate(reps.tolist())}
    atom_unit = np.array([unit_of_rep[int(r)] for r in rep.tolist()], dtype=np.int64)
    unit_group = atom_group[reps] if reps.size else np.zeros(0, dtype=np.int64)
    group_units = tuple(np.nonzero(unit_group == g)[0] for g in range(n_groups))
    local = np.empty(len(reps), dtype=np.int64)
    for units in group_units:
        local[units] = np.arange(units.size)

    reasons: dict[int, list[str]] = defaultdict(list)
    for atom, reason in sorted(ctx.frozen_atoms.items()):
        g = int(atom_group[atom])
        if reason not in reasons[g]:
            reasons[g].append(reason)
    producers: dict[int, list[str]] = defaultdict(list)
    width: dict[int, int] = defaultdict(lambda: 1)
    for r, root in enumerate(ctx.roots):
        g = int(root_group[r])
        producers[g].append(root.node)
        n_units = np.unique(atom_unit[root.first_atom:root.first_atom + root.size]).size
        width[g] = max(width[g], root.size // max(n_units, 1))
    consumers: dict[int, set[str]] = defaultdict(set)
    for atom, nodes in ctx.consumers.items():
        consumers[int(atom_group[atom])].update(nodes)
    members = _members(ctx, atom_group, n_groups)

    groups = []
    for g in range(n_groups):
        why = reasons.get(g)
        frozen = None if not why else why[0] + (f" (+{len(why) - 1} more)" if len(why) > 1 else "")
        groups.append(Group(id=g, size=int(group_units[g].size), members=tuple(members[g]),
                            producers=tuple(producers[g]), consumers=tuple(sorted(consumers[g])),
                            frozen_reason=frozen, unit_width=width[g]))
    links = sorted({Link(int(atom_group[o]), int(local[atom_unit[o]]), int(atom_group[i]), int(local[atom_unit[i]]))
                    for o, i in ctx.pad_links}, key=lambda k: (k.out_group, k.out_unit))
    return Analysis(model=ctx.model, groups=tuple(groups), labels=dict(ctx.labels), roots=tuple(ctx.roots),
                    atom_unit=atom_unit, unit_group=unit_group, group_units=group_units,
                    edits=tuple(ctx.edits), links=tuple(links), frozen=tuple(ctx.freeze_reasons))
