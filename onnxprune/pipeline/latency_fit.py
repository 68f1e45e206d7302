"""Whole-model latency: time candidates end to end and fit the table's correction.

The per-layer table (:mod:`onnxprune.pipeline.latency_table`) times each Conv/Gemm alone; a
model runs other ops too and its layers run at other speeds in a graph. Before the search the
unpruned model and a few uniform probes of the search space (every group cut by the same share
of ``max_ratio``) are built, timed end to end against the unpruned model (alternating runs, one
process, :func:`~onnxprune.evaluate.latency.measure`), and the
:class:`~onnxprune.search.latency.Correction` ``measured = scale * table + offset`` is fitted to
them, so that the ``latency`` metric the search rescales to is in measured milliseconds. After a
search, :func:`time_against` re-measures the written model; a miss adds its point and the
correction is refitted (:mod:`onnxprune.pipeline.latency_first` runs that loop).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onnxprune.analyze.cost import pruned_shapes
from onnxprune.errors import PlanError
from onnxprune.evaluate import Runtime
from onnxprune.evaluate.latency import LatencyRow, measure
from onnxprune.evaluate.runtime import ModelSource
from onnxprune.evaluate.stability import Protocol
from onnxprune.rewrite.prune import prune_model, tensor_masks, unit_mask
from onnxprune.pipeline.latency_table import measure_table
from onnxprune.pipeline.width_menu import measure_menu
from onnxprune.search.latency import Correction, LatencyModel, fit_correction
from onnxprune.search.space import SearchSpace

logger = logging.getLogger(__name__)

#: Protocol of the whole-model measurements (the figures the target is judged on).
FIT_PROTOCOL = Protocol(runs=20, warmup=5, min_time=1.0, max_time=4.0, tolerance=0.02)
#: Uniform probe levels, as fractions of ``max_ratio`` removed from every group.
PROBES: tuple[float, ...] = (0.4, 0.8)


@dataclass(frozen=True)
class LatencySettings:
    """How ``compress`` measures latency on the target device.

    Attributes:
        batch: Batch size of the table, the width menu and the whole-model measurements.
        width_menu: Limit widths to the measured menu (:mod:`onnxprune.pipeline.width_menu`).
        precision: ``float32``, or ``int8`` to time the width menu's probes as int8 QDQ models
            (the deployment ``--quantize-int8`` writes).
        fit: Fit the whole-model correction (``latency`` metric only).
        probes: Uniform probe levels for the fit.
        passes: Searches at most (a miss of the measured target refits the correction and searches again).
        tolerance: The measured share removed may fall short of the target by this much.
        protocol: Timing protocol of the whole-model measurements.
    """

    batch: int = 1
    width_menu: bool = False
    precision: str = "float32"
    fit: bool = True
    probes: tuple[float, ...] = PROBES
    passes: int = 2
    tolerance: float = 0.02
    protocol: Protocol = FIT_PROTOCOL

    def __post_init__(self) -> None:
        """Validate user-facing values."""
        if self.batch < 1:
            raise PlanError(f"--latency-batch {self.batch}: give a batch size of 1 or more")
        if self.passes < 1:
            raise PlanError(f"latency passes {self.passes}: give 1 or more")


def table_ms(space: SearchSpace, keeps: Sequence[int]) -> float:
    """The latency table's sum (no correction) of the candidate with ``keeps``."""
    if space.latency is None:
        raise PlanError("--metric latency needs a measured latency table; build the space with latency=")
    masks = tensor_masks(space.analysis, unit_mask(space.analysis, space.plan(keeps)))
    return space.latency.table_ms(pruned_shapes(space.analysis, masks))


def time_against(runtime: Runtime, model: ModelSource, baseline: ModelSource, batch: int, *,
                 protocol: Protocol = FIT_PROTOCOL, seed: int = 0) -> LatencyRow:
    """``model`` timed end to end against ``baseline`` at ``batch`` (alternating runs, one process)."""
    return measure(runtime.create(model), runtime.session(baseline), batch, protocol=protocol,
                   rng=np.random.default_rng(seed))


def fit_space(space: SearchSpace, runtime: Runtime, settings: LatencySettings, *,
              points: Sequence[tuple[float, float]] = (), seed: int = 0) -> SearchSpace:
    """``space`` with its latency model corrected by whole-model measurements.

    Args:
        space: A space with a latency table (and its width menu, if any).
        runtime: Where to time (the target device, timing threads).
        settings: Batch, probes and protocol.
        points: ``(table_ms, measured_ms)`` pairs measured before: a refit to them alone, nothing timed.
        seed: Seed of the random inputs.

    Returns:
        The space whose ``latency.predict`` is in measured milliseconds at ``settings.batch``.
    """
    if space.latency is None:
        raise PlanError("--metric latency needs a measured latency table; build the space with latency=")
    if points:  # a refit: the earlier points and the written model's
        return dataclasses.replace(space, latency=space.latency.corrected(fit_correction(points)))
    base = space.analysis.model.proto
    full = table_ms(space, space.sizes)
    rows, fitted = [], []
    for level in settings.probes:
        keeps = space.keeps([level * space.max_ratio] * len(space))
        probe = prune_model(space.analysis, space.plan(keeps))
        row = time_against(runtime, probe, base, settings.batch, protocol=settings.protocol, seed=seed)
        rows.append((keeps, row))
    if not rows:  # no probes: the unpruned model alone (a ratio fit through it)
        alone = time_against(runtime, base, base, settings.batch, protocol=settings.protocol, seed=seed)
        rows_ms = [alone.model.median_ms]
    else:
        rows_ms = [row.baseline.median_ms for _, row in rows if row.baseline is not None]
    reference = float(np.median(rows_ms))
    fitted.append((full, reference))
    fitted.extend((table_ms(space, keeps), reference * float(row.ratio)) for keeps, row in rows
                  if row.ratio is not None)
    correction = fit_correction(fitted)
    logger.info("latency fit at batch %d: measured = %.3f x table + %.3f ms (points %s)", settings.batch,
                correction.scale, correction.offset, [(round(t, 3), round(m, 3)) for t, m in fitted])
    return dataclasses.replace(space, latency=space.latency.corrected(correction))


def measured_space(space: SearchSpace, runtime: Runtime, settings: LatencySettings, *, metric: str,
                   table_cache: Path, menu_cache: Path, points: Sequence[tuple[float, float]] = (),
                   seed: int = 0) -> SearchSpace:
    """``space`` limited to the measured width menu and with the whole-model correction, as ``settings`` ask.

    With a menu, the latency table is measured again at the menu's widths (cached: only new
    widths are timed), so the search's predictions at those widths are measured, not interpolated.
    """
    if settings.width_menu:
        menu = measure_menu(space.analysis, space, runtime, batch=settings.batch, precision=settings.precision,
                            cache=menu_cache, seed=seed)
        space = space.with_menu(menu)
        if space.latency is not None:
            widths: dict[int, set[int]] = {}
            for size, allowed in zip(space.sizes, space.menu or ()):
                widths.setdefault(size, set()).update(allowed)
            table = measure_table(space.analysis, runtime, round_to=space.round_to, cache=table_cache,
                                  batch=settings.batch, widths={k: sorted(v) for k, v in widths.items()})
            space = dataclasses.replace(space, latency=LatencyModel(space.analysis, table))
    if metric == "latency" and settings.fit:
        space = fit_space(space, runtime, settings, points=points, seed=seed)
    return space


def refit_points(correction: Correction | None, written: tuple[float, float]) -> tuple[tuple[float, float], ...]:
    """The points a refit starts from: the previous fit's and the written model's ``(table_ms, measured_ms)``."""
    return (*(correction.points if correction is not None else ()), written)
