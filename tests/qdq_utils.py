"""Helpers for QDQ tests: quantize a float model with ONNX Runtime (QDQ format, per channel)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process


class RandomBatches(CalibrationDataReader):
    """Calibration reader yielding a few seeded standard-normal batches for the single float input."""

    def __init__(self, model: onnx.ModelProto, batches: int, seed: int) -> None:
        inp = model.graph.input[0]
        shape = [d.dim_value or 1 for d in inp.type.tensor_type.shape.dim]
        rng = np.random.default_rng(seed)
        self._feeds = iter([{inp.name: rng.standard_normal(shape).astype(np.float32)} for _ in range(batches)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def quantize_qdq(model: onnx.ModelProto, *, batches: int = 3, seed: int = 0) -> onnx.ModelProto:
    """``model`` quantized by ``quantize_static`` to QDQ: per-channel int8 weights, uint8 activations.

    ``quant_pre_process`` runs first (it folds BatchNorm into the convs, as deployments do).
    """
    with tempfile.TemporaryDirectory() as tmp:
        src, pre, out = (Path(tmp) / n for n in ("float.onnx", "pre.onnx", "qdq.onnx"))
        onnx.save(model, src)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out), RandomBatches(model, batches, seed), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        return onnx.load(str(out))
