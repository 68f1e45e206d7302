"""Least-squares reconstruction and bias correction of the layers that lost input channels.

Contract:
    requires: the ``original`` model and its ``pruned`` version from
    :func:`onnxprune.rewrite.prune_model` (same node and tensor names), the names of the
    consumer nodes (Conv/Gemm/MatMul) whose input channels were removed, the original model's
    kept-flags per labeled tensor (``masks``), and calibration feeds.
    guarantees: a new model with the same graph as ``pruned``; only those consumers' weights and
    biases change (a bias input is added where a Conv/Gemm had none). Reconstruction re-fits a
    consumer by ridge least squares so that, on the *pruned* model's inputs (including earlier
    fixes), its output at sampled positions matches the *original* model's output; a layer is
    never made worse on its samples. Layers that cannot be re-fitted (3-D convs, ``transA`` Gemm,
    non-constant weights) get bias correction: the removed channels' mean contribution
    (mean activation x weight) folded into the bias.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.rewrite.capture import channel_means, rows_at, run_batches, sample_positions
from onnxprune.rewrite.layers import Layer, conv_patches, describe_layers, solve_ridge
from onnxprune.rewrite.stepper import Stepper

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReconstructOptions:
    """Settings of reconstruction.

    Attributes:
        samples_per_image: Output positions sampled per calibration image and layer.
        ridge: Ridge strength relative to the mean diagonal of the normal matrix.
        batch_size: Samples per ONNX Runtime run.
        threads: ONNX Runtime threads.
    """

    samples_per_image: int = 10
    ridge: float = 1e-4
    batch_size: int = 100
    threads: int = 2


@dataclass(frozen=True)
class LayerFit:
    """What happened to one consumer: ``method`` is ``lstsq``, ``bias`` or ``skipped``."""

    node: str
    method: str
    rows: int
    error_before: float
    error_after: float


@dataclass(frozen=True)
class ReconstructReport:
    """Per-layer results and wall time."""

    layers: tuple[LayerFit, ...]
    seconds: float


def _original_targets(original: onnx.ModelProto, layers: Sequence[Layer], feeds: Mapping[str, np.ndarray],
                      rng: np.random.Generator, options: ReconstructOptions
                      ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, ...]]]:
    """Original outputs of each layer at sampled positions: (image, where, rows, output shape)."""
    names = [layer.output for layer in layers]
    found: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {n: [] for n in names}
    shapes: dict[str, tuple[int, ...]] = {}
    for start, values in run_batches(original, feeds, names, batch_size=options.batch_size,
                                     threads=options.threads):
        for layer, value in zip(layers, values):
            image, where = sample_positions(value.shape, layer.out_axis, options.samples_per_image, start, rng)
            rows = rows_at(value, layer.out_axis, image - start, where).astype(np.float32)
            found[layer.output].append((image, where, rows))
            shapes[layer.output] = value.shape
    return {n: (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                np.concatenate([p[2] for p in parts]), shapes[n]) for n, parts in found.items()}


def _design(layer: Layer, x: np.ndarray, image: np.ndarray, where: np.ndarray,
            out_shape: tuple[int, ...]) -> np.ndarray:
    """Rows of the layer's input that produce its output at the sampled positions."""
    if layer.op == "Conv":
        return conv_patches(layer, x, image, where, out_shape)
    if layer.op == "Gemm":
        return x[image][:, None, :]
    flat = x.reshape(x.shape[0], -1, x.shape[-1])
    return flat[image, where][:, None, :]


def _fit_layer(layer: Layer, weights: dict[str, np.ndarray], x: np.ndarray,
               target: tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, ...]], out_mask: np.ndarray,
               ridge: float) -> LayerFit:
    image, where, rows, out_shape = target
    y = rows[:, out_mask].astype(np.float64)
    patches = _design(layer, x, image, where, out_shape)  # (R, groups, cols)
    w, b = layer.get(weights)  # w: (groups, cols, outs_per_group), b: (outs,) or None
    groups = w.shape[0]
    per = y.shape[1] // groups
    new_w, new_b = np.empty_like(w), np.zeros(y.shape[1])
    err_before = err_after = 0.0
    for g in range(groups):
        a = patches[:, g].astype(np.float64)
        yg = y[:, g * per:(g + 1) * per]
        bias_g = b[g * per:(g + 1) * per] if b is not None else 0.0
        err_before += float(np.square(a @ w[g] + bias_g - yg).sum())
        new_w[g], bg = solve_ridge(a, yg, ridge, with_bias=layer.has_bias_slot)
        new_b[g * per:(g + 1) * per] = bg
        err_after += float(np.square(a @ new_w[g] + bg - yg).sum())
    scale = float(np.square(y).sum()) or 1.0
    if err_after > err_before:
        return LayerFit(layer.node, "skipped", len(y), err_before / scale, err_before / scale)
    layer.set(weights, new_w, new_b if layer.has_bias_slot else None)
    return LayerFit(layer.node, "lstsq", len(y), err_before / scale, err_after / scale)


def _bias_fix(layer: Layer, weights: dict[str, np.ndarray], original_w: np.ndarray, means: np.ndarray,
              in_mask: np.ndarray, out_mask: np.ndarray) -> LayerFit:
    """Fold the removed input channels' mean contribution into the bias (dense layers only)."""
    removed = ~in_mask
    if not layer.has_bias_slot or layer.groups != 1 or not removed.any():
        return LayerFit(layer.node, "skipped", 0, 0.0, 0.0)
    # original_w in layer form: (1, in_channels * kernel, outs) with kernel positions inner
    kernel = original_w.shape[1] // in_mask.size
    per_channel = original_w[0].reshape(in_mask.size, kernel, -1).sum(axis=1)  # (in, outs)
    delta = (means[removed][:, None] * per_channel[removed]).sum(axis=0)[out_mask]
    w, b = layer.get(weights)
    layer.set(weights, w, (b if b is not None else 0.0) + delta)
    return LayerFit(layer.node, "bias", 0, 0.0, 0.0)


def _finish(pruned: onnx.ModelProto, layers: Sequence[Layer], weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(pruned)
    nodes = {n.name: n for n in out.graph.node}
    for layer in layers:
        layer.attach(nodes[layer.node], weights)
    changed = {n for layer in layers for n in layer.weight_names()}
    kept = [t for t in out.graph.initializer if t.name not in changed]
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept)
    out.graph.initializer.extend(numpy_helper.from_array(np.asarray(weights[n], dtype=np.float32), n)
                                 for n in sorted(changed) if n in weights)
    return out


def repair(original: onnx.ModelProto, pruned: onnx.ModelProto, consumers: Sequence[str],
           masks: Mapping[str, np.ndarray], feeds: Mapping[str, np.ndarray], rng: np.random.Generator, *,
           mode: str = "reconstruct", options: ReconstructOptions | None = None,
           on_layer: Callable[[str], None] | None = None) -> tuple[onnx.ModelProto, ReconstructReport]:
    """Repair the consumers of pruned channels (see the module contract).

    Args:
        original: The unpruned model.
        pruned: Its pruned version (not modified).
        consumers: Node names whose input channels were removed (any order).
        masks: Original tensor name -> kept flag per labeled position.
        feeds: Calibration inputs (graph input name -> array, samples first).
        rng: Source of the sampled positions.
        mode: ``reconstruct`` (least squares, bias correction where impossible) or ``bias``.
        options: Sampling, ridge and runtime settings.
        on_layer: Called with each node name once it is handled.

    Returns:
        The repaired model and a per-layer report.
    """
    options = options or ReconstructOptions()
    t0 = time.perf_counter()
    layers, fallback = describe_layers(original, pruned, consumers, masks)
    if mode == "bias":
        fallback, layers = fallback + layers, []
    weights = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in pruned.graph.initializer}
    fits: list[LayerFit] = []
    if fallback:
        means = channel_means(original, feeds, {f.input: f.in_axis for f in fallback},
                              batch_size=options.batch_size, threads=options.threads)
        for layer in fallback:
            fits.append(_bias_fix(layer, weights, layer.original_weight, means[layer.input],
                                  layer.in_mask, layer.out_mask))
            if on_layer is not None:
                on_layer(layer.node)
    if layers:
        targets = _original_targets(original, layers, feeds, rng, options)
        stepper = Stepper(pruned, feeds, batch_size=options.batch_size, threads=options.threads)
        for layer in sorted(layers, key=lambda item: stepper.index_of(item.node)):
            stepper.advance_to(stepper.index_of(layer.node))
            fit = _fit_layer(layer, weights, stepper.values[layer.input], targets[layer.output],
                             layer.out_mask, options.ridge)
            fits.append(fit)
            if fit.method == "lstsq":
                stepper.weights.update({n: weights[n].astype(np.float32) for n in layer.weight_names()
                                        if n in weights})
                layer.attach(stepper.nodes[stepper.index_of(layer.node)], weights)
            if on_layer is not None:
                on_layer(layer.node)
    changed = {f.node for f in fits if f.method != "skipped"}
    model = _finish(pruned, [x for x in (*layers, *fallback) if x.node in changed], weights)
    report = ReconstructReport(layers=tuple(fits), seconds=time.perf_counter() - t0)
    logger.info("repaired %d layers in %.1f s", len(fits), report.seconds)
    return model, report


__all__ = ["LayerFit", "ReconstructOptions", "ReconstructReport", "repair"]
