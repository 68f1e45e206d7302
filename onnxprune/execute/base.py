"""The executor interface: candidates travel as plans, scores come back.

A search hands a batch of :class:`CandidateTask` (an id and the plan as compact JSON) to an
:class:`Executor` and reads :class:`CandidateResult` back, in completion order. Each worker of
an executor holds the original model and its validation data: it builds its evaluator once
from a picklable :class:`EvaluatorSpec` and then applies every plan it receives itself, so no
model crosses a process or machine boundary. Whatever the backend, the same plan gives the same
pruned model and the same score.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from onnxprune.plan import Plan

logger = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("local", "process", "ray")
"""The executors ``compress --backend`` offers."""

DEFAULT_TIMEOUT_S = 1800.0
"""Seconds one candidate may take in a worker before the worker is replaced and the candidate re-run."""

#: ``plan -> (accuracy in [0, 1] or None, the candidate model)``: what a worker runs per candidate.
Evaluator = Callable[[Plan], tuple[float | None, Any]]


@dataclass(frozen=True)
class CandidateTask:
    """One candidate to evaluate.

    Attributes:
        id: The episode index (unique within a run).
        plan: The plan as compact JSON (:meth:`onnxprune.plan.Plan.to_json`), a few kilobytes.
    """

    id: int
    plan: str

    @classmethod
    def of(cls, index: int, plan: Plan) -> CandidateTask:
        """The task of episode ``index`` evaluating ``plan``."""
        return cls(id=index, plan=json.dumps(plan.to_json(), sort_keys=True, separators=(",", ":")))

    def decode(self) -> Plan:
        """The plan this task carries."""
        return Plan.from_json(json.loads(self.plan))


@dataclass(frozen=True)
class CandidateResult:
    """The score of one candidate.

    Attributes:
        id: The task's id.
        accuracy: Validation top-1 in ``[0, 1]``, or ``None`` for a data-free run.
        worker: Where it ran (``host:pid``).
        seconds: Evaluation time inside the worker (build, repair, score).
        roundtrip: Seconds from hand-over to the result's arrival, as the executor saw them (0 in process).
        attempts: How many times the candidate was sent (above 1 after a lost worker or a timeout).
        candidate: The candidate model, only when it was built in this process (``local``); ``None`` otherwise.
    """

    id: int
    accuracy: float | None
    worker: str
    seconds: float
    roundtrip: float = 0.0
    attempts: int = 1
    candidate: Any = field(default=None, compare=False, repr=False)


class EvaluatorSpec(Protocol):
    """A picklable recipe for a worker's evaluator (model path, data, settings)."""

    def build(self) -> Evaluator:
        """Load the model and data once and return the per-candidate evaluator."""
        ...


class Executor(Protocol):
    """Evaluates batches of candidates; see :mod:`onnxprune.execute`."""

    name: str
    workers: int

    def run(self, tasks: Sequence[CandidateTask]) -> Iterator[CandidateResult]:
        """Evaluate ``tasks``; yields one result per task, in completion order.

        Raises:
            BackendError: a candidate failed on every attempt, or no worker could start.
        """
        ...

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        ...


@dataclass(frozen=True)
class ExecutorSettings:
    """How ``compress`` evaluates candidates (``--backend`` and its options).

    Attributes:
        backend: ``local`` (in this process), ``process`` (worker processes on this machine) or ``ray``.
        workers: Worker processes or Ray actors (``process`` and ``ray``).
        address: The Ray cluster to join (``auto``: the running one); ``None`` starts a local Ray.
        candidate_timeout: Seconds one candidate may take before its worker is replaced and it is re-run.
        max_attempts: Times a candidate is sent before the run stops with an error.
        threads: ONNX Runtime intra-op threads per worker; ``None``: the scoring runtime's setting
            (``process``: the CPUs divided among the workers when that is unset).
    """

    backend: str = "local"
    workers: int = 2
    address: str | None = None
    candidate_timeout: float = DEFAULT_TIMEOUT_S
    max_attempts: int = 3
    threads: int | None = None


def worker_label() -> str:
    """``host:pid`` of the calling process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def evaluate_task(evaluator: Evaluator, task: CandidateTask, *, keep_candidate: bool = False) -> CandidateResult:
    """Run ``evaluator`` on ``task``'s plan and time it (in the worker)."""
    started = time.perf_counter()
    accuracy, candidate = evaluator(task.decode())
    return CandidateResult(id=task.id, accuracy=accuracy, worker=worker_label(),
                           seconds=time.perf_counter() - started,
                           candidate=candidate if keep_candidate else None)
