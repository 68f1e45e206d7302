"""Accuracy-aware fallback: send the most sensitive layers back to float until a drop is met.

As Intel Neural Compressor's tuning does, but with the sensitivity measured cheaply: each
quantized layer alone is simulated at its bits and ranked by how far the model's outputs move
(mean squared difference to the float outputs on a few validation samples). Layers then go back
to float one at a time, most sensitive first, each time re-building and re-scoring the deployable
model, until its accuracy is within ``max_drop`` of the float model's (or every layer is float).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from onnxprune.quantize.plan import QuantPlan

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FallbackResult:
    """Outcome of the fallback.

    Attributes:
        plan: The plan that met the drop (or the all-float plan).
        accuracy: Its score (fraction).
        baseline: The float model's score.
        fallen_back: Layers sent back to float, in order.
        tries: ``(layers back to float, score)`` of every scored attempt.
    """

    plan: QuantPlan
    accuracy: float
    baseline: float
    fallen_back: tuple[str, ...]
    tries: tuple[tuple[int, float], ...]


def rank_layers(plan: QuantPlan, output_error: Callable[[QuantPlan], float]) -> tuple[str, ...]:
    """Quantized layers of ``plan``, most sensitive first (``output_error`` of each alone)."""
    errors = {name: output_error(QuantPlan({name: plan.of(name)})) for name in plan.quantized}
    return tuple(sorted(errors, key=lambda n: (-errors[n], n)))


def fall_back(plan: QuantPlan, order: Sequence[str], score: Callable[[QuantPlan], float], baseline: float,
              max_drop: float) -> FallbackResult:
    """Move layers of ``order`` to float until ``baseline - score(plan) <= max_drop``.

    Args:
        plan: The full plan.
        order: Layers to send back, first to last.
        score: Builds and scores the deployable model of a plan (fraction correct).
        baseline: The float model's score.
        max_drop: Allowed drop (fraction: 0.002 = 0.2 points).

    Returns:
        The first plan that meets the drop (the all-float plan if none does).
    """
    tries = []
    current = dict(plan.bits)
    for count in range(len(order) + 1):
        if count:
            current.pop(order[count - 1], None)
        candidate = QuantPlan(current)
        value = score(candidate) if candidate.quantized else baseline
        tries.append((count, value))
        logger.info("fallback: %d layers float, accuracy %.2f %% (float %.2f %%)", count, 100 * value, 100 * baseline)
        if baseline - value <= max_drop:
            return FallbackResult(candidate, value, baseline, tuple(order[:count]), tuple(tries))
    return FallbackResult(QuantPlan({}), baseline, baseline, tuple(order), tuple(tries))
