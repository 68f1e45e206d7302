"""Apply a plan to a model: slice initializers, fix attributes and shape constants.

Contract:
    requires: ``analysis`` from :func:`onnxprune.analyze.analyze` of the model to rewrite,
    and a plan whose group ids exist, name no frozen group (unless keeping everything),
    and keep at least one channel of every tensor.
    guarantees: a new ``onnx.ModelProto`` (the input is untouched) with the same graph
    inputs and outputs (names, dtypes, shapes), opset and metadata; every pruned channel's
    weights, biases and normalization parameters are physically removed; stale value_info
    is cleared and re-inferred. An empty plan returns an identical graph.
"""

from __future__ import annotations

import gc
import logging

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper, numpy_helper
from onnx_graphsurgeon.ir.tensor import LazyValues

from onnxprune.analyze.types import Analysis, Select, SetGroups, SetShapeDims, SliceConst, SplitSizes
from onnxprune.errors import PlanError
from onnxprune.large import infer_shapes
from onnxprune.load import restore_model_fields
from onnxprune.plan import Plan
from onnxprune.rewrite.select import emit_select

logger = logging.getLogger(__name__)

#: Graph-surgeon tensors sit in reference cycles, so a replaced weight is freed only by the cycle
#: collector: collect after slicing a weight at least this large (keeps one copy of a > 2 GiB model).
_COLLECT_BYTES = 1 << 26


def unit_mask(analysis: Analysis, plan: Plan) -> np.ndarray:
    """Boolean kept-flag per global unit; raises PlanError for an invalid plan."""
    kept = np.ones(analysis.unit_group.size, dtype=bool)
    for gid, keep in plan.keep.items():
        if not 0 <= gid < len(analysis.groups):
            raise PlanError(f"plan names group {gid}, the model has groups 0..{len(analysis.groups) - 1}; "
                            "re-run analyze on this model")
        group = analysis.groups[gid]
        if len(set(keep)) != len(keep) or any(not 0 <= i < group.size for i in keep):
            raise PlanError(f"plan for group {gid} keeps indices outside 0..{group.size - 1} or repeats one")
        if not keep:
            raise PlanError(f"plan removes every channel of group {gid}; keep at least one")
        if group.frozen_reason and len(keep) < group.size:
            raise PlanError(f"plan prunes frozen group {gid} ({group.frozen_reason}); leave it out of the plan")
        units = analysis.group_units[gid]
        kept[units] = False
        kept[units[list(keep)]] = True
    return kept


def tensor_masks(analysis: Analysis, kept_units: np.ndarray) -> dict[str, np.ndarray]:
    """Kept-flag per labeled position of every labeled tensor."""
    atom_kept = kept_units[analysis.atom_unit] if analysis.atom_unit.size else np.zeros(0, dtype=bool)
    masks = {}
    for name, lab in analysis.labels.items():
        masks[name] = np.where(lab.ids < 0, True, atom_kept[np.maximum(lab.ids, 0)] if atom_kept.size else True)
    return masks


#: Sub-byte element types graph-surgeon cannot export from a numpy array (it writes one byte each).
_PACKED = frozenset({onnx.TensorProto.INT4, onnx.TensorProto.UINT4})


def _set_const(node: gs.Node, index: int, value: np.ndarray, tag: str) -> None:
    name = f"{node.name}_{tag}_{index}"
    value = np.ascontiguousarray(value)
    if value.dtype.kind == "V" and helper.np_dtype_to_tensor_dtype(value.dtype) in _PACKED:
        # int4 data (QDQ weights): pack it with onnx and hand graph-surgeon the finished tensor
        node.inputs[index] = gs.Constant(name, LazyValues(numpy_helper.from_array(value, name)))
        return
    node.inputs[index] = gs.Constant(name, value)


class _Editor:
    """Applies analysis edits to one imported graph."""

    def __init__(self, analysis: Analysis, graph: gs.Graph, masks: dict[str, np.ndarray]) -> None:
        self.analysis, self.graph, self.masks = analysis, graph, masks
        self.sliced_large = False  # a weight of _COLLECT_BYTES or more was sliced
        self.nodes = {n.name: n for n in graph.nodes}

    def changed(self, tensor: str) -> bool:
        return tensor in self.masks and not bool(self.masks[tensor].all())

    def slice_const(self, e: SliceConst) -> None:
        if not self.changed(e.mask_of):
            return
        node = self.nodes[e.node]
        value = node.inputs[e.index].values
        mask = self.masks[e.mask_of]
        if value.shape[e.axis] != mask.size:
            raise RuntimeError(f"internal: {e.node} input {e.index} axis {e.axis} has {value.shape[e.axis]} "
                               f"entries, mask of {e.mask_of} has {mask.size}")
        _set_const(node, e.index, np.compress(mask, value, axis=e.axis), "pruned")
        if value.nbytes >= _COLLECT_BYTES:
            del value
            gc.collect()
            self.sliced_large = True

    def shape_dims(self, e: SetShapeDims) -> None:
        if not any(self.changed(t) for _, t in e.dims):
            return
        node = self.nodes[e.node]
        value = np.array(node.inputs[e.index].values, copy=True)
        for pos, tensor in e.dims:
            if value[pos] not in (0, -1):
                value[pos] = int(self.masks[tensor].sum())
        _set_const(node, e.index, value, "shape")

    def groups(self, e: SetGroups) -> None:
        if self.changed(e.mask_of):
            mask = self.masks[e.mask_of]
            self.nodes[e.node].attrs["group"] = e.groups * int(mask.sum()) // mask.size

    def split(self, e: SplitSizes) -> None:
        node = self.nodes[e.node]
        if not any(self.changed(o.name) for o in node.outputs):
            return
        sizes = np.array([int(self.masks[o.name].sum()) for o in node.outputs], dtype=np.int64)
        node.attrs.pop("num_outputs", None)
        node.attrs.pop("split", None)
        if len(node.inputs) > 1:
            _set_const(node, 1, sizes, "split")
        else:
            node.inputs.append(gs.Constant(f"{node.name}_split", sizes))

    def select(self, e: Select) -> None:
        node = self.nodes[e.node]
        x, y = node.inputs[0], node.outputs[0]
        in_mask = self.masks.get(x.name, np.ones(e.src.size, dtype=bool))
        out_mask = self.masks[y.name]
        if in_mask.all() and out_mask.all():
            return
        new_index = np.cumsum(in_mask) - 1
        src = e.src[out_mask]
        new_src = np.array([new_index[s] if s >= 0 and in_mask[s] else -1 for s in src.tolist()], dtype=np.int64)
        rank = len(self.analysis.model.shapes[x.name])
        dtype = helper.tensor_dtype_to_np_dtype(self.analysis.model.dtypes.get(x.name, onnx.TensorProto.FLOAT))
        if e.strip == "node":
            node.inputs.clear()
            node.outputs.clear()
            source = x
        else:
            source = gs.Variable(f"{node.name}_channels", dtype=x.dtype)
            node.outputs[0] = source
            self._strip_axis(node, e)
        emit_select(self.graph, source, y, axis=e.axis, rank=rank, size=int(in_mask.sum()), src=new_src,
                    fill=e.fill, dtype=dtype, prefix=f"{node.name}_select")

    def _strip_axis(self, node: gs.Node, e: Select) -> None:
        """Remove the channel axis from a Slice's / Pad's own work (the select does it)."""
        if node.op == "Slice":
            rank = len(self.analysis.model.shapes[node.inputs[0].name])
            if len(node.inputs) < 4 or not isinstance(node.inputs[3], gs.Constant):
                count = len(node.inputs[1].values)
                axes_const = gs.Constant(f"{node.name}_axes", np.arange(count, dtype=np.int64))
                if len(node.inputs) < 4:
                    node.inputs.append(axes_const)
                else:
                    node.inputs[3] = axes_const
            axes = [int(a) % rank for a in node.inputs[3].values]
            keep = [i for i, a in enumerate(axes) if a != e.axis]
            for index in range(1, min(5, len(node.inputs))):
                _set_const(node, index, np.asarray(node.inputs[index].values)[keep], "noch")
        else:  # Pad: zero the channel entries
            pads = np.array(node.inputs[1].values, copy=True)
            rank = pads.size // 2
            axes = list(range(rank)) if len(node.inputs) < 4 else [int(a) % rank for a in node.inputs[3].values]
            k = axes.index(e.axis)
            pads[k] = pads[rank + k] = 0
            _set_const(node, 1, pads, "noch")


def prune_model(analysis: Analysis, plan: Plan) -> onnx.ModelProto:
    """Physically remove the channels a plan drops (see the module contract).

    Args:
        analysis: Analysis of the model to prune.
        plan: Kept unit indices per group.

    Returns:
        The pruned model (new object).

    Raises:
        PlanError: the plan does not fit the analysis.
    """
    kept = unit_mask(analysis, plan)
    masks = tensor_masks(analysis, kept)
    empty = [name for name, m in masks.items() if m.size and not m.any()]
    if empty:
        raise PlanError(f"plan removes every channel of tensor '{empty[0]}'; keep at least one channel there")
    source = analysis.model.proto
    pruned, sliced_large = _edited(analysis, masks)
    if sliced_large:  # the dropped graph-surgeon graph (reference cycles) holds the sliced weights
        gc.collect()
    del pruned.graph.value_info[:]
    return restore_model_fields(infer_shapes(pruned, proto_limit=analysis.model.proto_limit), source)


def _edited(analysis: Analysis, masks: dict[str, np.ndarray]) -> tuple[onnx.ModelProto, bool]:
    """The model with the analysis edits applied, and whether a weight of ``_COLLECT_BYTES`` was sliced."""
    graph = gs.import_onnx(analysis.model.proto)
    editor = _Editor(analysis, graph, masks)
    apply = {SliceConst: editor.slice_const, SetShapeDims: editor.shape_dims, SetGroups: editor.groups,
             SplitSizes: editor.split, Select: editor.select}
    for edit in analysis.edits:
        apply[type(edit)](edit)
    io = {t.name for t in graph.inputs} | {t.name for t in graph.outputs}
    for tensor in graph.tensors().values():
        if isinstance(tensor, gs.Variable) and tensor.name not in io:
            tensor.shape = None
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    return gs.export_onnx(graph, do_type_check=False), editor.sliced_large


def repair_plan(analysis: Analysis, plan: Plan) -> Plan:
    """Return ``plan`` with the fewest units added back so no tensor loses every channel.

    A Split or Slice segment can lie entirely in pruned units even when its group keeps
    some; for each such tensor the unit of its first position is kept again.
    """
    kept = unit_mask(analysis, plan)
    for _ in range(len(analysis.labels) + 1):
        masks = tensor_masks(analysis, kept)
        empty = [name for name, m in masks.items() if m.size and not m.any()]
        if not empty:
            break
        for name in empty:
            kept[analysis.atom_unit[analysis.labels[name].ids[0]]] = True
    local = {}
    for gid in plan.keep:
        units = analysis.group_units[gid]
        local[gid] = tuple(int(i) for i in np.nonzero(kept[units])[0])
    return Plan(keep=local, bits=plan.bits)
