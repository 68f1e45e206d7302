"""Bit-widths in the joint search: which layers take a group's bits, and the exact joint cost.

Bits are chosen per prunable *group*: group ``t``'s ``(w_bits, a_bits)`` apply to every
quantizable layer (:func:`onnxprune.quantize.find_layers`: Conv, ConvTranspose, Gemm, MatMul
with a float initializer weight) whose
output channels are in the group. A layer producing no prunable group takes the bits of the
group its input channels belong to (the classifier Gemm of a ResNet takes the last stage's),
else the group of the closest earlier layer. Layers named by ``keep_float`` stay float.

A bit *action* is a number in ``[0, 1]``: the allowed set of ``n`` widths (ascending) is cut
into ``n`` equal bins, ``index = min(floor(u * n), n - 1)``; :meth:`BitSpace.action_of` gives a
bin's centre ``(index + 0.5) / n`` (what an applied choice is replayed as).

Costs (float layers count 32 x 32 bits, 4 bytes per param):
    ``bops``: sum over MAC layers of MACs x w_bits x a_bits.
    ``bytes``: quantized layers' weights x w_bits / 8, every other param x 4.
Both are exact for a keep vector (the pruned shapes of :mod:`onnxprune.analyze.cost`), so they
equal the cost of the rewritten model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from onnxprune.analyze.cost import node_macs, param_names, pruned_shapes
from onnxprune.errors import PlanError
from onnxprune.quantize.layers import find_layers
from onnxprune.quantize.plan import A_BITS, W_BITS
from onnxprune.rewrite.prune import tensor_masks, unit_mask
from onnxprune.search.space import SearchSpace

logger = logging.getLogger(__name__)

FLOAT_BITS = 32
JOINT_METRICS: tuple[str, ...] = ("bops", "bytes")
#: What the pruning part of a joint metric is measured like (Algorithm 1's group shares).
PRUNE_METRIC = {"bops": "macs", "bytes": "params"}


def parse_bits(text: str | Sequence[int], allowed: Sequence[int], option: str) -> tuple[int, ...]:
    """Sorted distinct bit-widths of ``text`` (``"2,4,8"``), each one of ``allowed``.

    Raises:
        PlanError: a width is not a number or not allowed.
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        values = sorted({int(str(v).strip()) for v in items if str(v).strip()})
    except ValueError:
        raise PlanError(f"{option} '{text}' is not a list of integers; pass e.g. "
                        f"{','.join(map(str, allowed))}") from None
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        shown = ",".join(map(str, bad)) or repr(text)
        raise PlanError(f"{option} {shown} not allowed; choose from {','.join(map(str, allowed))}")
    return tuple(values)


def quantizable_layers(space: SearchSpace) -> tuple[str, ...]:
    """Names of the quantizable nodes of ``space``'s model, in graph order."""
    return tuple(q.node for q in find_layers(space.analysis.model.proto))


def _layer_groups(space: SearchSpace, layers: Sequence[str]) -> tuple[int, ...]:
    """Space position of the group whose bits each layer takes (see the module docstring)."""
    position = {gid: t for t, gid in enumerate(space.group_ids)}
    produced: dict[str, int] = {}
    consumed: dict[str, int] = {}
    for gid in space.group_ids:
        for name in space.analysis.groups[gid].producers:
            produced.setdefault(name, position[gid])
        for name in space.analysis.groups[gid].consumers:
            consumed.setdefault(name, position[gid])
    out, last = [], 0
    for name in layers:
        last = produced.get(name, consumed.get(name, last))
        out.append(last)
    return tuple(out)


def resolve_keep_float(layers: Sequence[str], keep: Sequence[str]) -> frozenset[str]:
    """Layer names of ``keep`` (``first``, ``last`` or node names) that stay float.

    Raises:
        PlanError: a name is not a quantizable layer.
    """
    out: set[str] = set()
    for item in keep:
        if item == "first" and layers:
            out.add(layers[0])
        elif item == "last" and layers:
            out.add(layers[-1])
        elif item in layers:
            out.add(item)
        else:
            raise PlanError(f"--keep-float {item}: not a quantizable layer; use first, last or a Conv/Gemm/MatMul "
                            "node name (`onnxprune analyze` lists them)")
    return frozenset(out)


@dataclass(frozen=True)
class BitSpace:
    """Allowed bit-widths, the layers that take each group's bits, and the joint cost of a choice.

    Attributes:
        space: The pruning search space.
        metric: ``bops`` or ``bytes``.
        w_set: Allowed weight bits, ascending.
        a_set: Allowed activation bits, ascending.
        layers: Quantized layer names (float-kept ones excluded), graph order.
        layer_group: Space position of each layer's group.
    """

    space: SearchSpace
    metric: str
    w_set: tuple[int, ...]
    a_set: tuple[int, ...]
    layers: tuple[str, ...]
    layer_group: tuple[int, ...]

    @classmethod
    def build(cls, space: SearchSpace, metric: str, *, w_set: Sequence[int] = W_BITS,
              a_set: Sequence[int] = A_BITS, keep_float: Sequence[str] = ()) -> BitSpace:
        """The bit space of ``space``'s model (every quantizable layer but ``keep_float``)."""
        if metric not in JOINT_METRICS:
            raise PlanError(f"--metric {metric} with --quantize: use one of {', '.join(JOINT_METRICS)}")
        every = quantizable_layers(space)
        floats = resolve_keep_float(every, keep_float)
        layers = tuple(n for n in every if n not in floats)
        if not layers:
            raise PlanError("--quantize: the model has no quantizable layer left (Conv/Gemm/MatMul with an "
                            "initializer weight); drop --keep-float or --quantize")
        return cls(space=space, metric=metric, w_set=parse_bits(list(w_set), W_BITS, "--w-bits"),
                   a_set=parse_bits(list(a_set), A_BITS, "--a-bits"), layers=layers,
                   layer_group=_layer_groups(space, layers))

    def index(self, u: float, kind: str) -> int:
        """Bin of bit action ``u`` in the ``w`` or ``a`` set."""
        n = len(self.w_set if kind == "w" else self.a_set)
        return int(min(max(int(np.floor(float(np.clip(u, 0.0, 1.0)) * n)), 0), n - 1))

    def action_of(self, index: int, kind: str) -> float:
        """The bit action at the centre of bin ``index``."""
        return (index + 0.5) / len(self.w_set if kind == "w" else self.a_set)

    def bits(self, w_index: Sequence[int], a_index: Sequence[int]) -> tuple[tuple[int, int], ...]:
        """Per-group ``(w_bits, a_bits)`` of bin indices."""
        return tuple((self.w_set[int(w)], self.a_set[int(a)]) for w, a in zip(w_index, a_index))

    def layer_bits(self, group_bits: Sequence[tuple[int, int]]) -> dict[str, tuple[int, int]]:
        """Node name -> ``(w_bits, a_bits)`` of every quantized layer, from per-group bits."""
        return {name: tuple(group_bits[t]) for name, t in zip(self.layers, self.layer_group)}  # type: ignore[misc]


@dataclass(frozen=True)
class LayerCosts:
    """Per-layer cost terms of one keep vector (arrays aligned with :attr:`BitSpace.layers`)."""

    macs: np.ndarray
    weights: np.ndarray
    float_macs: int
    float_params: int


class JointMeter:
    """Exact ``bops`` / ``bytes`` of keep counts under per-group bits (layer terms cached per keep vector)."""

    def __init__(self, bits: BitSpace) -> None:
        """Index ``bits``' layers in the model."""
        self.bits = bits
        self.cache: dict[tuple[int, ...], LayerCosts] = {}
        model = bits.space.analysis.model
        self._nodes = list(model.proto.graph.node)
        self._row = {name: i for i, name in enumerate(bits.layers)}
        self._params = param_names(model)
        self._group = np.asarray(bits.layer_group, dtype=np.int64)

    def terms(self, keeps: Sequence[int]) -> LayerCosts:
        """The layer terms of ``keeps`` (cached)."""
        key = tuple(int(k) for k in keeps)
        if key not in self.cache:
            space = self.bits.space
            masks = tensor_masks(space.analysis, unit_mask(space.analysis, space.plan(key)))
            shape_of = pruned_shapes(space.analysis, masks)
            macs = np.zeros(len(self._row))
            weights = np.zeros(len(self._row))
            float_macs, quant_weights = 0, set()
            for node in self._nodes:
                m = node_macs(node, shape_of)
                row = self._row.get(node.name)
                if row is None:
                    float_macs += m
                    continue
                macs[row] = m
                weights[row] = _numel(shape_of(node.input[1]))
                quant_weights.add(node.input[1])
            float_params = sum(_numel(shape_of(p)) for p in self._params if p not in quant_weights)
            self.cache[key] = LayerCosts(macs, weights, float_macs, float_params)
        return self.cache[key]

    def value(self, keeps: Sequence[int], group_bits: Sequence[tuple[int, int]]) -> float:
        """The metric of ``keeps`` with per-group ``(w_bits, a_bits)``."""
        terms = self.terms(keeps)
        gb = np.asarray(group_bits, dtype=np.float64).reshape(-1, 2)
        w, a = gb[self._group, 0], gb[self._group, 1]
        if self.bits.metric == "bops":
            return float(np.dot(terms.macs, w * a) + terms.float_macs * FLOAT_BITS * FLOAT_BITS)
        return float(np.dot(terms.weights, w / 8.0) + 4.0 * terms.float_params)

    def group_values(self, keeps: Sequence[int], group_bits: Sequence[tuple[int, int]]) -> np.ndarray:
        """``[G]`` the metric of the layers taking each group's bits."""
        terms = self.terms(keeps)
        gb = np.asarray(group_bits, dtype=np.float64).reshape(-1, 2)
        w, a = gb[self._group, 0], gb[self._group, 1]
        per_layer = terms.macs * w * a if self.bits.metric == "bops" else terms.weights * w / 8.0
        return np.bincount(self._group, weights=per_layer, minlength=len(self.bits.space))

    def float_value(self) -> float:
        """The metric of the unpruned float32 model."""
        sizes = self.bits.space.sizes
        return self.value(sizes, [(FLOAT_BITS, FLOAT_BITS)] * len(sizes))


def _numel(shape: tuple[int | None, ...] | None) -> int:
    if shape is None or any(d is None for d in shape):
        return 0
    return int(np.prod(shape, dtype=np.int64)) if shape else 1
