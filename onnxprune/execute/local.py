"""The ``local`` executor: candidates evaluated one after another in this process."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

from onnxprune.execute.base import CandidateResult, CandidateTask, Evaluator, evaluate_task

logger = logging.getLogger(__name__)


class LocalExecutor:
    """Evaluates candidates in the calling process, in submission order (the default backend).

    Results keep the candidate model (``CandidateResult.candidate``), so the search can save the
    best one without building it again.
    """

    name = "local"
    workers = 1

    def __init__(self, evaluator: Evaluator) -> None:
        """Use ``evaluator`` (``plan -> (accuracy, candidate)``) for every task."""
        self.evaluator = evaluator

    def run(self, tasks: Sequence[CandidateTask]) -> Iterator[CandidateResult]:
        """Evaluate ``tasks`` in order, yielding each result as soon as it is ready."""
        for task in tasks:
            yield evaluate_task(self.evaluator, task, keep_candidate=True)

    def close(self) -> None:
        """Nothing to stop."""
