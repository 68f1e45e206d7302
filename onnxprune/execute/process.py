"""The ``process`` executor: a pool of worker processes on this machine.

Each worker is a fresh interpreter (``spawn``) that builds its own evaluator from the
:class:`~onnxprune.execute.base.EvaluatorSpec` once: its own model, ONNX Runtime session and
validation data. Tasks go one at a time to a free worker over a pipe. A worker that exits (crash,
out of memory, killed) or runs past the per-candidate timeout is replaced, and its candidate is
sent again to the next free worker; a worker's state never leaks into a score, so the re-run
gives the same result.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import time
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from onnxprune.errors import BackendError, OnnxPruneError
from onnxprune.execute.base import (DEFAULT_TIMEOUT_S, CandidateResult, CandidateTask, EvaluatorSpec, evaluate_task,
                                    worker_label)
from onnxprune.execute.dispatch import Dispatch, Sent

logger = logging.getLogger(__name__)

_TICK_S = 0.5
"""Longest wait between checks of the workers' health and timeouts."""


def portable(exc: BaseException) -> OnnxPruneError:
    """``exc`` as an error that pickles across processes: user errors as they are, others as a BackendError."""
    if isinstance(exc, OnnxPruneError):
        return exc
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return BackendError(f"a worker failed ({type(exc).__name__}: {text}); rerun with --backend local to see "
                        "the full error")


def serve(spec: EvaluatorSpec, conn: Connection) -> None:
    """A worker's loop: build the evaluator, then answer tasks until ``None`` or the pipe closes."""
    try:
        evaluator = spec.build()
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which stops the run
        conn.send(("failed", portable(exc)))
        return
    conn.send(("ready", worker_label()))
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        try:
            conn.send(("done", evaluate_task(evaluator, task)))
        except Exception as exc:  # noqa: BLE001 - a failing candidate stops the run, as in process
            conn.send(("error", portable(exc)))


@dataclasses.dataclass
class _Worker:
    """The parent's handle of one worker process (mutable, private to the executor)."""

    process: BaseProcess
    conn: Connection
    started: float
    ready: bool = False
    sent: Sent | None = None


class ProcessExecutor:
    """Evaluates candidates on ``workers`` worker processes of this machine."""

    name = "process"

    def __init__(self, spec: EvaluatorSpec, workers: int, *, timeout: float = DEFAULT_TIMEOUT_S,
                 max_attempts: int = 3) -> None:
        """Start the workers (they load the model and data in the background).

        Raises:
            BackendError: ``workers`` below 1.
        """
        if workers < 1:
            raise BackendError(f"--workers {workers}: give 1 or more")
        self.spec, self.workers, self.timeout, self.max_attempts = spec, workers, timeout, max_attempts
        self._context = multiprocessing.get_context("spawn")
        self._restarts = 0
        self._pool: list[_Worker] = [self._start() for _ in range(workers)]

    def _start(self) -> _Worker:
        parent, child = self._context.Pipe()
        process = self._context.Process(target=serve, args=(self.spec, child), daemon=True,
                                        name="onnxprune-worker")
        process.start()
        child.close()
        return _Worker(process=process, conn=parent, started=time.perf_counter())

    def _replace(self, worker: _Worker) -> None:
        """Stop ``worker`` and start another in its place."""
        self._stop(worker, graceful=False)
        self._restarts += 1
        if self._restarts > self.workers * self.max_attempts:
            raise BackendError(f"--backend process: {self._restarts} workers were lost; check the machine's "
                               "memory, or use --backend local")
        self._pool[self._pool.index(worker)] = self._start()

    @staticmethod
    def _stop(worker: _Worker, *, graceful: bool) -> None:
        if graceful and worker.process.is_alive():
            try:
                worker.conn.send(None)
            except OSError:
                pass
            worker.process.join(5.0)
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(5.0)
        worker.conn.close()

    def pids(self) -> list[int | None]:
        """The worker processes' ids (e.g. to watch or kill one in a test)."""
        return [w.process.pid for w in self._pool]

    def run(self, tasks: Sequence[CandidateTask]) -> Iterator[CandidateResult]:
        """Evaluate ``tasks`` on the workers; yields results in completion order.

        Raises:
            BackendError: a worker could not start, a candidate was lost ``max_attempts`` times, or
                a candidate raised (user errors are raised as they are).
        """
        dispatch = Dispatch(tasks, max_attempts=self.max_attempts, backend=self.name)
        remaining = len(tasks)
        for worker in list(self._pool):
            if worker.sent is not None:  # left over from a batch that was not read to the end
                worker.sent = None
                self._replace(worker)
        try:
            while remaining:
                for worker in self._pool:
                    if worker.ready and worker.sent is None and dispatch:
                        worker.sent = dispatch.send()
                        worker.conn.send(worker.sent.task)
                wait([w.conn for w in self._pool] + [w.process.sentinel for w in self._pool], timeout=_TICK_S)
                for worker in list(self._pool):
                    result = self._check(worker, dispatch)
                    if result is not None:
                        remaining -= 1
                        yield result
        finally:
            for worker in list(self._pool):
                if worker.sent is not None:  # abandoned mid-batch: its late answer must not reach the next batch
                    worker.sent = None
                    self._replace(worker)

    def _check(self, worker: _Worker, dispatch: Dispatch) -> CandidateResult | None:
        """Read ``worker``'s message if any; replace it when it died or ran past the timeout."""
        now = time.perf_counter()
        if worker.conn.poll():
            try:
                message: tuple[Any, ...] = worker.conn.recv()
            except (EOFError, OSError):
                self._lose(worker, dispatch, f"worker {worker.process.pid} exited")
                return None
            return self._handle(worker, message, now)
        if not worker.process.is_alive():
            self._lose(worker, dispatch, f"worker {worker.process.pid} exited with code {worker.process.exitcode}")
        elif worker.sent is not None and now - worker.sent.at > self.timeout:
            self._lose(worker, dispatch, f"no result after {self.timeout:g} s (--candidate-timeout)")
        elif not worker.ready and now - worker.started > self.timeout:
            raise BackendError(f"--backend process: a worker did not start within {self.timeout:g} s; "
                               "raise --candidate-timeout or use --backend local")
        return None

    def _handle(self, worker: _Worker, message: tuple[Any, ...], now: float) -> CandidateResult | None:
        kind = message[0]
        if kind == "ready":
            worker.ready = True
            logger.info("worker %s ready", message[1])
            return None
        if kind in ("failed", "error"):
            raise message[1]
        sent, worker.sent = worker.sent, None
        if sent is None:
            return None
        return dataclasses.replace(message[1], roundtrip=now - sent.at, attempts=sent.attempt)

    def _lose(self, worker: _Worker, dispatch: Dispatch, why: str) -> None:
        sent, worker.sent = worker.sent, None
        self._replace(worker)
        if sent is not None:
            dispatch.lost(sent, why)

    def close(self) -> None:
        """Stop every worker (idempotent)."""
        for worker in self._pool:
            self._stop(worker, graceful=True)
        self._pool = []
