"""Measure the per-layer latency table of :mod:`onnxprune.search.latency` with ONNX Runtime.

Each distinct Conv/Gemm layer of the model (see :func:`~onnxprune.search.latency.describe`) is
rebuilt as a tiny single-node model (random weights, batch 1, the layer's attributes) at every
pair of kept widths on a grid (``fractions`` of the input and output channels, rounded to
``round_to``), and timed on the given :class:`~onnxprune.evaluate.Runtime`: a few warm-up runs,
then the median of ``repeats`` runs. Results are cached in a JSON file; entries already there
for the same device (and batch) whose width grid holds the requested one are reused, so a second
search on the model measures nothing (a grid of another ``round_to`` is timed again: interpolation
clamps to the measured widths).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune.analyze.types import Analysis
from onnxprune.compat import make_model
from onnxprune.evaluate import Runtime
from onnxprune.io import write_json_atomic
from onnxprune.plan import round_width
from onnxprune.search.latency import Layer, LatencyTable, TableEntry, describe

logger = logging.getLogger(__name__)

FRACTIONS: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0)


def grid(size: int, fractions: Sequence[float], round_to: int) -> tuple[int, ...]:
    """Distinct widths ``round(f * size)`` rounded like the search rounds them (:func:`~onnxprune.plan.round_width`)."""
    out = set()
    for f in fractions:
        width = int(round(f * size))
        out.add(max(1, round_width(width, size, round_to) if size > round_to else width))
    return tuple(sorted(out))


def single_node(layer: Layer, c_in: int, c_out: int, rng: np.random.Generator, batch: int = 1) -> onnx.ModelProto:
    """A one-node model of ``layer`` with ``c_in`` input and ``c_out`` output channels, at ``batch``."""
    attrs = dict(layer.attrs)
    if layer.op == "Conv":
        group = c_out if layer.depthwise else 1
        if layer.depthwise:
            c_in = c_out
            attrs["group"] = group
        x_shape = [batch, c_in, *layer.spatial]
        w_shape = [c_out, c_in // group, *layer.weight[2:]]
    else:
        x_shape = [c_in, batch] if attrs.get("transA") else [batch, c_in]
        w_shape = [c_out, c_in] if attrs.get("transB") else [c_in, c_out]
    inits = [numpy_helper.from_array(rng.standard_normal(w_shape).astype(np.float32), "w")]
    if layer.bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(c_out).astype(np.float32), "b"))
    node = helper.make_node(layer.op, ["x", "w", *(["b"] if layer.bias else [])], ["y"], **attrs)
    graph = helper.make_graph([node], "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def time_model(runtime: Runtime, model: onnx.ModelProto, repeats: int, warmup: int = 3) -> float:
    """Median milliseconds of one run of ``model`` (its input shape, random values)."""
    session = runtime.create(model)
    spec = session.inputs[0]
    x = np.random.default_rng(0).standard_normal([d or 1 for d in spec.shape]).astype(np.float32)
    feeds = {spec.name: x}
    for _ in range(warmup):
        session.run_raw(feeds)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run_raw(feeds)
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def device_label(runtime: Runtime, batch: int = 1) -> str:
    """What the table was measured on (changing any part invalidates a cached table; batch 1 is implied)."""
    probe = runtime.create(single_node(Layer("probe", "Gemm", 1, 1, (), {}, (1, 1), False, False), 1, 1,
                                       np.random.default_rng(0)))
    label = f"{probe.info.provider}|{probe.info.cpu}|threads={runtime.threads}|ort={probe.info.ort_version}"
    return label if batch == 1 else f"{label}|batch={batch}"


def measure_table(analysis: Analysis, runtime: Runtime, *, cache: Path | None = None,
                  fractions: Sequence[float] = FRACTIONS, round_to: int = 1, repeats: int = 20,
                  seed: int = 0, batch: int = 1, widths: Mapping[int, Sequence[int]] | None = None) -> LatencyTable:
    """The latency table of every timed layer of ``analysis.model`` on ``runtime``.

    Args:
        analysis: The analyzed model.
        runtime: Where to time (device, threads; give it :func:`~onnxprune.evaluate.timing_threads`
            threads, as ``compress`` does, so that one CPU stays free for the OS).
        cache: JSON file to read reusable entries from and to write the table to.
        fractions: Kept fractions of the channels measured per axis.
        round_to: Round the measured widths like the search does.
        repeats: Timed runs per width pair (the median is kept).
        seed: Seed of the random weights.
        batch: Batch size of the timed layers (``compress --latency-batch``).
        widths: Extra widths to measure, by unpruned channel count (e.g. a width menu's: 64 -> 16, 32,
            48), so the table is measured, not interpolated, at the widths the search can pick.

    Returns:
        The table (also written to ``cache``).
    """
    device = device_label(runtime, batch)
    entries: dict[str, TableEntry] = {}
    if cache is not None and cache.exists():
        try:
            old = LatencyTable.from_json(json.loads(cache.read_text(encoding="utf-8")))
            entries = dict(old.entries) if old.device == device else {}
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable latency cache %s (%s)", cache, exc)
    rng = np.random.default_rng(seed)
    measured = 0
    for node in analysis.model.proto.graph.node:
        layer = describe(node, analysis.model.shapes.get)
        if layer is None:
            continue
        extra = widths or {}
        outs = tuple(sorted({*grid(layer.c_out, fractions, round_to), *extra.get(layer.c_out, ())}))
        ins = (0,) if layer.depthwise else tuple(sorted({*grid(layer.c_in, fractions, round_to),
                                                          *extra.get(layer.c_in, ())}))
        known = entries.get(layer.key)
        if known is not None and set(ins) <= set(known.widths_in) and set(outs) <= set(known.widths_out):
            continue
        ms = tuple(tuple(time_model(runtime, single_node(layer, ci, co, rng, batch), repeats) for co in outs)
                   for ci in ins)
        entries[layer.key] = TableEntry(ins, outs, ms)
        measured += len(ins) * len(outs)
    table = LatencyTable(device, entries)
    if cache is not None and measured:
        write_json_atomic(cache, table.to_json())
    logger.info("latency table: %d layer kinds, %d width pairs measured now", len(entries), measured)
    return table
