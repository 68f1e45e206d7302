"""Quantize stage: bit-width plans, calibration, simulated low-bit models, deployable int8/int4 QDQ.

Public face:
    :class:`QuantPlan` (layer -> weight/activation bits, JSON round-trippable),
    :func:`find_layers` (the quantizable Conv/ConvTranspose/Gemm/MatMul nodes),
    :func:`calibrate` (activation ranges: minmax, percentile, entropy),
    :func:`simulate` (weights on their grid, inputs fake-quantized with standard ONNX ops),
    :func:`quantize_weight` / :func:`fake_quant_activation` (numpy references of the grids),
    :func:`bops_report` (bit-operations vs float32 and vs all-int8, model bytes).
The deployable QDQ writer lives in :mod:`onnxprune.quantize.deploy` (it needs onnxruntime).
"""

from onnxprune.quantize.calibrate import METHODS, ActivationRanges, calibrate
from onnxprune.quantize.cost import BopsReport, LayerBops, bops_report
from onnxprune.quantize.grid import activation_params, fake_quant_activation, quantize_weight
from onnxprune.quantize.layers import QuantLayer, find_layers
from onnxprune.quantize.plan import A_BITS, FLOAT, W_BITS, QuantPlan, uniform_plan
from onnxprune.quantize.simulate import simulate

__all__ = ["A_BITS", "FLOAT", "METHODS", "W_BITS", "ActivationRanges", "BopsReport", "LayerBops", "QuantLayer",
           "QuantPlan", "activation_params", "bops_report", "calibrate", "fake_quant_activation", "find_layers",
           "quantize_weight", "simulate", "uniform_plan"]
