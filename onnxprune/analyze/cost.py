"""Exact MACs and parameter counts from inferred shapes, before and after a plan.

Conventions (stated in the README too):
    MACs: multiply-accumulates at batch 1 of Conv (K_h*K_w*C_in/groups*C_out*H_out*W_out),
    ConvTranspose (weight elements * H_in*W_in), Gemm and MatMul (M*K*N); elementwise ops,
    normalization and pooling are not counted (as PyTorch's flop counter and the papers).
    Params: elements of floating-point initializers of rank >= 1, excluding
    BatchNormalization running mean/variance (buffers, as in PyTorch); in a QDQ model the
    integer weights and biases read by DequantizeLinear count, their scales and zero points do not.
    BOPs: MACs * weight bits * activation bits (32 x 32 for float layers).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx

from onnxprune.analyze.qdq import INTEGER_TYPES, QUANT_OPS
from onnxprune.analyze.types import Analysis, SliceConst
from onnxprune.load import Model

_FLOAT = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                    onnx.TensorProto.BFLOAT16})
_MAC_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
logger = logging.getLogger(__name__)
ShapeOf = Callable[[str], tuple[int | None, ...] | None]


@dataclass(frozen=True)
class Cost:
    """Model cost. ``bops`` uses per-layer bit-widths (float layers count 32 x 32).

    ``unknown`` counts Conv/Gemm/MatMul nodes whose shapes stayed symbolic (their MACs are
    missing: pass ``--input-shape``).
    """

    macs: int
    params: int
    bops: int
    unknown: int = 0


def _prod(dims: tuple[int | None, ...] | None) -> int:
    if dims is None or any(d is None for d in dims):
        return 0
    return int(np.prod(dims, dtype=np.int64)) if dims else 1


def node_macs(node: onnx.NodeProto, shape_of: ShapeOf) -> int:
    """MACs of one node at batch 1 given a shape lookup (0 for uncounted ops or unknown shapes)."""
    op = node.op_type
    if op == "Conv":
        out = shape_of(node.output[0])
        return _prod(shape_of(node.input[1])) * _prod(out[2:] if out else None)
    if op == "ConvTranspose":
        x = shape_of(node.input[0])
        return _prod(shape_of(node.input[1])) * _prod(x[2:] if x else None)
    if op == "Gemm":
        y = shape_of(node.output[0])
        a = shape_of(node.input[0])
        if y is None or a is None:
            return 0
        k = a[0] if any(at.name == "transA" and at.i for at in node.attribute) else a[1]
        return _prod(y) * (k or 0)
    if op == "MatMul":
        a, y = shape_of(node.input[0]), shape_of(node.output[0])
        if a is None or y is None:
            return 0
        return _prod(y) * (a[-1] or 0) if len(a) >= 2 else _prod(y) * (a[0] or 0)
    return 0


def _param_initializers(model: Model) -> dict[str, int]:
    """Initializer name -> 1 for counted params: float (not BN running stats, not Q/DQ scales or
    zero points) or integer data dequantized by a DequantizeLinear (QDQ weights), rank >= 1."""
    nodes = model.proto.graph.node
    buffers = {n.input[i] for n in nodes if n.op_type == "BatchNormalization" for i in (3, 4) if len(n.input) > i}
    buffers |= {n.input[i] for n in nodes if n.op_type in QUANT_OPS for i in (1, 2) if len(n.input) > i}
    quantized = {n.input[0] for n in nodes if n.op_type == "DequantizeLinear"}
    return {t.name: 1 for t in model.proto.graph.initializer
            if len(t.dims) >= 1 and t.name not in buffers
            and (t.data_type in _FLOAT or (t.data_type in INTEGER_TYPES and t.name in quantized))}


def _bits(node: onnx.NodeProto, bits: Mapping[str, tuple[int, int]]) -> int:
    w, a = bits.get(node.name, (32, 32))
    return w * a


def model_cost(model: Model, bits: Mapping[str, tuple[int, int]] | None = None) -> Cost:
    """Exact cost of a normalized model from its inferred shapes."""
    return _cost(model, model.shapes.get, bits or {})


def _cost(model: Model, shape_of: ShapeOf, bits: Mapping[str, tuple[int, int]]) -> Cost:
    """MACs, params and BOPs of ``model`` under the shape lookup ``shape_of``."""
    macs = bops = unknown = 0
    for node in model.proto.graph.node:
        m = node_macs(node, shape_of)
        macs += m
        bops += m * _bits(node, bits)
        unknown += m == 0 and node.op_type in _MAC_OPS
    params = sum(_prod(shape_of(name)) for name in _param_initializers(model))
    if unknown:
        logger.warning("%d Conv/Gemm/MatMul nodes have symbolic shapes: their MACs are not counted; "
                       "pass --input-shape NAME:D0,D1,... to count them", unknown)
    return Cost(macs=macs, params=params, bops=bops, unknown=unknown)


def pruned_shapes(analysis: Analysis, masks: Mapping[str, np.ndarray]) -> ShapeOf:
    """Shape lookup of the pruned model, derived from keep masks without rewriting it."""
    shapes = analysis.model.shapes
    sliced: dict[tuple[str, int], list[tuple[int, str]]] = {}
    nodes = {n.name: n for n in analysis.model.proto.graph.node}
    for e in analysis.edits:
        if isinstance(e, SliceConst):
            node = nodes[e.node]
            sliced.setdefault((node.input[e.index], e.index), []).append((e.axis, e.mask_of))
            if node.op_type == "DequantizeLinear" and e.index == 0:  # the dequantized weight shrinks too
                sliced.setdefault((node.output[0], -1), []).append((e.axis, e.mask_of))
    by_name: dict[str, list[tuple[int, str]]] = {}
    for (name, _), axes in sliced.items():
        by_name.setdefault(name, []).extend(axes)

    def shape_of(name: str) -> tuple[int | None, ...] | None:
        shape = shapes.get(name)
        if shape is None:
            return None
        dims = list(shape)
        lab = analysis.labels.get(name)
        if lab is not None and name in masks:
            dims[lab.axis] = int(masks[name].sum())
        for axis, tensor in by_name.get(name, ()):
            dims[axis] = int(masks[tensor].sum())
        return tuple(dims)

    return shape_of


def estimate_cost(analysis: Analysis, masks: Mapping[str, np.ndarray],
                  bits: Mapping[str, tuple[int, int]] | None = None) -> Cost:
    """Cost the pruned model would have (equal to :func:`model_cost` of the rewrite)."""
    return _cost(analysis.model, pruned_shapes(analysis, masks), bits or {})


def param_names(model: Model) -> tuple[str, ...]:
    """Initializers counted as params (float, rank >= 1, not BatchNormalization running stats)."""
    return tuple(_param_initializers(model))


def weight_bytes(model: Model, bits: Mapping[str, tuple[int, int]],
                 shape_of: ShapeOf | None = None) -> float:
    """Model bytes: a quantized layer's weight (input 1) at ``w_bits / 8`` bytes, other params 4 bytes.

    Args:
        model: The normalized model.
        bits: Node name -> (weight bits, activation bits) of the quantized layers.
        shape_of: Shape lookup (default: the model's inferred shapes; a pruned lookup for estimates).
    """
    shape_of = shape_of or model.shapes.get
    counted = _param_initializers(model)
    quantized = {n.input[1]: bits[n.name][0] for n in model.proto.graph.node
                 if n.name in bits and len(n.input) > 1 and n.input[1] in counted}
    return float(sum(_prod(shape_of(name)) * (quantized[name] / 8.0 if name in quantized else 4.0)
                     for name in counted))


def _groups_of(analysis: Analysis) -> Callable[[str], set[int]]:
    """Ids of the groups whose channels a tensor carries."""
    unit_groups = analysis.unit_group[analysis.atom_unit] if analysis.atom_unit.size else np.zeros(0, np.int64)

    def groups_of(tensor: str) -> set[int]:
        lab = analysis.labels.get(tensor)
        if lab is None:
            return set()
        ids = lab.ids[lab.ids >= 0]
        return set(np.unique(unit_groups[ids]).tolist())

    return groups_of


def group_shares(analysis: Analysis) -> tuple[tuple[int, int], ...]:
    """Per group: (MACs of ops reading or writing its channels, params sliced with it)."""
    model = analysis.model
    groups_of = _groups_of(analysis)
    macs = [0] * len(analysis.groups)
    params = [0] * len(analysis.groups)
    for node in model.proto.graph.node:
        m = node_macs(node, model.shapes.get)
        if m:
            for g in groups_of(node.input[0]) | groups_of(node.output[0]):
                macs[g] += m
    counted = _param_initializers(model)
    nodes = {n.name: n for n in model.proto.graph.node}
    seen: set[tuple[str, int]] = set()
    for e in analysis.edits:
        if isinstance(e, SliceConst):
            name = nodes[e.node].input[e.index]
            for g in groups_of(e.mask_of):
                if name in counted and (name, g) not in seen:
                    seen.add((name, g))
                    params[g] += _prod(model.shapes.get(name))
    return tuple(zip(macs, params))
