"""Which nodes a bits plan can quantize, and along which weight axis.

A quantizable layer is a Conv, ConvTranspose, Gemm or MatMul of the main graph whose weight
(input 1) is a float initializer of rank >= 2. Its activation is its input 0 (the tensor the
``a`` bits apply to); its output-channel axis is the axis its weight is quantized along:
Conv 0, ConvTranspose 1, Gemm 0 with ``transB=1`` else 1, MatMul the last.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import onnx

logger = logging.getLogger(__name__)

_FLOAT = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE})
OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


@dataclass(frozen=True)
class QuantLayer:
    """One quantizable node.

    Attributes:
        node: Node name (the plan's key).
        op_type: ``Conv``, ``ConvTranspose``, ``Gemm`` or ``MatMul``.
        weight: Initializer name of the weight.
        axis: Output-channel axis of the weight (per-channel scales run along it).
        activation: The input tensor whose values the activation bits quantize.
    """

    node: str
    op_type: str
    weight: str
    axis: int
    activation: str


def _axis(node: onnx.NodeProto, rank: int) -> int:
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return rank - 1


def find_layers(model: onnx.ModelProto) -> tuple[QuantLayer, ...]:
    """Quantizable layers of ``model`` in graph order.

    Args:
        model: A model whose nodes have unique names (as ``onnxprune.load`` returns it).

    Returns:
        One :class:`QuantLayer` per quantizable node.
    """
    inits = {t.name: t for t in model.graph.initializer}
    layers = []
    for node in model.graph.node:
        if node.op_type not in OPS or len(node.input) < 2 or node.domain not in ("", "ai.onnx"):
            continue
        weight = inits.get(node.input[1])
        if weight is None or weight.data_type not in _FLOAT or len(weight.dims) < 2:
            continue
        layers.append(QuantLayer(node=node.name, op_type=node.op_type, weight=weight.name,
                                 axis=_axis(node, len(weight.dims)), activation=node.input[0]))
    return tuple(layers)


_STORED = {onnx.TensorProto.INT8: 8, onnx.TensorProto.UINT8: 8, onnx.TensorProto.INT16: 16,
           onnx.TensorProto.UINT16: 16, onnx.TensorProto.INT4: 4, onnx.TensorProto.UINT4: 4}


def stored_bits(model: onnx.ModelProto) -> dict[str, tuple[int, int]]:
    """Bits each MAC node (Conv, ConvTranspose, Gemm, MatMul) computes with as the file stores it.

    A float weight or input counts 32; one that a ``DequantizeLinear`` produces counts the bits
    of the integer type it dequantizes (an initializer's for weights, the ``QuantizeLinear``
    output type or zero point's for activations; 8 when neither says).

    Returns:
        Node name -> (weight bits, activation bits).
    """
    inits = {t.name: t for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}

    def bits_of(tensor: str) -> int:
        node = producer.get(tensor)
        if node is None or node.op_type != "DequantizeLinear":
            return 32
        for name in (node.input[0], node.input[2] if len(node.input) > 2 else ""):
            if name in inits:
                return _STORED.get(inits[name].data_type, 8)
            source = producer.get(name)
            if source is not None and source.op_type == "QuantizeLinear" and len(source.input) > 2 \
                    and source.input[2] in inits:
                return _STORED.get(inits[source.input[2]].data_type, 8)
        return 8

    return {n.name: (bits_of(n.input[1]), bits_of(n.input[0])) for n in model.graph.node
            if n.op_type in OPS and len(n.input) >= 2}
