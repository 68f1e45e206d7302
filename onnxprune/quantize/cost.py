"""Bit-operations and bytes of a bits plan, against float32 and against all-int8.

BOPs of a layer = MACs x weight bits x activation bits (float: 32 x 32), summed over the MAC
layers (Conv, ConvTranspose, Gemm, MatMul; MACs at batch 1 as ``onnxprune.analyze.cost``).
A MAC layer that is not quantizable (e.g. MatMul of two activations) counts 32 x 32 in every
column. Bytes: each quantized layer's weight at ``w`` bits per element (packed), everything else
at its stored size, without per-channel scales (a few bytes per channel).

Worked example: a Conv of 1,000 MACs and a Gemm of 100 MACs; plan Conv (4, 8), Gemm float:
BOPs = 1000*4*8 + 100*32*32 = 134,400; float32 = 1100*1024 = 1,126,400 (11.9 % of it, 88.1 %
removed); all-int8 = 1100*64 = 70,400.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from onnxprune.analyze.cost import node_macs
from onnxprune.load import Model
from onnxprune.quantize.layers import find_layers
from onnxprune.quantize.plan import FLOAT, QuantPlan

_ITEM = {onnx.TensorProto.FLOAT: 4, onnx.TensorProto.FLOAT16: 2, onnx.TensorProto.DOUBLE: 8,
         onnx.TensorProto.INT64: 8, onnx.TensorProto.INT32: 4, onnx.TensorProto.INT8: 1, onnx.TensorProto.UINT8: 1}
_MAC_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


@dataclass(frozen=True)
class LayerBops:
    """One MAC layer: its MACs, bits and BOPs."""

    node: str
    op_type: str
    macs: int
    w_bits: int
    a_bits: int

    @property
    def bops(self) -> int:
        """MACs x weight bits x activation bits."""
        return self.macs * self.w_bits * self.a_bits


@dataclass(frozen=True)
class BopsReport:
    """BOPs of a plan and its references, and model bytes (weights at their bits)."""

    layers: tuple[LayerBops, ...]
    bops: int
    bops_float32: int
    bops_int8: int
    bytes: int
    bytes_float32: int

    @property
    def reduction_vs_float32(self) -> float:
        """Fraction of float32 BOPs removed (the papers' "complexity reduction")."""
        return 1.0 - self.bops / self.bops_float32 if self.bops_float32 else 0.0

    @property
    def ratio_vs_int8(self) -> float:
        """BOPs as a multiple of the all-int8 model's (below 1: cheaper than int8)."""
        return self.bops / self.bops_int8 if self.bops_int8 else 0.0

    def as_dict(self) -> dict[str, object]:
        """JSON-ready dict."""
        return {"bops": self.bops, "bops_float32": self.bops_float32, "bops_int8": self.bops_int8,
                "reduction_vs_float32": self.reduction_vs_float32, "ratio_vs_int8": self.ratio_vs_int8,
                "bytes": self.bytes, "bytes_float32": self.bytes_float32,
                "layers": [{"node": r.node, "op_type": r.op_type, "macs": r.macs, "w_bits": r.w_bits,
                            "a_bits": r.a_bits, "bops": r.bops} for r in self.layers]}


def _tensor_bytes(t: onnx.TensorProto) -> int:
    return int(np.prod(t.dims, dtype=np.int64)) * _ITEM.get(t.data_type, 4)


def bops_report(model: Model, plan: QuantPlan) -> BopsReport:
    """BOPs and bytes of ``model`` under ``plan`` (exact, from the model's inferred shapes).

    Args:
        model: The loaded (normalized) model, pruned or not.
        plan: Bits per layer; layers it does not name are float.
    """
    quantizable = {q.node: q for q in find_layers(model.proto)}
    plan.check_layers(quantizable)
    rows = []
    for node in model.proto.graph.node:
        if node.op_type not in _MAC_OPS:
            continue
        w, a = plan.of(node.name) if node.name in quantizable else (FLOAT, FLOAT)
        rows.append(LayerBops(node.name, node.op_type, node_macs(node, model.shapes.get), w, a))
    macs_q = sum(r.macs for r in rows if r.node in quantizable)
    macs_f = sum(r.macs for r in rows if r.node not in quantizable)
    inits = {t.name: t for t in model.proto.graph.initializer}
    full = sum(_tensor_bytes(t) for t in inits.values())
    saved = 0
    for name in plan.quantized:
        tensor = inits[quantizable[name].weight]
        elements = int(np.prod(tensor.dims, dtype=np.int64))
        saved += _tensor_bytes(tensor) - (elements * plan.of(name)[0] + 7) // 8
    return BopsReport(layers=tuple(rows), bops=sum(r.bops for r in rows), bops_float32=(macs_q + macs_f) * 1024,
                      bops_int8=macs_q * 64 + macs_f * 1024, bytes=full - saved, bytes_float32=full)
