"""Quantization-aware training: the quantize stage's grids in the forward pass, straight-through.

Contract:
    requires: a :class:`~onnxprune.quantize.QuantPlan` over the model's quantizable layers and
    calibrated activation ranges for every layer whose activation bits are not float.
    guarantees: :func:`qat_hooks` gives one input hook per quantized layer for
    :class:`~onnxprune.finetune.GraphModule`: its weight (input 1) goes through the per-channel
    affine ``w`` -bit grid of :func:`onnxprune.quantize.quantize_weight`, its input 0 through
    the ``a`` -bit grid over the calibrated range (:func:`onnxprune.quantize.fake_quant_activation`);
    the backward pass is the straight-through estimator (identity for weights; identity inside
    the activation range, zero outside it). :func:`project` puts trained weights exactly on their
    grids (the numpy reference), so written-back weights are what the simulated model computes.

The straight-through estimator (Bengio et al., 2013): ``y = x + (q(x) - x).detach()`` has the
value of ``q(x)`` and the gradient of ``x``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from onnxprune.finetune.interpreter import InputHook
from onnxprune.finetune.opnode import OpNode
from onnxprune.quantize import FLOAT, ActivationRanges, QuantLayer, QuantPlan, activation_params, quantize_weight

logger = logging.getLogger(__name__)


def fake_quant_weight(w: Tensor, bits: int, axis: int) -> Tensor:
    """``w`` on its per-channel ``bits``-bit affine grid, straight-through (shape kept)."""
    with torch.no_grad():
        moved = w.detach().movedim(axis, 0).reshape(w.shape[axis], -1).double()
        lo = moved.min(dim=1).values.clamp(max=0.0)
        hi = moved.max(dim=1).values.clamp(min=0.0)
        levels = 2 ** bits - 1
        scale = torch.where(hi > lo, (hi - lo) / levels, torch.ones_like(hi))[:, None]
        zero = torch.clamp(torch.round(-lo[:, None] / scale), 0, levels)
        q = torch.clamp(torch.round(moved / scale) + zero, 0, levels)
        grid = ((q - zero) * scale).to(w.dtype).reshape(w.movedim(axis, 0).shape).movedim(0, axis)
    return w + (grid - w).detach()


def fake_quant_activation(x: Tensor, bits: int, lo: float, hi: float) -> Tensor:
    """``x`` on the ``bits``-bit grid over ``[lo, hi]``; gradient 1 inside the range, 0 outside."""
    scale, zero = activation_params(lo, hi, bits)
    levels = 2 ** bits - 1
    clipped = torch.clamp(x, -zero * scale, (levels - zero) * scale)
    with torch.no_grad():
        q = (torch.clamp(torch.round(clipped / scale) + zero, 0, levels) - zero) * scale
    return clipped + (q - clipped).detach()


def qat_hooks(layers: Mapping[str, QuantLayer], plan: QuantPlan, ranges: ActivationRanges,
              weights_elsewhere: frozenset[str] = frozenset()) -> dict[str, InputHook]:
    """Node name -> fake-quant input hook for every layer ``plan`` quantizes.

    Args:
        layers: The model's quantizable layers by node name (:func:`onnxprune.quantize.find_layers`).
        plan: Bits per layer (checked against ``layers`` by the caller).
        ranges: Activation tensor -> calibrated ``(lo, hi)``.
        weights_elsewhere: Layers whose weight another hook quantizes (the training-time
            normalization quantizes the folded weight); only their activation is handled here.
    """
    hooks: dict[str, InputHook] = {}
    for name, (w_bits, a_bits) in sorted(plan.bits.items()):
        if (w_bits, a_bits) == (FLOAT, FLOAT):
            continue
        layer = layers[name]
        span = ranges[layer.activation] if a_bits != FLOAT else None
        if name in weights_elsewhere:
            w_bits = FLOAT

        def hook(_node: OpNode, args: list[Tensor | None], layer: QuantLayer = layer, w_bits: int = w_bits,
                 a_bits: int = a_bits, span: tuple[float, float] | None = span) -> list[Tensor | None]:
            out = list(args)
            if span is not None and out[0] is not None:
                out[0] = fake_quant_activation(out[0], a_bits, span[0], span[1])
            if w_bits != FLOAT and out[1] is not None:
                out[1] = fake_quant_weight(out[1], w_bits, layer.axis)
            return out
        hooks[name] = hook
    logger.debug("QAT: %d layers fake-quantized", len(hooks))
    return hooks


def project(values: Mapping[str, np.ndarray], layers: Mapping[str, QuantLayer], plan: QuantPlan
            ) -> dict[str, np.ndarray]:
    """``values`` with every quantized layer's weight rounded onto its grid (numpy reference)."""
    out = dict(values)
    for name in plan.quantized:
        layer = layers[name]
        w_bits, _ = plan.of(name)
        if w_bits != FLOAT and layer.weight in out:
            out[layer.weight] = quantize_weight(np.asarray(out[layer.weight]), w_bits, layer.axis)
    return out
