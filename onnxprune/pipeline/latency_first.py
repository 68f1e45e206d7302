"""Latency-first compression: a measured latency target, then int8, in one command.

``compress --metric latency`` with :class:`~onnxprune.pipeline.latency_fit.LatencySettings`:
the search runs on the whole-model-corrected latency model; the written model is then timed end
to end against the input on the target device (alternating runs, one process). If the measured
share removed falls short of ``--target`` by more than the settings' tolerance, its point is
added to the fit, the correction is refitted and the search runs again (at most ``passes``
times). The report says, per pass, predicted vs measured and why they differ.

With :class:`Int8Settings` (``--quantize-int8``) the written float model then goes through
``onnxprune quantize`` (int8 QDQ via ONNX Runtime, per-channel weights, calibrated activations,
:mod:`onnxprune.pipeline.quantizing`): with ``max_drop``, layers fall back to float, most
sensitive first, until the int8 model's top-1 on the validation images is within ``max_drop``
of the pruned float model's. Written as ``<out>.int8.onnx`` and timed against the input too.
With fine-tuning (``compress --finetune-epochs --quantize-int8``) the search runs without
``int8`` and :func:`quantize_tuned` quantizes the tuned model afterwards, so the int8 model
carries the trained weights and ``max_drop`` is measured from the tuned float model.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onnxprune.evaluate import DataSpec, Runtime, timing_threads
from onnxprune.evaluate.latency import LatencyRow
from onnxprune.pipeline.compressing import compress_file
from onnxprune.pipeline.latency_fit import LatencySettings, time_against
from onnxprune.pipeline.quantizing import QuantizeSettings, quantize_file
from onnxprune.report import CompressReport

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Int8Settings:
    """How ``--quantize-int8`` quantizes the written model.

    Attributes:
        calib: Calibration images (``val_split``: how many).
        val: Labelled validation images for ``max_drop`` (``None``: no fallback, top-1 not scored).
        max_drop: Largest top-1 drop (fraction) from the pruned float model; ``None``: no fallback.
        threads: ONNX Runtime threads for calibration and scoring.
    """

    calib: DataSpec
    val: DataSpec | None = None
    max_drop: float | None = 0.01
    threads: int | None = None


def int8_path(output: Path) -> Path:
    """Where ``--quantize-int8`` writes: ``<out stem>.int8.onnx`` beside ``output``."""
    return output.with_name(f"{output.stem}.int8.onnx")


def _row(row: LatencyRow) -> dict[str, Any]:
    return {"batch": row.batch, "ms": row.model.median_ms, "baseline_ms": row.baseline.median_ms if row.baseline
            else None, "ratio": row.ratio, "speedup": 1.0 / row.ratio if row.ratio else None,
            "verdict": row.verdict, "reason": row.reason}


def explain(check: Mapping[str, Any], row: LatencyRow) -> str:
    """One sentence on why the measured latency differs from the per-layer table's."""
    table = check.get("table_ms") or [0.0, 0.0]
    corr = check.get("correction") or {}
    base_ms = row.baseline.median_ms if row.baseline is not None else float("nan")
    text = (f"the table times each Conv/Gemm alone at batch {check.get('batch')}: {table[0]:.3f} ms of the "
            f"{base_ms:.3f} ms the whole input model takes")
    if corr:
        text += (f"; fitted end to end, each table ms costs {corr['scale']:.2f} ms in the model and "
                 f"{corr['offset']:.3f} ms per run does not shrink with the widths (other ops, reorders, "
                 "overhead), so the layers are cut deeper than the target")
    return text


def _measured_passes(path: Path, output: Path, *, target: float, latency: LatencySettings, timer: Runtime,
                     kwargs: Mapping[str, Any]) -> CompressReport:
    """Search, time the written model end to end, refit and search again on a miss."""
    passes: list[dict[str, Any]] = []
    points: tuple[tuple[float, float], ...] = ()
    for number in range(1, latency.passes + 1):
        report = compress_file(path, output, target=target, metric="latency", latency=latency, fit_points=points,
                               **kwargs)
        check = dict(report.latency_check or {})
        row = time_against(timer, report.output, path, latency.batch, protocol=latency.protocol)
        predicted = check.get("predicted_ms") or [1.0, 1.0]
        measured = 1.0 - row.ratio if row.ratio is not None else 0.0
        passes.append({"pass": number, "predicted_removed": 1.0 - predicted[1] / predicted[0],
                       "measured_removed": measured, **_row(row)})
        logger.info("latency pass %d: predicted %.1f %% removed, measured %.1f %% (target %.0f %%)", number,
                    100 * passes[-1]["predicted_removed"], 100 * measured, 100 * target)
        if measured >= target - latency.tolerance or number == latency.passes or row.ratio is None:
            break
        corr = check.get("correction") or {"points": []}
        written = (float((check.get("table_ms") or [0.0, 0.0])[1]), row.ratio * row.baseline.median_ms)
        points = (*(tuple(p) for p in corr["points"]), written)
    check.update(passes=passes, measured_removed=measured, why=explain(check, row),
                 met=measured >= target - latency.tolerance)
    return dataclasses.replace(report, latency_check=check)


def quantize_written(report: CompressReport, settings: Int8Settings, timer: Runtime, batch: int) -> dict[str, Any]:
    """int8 QDQ of the written model (with the accuracy-aware fallback), timed against the input."""
    target = int8_path(report.output)
    count = settings.val.val_split if settings.val is not None else None
    if settings.max_drop is not None and count and settings.max_drop < 1.0 / math.sqrt(count):
        logger.warning("--max-drop %s is below the resolution of %d validation images (about %.3f): the fallback "
                       "may chase noise back to float; use a larger --val-split or --max-drop", settings.max_drop,
                       count, 1.0 / math.sqrt(count))
    quant = quantize_file(report.output, target, QuantizeSettings(
        calib=settings.calib, val=settings.val, max_drop=settings.max_drop if settings.val is not None else None,
        threads=settings.threads))
    row = time_against(timer, quant.output, Path(report.source), batch)
    return {"output": str(quant.output), "accuracy_float": quant.accuracy_before, "accuracy_int8": quant.accuracy_after,
            "max_drop": settings.max_drop, "val_images": count, "fallen_back": list(quant.fallen_back),
            "int8_layers": len(quant.written), "bytes": quant.bytes_after, "latency": _row(row)}


def quantize_tuned(report: CompressReport, settings: Int8Settings, latency: LatencySettings, *, device: str = "cpu",
                   threads: int | None = None) -> CompressReport:
    """``report`` with ``int8`` filled in: int8 QDQ of its (tuned) written model, timed against the input.

    Args:
        report: A finished compress (its ``output`` is the model to quantize, e.g. fine-tuned in place).
        settings: Calibration, validation and ``max_drop`` as for ``--quantize-int8``.
        latency: The batch the input is timed at.
        device: Where the int8 model is timed (``cpu``, ``cuda`` or ``auto``).
        threads: Timing threads (``None``: :func:`~onnxprune.evaluate.timing_threads`' default).
    """
    timer = Runtime(device=device, threads=timing_threads(threads))
    return dataclasses.replace(report, int8=quantize_written(report, settings, timer, latency.batch))


def compress_latency_first(path: str | os.PathLike[str], output: str | os.PathLike[str], *, target: float,
                           metric: str, latency: LatencySettings, int8: Int8Settings | None = None,
                           **kwargs: Any) -> CompressReport:
    """``compress_file`` with measured latency settings, the measured-target loop and ``int8``.

    Args:
        path: The input model.
        output: The pruned model's path.
        target: Share of ``metric`` to remove (for ``latency``: measured end to end at ``latency.batch``).
        metric: ``latency`` runs the measured loop; another metric one search (the width menu still applies).
        latency: Batch, width menu, fit and passes.
        int8: Quantize the written model too.
        **kwargs: Passed to :func:`~onnxprune.pipeline.compressing.compress_file`.
    """
    source, written = Path(path).resolve(), Path(output).resolve()
    runtime = kwargs.get("runtime")
    timer = Runtime(device=runtime.device if runtime is not None else "cpu",
                    threads=timing_threads(kwargs.get("latency_threads")))
    if metric == "latency":
        report = _measured_passes(source, written, target=target, latency=latency, timer=timer, kwargs=kwargs)
    else:
        report = compress_file(source, written, target=target, metric=metric, latency=latency, **kwargs)
        row = time_against(timer, report.output, source, latency.batch, protocol=latency.protocol)
        report = dataclasses.replace(report, latency_check={**(report.latency_check or {}),
                                                            "measured_removed": 1.0 - (row.ratio or 1.0),
                                                            "passes": [{"pass": 1, **_row(row)}]})
    if int8 is not None:
        report = dataclasses.replace(report, int8=quantize_written(report, int8, timer, latency.batch))
    return report
