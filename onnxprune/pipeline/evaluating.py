"""Pipeline: evaluation wiring (load + evaluate), for ``eval``, ``bench`` and cost reports."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from onnxprune.analyze import analyze
from onnxprune.analyze import cost as analyze_cost
from onnxprune.errors import OnnxPruneError
from onnxprune.evaluate import BenchResult, DataSpec, EvalResult, Protocol, Runtime, bench, evaluate, open_data
from onnxprune.evaluate.cost import CostReport, disk_bytes
from onnxprune.load import load
from onnxprune.pipeline.width_menu import WidthCheck, check_widths

logger = logging.getLogger(__name__)


def evaluate_model(model: str | os.PathLike[str], data: DataSpec, *, runtime: Runtime,
                   baseline: str | os.PathLike[str] | None = None, batch_size: int = 500,
                   on_batch: Callable[[int, int | None], None] | None = None) -> EvalResult:
    """Load ``model`` (and ``baseline``) into ONNX Runtime and score it on ``data``.

    Args:
        model: The ONNX file to score, run as it is on disk.
        data: The data source and its preprocessing.
        runtime: Sessions, device and threads (reused across calls).
        baseline: A reference model for fidelity (and its own accuracy).
        batch_size: Samples per run.
        on_batch: Progress callback ``(samples in batch, total or None)``.
    """
    session = runtime.session(model)
    reference = runtime.session(baseline) if baseline is not None else None
    dataset = open_data(data, session.inputs)
    return evaluate(session, dataset, reference=reference, batch_size=batch_size, on_batch=on_batch)


def bench_model(model: str | os.PathLike[str], *, runtime: Runtime, baseline: str | os.PathLike[str] | None = None,
                batches: Sequence[int] = (1,), warmup: int = 10, runs: int = 20, protocol: Protocol | None = None,
                seed: int = 0, profile_top: int | None = None,
                on_row: Callable[[int, int | None], None] | None = None) -> BenchResult:
    """Time ``model`` against ``baseline`` in this process, alternating runs (see ``evaluate.latency``).

    ``protocol`` sets run counts, times and tolerance; without it, :class:`Protocol` defaults
    with ``warmup`` and ``runs``.
    """
    protocol = protocol if protocol is not None else Protocol(runs=runs, warmup=warmup)
    return bench(runtime, model, baseline, batches, protocol=protocol,
                 rng=np.random.default_rng(seed), profile_top=profile_top, on_row=on_row)


def model_cost(model: str | os.PathLike[str], bits: Mapping[str, tuple[int, int]] | None = None) -> CostReport:
    """Cost of a model file: bytes on disk, and MACs/params/BOPs at batch 1 from the analyze stage.

    Args:
        model: The ONNX file.
        bits: Node name -> (weight bits, activation bits) for BOPs; other layers count 32 x 32.
    """
    size = disk_bytes(model)
    try:
        counts = analyze_cost.model_cost(load(model), bits)
    except OnnxPruneError as exc:  # ORT may run what the analyzer cannot read: keep the size
        logger.warning("no MACs/params for %s: %s", model, exc)
        return CostReport(bytes_on_disk=size)
    return CostReport(bytes_on_disk=size, macs=counts.macs, params=counts.params, bops=counts.bops)


def check_model_widths(model: str | os.PathLike[str], *, runtime: Runtime, batch: int = 1,
                       seed: int = 0) -> tuple[WidthCheck, ...]:
    """``bench --widths``: time one step down from each class of the model's group widths.

    A class whose step saves far more time than MACs runs a slow width (padded to a block), one
    whose step saves almost nothing gains little from further cuts there
    (:func:`~onnxprune.pipeline.width_menu.check_widths`).
    """
    return check_widths(analyze(load(model)), runtime, batch=batch, seed=seed)
