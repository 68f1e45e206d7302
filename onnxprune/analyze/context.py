"""Mutable state of one analysis pass: labels, atoms, couplings (union-find), edits.

Rules (``rules_*.py``) read and write it through the small methods below; nothing else
keeps state. One context lives for one :func:`onnxprune.analyze.analyze` call.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.analyze.qdq import QuantizedWeight, dq_weight, dq_weight_problem
from onnxprune.analyze.types import Edit, Labels, Root, SliceConst
from onnxprune.load import Model

logger = logging.getLogger(__name__)

#: Initializers at least this large are not cached by ``const`` (the rules only read their shape;
#: caching every weight of a > 2 GiB model would hold a second copy of it).
_CACHE_MAX_BYTES = 1 << 24


class UnionFind:
    """Union-find over dense integer ids with path halving; grows on demand."""

    def __init__(self) -> None:
        self.parent: list[int] = []

    def add(self, count: int) -> int:
        """Add ``count`` singletons; return the first new id."""
        first = len(self.parent)
        self.parent.extend(range(first, first + count))
        return first

    def find(self, a: int) -> int:
        parent = self.parent
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            if ra < rb:
                self.parent[rb] = ra
            else:
                self.parent[ra] = rb

    def roots(self) -> np.ndarray:
        """Representative of every id."""
        return np.fromiter((self.find(i) for i in range(len(self.parent))), dtype=np.int64,
                           count=len(self.parent))


class AnalysisContext:
    """What rules see: shapes, constants, labels; and what they record."""

    def __init__(self, model: Model) -> None:
        self.model = model
        graph = model.proto.graph
        self.initializers: dict[str, onnx.TensorProto] = {t.name: t for t in graph.initializer}
        self._const_cache: dict[str, np.ndarray] = {}
        self.producers: dict[str, onnx.NodeProto] = {o: n for n in graph.node for o in n.output if o}
        self.uses: Counter[str] = Counter(i for n in graph.node for i in n.input if i)
        self.uses.update(o.name for o in graph.output)
        self.labels: dict[str, Labels] = {}
        self.atoms = UnionFind()
        self.roots: list[Root] = []
        self.frozen_atoms: dict[int, str] = {}
        self.freeze_reasons: list[str] = []
        self.edits: list[Edit] = []
        self.consumers: dict[int, set[str]] = {}  # atom -> consuming node names
        self.pad_links: list[tuple[int, int]] = []  # (out atom, in atom)

    # ---- reading -------------------------------------------------------------------
    def shape(self, name: str) -> tuple[int | None, ...] | None:
        """Static shape at batch 1, or None when unknown."""
        return self.model.shapes.get(name)

    def rank(self, name: str) -> int | None:
        shape = self.shape(name)
        return None if shape is None else len(shape)

    def is_const(self, name: str) -> bool:
        return name in self.initializers

    def const(self, name: str) -> np.ndarray | None:
        """Value of an initializer (cached below 16 MiB), or None for activations / absent inputs."""
        if not name or name not in self.initializers:
            return None
        if name not in self._const_cache:
            value = numpy_helper.to_array(self.initializers[name])
            if value.nbytes >= _CACHE_MAX_BYTES:
                return value
            self._const_cache[name] = value
        return self._const_cache[name]

    def label(self, name: str) -> Labels | None:
        return self.labels.get(name) if name else None

    def _weight_dq(self, name: str) -> onnx.NodeProto | None:
        node = self.producers.get(name) if name else None
        if node is None or node.op_type != "DequantizeLinear" or node.domain not in ("", "ai.onnx"):
            return None
        return node

    def quantized(self, name: str) -> QuantizedWeight | None:
        """The integer weight behind ``name`` when it is a sliceable DequantizeLinear output."""
        node = self._weight_dq(name)
        if node is None or dq_weight_problem(node, self.initializers, self.uses[name]) is not None:
            return None
        return dq_weight(node, self.initializers)

    def weight_shape(self, name: str) -> tuple[int, ...] | None:
        """Shape of a constant the rewrite can slice: an initializer or a quantized weight; else None."""
        if name in self.initializers:
            return tuple(int(d) for d in self.initializers[name].dims)
        quantized = self.quantized(name)
        return None if quantized is None else quantized.shape

    def weight_problem(self, name: str) -> str:
        """Why the quantized constant ``name`` cannot be sliced ("" when it can, or is an activation)."""
        node = self._weight_dq(name)
        if node is None:
            return ""
        if node.input[0] in self.initializers:
            return dq_weight_problem(node, self.initializers, self.uses[name]) or ""
        quant = self.producers.get(node.input[0])
        if quant is not None and quant.op_type == "QuantizeLinear" and quant.input[0] in self.initializers:
            return (f"DequantizeLinear '{node.name}' reads a weight quantized at run time by QuantizeLinear "
                    f"'{quant.name}' (store it as an integer initializer)")
        return ""

    # ---- recording -----------------------------------------------------------------
    def set_label(self, name: str, labels: Labels | None) -> None:
        if labels is not None and name:
            self.labels[name] = labels

    def new_root(self, node: onnx.NodeProto, tensor: str, axis: int, size: int,
                 weight: str | None = None, weight_axis: int = 0) -> Labels:
        """Allocate ``size`` atoms for a channel-creating output and label it."""
        first = self.atoms.add(size)
        self.roots.append(Root(node=node.name, tensor=tensor, axis=axis, size=size, first_atom=first,
                               weight=weight, weight_axis=weight_axis))
        labels = Labels(axis=axis, ids=np.arange(first, first + size, dtype=np.int64))
        self.labels[tensor] = labels
        return labels

    def couple(self, a: np.ndarray, b: np.ndarray, reason: str) -> None:
        """Couple atoms position by position; a fixed position (-1) freezes its partner."""
        if a.shape != b.shape:
            self.freeze(np.concatenate([a.ravel(), b.ravel()]), reason + " (channel counts differ)")
            return
        for x, y in zip(a.tolist(), b.tolist()):
            if x >= 0 and y >= 0:
                self.atoms.union(x, y)
            elif x >= 0 or y >= 0:
                self.freeze(np.array([max(x, y)]), reason + " (coupled with a fixed channel)")

    def couple_all(self, ids: Sequence[int]) -> None:
        """Make all ``ids`` one unit (grouped-conv blocks)."""
        ids = [i for i in ids if i >= 0]
        for other in ids[1:]:
            self.atoms.union(ids[0], other)

    def freeze(self, ids: np.ndarray, reason: str) -> None:
        """Forbid pruning the atoms ``ids`` (and therefore their groups)."""
        ids = np.unique(np.asarray(ids).ravel())
        ids = ids[ids >= 0]
        if ids.size == 0:
            return
        self.freeze_reasons.append(reason)
        logger.debug("freeze %d atoms: %s", ids.size, reason)
        for atom in ids.tolist():
            self.frozen_atoms.setdefault(atom, reason)

    def freeze_inputs(self, node: onnx.NodeProto, reason: str) -> None:
        """Freeze every labeled input of ``node``."""
        for name in node.input:
            labels = self.label(name)
            if labels is not None:
                self.freeze(labels.ids, reason)

    def consume(self, node: onnx.NodeProto, labels: Labels) -> None:
        """Record ``node`` as a consumer of the atoms in ``labels``."""
        for atom in np.unique(labels.ids).tolist():
            if atom >= 0:
                self.consumers.setdefault(atom, set()).add(node.name)

    def edit(self, edit: Edit) -> None:
        self.edits.append(edit)

    def slice_input(self, node: onnx.NodeProto, index: int, axis: int, mask_of: str) -> None:
        """Slice constant input ``index`` of ``node`` along ``axis`` by ``mask_of``'s keep mask.

        A quantized weight is sliced at its DequantizeLinear: the integer data along ``axis``,
        and a per-axis scale / zero point too when ``axis`` is the quantization axis.
        """
        quantized = self.quantized(node.input[index])
        if quantized is None:
            self.edit(SliceConst(node.name, index, axis, mask_of))
            return
        self.edit(SliceConst(quantized.node, 0, axis, mask_of))
        if quantized.axis == axis:
            self.edit(SliceConst(quantized.node, 1, 0, mask_of))
            if quantized.zero_point:
                self.edit(SliceConst(quantized.node, 2, 0, mask_of))
