"""Bookkeeping shared by the remote executors: the queue, attempts and re-sends of lost candidates."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from onnxprune.errors import BackendError
from onnxprune.execute.base import CandidateTask

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sent:
    """A task in flight: which task, when it was handed over, and its attempt number."""

    task: CandidateTask
    at: float
    attempt: int


class Dispatch:
    """The tasks still to send, and how often each was sent.

    A task whose worker is lost (or that ran past the timeout) goes back to the front of the queue,
    so it is re-run on the next free worker; after ``max_attempts`` sends the run stops.
    """

    def __init__(self, tasks: Sequence[CandidateTask], *, max_attempts: int, backend: str) -> None:
        """Queue ``tasks`` in submission order."""
        self.queue: deque[CandidateTask] = deque(tasks)
        self.attempts: dict[int, int] = {}
        self.max_attempts = max(1, max_attempts)
        self.backend = backend

    def __bool__(self) -> bool:
        return bool(self.queue)

    def send(self) -> Sent:
        """The next task to hand over (counts an attempt)."""
        task = self.queue.popleft()
        self.attempts[task.id] = self.attempts.get(task.id, 0) + 1
        return Sent(task=task, at=time.perf_counter(), attempt=self.attempts[task.id])

    def lost(self, sent: Sent, why: str) -> None:
        """``sent``'s worker is gone (``why``): queue the task again, or stop after the last attempt.

        Raises:
            BackendError: the task was sent ``max_attempts`` times already.
        """
        if sent.attempt >= self.max_attempts:
            raise BackendError(f"--backend {self.backend}: candidate {sent.task.id} was lost {sent.attempt} times "
                               f"(last: {why}); check the workers' memory and logs, or raise --candidate-timeout")
        logger.warning("candidate %d: %s; re-running it on another worker (attempt %d of %d)", sent.task.id, why,
                       sent.attempt + 1, self.max_attempts)
        self.queue.appendleft(sent.task)
