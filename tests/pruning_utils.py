"""Helpers for pruning tests: export cache, random plans, zeroed models, ORT runs."""

from __future__ import annotations

import functools

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from onnxprune.analyze import Analysis
from onnxprune.analyze.types import SliceConst
from onnxprune.load import Model
from onnxprune.plan import Plan
from onnxprune.rewrite.prune import repair_plan, tensor_masks, unit_mask


@functools.lru_cache(maxsize=None)
def zoo_model(name: str, exporter: str, fold_bn: bool = False) -> onnx.ModelProto:
    """Export a zoo entry once per test session."""
    from models.export import export_onnx
    from models.zoo import zoo_entries

    entry = next(e for e in zoo_entries() if e.name == name)
    return export_onnx(entry.build(0), entry.input_shape, exporter=exporter, fold_bn=fold_bn)


def random_plan(analysis: Analysis, rng: np.random.Generator, p_prune: float = 0.7) -> Plan:
    """Random kept subsets (at least one unit) for a random subset of prunable groups."""
    keep = {}
    for group in analysis.prunable_groups:
        if rng.random() < p_prune:
            count = int(rng.integers(1, group.size + 1))
            keep[group.id] = tuple(sorted(rng.choice(group.size, size=count, replace=False).tolist()))
    return repair_plan(analysis, Plan(keep=keep))


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def random_feeds(model: Model, rng: np.random.Generator, batch: int = 2) -> dict[str, np.ndarray]:
    feeds = {}
    for inp in model.proto.graph.input:
        shape = model.shapes[inp.name]
        first = inp.type.tensor_type.shape.dim[0]
        n = first.dim_value if first.HasField("dim_value") else batch
        feeds[inp.name] = rng.standard_normal((n, *shape[1:])).astype(np.float32)
    return feeds


def linked_closure(analysis: Analysis, pruned_units: np.ndarray) -> np.ndarray:
    """Global units to zero so that every pruned unit carries nothing (follows Pad links)."""
    zero = pruned_units.copy()
    links = [(analysis.group_units[k.out_group][k.out_unit], analysis.group_units[k.in_group][k.in_unit])
             for k in analysis.links]
    changed = True
    while changed:
        changed = False
        for out_unit, in_unit in links:
            if zero[out_unit] and not zero[in_unit]:
                zero[in_unit] = changed = True
    return zero


ZEROABLE = ("Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization", "InstanceNormalization",
            "Mul", "Add", "Sub")


def zeroed_model(analysis: Analysis, zero_units: np.ndarray) -> onnx.ModelProto:
    """Copy of the model whose producers (filters, biases, BN/affine shift and scale) are
    zero on ``zero_units``: those channels carry nothing. Consumers are untouched."""
    model = onnx.ModelProto()
    model.CopyFrom(analysis.model.proto)
    masks = tensor_masks(analysis, ~zero_units)
    nodes = {n.name: n for n in model.graph.node}
    inits = {t.name: t for t in model.graph.initializer}
    for e in analysis.edits:
        node = nodes[e.node]
        if not isinstance(e, SliceConst) or e.mask_of != node.output[0] or node.op_type not in ZEROABLE:
            continue
        if node.op_type == "BatchNormalization" and e.index == 4:
            continue  # keep the variance positive
        tensor = inits[node.input[e.index]]
        value = numpy_helper.to_array(tensor).copy()
        index = [slice(None)] * value.ndim
        index[e.axis] = ~masks[e.mask_of]
        value[tuple(index)] = 0
        tensor.CopyFrom(numpy_helper.from_array(value, tensor.name))
    return model


def prune_units(analysis: Analysis, plan: Plan) -> np.ndarray:
    """Global flag per unit: True where the plan prunes it."""
    return ~unit_mask(analysis, plan)

