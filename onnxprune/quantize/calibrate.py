"""Activation ranges of the quantizable layers' inputs, measured on calibration data.

Methods:
    ``minmax``: the smallest and largest value seen.
    ``percentile``: the ``(100 - p)``-th and ``p``-th percentiles (``p`` = 99.99 by default) of
    every value seen, read from a 2048-bin histogram over the min-max range.
    ``entropy``: the clipping threshold ``T`` on ``|x|`` whose 8-bit quantized histogram has the
    least KL divergence from the measured one (the TensorRT calibration), ``[0, T]`` for
    non-negative tensors, ``[-T, T]`` cut to the min-max range otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx
from onnx import helper

from onnxprune.errors import DataError
from onnxprune.evaluate import Runtime

logger = logging.getLogger(__name__)

METHODS: tuple[str, ...] = ("minmax", "percentile", "entropy")
BINS = 2048
ActivationRanges = Mapping[str, tuple[float, float]]


def _with_outputs(model: onnx.ModelProto, tensors: Sequence[str]) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    present = {o.name for o in out.graph.output}
    out.graph.output.extend(helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None)
                            for t in tensors if t not in present)
    return out


def _passes(model: onnx.ModelProto, tensors: Sequence[str], feeds: Mapping[str, np.ndarray], batch: int,
            runtime: Runtime) -> Callable[[], list[dict[str, np.ndarray]]]:
    """A callable that runs the calibration data once and yields each batch's tensor values."""
    inputs = [t for t in tensors if t in feeds]
    inner = [t for t in tensors if t not in feeds]
    session = runtime.create(_with_outputs(model, inner)) if inner else None
    names = [o.name for o in session.outputs] if session is not None else []
    count = len(next(iter(feeds.values())))

    def run() -> list[dict[str, np.ndarray]]:
        results = []
        for start in range(0, count, batch):
            part = {k: v[start:start + batch] for k, v in feeds.items()}
            values = dict(zip(names, session.run(part))) if session is not None else {}
            values.update({t: part[t] for t in inputs})
            results.append({t: values[t] for t in tensors})
        return results

    return run


def _percentile_range(hist: np.ndarray, lo: float, hi: float, p: float) -> tuple[float, float]:
    cdf = np.cumsum(hist) / max(hist.sum(), 1)
    edges = np.linspace(lo, hi, len(hist) + 1)
    low = edges[int(np.searchsorted(cdf, (100 - p) / 100))]
    high = edges[min(int(np.searchsorted(cdf, p / 100)) + 1, len(hist))]
    return float(low), float(high)


def _entropy_threshold(hist: np.ndarray, top: float, levels: int = 128) -> float:
    """TensorRT-style KL threshold on a histogram of ``|x|`` over ``[0, top]``."""
    hist = hist.astype(np.float64)
    best, best_kl = len(hist), np.inf
    for i in range(levels, len(hist) + 1, 16):
        ref = hist[:i].copy()
        ref[-1] += hist[i:].sum()
        chunks = np.array_split(np.arange(i), levels)
        cand = np.zeros(i)
        for idx in chunks:
            nz = hist[idx] > 0
            if nz.any():
                cand[idx[nz]] = hist[idx].sum() / nz.sum()
        p, q = ref / max(ref.sum(), 1e-12), cand / max(cand.sum(), 1e-12)
        mask = p > 0
        kl = float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))
        if kl < best_kl:
            best, best_kl = i, kl
    return top * best / len(hist)


def calibrate(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], tensors: Sequence[str], *,
              method: str = "minmax", percentile: float = 99.99, batch: int = 64,
              runtime: Runtime | None = None) -> dict[str, tuple[float, float]]:
    """Measure the range of every tensor in ``tensors`` on ``feeds``.

    Args:
        model: The float model.
        feeds: Calibration inputs (input name -> array, batch first), in memory.
        tensors: Tensors to measure (the quantized layers' activations).
        method: One of :data:`METHODS`.
        percentile: ``p`` of the percentile method, in (50, 100].
        batch: Samples per run.
        runtime: ORT sessions (CPU with every core when None).

    Returns:
        Tensor -> ``(lo, hi)``.

    Raises:
        DataError: Unknown method, bad percentile or no calibration samples.
    """
    if method not in METHODS:
        raise DataError(f"calibration method '{method}' unknown; use one of {', '.join(METHODS)}")
    if not 50.0 < percentile <= 100.0:
        raise DataError(f"percentile {percentile} outside (50, 100]; pass e.g. 99.99")
    if not feeds or len(next(iter(feeds.values()))) == 0:
        raise DataError("no calibration samples; pass --calib with at least one sample")
    tensors = list(dict.fromkeys(tensors))
    if not tensors:
        return {}
    run = _passes(model, tensors, feeds, batch, runtime or Runtime("cpu"))
    lo = {t: np.inf for t in tensors}
    hi = {t: -np.inf for t in tensors}
    for values in run():
        for t, v in values.items():
            lo[t], hi[t] = min(lo[t], float(v.min())), max(hi[t], float(v.max()))
    if method == "minmax":
        return {t: (lo[t], hi[t]) for t in tensors}
    hists = {t: np.zeros(BINS, dtype=np.int64) for t in tensors}
    for values in run():
        for t, v in values.items():
            if method == "percentile":
                hists[t] += np.histogram(v, bins=BINS, range=(lo[t], max(hi[t], lo[t] + 1e-12)))[0]
            else:
                hists[t] += np.histogram(np.abs(v), bins=BINS, range=(0.0, max(abs(lo[t]), abs(hi[t]), 1e-12)))[0]
    ranges = {}
    for t in tensors:
        if method == "percentile":
            ranges[t] = _percentile_range(hists[t], lo[t], max(hi[t], lo[t] + 1e-12), percentile)
        else:
            top = _entropy_threshold(hists[t], max(abs(lo[t]), abs(hi[t]), 1e-12))
            ranges[t] = (0.0 if lo[t] >= 0 else max(lo[t], -top), min(hi[t], top))
    logger.debug("calibrated %d tensors (%s)", len(ranges), method)
    return ranges
