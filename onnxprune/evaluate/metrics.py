"""Accuracy (top-1/top-5 against labels) and fidelity (agreement with a reference model).

Both are streaming counters: ``update`` once per batch, ``result`` at the end. Counts are exact
integers; averages are accumulated in float64.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from onnxprune.errors import DataError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Accuracy:
    """Top-k accuracy over a labelled set.

    Attributes:
        samples: Number of scored samples.
        top1_correct: Samples whose arg-max class equals the label.
        top5_correct: Samples whose label is among the five highest scores (``None`` with < 5 classes).
        top1: Top-1 accuracy in percent.
        top5: Top-5 accuracy in percent, or ``None``.
    """

    samples: int
    top1_correct: int
    top5_correct: int | None
    top1: float
    top5: float | None

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class Fidelity:
    """How closely a model reproduces a reference model's outputs on the same inputs.

    Attributes:
        samples: Number of compared samples.
        agreement: Fraction of samples with the same arg-max of the first output (``None`` when that
            output has a single value per sample, e.g. a scalar regressor).
        mse: Mean squared difference over every element of every output.
        cosine: Mean over samples of the cosine similarity of all outputs, flattened.
    """

    samples: int
    agreement: float | None
    mse: float
    cosine: float

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)


def _per_sample(array: np.ndarray) -> np.ndarray:
    return array.reshape(array.shape[0], -1) if array.ndim != 2 else array


class AccuracyCounter:
    """Counts top-1 and top-5 hits of class scores against integer labels."""

    def __init__(self) -> None:
        """Start with zero samples."""
        self.samples = 0
        self.top1 = 0
        self.top5 = 0
        self.classes: int | None = None

    def update(self, scores: np.ndarray, labels: np.ndarray) -> None:
        """Add one batch: ``scores`` (B, classes) and ``labels`` (B,)."""
        scores = _per_sample(scores)
        if len(scores) != len(labels):
            raise DataError(f"the model returned {len(scores)} rows for {len(labels)} labels; "
                            "check that its first output is per-sample class scores")
        self.classes = scores.shape[1]
        self.samples += len(labels)
        self.top1 += int(np.count_nonzero(scores.argmax(axis=1) == labels))
        if self.classes >= 5:
            top = np.argpartition(scores, self.classes - 5, axis=1)[:, -5:]
            self.top5 += int(np.count_nonzero((top == labels[:, None]).any(axis=1)))

    def result(self) -> Accuracy:
        """Return the accuracy so far."""
        n = max(self.samples, 1)
        has5 = self.classes is not None and self.classes >= 5
        return Accuracy(samples=self.samples, top1_correct=self.top1,
                        top5_correct=self.top5 if has5 else None,
                        top1=100.0 * self.top1 / n, top5=100.0 * self.top5 / n if has5 else None)


class FidelityCounter:
    """Compares a model's outputs with a reference model's, batch by batch."""

    def __init__(self) -> None:
        """Start with zero samples."""
        self.samples = 0
        self.agree = 0
        self.has_argmax = False
        self.squared = 0.0
        self.elements = 0
        self.cosine_sum = 0.0

    def update(self, outputs: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> None:
        """Add one batch of outputs (graph order) and the reference's outputs on the same inputs."""
        if len(outputs) != len(reference):
            raise DataError(f"the model has {len(outputs)} outputs, the reference {len(reference)}; "
                            "compare models with the same interface")
        for out, ref in zip(outputs, reference):
            if out.shape != ref.shape:
                raise DataError(f"output shapes differ ({out.shape} vs reference {ref.shape}); "
                                "compare models with the same interface")
        first, first_ref = _per_sample(outputs[0]), _per_sample(reference[0])
        batch = len(first)
        if first.shape[1] > 1:
            self.has_argmax = True
            self.agree += int(np.count_nonzero(first.argmax(axis=1) == first_ref.argmax(axis=1)))
        a = np.concatenate([_per_sample(o).astype(np.float64) for o in outputs], axis=1)
        b = np.concatenate([_per_sample(r).astype(np.float64) for r in reference], axis=1)
        diff = np.einsum("ij,ij->i", a - b, a - b)
        dot = np.einsum("ij,ij->i", a, b)
        norms = np.sqrt(np.einsum("ij,ij->i", a, a) * np.einsum("ij,ij->i", b, b))
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = np.where(diff == 0.0, 1.0, np.where(norms > 0, dot / norms, 0.0))
        self.cosine_sum += float(np.clip(cos, -1.0, 1.0).sum())
        self.squared += float(diff.sum())
        self.elements += a.size
        self.samples += batch

    def result(self) -> Fidelity:
        """Return the fidelity so far."""
        n = max(self.samples, 1)
        return Fidelity(samples=self.samples,
                        agreement=self.agree / n if self.has_argmax else None,
                        mse=self.squared / max(self.elements, 1), cosine=self.cosine_sum / n)
