"""The quantization grids (numpy references; the simulated model computes the same).

Weights: per output channel ``c``, over the channel's range widened to contain 0, with exactly
``2**b`` levels (an affine grid, so a channel's smallest and largest weights both land on an end
level and every level can be used; 0 stays exact)::

    s_c = (max_c - min_c) / (2**b - 1),  z_c = round(-min_c / s_c)
    w_hat = s_c * (clip(round(w / s_c) + z_c, 0, 2**b - 1) - z_c)

``round`` is half to even, as ONNX ``Round`` and ``QuantizeLinear``. (The deployable int8/int4
model uses ONNX Runtime's symmetric per-channel weights instead; at 8 bits the two differ by
less than a step.)

Activations (a layer's input), asymmetric over the calibrated range widened to contain 0::

    s = (hi - lo) / (2**b - 1),  zp = clip(round(-lo / s), 0, 2**b - 1)
    x_hat = s * (clip(round(x / s) + zp, 0, 2**b - 1) - zp)
"""

from __future__ import annotations

import numpy as np


def quantize_weight(w: np.ndarray, bits: int, axis: int) -> np.ndarray:
    """``w`` rounded to its per-channel ``bits``-bit grid (same dtype and shape).

    Args:
        w: The float weight.
        bits: Weight bits (2..8).
        axis: The output-channel axis.

    Returns:
        The grid values.
    """
    moved = np.moveaxis(np.asarray(w, dtype=np.float64), axis, 0).reshape(w.shape[axis], -1)
    lo = np.minimum(moved.min(axis=1, initial=0.0), 0.0)
    hi = np.maximum(moved.max(axis=1, initial=0.0), 0.0)
    levels = 2 ** bits - 1
    scale = np.where(hi > lo, (hi - lo) / levels, 1.0)[:, None]
    zero = np.clip(np.round(-lo[:, None] / scale), 0, levels)
    q = np.clip(np.round(moved / scale) + zero, 0, levels)
    out = ((q - zero) * scale).reshape(np.moveaxis(np.asarray(w), axis, 0).shape)
    return np.moveaxis(out, 0, axis).astype(w.dtype)


def activation_params(lo: float, hi: float, bits: int) -> tuple[float, int]:
    """(scale, zero point) of the ``bits``-bit asymmetric grid over ``[lo, hi]`` widened to 0."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    levels = 2 ** bits - 1
    scale = (hi - lo) / levels if hi > lo else 1.0
    scale = float(np.float32(scale))
    zero = int(np.clip(np.round(-lo / scale), 0, levels))
    return scale, zero


def fake_quant_activation(x: np.ndarray, bits: int, lo: float, hi: float) -> np.ndarray:
    """``x`` rounded to the ``bits``-bit grid over ``[lo, hi]`` (same dtype)."""
    scale, zero = activation_params(lo, hi, bits)
    s = np.float32(scale)
    q = np.clip(np.round(np.asarray(x, dtype=np.float32) / s) + zero, 0, 2 ** bits - 1)
    return ((q - zero) * s).astype(x.dtype)
