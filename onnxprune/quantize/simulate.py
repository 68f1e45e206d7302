"""Simulated low-bit model: any bits plan as a float ONNX model that ONNX Runtime scores.

Contract:
    Requires a model with unique node names (as ``onnxprune.load`` gives), the plan's layers
    among :func:`find_layers`, and a calibrated range for the activation of every layer whose
    activation bits are below 32.
    Guarantees the same interface (inputs, outputs, names, dtypes), a checker-valid graph at the
    input's opset (>= 11), each quantized layer's weight replaced by its grid values
    (:func:`onnxprune.quantize.grid.quantize_weight`; a weight shared with a layer of other bits
    gets its own copy) and each quantized activation passed through
    ``Mul(Sub(Clip(Add(Round(Div(x, s)), zp), 0, 2^b-1), zp), s)`` right before the layer.
    Equal to the numpy grids in :mod:`onnxprune.quantize.grid`; 16-bit activations with 16-bit
    equivalent weights stay within 1e-3 of float in relative terms.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.errors import PlanError
from onnxprune.quantize.calibrate import ActivationRanges
from onnxprune.quantize.grid import activation_params, quantize_weight
from onnxprune.quantize.layers import QuantLayer, find_layers
from onnxprune.quantize.plan import FLOAT, QuantPlan

logger = logging.getLogger(__name__)


def _scalar(name: str, value: float) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(value, dtype=np.float32), name)


def _fake_quant_nodes(tensor: str, bits: int, lo: float, hi: float, prefix: str
                      ) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], str]:
    """Nodes (and constants) that fake-quantize ``tensor``; returns them and the new tensor name."""
    scale, zero = activation_params(lo, hi, bits)
    consts = [_scalar(f"{prefix}.scale", scale), _scalar(f"{prefix}.zero", float(zero)),
              _scalar(f"{prefix}.qmin", 0.0), _scalar(f"{prefix}.qmax", float(2 ** bits - 1))]
    out = f"{prefix}.out"
    nodes = [
        helper.make_node("Div", [tensor, f"{prefix}.scale"], [f"{prefix}.div"], name=f"{prefix}.Div"),
        helper.make_node("Round", [f"{prefix}.div"], [f"{prefix}.round"], name=f"{prefix}.Round"),
        helper.make_node("Add", [f"{prefix}.round", f"{prefix}.zero"], [f"{prefix}.shift"], name=f"{prefix}.Add"),
        helper.make_node("Clip", [f"{prefix}.shift", f"{prefix}.qmin", f"{prefix}.qmax"], [f"{prefix}.clip"],
                         name=f"{prefix}.Clip"),
        helper.make_node("Sub", [f"{prefix}.clip", f"{prefix}.zero"], [f"{prefix}.unshift"], name=f"{prefix}.Sub"),
        helper.make_node("Mul", [f"{prefix}.unshift", f"{prefix}.scale"], [out], name=f"{prefix}.Mul"),
    ]
    return nodes, consts, out


def _quantize_weights(model: onnx.ModelProto, layers: Mapping[str, QuantLayer], plan: QuantPlan) -> None:
    """Replace quantized layers' weights by their grid values, copying weights shared across bits."""
    inits = {t.name: t for t in model.graph.initializer}
    users: dict[str, set[int]] = {}
    for node in model.graph.node:
        for name in node.input:
            if name in inits:
                users.setdefault(name, set()).add(plan.of(node.name)[0] if node.name in layers else FLOAT)
    done: dict[tuple[str, int], str] = {}
    nodes = {n.name: n for n in model.graph.node}
    for name in plan.quantized:
        layer, w_bits = layers[name], plan.of(name)[0]
        key = (layer.weight, w_bits)
        if key not in done:
            values = quantize_weight(numpy_helper.to_array(inits[layer.weight]), w_bits, layer.axis)
            shared = len(users.get(layer.weight, ())) > 1
            target = f"{layer.weight}.w{w_bits}" if shared else layer.weight
            tensor = numpy_helper.from_array(values, target)
            if shared:
                model.graph.initializer.append(tensor)
            else:
                inits[layer.weight].CopyFrom(tensor)
            done[key] = target
        nodes[name].input[1] = done[key]


def simulate(model: onnx.ModelProto, plan: QuantPlan, ranges: ActivationRanges) -> onnx.ModelProto:
    """Return a copy of ``model`` that computes ``plan``'s low-bit arithmetic in float.

    Args:
        model: The float model (not modified).
        plan: Bits per layer.
        ranges: Activation tensor -> calibrated ``(lo, hi)`` (see :func:`onnxprune.quantize.calibrate`).

    Returns:
        The simulated model.

    Raises:
        PlanError: The plan names unknown layers, or an activation to quantize has no range.
    """
    layers = {layer.node: layer for layer in find_layers(model)}
    plan.check_layers(layers)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    _quantize_weights(out, layers, plan)
    inserted: dict[tuple[str, int], str] = {}
    new_nodes: list[onnx.NodeProto] = []
    for node in out.graph.node:
        w_bits, a_bits = plan.of(node.name) if node.name in layers else (FLOAT, FLOAT)
        if a_bits != FLOAT:
            tensor = node.input[0]
            if tensor not in ranges:
                raise PlanError(f"layer '{node.name}': no calibrated range for its input '{tensor}'; "
                                "calibrate on data that reaches it")
            key = (tensor, a_bits)
            if key not in inserted:
                lo, hi = ranges[tensor]
                nodes, consts, name = _fake_quant_nodes(tensor, a_bits, lo, hi, f"{tensor}.fq{a_bits}")
                new_nodes.extend(nodes)
                out.graph.initializer.extend(consts)
                inserted[key] = name
            node.input[0] = inserted[key]
        new_nodes.append(node)
    del out.graph.node[:]
    out.graph.node.extend(new_nodes)
    logger.debug("simulated %d quantized layers, %d fake-quantized activations", len(plan.quantized), len(inserted))
    return out
