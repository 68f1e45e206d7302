"""The scoring loop: run a model (and optionally a reference) over a dataset, batch by batch.

Contract:
    requires: a :class:`~onnxprune.evaluate.runtime.Session`, a dataset from
    :func:`~onnxprune.evaluate.data.open_data` and, for fidelity, a reference session with the
    same interface.
    guarantees: every sample is scored exactly once; accuracy needs labels, fidelity needs a
    reference, and with neither a :class:`DataError` says so before anything runs. Time spent in
    each model's ``run`` is measured separately, so throughput excludes the reference.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from onnxprune.errors import DataError
from onnxprune.evaluate.data import ArrayData, Dataset, check_label_range
from onnxprune.evaluate.metrics import Accuracy, AccuracyCounter, Fidelity, FidelityCounter
from onnxprune.evaluate.runtime import RunInfo, Session

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalResult:
    """The scores of one model on one dataset.

    Attributes:
        samples: Samples scored.
        accuracy: Top-1/top-5 of the model (``None`` without labels).
        baseline_accuracy: The same for the reference model, if one was given and labels exist.
        fidelity: Agreement of the model with the reference (``None`` without a reference).
        seconds: Wall time inside the model's ``run`` calls.
        baseline_seconds: The same for the reference (``None`` without one).
        batch_size: Requested batch size (a model with a fixed batch is fed in chunks of it).
        run: Where it ran.
    """

    samples: int
    accuracy: Accuracy | None
    baseline_accuracy: Accuracy | None
    fidelity: Fidelity | None
    seconds: float
    baseline_seconds: float | None
    batch_size: int
    run: RunInfo

    @property
    def images_per_second(self) -> float:
        """Throughput of the model alone."""
        return self.samples / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "samples": self.samples,
            "accuracy": self.accuracy.as_dict() if self.accuracy else None,
            "baseline_accuracy": self.baseline_accuracy.as_dict() if self.baseline_accuracy else None,
            "fidelity": self.fidelity.as_dict() if self.fidelity else None,
            "seconds": self.seconds,
            "baseline_seconds": self.baseline_seconds,
            "images_per_second": self.images_per_second,
            "batch_size": self.batch_size,
            "run": asdict(self.run),
        }


def _classes(session: Session) -> int | None:
    shape = session.outputs[0].shape if session.outputs else ()
    return shape[-1] if len(shape) == 2 else None


def evaluate(session: Session, data: Dataset, *, reference: Session | None = None, batch_size: int = 500,
             on_batch: Callable[[int, int | None], None] | None = None) -> EvalResult:
    """Score ``session`` on ``data``.

    Args:
        session: The model to score.
        data: Batches of feeds and labels.
        reference: A model to compare against (fidelity), run on the same batches.
        batch_size: Samples per run (array datasets; hooks choose their own).
        on_batch: Called after each batch with its sample count and the total (``None`` when
            unknown), for a progress display.

    Returns:
        The scores and timings.

    Raises:
        DataError: no labels and no reference, labels out of range, or ORT rejecting the inputs.
    """
    if batch_size < 1:
        raise DataError(f"--batch-size {batch_size}: give 1 or more")
    if isinstance(data, ArrayData):
        if data.labels is None and reference is None:
            raise DataError(f"{data.source}: no labels and no --baseline, so there is nothing to score; "
                            "add labels to the data or pass --baseline")
        classes = _classes(session)
        if data.labels is not None and classes is not None:
            check_label_range(data.labels, classes, data.source)
    acc, ref_acc, fid = AccuracyCounter(), AccuracyCounter(), FidelityCounter()
    seconds = ref_seconds = 0.0
    samples = 0
    for batch in data.batches(batch_size):
        start = time.perf_counter()
        outputs = session.run(batch.feeds)
        seconds += time.perf_counter() - start
        count = len(outputs[0])
        if batch.labels is not None:
            check_label_range(batch.labels, outputs[0].reshape(count, -1).shape[1], f"batch at sample {samples}")
            acc.update(outputs[0], batch.labels)
        if reference is not None:
            start = time.perf_counter()
            ref_outputs = reference.run(batch.feeds)
            ref_seconds += time.perf_counter() - start
            fid.update(outputs, ref_outputs)
            if batch.labels is not None:
                ref_acc.update(ref_outputs[0], batch.labels)
        elif batch.labels is None:
            raise DataError(f"batch at sample {samples} has no labels and there is no --baseline; "
                            "yield labels from the hook or pass --baseline")
        samples += count
        if on_batch is not None:
            on_batch(count, data.size)
    if samples == 0:
        raise DataError("the data yielded no samples; check the data source")
    logger.info("scored %d samples in %.2f s", samples, seconds)
    return EvalResult(samples=samples,
                      accuracy=acc.result() if acc.samples else None,
                      baseline_accuracy=ref_acc.result() if ref_acc.samples else None,
                      fidelity=fid.result() if reference is not None else None,
                      seconds=seconds, baseline_seconds=ref_seconds if reference is not None else None,
                      batch_size=batch_size, run=session.info)
