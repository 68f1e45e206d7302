"""Measure the width menu of :mod:`onnxprune.search.widths` on the target device.

For each class of groups (:func:`~onnxprune.search.widths.group_classes`) and each candidate
width, the model with every group of the class cut to that width (the first channels: timing
does not depend on which) is built by the rewrite stage, optionally quantized to int8 QDQ
(random calibration inputs: values do not change the kernels' speed), and timed end to end
against the unpruned (or unpruned int8) model with :func:`~onnxprune.evaluate.latency.measure`,
runs alternating in one process. Whole-model effects a per-layer table misses (layout reorders
between blocked and plain convolutions, memory-bound element-wise ops on residual widths, int8
kernels' channel blocking) are in these times. The menu is cached as JSON beside the output,
keyed by device, batch and precision. :func:`check_widths` (``bench --widths``) times one step
down from each class's width of an already pruned model, to show which widths are slow.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from onnxprune.analyze.cost import estimate_cost
from onnxprune.analyze.types import Analysis
from onnxprune.errors import PlanError
from onnxprune.evaluate import Runtime
from onnxprune.evaluate.latency import measure, random_feeds
from onnxprune.evaluate.stability import Protocol
from onnxprune.io import write_json_atomic
from onnxprune.pipeline.latency_table import device_label
from onnxprune.plan import Plan
from onnxprune.quantize import find_layers
from onnxprune.quantize.deploy import to_qdq
from onnxprune.quantize.plan import uniform_plan
from onnxprune.rewrite.prune import prune_model, tensor_masks, unit_mask
from onnxprune.search.space import SearchSpace
from onnxprune.search.widths import TOLERANCE, ClassTiming, WidthMenu, candidate_widths, group_classes, pareto_widths

logger = logging.getLogger(__name__)

#: Short alternating measurements: a probe differs from the unpruned model by one class of groups.
PROBE_PROTOCOL = Protocol(runs=10, warmup=3, min_time=0.4, max_time=2.0, tolerance=0.03)
PRECISIONS: tuple[str, ...] = ("float32", "int8")
_CALIB_SAMPLES = 8


def int8_model(model: onnx.ModelProto, rng: np.random.Generator) -> onnx.ModelProto:
    """``model`` as int8 QDQ (every quantizable layer), calibrated on random inputs: for timing only."""
    runtime = Runtime(device="cpu", threads=1)
    feeds = random_feeds(runtime.create(model).inputs, _CALIB_SAMPLES, rng, symbolic=1)
    plan = uniform_plan([q.node for q in find_layers(model)], 8, 8)
    return to_qdq(model, plan, feeds).model


def _prepare(precision: str, rng: np.random.Generator) -> Callable[[onnx.ModelProto], onnx.ModelProto]:
    if precision not in PRECISIONS:
        raise PlanError(f"width menu precision {precision}: use one of {', '.join(PRECISIONS)}")
    return (lambda m: int8_model(m, rng)) if precision == "int8" else (lambda m: m)


def _cached(cache: Path | None, device: str, batch: int, precision: str, granule: int) -> WidthMenu | None:
    if cache is None or not cache.exists():
        return None
    try:
        menu = WidthMenu.from_json(json.loads(cache.read_text(encoding="utf-8")))
    except (OSError, ValueError, PlanError) as exc:
        logger.warning("ignoring unreadable width menu %s (%s)", cache, exc)
        return None
    same = (menu.device, menu.batch, menu.precision, menu.granule) == (device, batch, precision, granule)
    return menu if same else None


def measure_menu(analysis: Analysis, space: SearchSpace, runtime: Runtime, *, batch: int = 1,
                 precision: str = "float32", cache: Path | None = None, protocol: Protocol = PROBE_PROTOCOL,
                 tolerance: float = TOLERANCE, seed: int = 0) -> WidthMenu:
    """Time every class of ``space``'s groups at its candidate widths and keep the Pareto widths.

    Args:
        analysis: The analyzed model (``space`` was built from it).
        space: Its search space: groups, fewest channels per group, rounding (the candidate granule).
        runtime: Where to time (give it the target device and threads).
        batch: Batch size of the timed runs.
        precision: ``float32``, or ``int8`` to time the probes as int8 QDQ models.
        cache: JSON file of a menu measured before (reused for the same device, batch, precision).
        protocol: Timing protocol of each probe.
        tolerance: Least speed-up over every larger width for a width to stay.
        seed: Seed of the random inputs.

    Returns:
        The menu (also written to ``cache``).
    """
    device = device_label(runtime)
    granule = max(space.round_to, 1)
    known = _cached(cache, device, batch, precision, granule)
    if known is not None:
        return known
    rng = np.random.default_rng(seed)
    prepare = _prepare(precision, rng)
    baseline = runtime.create(prepare(analysis.model.proto))
    index = {gid: i for i, gid in enumerate(space.group_ids)}
    classes = []
    for ids in group_classes(analysis, space.group_ids):
        size = space.sizes[index[ids[0]]]
        fewest = min(space.min_keep(index[g]) for g in ids)
        times = {size: 1.0}
        for width in candidate_widths(size, fewest, granule)[:-1]:
            probe = prune_model(analysis, Plan(keep={g: tuple(range(width)) for g in ids}))
            row = measure(runtime.create(prepare(probe)), baseline, batch, protocol=protocol, rng=rng)
            times[width] = float(row.ratio) if row.ratio is not None else 1.0
        timing = ClassTiming(groups=tuple(ids), size=size, times=times, menu=pareto_widths(times, tolerance))
        logger.info("width menu: groups %s (%d ch): %s -> %s", list(ids), size,
                    {w: round(t, 3) for w, t in sorted(times.items())}, list(timing.menu))
        classes.append(timing)
    menu = WidthMenu(device=device, batch=batch, precision=precision, granule=granule, classes=tuple(classes))
    if cache is not None:
        write_json_atomic(cache, menu.to_json())
    return menu


@dataclass(frozen=True)
class WidthCheck:
    """What one step down from a class's width buys, measured end to end (``bench --widths``).

    Attributes:
        groups: Group ids of the class (in the benched model's analysis).
        width: Their width now.
        probe: The width timed instead (the multiple of 16 below, or 8 fewer when already one).
        macs_saved: Share of the model's MACs the step removes.
        time_saved: Share of the model's measured time it removes.
        verdict: ``slow width`` when the step saves at least :data:`SLOW` times its MACs share in
            time (the runtime pays for channels it pads to a block), ``no gain`` when it saves at
            most :data:`NO_GAIN` of it, else ``ok``.
    """

    groups: tuple[int, ...]
    width: int
    probe: int
    macs_saved: float
    time_saved: float
    verdict: str

    @property
    def payoff(self) -> float:
        """Time saved per MACs saved (1: time falls with the MACs)."""
        return self.time_saved / self.macs_saved if self.macs_saved > 0 else 0.0


SLOW = 1.5
NO_GAIN = 0.25


def probe_width(width: int) -> int | None:
    """The width ``bench --widths`` times instead of ``width``: the multiple of 16 below, else 8 fewer."""
    below = (width - 1) // 16 * 16
    if width % 16:
        return below if below >= 8 else (8 if width > 8 else None)
    return width - 8 if width > 8 else None


def check_widths(analysis: Analysis, runtime: Runtime, *, batch: int = 1, protocol: Protocol = PROBE_PROTOCOL,
                 seed: int = 0) -> tuple[WidthCheck, ...]:
    """Time one step down for every class of ``analysis``'s prunable groups (see :class:`WidthCheck`)."""
    rng = np.random.default_rng(seed)
    ids = tuple(g.id for g in analysis.prunable_groups)
    sizes = {g.id: g.size for g in analysis.prunable_groups}
    full = estimate_cost(analysis, tensor_masks(analysis, unit_mask(analysis, Plan(keep={})))).macs
    baseline = runtime.create(analysis.model.proto)
    checks = []
    for members in group_classes(analysis, ids):
        width = sizes[members[0]]
        probe = probe_width(width)
        if probe is None:
            continue
        plan = Plan(keep={g: tuple(range(probe)) for g in members})
        macs = estimate_cost(analysis, tensor_masks(analysis, unit_mask(analysis, plan))).macs
        row = measure(runtime.create(prune_model(analysis, plan)), baseline, batch, protocol=protocol, rng=rng)
        macs_saved, time_saved = 1.0 - macs / max(full, 1), 1.0 - float(row.ratio or 1.0)
        payoff = time_saved / macs_saved if macs_saved > 0 else 0.0
        verdict = "slow width" if payoff >= SLOW else "no gain" if payoff <= NO_GAIN else "ok"
        checks.append(WidthCheck(tuple(members), width, probe, macs_saved, time_saved, verdict))
    return tuple(checks)
