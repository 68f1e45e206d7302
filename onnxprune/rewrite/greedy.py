"""Data for ThiNet-style greedy channel selection: how input channels' contributions overlap.

For a consumer ``y = sum_c z_c`` (``z_c``: the contribution of input channel ``c`` to all of its
outputs at a sampled position), removing a set ``T`` of channels changes the outputs by
``sum_{c in T} z_c``, whose squared norm summed over calibration rows is ``1_T' M 1_T`` with
``M[c, d] = sum_rows <z_c, z_d>``. ``M`` follows from the consumer's input Gram matrix ``G``
(over input channel x kernel position) and its weights ``W``: ``M = blocksum((W W') * G)``.

Contract:
    requires: a model (not modified), consumer node names (Conv with one group, Gemm, MatMul with
    a constant weight) and calibration feeds (samples on axis 0).
    guarantees: one ``M`` per consumer *input tensor* (summed over the consumers reading it),
    shape ``(C, C)`` over that tensor's channels; other consumers are skipped (logged).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import onnx

from threadpoolctl import threadpool_limits

from onnxprune.rewrite.capture import run_batches, sample_positions
from onnxprune.rewrite.layers import Layer, describe_layers, design_rows

logger = logging.getLogger(__name__)


def contribution_grams(model: onnx.ModelProto, consumers: Sequence[str], feeds: Mapping[str, np.ndarray],
                       rng: np.random.Generator, *, samples_per_image: int = 10, batch_size: int = 100,
                       threads: int = 2) -> dict[str, np.ndarray]:
    """``M`` per consumer input tensor (see the module docstring).

    Args:
        model: The (unpruned) model.
        consumers: Consumer node names.
        feeds: Calibration inputs.
        rng: Source of the sampled output positions.
        samples_per_image: Output positions per image and consumer.
        batch_size: Samples per ONNX Runtime run.
        threads: ONNX Runtime threads.
    """
    fit, other = describe_layers(model, model, consumers, {})
    layers = [x for x in fit if x.groups == 1]
    skipped = [x.node for x in other] + [x.node for x in fit if x.groups != 1]
    if skipped:
        logger.info("greedy selection: %d consumers without a dense linear form are left out", len(skipped))
    if not layers:
        return {}
    first = {k: v[:1] for k, v in feeds.items()}
    outs = [x.output for x in layers]
    _, values = next(run_batches(model, first, outs, batch_size=1, threads=threads))
    shapes = {name: tuple(v.shape[1:]) for name, v in zip(outs, values)}
    inputs = list(dict.fromkeys(x.input for x in layers))
    grams = {x.node: np.zeros((x.original_weight.shape[1],) * 2) for x in layers}
    count = len(next(iter(feeds.values())))
    with threadpool_limits(limits=1, user_api="blas"):  # small products: no threads to synchronise
        for start, batch_values in run_batches(model, feeds, inputs, batch_size=batch_size, threads=threads):
            _add_rows(layers, grams, dict(zip(inputs, batch_values)), shapes, min(batch_size, count - start),
                      samples_per_image, rng)
    return _channel_blocks(layers, grams)


def _add_rows(layers: Sequence[Layer], grams: dict[str, np.ndarray], by_name: Mapping[str, np.ndarray],
              shapes: Mapping[str, tuple[int, ...]], batch: int, samples_per_image: int,
              rng: np.random.Generator) -> None:
    """Add one batch's sampled input rows of every layer to its Gram matrix."""
    for layer in layers:
        x = by_name[layer.input]
        if x.ndim < 2 or x.shape[0] != batch:
            continue
        out_shape = (batch, *shapes[layer.output])
        image, where = sample_positions(out_shape, layer.out_axis, samples_per_image, 0, rng)
        rows = design_rows(layer, x, image, where, out_shape)[:, 0].astype(np.float64)
        grams[layer.node] += rows.T @ rows


def _channel_blocks(layers: Sequence[Layer], grams: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    result: dict[str, np.ndarray] = {}
    for layer in layers:
        w = layer.original_weight[0]  # (cols, outs), kernel positions inner
        channels = layer.in_mask.size
        kernel = w.shape[0] // channels
        h = (w @ w.T) * grams[layer.node]
        m = h.reshape(channels, kernel, channels, kernel).sum(axis=(1, 3))
        result[layer.input] = result.get(layer.input, 0.0) + m
    return result


__all__ = ["contribution_grams"]
