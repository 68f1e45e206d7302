"""Linear layers (Conv, Gemm, MatMul) seen as ``y = x_rows @ w + b`` for reconstruction.

A layer's weights are handled in *layer form*: ``w`` of shape ``(groups, cols, outs_per_group)``
where a Conv's ``cols`` run over (input channel, kernel position) with the kernel inner, and
``b`` of shape ``(outs,)``. :class:`Layer` converts between that form and the ONNX initializers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

logger = logging.getLogger(__name__)


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


@dataclass(frozen=True)
class Layer:
    """One consumer of pruned channels, described from the pruned model.

    Attributes:
        node, op: Node name and type.
        input, output: Its data input and output tensor names.
        in_axis, out_axis: Channel axes of those tensors.
        in_mask, out_mask: Original kept-flags of the input / output channels.
        groups: Conv groups in the pruned model (1 otherwise).
        weight, bias: Initializer names (``bias`` may not exist yet: it is added on attach).
        kernel, strides, pads, dilations: Conv geometry (2-D; a 1-D conv has a unit height).
        trans_b, alpha, beta: Gemm attributes.
        original_weight: The original weight in layer form (for bias correction).
    """

    node: str
    op: str
    input: str
    output: str
    in_axis: int
    out_axis: int
    in_mask: np.ndarray
    out_mask: np.ndarray
    groups: int
    weight: str
    bias: str
    kernel: tuple[int, int] = (1, 1)
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilations: tuple[int, int] = (1, 1)
    auto_pad: str = "NOTSET"
    trans_b: bool = False
    alpha: float = 1.0
    beta: float = 1.0
    original_weight: np.ndarray | None = None

    @property
    def has_bias_slot(self) -> bool:
        """Conv and Gemm can carry a bias; MatMul cannot."""
        return self.op in ("Conv", "Gemm")

    def weight_names(self) -> tuple[str, ...]:
        """Initializers this layer may write."""
        return (self.weight, self.bias) if self.has_bias_slot else (self.weight,)

    def get(self, weights: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """The current weights in layer form."""
        raw = np.asarray(weights[self.weight], dtype=np.float64)
        return to_layer_form(self, raw), self._bias(weights, raw)

    def _bias(self, weights: Mapping[str, np.ndarray], raw: np.ndarray) -> np.ndarray | None:
        if self.bias not in weights:
            return None
        outs = raw.shape[0] if self.op == "Conv" else (raw.shape[0] if self.trans_b else raw.shape[1])
        value = np.asarray(weights[self.bias], dtype=np.float64)
        return (self.beta if self.op == "Gemm" else 1.0) * np.broadcast_to(value.reshape(-1), (outs,)).copy() \
            if value.size in (1, outs) else None

    def set(self, weights: dict[str, np.ndarray], w: np.ndarray, b: np.ndarray | None) -> None:
        """Write layer-form weights back as initializer arrays (Gemm ``beta`` becomes 1)."""
        raw = np.asarray(weights[self.weight])
        weights[self.weight] = from_layer_form(self, w, raw.shape)
        if b is not None and self.has_bias_slot:
            weights[self.bias] = np.asarray(b, dtype=np.float64).reshape(-1)

    def attach(self, node: onnx.NodeProto, weights: Mapping[str, np.ndarray] | None = None) -> None:
        """Make ``node`` read the bias initializer (when one was written) with ``beta = 1``."""
        if not self.has_bias_slot or (weights is not None and self.bias not in weights):
            return
        if len(node.input) < 3:
            node.input.append(self.bias)
        if self.op == "Gemm":
            for a in node.attribute:
                if a.name == "beta":
                    a.f = 1.0
                    break


def to_layer_form(layer: Layer, raw: np.ndarray) -> np.ndarray:
    """ONNX weight -> ``(groups, cols, outs_per_group)``."""
    if layer.op == "Conv":
        per = raw.shape[0] // layer.groups
        return np.stack([raw[g * per:(g + 1) * per].reshape(per, -1).T for g in range(layer.groups)])
    if layer.op == "Gemm":
        return layer.alpha * (raw.T if layer.trans_b else raw)[None]
    return raw[None]


def from_layer_form(layer: Layer, w: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`to_layer_form`."""
    if layer.op == "Conv":
        return np.concatenate([w[g].T for g in range(w.shape[0])]).reshape(shape)
    if layer.op == "Gemm":
        return (w[0].T if layer.trans_b else w[0]) / layer.alpha
    return w[0]


def _same_pads(size: tuple[int, int], out: tuple[int, int], layer: Layer) -> tuple[int, int, int, int]:
    begin, end = [], []
    for i in range(2):
        total = max((out[i] - 1) * layer.strides[i] + (layer.kernel[i] - 1) * layer.dilations[i] + 1 - size[i], 0)
        first = total // 2 if layer.auto_pad == "SAME_UPPER" else total - total // 2
        begin.append(first)
        end.append(total - first)
    return begin[0], begin[1], end[0], end[1]


def conv_patches(layer: Layer, x: np.ndarray, image: np.ndarray, where: np.ndarray,
                 out_shape: tuple[int, ...]) -> np.ndarray:
    """im2col rows ``(R, groups, cin_per_group * kh * kw)`` of ``x`` for output positions ``where``."""
    x4 = x[:, :, None, :] if x.ndim == 3 else x
    wo = out_shape[-1]
    ho = out_shape[-2] if len(out_shape) == 4 else 1
    size = (x4.shape[2], x4.shape[3])
    pads = layer.pads if layer.auto_pad in ("NOTSET", "") else (
        (0, 0, 0, 0) if layer.auto_pad == "VALID" else _same_pads(size, (ho, wo), layer))
    rows = (where // wo)[:, None] * layer.strides[0] - pads[0] + np.arange(layer.kernel[0]) * layer.dilations[0]
    cols = (where % wo)[:, None] * layer.strides[1] - pads[1] + np.arange(layer.kernel[1]) * layer.dilations[1]
    valid = ((rows >= 0) & (rows < size[0]))[:, :, None] & ((cols >= 0) & (cols < size[1]))[:, None, :]
    rc, cc = np.clip(rows, 0, size[0] - 1), np.clip(cols, 0, size[1] - 1)
    channels = np.arange(x4.shape[1])
    patch = x4[image[:, None, None, None], channels[None, :, None, None], rc[:, None, :, None], cc[:, None, None, :]]
    patch = patch * valid[:, None, :, :]
    return patch.reshape(len(image), layer.groups, -1)


def design_rows(layer: Layer, x: np.ndarray, image: np.ndarray, where: np.ndarray,
                out_shape: tuple[int, ...]) -> np.ndarray:
    """Rows ``(R, groups, cols)`` of the layer's input ``x`` that produce its output at ``(image, where)``."""
    if layer.op == "Conv":
        return conv_patches(layer, x, image, where, out_shape)
    if layer.op == "Gemm":
        return x[image][:, None, :]
    flat = x.reshape(x.shape[0], -1, x.shape[-1])
    return flat[image, where][:, None, :]


def _conv_geometry(node: onnx.NodeProto, kernel_shape: tuple[int, ...]) -> dict[str, object] | None:
    attrs = _attrs(node)
    k = tuple(int(v) for v in kernel_shape)
    if len(k) not in (1, 2):
        return None
    pad = [int(v) for v in attrs.get("pads", [0] * (2 * len(k)))]
    if len(k) == 1:
        return {"kernel": (1, k[0]), "strides": (1, int(attrs.get("strides", [1])[0])),
                "pads": (0, pad[0], 0, pad[1]), "dilations": (1, int(attrs.get("dilations", [1])[0]))}
    return {"kernel": k, "strides": tuple(int(v) for v in attrs.get("strides", [1, 1])),
            "pads": (pad[0], pad[1], pad[2], pad[3]),
            "dilations": tuple(int(v) for v in attrs.get("dilations", [1, 1]))}


def _describe(orig: onnx.NodeProto, node: onnx.NodeProto, inits: Mapping[str, np.ndarray],
              orig_inits: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray]) -> tuple[Layer | None, bool]:
    """(layer, fittable) for one consumer; layer is None when nothing can be done."""
    if len(node.input) < 2 or node.input[1] not in inits or orig.input[1] not in orig_inits:
        return None, False
    raw, orig_raw = inits[node.input[1]], orig_inits[orig.input[1]]
    attrs = _attrs(node)
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else f"{node.name}_recon_bias"
    if len(node.input) > 2 and node.input[2] and node.input[2] not in inits:
        return None, False
    base = {"node": node.name, "op": node.op_type, "input": node.input[0], "output": node.output[0],
            "weight": node.input[1], "bias": bias}
    fittable = True
    if node.op_type == "Conv":
        geometry = _conv_geometry(node, raw.shape[2:])
        fittable = geometry is not None
        extra = {**(geometry or {}), "groups": int(attrs.get("group", 1)), "in_axis": 1, "out_axis": 1,
                 "auto_pad": attrs.get("auto_pad", b"NOTSET").decode() if isinstance(attrs.get("auto_pad"), bytes)
                 else str(attrs.get("auto_pad", "NOTSET"))}
        outs = orig_raw.shape[0]
    elif node.op_type == "Gemm":
        fittable = not attrs.get("transA", 0)
        extra = {"groups": 1, "in_axis": 1, "out_axis": 1, "trans_b": bool(attrs.get("transB", 0)),
                 "alpha": float(attrs.get("alpha", 1.0)), "beta": float(attrs.get("beta", 1.0))}
        outs = orig_raw.shape[0] if extra["trans_b"] else orig_raw.shape[1]
    elif node.op_type == "MatMul" and raw.ndim == 2:
        extra = {"groups": 1, "in_axis": -1, "out_axis": -1}
        outs = orig_raw.shape[1]
    else:
        return None, False
    proto = Layer(**base, **extra, in_mask=np.ones(1, bool), out_mask=np.ones(1, bool))  # type: ignore[arg-type]
    orig_layer = Layer(**{**proto.__dict__, "groups": int(_attrs(orig).get("group", 1))})
    original_weight = to_layer_form(orig_layer, orig_raw.astype(np.float64))
    in_size = original_weight.shape[1] // (int(np.prod(orig_raw.shape[2:])) if node.op_type == "Conv" else 1)
    in_mask = masks.get(node.input[0], np.ones(in_size * orig_layer.groups, dtype=bool))
    out_mask = masks.get(node.output[0], np.ones(outs, dtype=bool))
    return Layer(**{**proto.__dict__, "in_mask": in_mask, "out_mask": out_mask,
                    "original_weight": original_weight}), fittable


def unshare_weights(model: onnx.ModelProto, nodes: Sequence[str]) -> onnx.ModelProto:
    """Give each of ``nodes`` its own copy of a weight or bias initializer that other nodes also read.

    Re-fitting one consumer must not change another node reading the same initializer. The copy is
    named ``<initializer>__<node>``; ``model`` is not modified (returned as is when nothing is shared).
    """
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    inits = {t.name: t for t in model.graph.initializer}
    wanted = set(nodes)
    shared = [(i, slot) for i, n in enumerate(model.graph.node) if n.name in wanted
              for slot in (1, 2) if len(n.input) > slot and uses.get(n.input[slot], 0) > 1 and n.input[slot] in inits]
    if not shared:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    taken = set(inits) | {o for n in model.graph.node for o in n.output}
    renamed: set[str] = set()
    for index, slot in shared:
        node = out.graph.node[index]
        name = f"{node.input[slot]}__{node.name}"
        while name in taken:
            name += "_"
        copy = onnx.TensorProto()
        copy.CopyFrom(inits[node.input[slot]])
        copy.name = name
        renamed.add(node.input[slot])
        out.graph.initializer.append(copy)
        taken.add(name)
        logger.info("node %s gets its own copy %s of a shared initializer", node.name, name)
        node.input[slot] = name
    used = {name for n in out.graph.node for name in n.input}
    kept = [t for t in out.graph.initializer if t.name in used or t.name not in renamed]
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept)
    return out


def describe_layers(original: onnx.ModelProto, pruned: onnx.ModelProto, consumers: Sequence[str],
                    masks: Mapping[str, np.ndarray]) -> tuple[list[Layer], list[Layer]]:
    """Split consumers into re-fittable layers and bias-correction-only layers (others are logged)."""
    orig_nodes = {n.name: n for n in original.graph.node}
    nodes = {n.name: n for n in pruned.graph.node}
    orig_inits = {t.name: numpy_helper.to_array(t) for t in original.graph.initializer}
    inits = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer}
    fit, fallback = [], []
    for name in consumers:
        if name not in nodes or name not in orig_nodes:
            logger.warning("consumer %s is not in both models; left as pruned", name)
            continue
        layer, fittable = _describe(orig_nodes[name], nodes[name], inits, orig_inits, masks)
        if layer is None:
            logger.warning("consumer %s has no constant weight; left as pruned", name)
        else:
            (fit if fittable else fallback).append(layer)
    return fit, fallback
