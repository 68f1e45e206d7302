"""Least-squares reconstruction and bias correction of the layers that lost input channels.

Contract:
    requires: the ``original`` model and its ``pruned`` version from
    :func:`onnxprune.rewrite.prune_model` (same node and tensor names), the names of the
    consumer nodes (Conv/Gemm/MatMul) whose input channels were removed, the original model's
    kept-flags per labeled tensor (``masks``), and calibration feeds.
    guarantees: a new model with the same graph as ``pruned``; only those consumers' weights and
    biases change (a bias input is added where a Conv/Gemm had none; a consumer reading an
    initializer that other nodes also read gets its own copy). Reconstruction re-fits a
    consumer by ridge least squares so that, on the *pruned* model's inputs (including earlier
    fixes), its output at sampled positions matches the *original* model's output; a layer is
    never made worse on its samples. Layers that cannot be re-fitted (3-D convs, ``transA`` Gemm,
    non-constant weights) get bias correction: the removed channels' mean contribution
    (mean activation x weight) folded into the bias. Models that cannot be run segment by
    segment (a held tensor such as a Shape output is not batch-first) are fitted on one pass of
    the pruned model instead (logged); layers whose own input or output is not batch-first get
    bias correction (logged).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper
from threadpoolctl import threadpool_limits

from onnxprune.rewrite.capture import channel_means, rows_at, run_batches, sample_positions
from onnxprune.rewrite.layers import Layer, describe_layers, design_rows, unshare_weights
from onnxprune.rewrite.normal import NormalEquations
from onnxprune.rewrite.stepper import SegmentError, Stepper

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReconstructOptions:
    """Settings of reconstruction.

    Attributes:
        samples_per_image: Output positions sampled per calibration image and layer.
        ridge: Ridge strength relative to the mean diagonal of the normal matrix.
        batch_size: Samples per ONNX Runtime run.
        threads: ONNX Runtime threads.
        blas_threads: BLAS threads of the normal equations while repairing (one batch's products
            are small: one thread wastes no CPU on synchronisation, which matters on a shared machine).
    """

    samples_per_image: int = 10
    ridge: float = 1e-4
    batch_size: int = 100
    threads: int = 2
    blas_threads: int = 1


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


Target = tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, ...]]


def _original_targets(original: onnx.ModelProto, layers: Sequence[Layer], feeds: Mapping[str, np.ndarray],
                      rng: np.random.Generator, options: ReconstructOptions) -> dict[str, Target]:
    """Original outputs of each layer at sampled positions: (image, where, rows, output shape).

    Layers whose output is not batch-first (axis 0 is not the sample axis) are left out.
    """
    names = [layer.output for layer in layers]
    found: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {n: [] for n in names}
    shapes: dict[str, tuple[int, ...]] = {}
    count = len(next(iter(feeds.values())))
    for start, values in run_batches(original, feeds, names, batch_size=options.batch_size,
                                     threads=options.threads):
        batch = min(options.batch_size, count - start)
        for layer, value in zip(layers, values):
            if value.ndim < 2 or value.shape[0] != batch:
                found.pop(layer.output, None)
                continue
            image, where = sample_positions(value.shape, layer.out_axis, options.samples_per_image, start, rng)
            rows = rows_at(value, layer.out_axis, image - start, where).astype(np.float32)
            if layer.output in found:
                found[layer.output].append((image, where, rows))
            shapes[layer.output] = value.shape
    return {n: (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                np.concatenate([p[2] for p in parts]), shapes[n]) for n, parts in found.items()}


def _start_fit(layer: Layer, weights: Mapping[str, np.ndarray], target: Target) -> NormalEquations:
    w, _ = layer.get(weights)
    outs = int(layer.out_mask.sum()) if layer.out_mask.size == target[2].shape[1] else target[2].shape[1]
    return NormalEquations.empty(w.shape[0], w.shape[1], outs // w.shape[0], with_bias=layer.has_bias_slot)


def _add_batch(layer: Layer, normal: NormalEquations, x: np.ndarray, start: int, target: Target) -> None:
    """Accumulate the rows of samples ``[start, start + len(x))`` (``x`` is that batch of the input)."""
    image, where, rows, out_shape = target
    lo, hi = np.searchsorted(image, [start, start + len(x)])
    y = rows[lo:hi]
    if layer.out_mask.size == rows.shape[1]:
        y = y[:, layer.out_mask]
    normal.add(design_rows(layer, x, image[lo:hi] - start, where[lo:hi], out_shape), y)


def _finish_fit(layer: Layer, weights: dict[str, np.ndarray], normal: NormalEquations, ridge: float) -> LayerFit:
    """Solve, and keep the new weights only when they fit the samples at least as well."""
    w, b = layer.get(weights)
    groups, _, per = w.shape
    old = w
    if layer.has_bias_slot:
        bias = np.zeros(groups * per) if b is None else b
        old = np.concatenate([w, bias.reshape(groups, 1, per)], axis=1)
    new = normal.solve(ridge)
    scale = normal.target_energy() or 1.0
    before, after = normal.error(old) / scale, normal.error(new) / scale
    if after > before:
        return LayerFit(layer.node, "skipped", normal.rows, before, before)
    if layer.has_bias_slot:
        layer.set(weights, new[:, :-1], new[:, -1].reshape(-1))
    else:
        layer.set(weights, new, None)
    return LayerFit(layer.node, "lstsq", normal.rows, before, after)


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


def _bias_fixes(original: onnx.ModelProto, layers: Sequence[Layer], weights: dict[str, np.ndarray],
                feeds: Mapping[str, np.ndarray], options: ReconstructOptions,
                on_layer: Callable[[str], None] | None) -> list[LayerFit]:
    """Bias correction of ``layers`` from the original model's mean input channels."""
    if not layers:
        return []
    means = channel_means(original, feeds, {x.input: x.in_axis for x in layers},
                          batch_size=options.batch_size, threads=options.threads)
    fits = []
    for layer in layers:
        fits.append(_bias_fix(layer, weights, layer.original_weight, means[layer.input], layer.in_mask,
                              layer.out_mask))
        if on_layer is not None:
            on_layer(layer.node)
    return fits


def _fit_sequential(layers: Sequence[Layer], pruned: onnx.ModelProto, weights: dict[str, np.ndarray],
                    feeds: Mapping[str, np.ndarray], targets: Mapping[str, Target], options: ReconstructOptions,
                    on_layer: Callable[[str], None] | None) -> tuple[list[LayerFit], list[Layer]]:
    """Fit layers in execution order, each on inputs that include every earlier fix.

    When the model cannot be stepped (:class:`SegmentError`), the layers not fitted yet are fitted
    on one full pass of the pruned model with the fixes made so far (a warning is logged).

    Returns:
        The fits, and the layers whose input is not batch-first (left for bias correction).
    """
    stepper = Stepper(pruned, feeds, batch_size=options.batch_size, threads=options.threads)
    order = sorted(layers, key=lambda item: stepper.index_of(item.node))
    fits: list[LayerFit] = []
    for done, layer in enumerate(order):
        try:
            stepper.advance_to(stepper.index_of(layer.node))
        except SegmentError as exc:
            logger.warning("cannot run the model segment by segment (%s); fitting %d remaining layers on one "
                           "pass of the pruned model", exc, len(order) - done)
            rest, left = _fit_one_pass(order[done:], pruned, order[:done], weights, feeds, targets, options,
                                       on_layer)
            return fits + rest, left
        normal = _start_fit(layer, weights, targets[layer.output])
        for k, chunk in enumerate(stepper.values[layer.input]):
            _add_batch(layer, normal, chunk, k * options.batch_size, targets[layer.output])
        fits.append(_finish_fit(layer, weights, normal, options.ridge))
        if fits[-1].method == "lstsq":
            stepper.weights.update({n: weights[n].astype(np.float32) for n in layer.weight_names() if n in weights})
            layer.attach(stepper.nodes[stepper.index_of(layer.node)], weights)
        if on_layer is not None:
            on_layer(layer.node)
    return fits, []


def _fit_one_pass(layers: Sequence[Layer], pruned: onnx.ModelProto, fitted: Sequence[Layer],
                  weights: dict[str, np.ndarray], feeds: Mapping[str, np.ndarray], targets: Mapping[str, Target],
                  options: ReconstructOptions, on_layer: Callable[[str], None] | None
                  ) -> tuple[list[LayerFit], list[Layer]]:
    """Fit ``layers`` together on one run of ``pruned`` carrying the ``fitted`` layers' new weights.

    Returns:
        The fits, and the layers whose input is not batch-first (not fitted).
    """
    current = _finish(pruned, fitted, weights)
    normals = {x.node: _start_fit(x, weights, targets[x.output]) for x in layers}
    inputs = list(dict.fromkeys(x.input for x in layers))
    count = len(next(iter(feeds.values())))
    bad: set[str] = set()
    for start, values in run_batches(current, feeds, inputs, batch_size=options.batch_size,
                                     threads=options.threads):
        by_name = dict(zip(inputs, values))
        for layer in layers:
            x = by_name[layer.input]
            if x.ndim < 2 or x.shape[0] != min(options.batch_size, count - start):
                bad.add(layer.node)
            elif layer.node not in bad:
                _add_batch(layer, normals[layer.node], x, start, targets[layer.output])
    fits = []
    for layer in (x for x in layers if x.node not in bad):
        fits.append(_finish_fit(layer, weights, normals[layer.node], options.ridge))
        if on_layer is not None:
            on_layer(layer.node)
    if bad:
        logger.warning("inputs of %s are not batch-first; bias correction instead of reconstruction",
                       ", ".join(sorted(bad)))
    return fits, [x for x in layers if x.node in bad]


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
    with threadpool_limits(limits=options.blas_threads, user_api="blas"):
        return _repair(original, pruned, consumers, masks, feeds, rng, mode, options, on_layer)


def _repair(original: onnx.ModelProto, pruned: onnx.ModelProto, consumers: Sequence[str],
            masks: Mapping[str, np.ndarray], feeds: Mapping[str, np.ndarray], rng: np.random.Generator,
            mode: str, options: ReconstructOptions, on_layer: Callable[[str], None] | None
            ) -> tuple[onnx.ModelProto, ReconstructReport]:
    t0 = time.perf_counter()
    pruned = unshare_weights(pruned, consumers)
    layers, fallback = describe_layers(original, pruned, consumers, masks)
    if mode == "bias":
        fallback, layers = fallback + layers, []
    weights = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in pruned.graph.initializer}
    fits = _bias_fixes(original, fallback, weights, feeds, options, on_layer)
    if layers:
        targets = _original_targets(original, layers, feeds, rng, options)
        late = [x for x in layers if x.output not in targets]
        if late:
            logger.warning("outputs of %s are not batch-first; bias correction instead of reconstruction",
                           ", ".join(x.node for x in late))
        fitted, left = _fit_sequential([x for x in layers if x.output in targets], pruned, weights, feeds,
                                       targets, options, on_layer)
        fits += fitted + _bias_fixes(original, late + left, weights, feeds, options, on_layer)
    changed = {f.node for f in fits if f.method != "skipped"}
    model = _finish(pruned, [x for x in (*layers, *fallback) if x.node in changed], weights)
    report = ReconstructReport(layers=tuple(fits), seconds=time.perf_counter() - t0)
    logger.info("repaired %d layers in %.1f s", len(fits), report.seconds)
    return model, report


__all__ = ["LayerFit", "ReconstructOptions", "ReconstructReport", "repair"]
