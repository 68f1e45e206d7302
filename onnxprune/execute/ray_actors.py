"""The ``ray`` executor: candidates evaluated by Ray actors (``--backend ray``).

Ray is optional (``pip install 'onnxprune[ray]'``) and imported only here, only when this
backend is chosen. Each actor builds its evaluator from the spec once (its own model, ONNX
Runtime session and data, on whichever node Ray places it); the driver keeps one candidate in
flight per actor. An actor that dies (node lost, out of memory, killed) or runs past the
per-candidate timeout is replaced and its candidate re-sent to the next free actor.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

from onnxprune.errors import BackendError, OnnxPruneError
from onnxprune.execute.base import (DEFAULT_TIMEOUT_S, CandidateResult, CandidateTask, Evaluator, EvaluatorSpec,
                                    evaluate_task)
from onnxprune.execute.dispatch import Dispatch, Sent

logger = logging.getLogger(__name__)

_TICK_S = 0.5
INSTALL_HINT = "pip install 'onnxprune[ray]'"


def import_ray() -> Any:
    """The ``ray`` module.

    Raises:
        BackendError: Ray is not installed (the message says how to install it).
    """
    try:
        import ray
    except ImportError:
        raise BackendError(f"--backend ray needs Ray, which is not installed; {INSTALL_HINT} (or use "
                           "--backend process on one machine)") from None
    return ray


class CandidateActor:
    """The body of one Ray actor: an evaluator built once, then one call per candidate."""

    def __init__(self, spec: EvaluatorSpec) -> None:
        """Build the evaluator (model, session, data) on the actor's node."""
        self.evaluator: Evaluator = spec.build()

    def evaluate(self, task: CandidateTask) -> CandidateResult:
        """Score ``task``'s plan."""
        return evaluate_task(self.evaluator, task)

    def ping(self) -> bool:
        """True once the evaluator is built."""
        return True


class RayExecutor:
    """Evaluates candidates on ``workers`` Ray actors (one CPU each)."""

    name = "ray"

    def __init__(self, spec: EvaluatorSpec, workers: int, *, address: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S, max_attempts: int = 3) -> None:
        """Join (or start) Ray and create the actors.

        Args:
            spec: The workers' evaluator recipe (pickled to every actor).
            workers: Actors to create.
            address: The cluster (``auto``: the running one); ``None`` joins the Ray this process
                already started, else starts a local one (shut down again by :meth:`close`).
            timeout: Seconds a candidate may take before its actor is replaced.
            max_attempts: Sends of one candidate before the run stops.

        Raises:
            BackendError: Ray is missing, the cluster cannot be reached, or ``workers`` is below 1.
        """
        if workers < 1:
            raise BackendError(f"--workers {workers}: give 1 or more")
        self.ray = import_ray()
        self._owns = not self.ray.is_initialized()
        if self._owns:
            try:
                self.ray.init(address=address, log_to_driver=False, include_dashboard=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise BackendError(f"--ray-address {address}: cannot join Ray ({exc}); start the cluster "
                                   "(`ray start --head`) or drop --ray-address for a local Ray") from exc
        self.spec, self.workers, self.timeout, self.max_attempts = spec, workers, timeout, max_attempts
        self._remote = self.ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(CandidateActor)
        self._restarts = 0
        self._actors: list[Any] = [self._remote.remote(spec) for _ in range(workers)]

    def _replace(self, index: int) -> None:
        self.ray.kill(self._actors[index], no_restart=True)
        self._restarts += 1
        if self._restarts > self.workers * self.max_attempts:
            raise BackendError(f"--backend ray: {self._restarts} actors were lost; check the cluster's nodes "
                               "and memory, or use --backend local")
        self._actors[index] = self._remote.remote(self.spec)

    def run(self, tasks: Sequence[CandidateTask]) -> Iterator[CandidateResult]:
        """Evaluate ``tasks`` on the actors; yields results in completion order.

        Raises:
            BackendError: a candidate was lost ``max_attempts`` times or raised (user errors as they are).
        """
        dispatch = Dispatch(tasks, max_attempts=self.max_attempts, backend=self.name)
        flying: dict[Any, tuple[int, Sent]] = {}  # object ref -> (actor index, what was sent)
        remaining = len(tasks)
        try:
            while remaining:
                busy = {index for index, _ in flying.values()}
                for index in range(len(self._actors)):
                    if index not in busy and dispatch:
                        sent = dispatch.send()
                        flying[self._actors[index].evaluate.remote(sent.task)] = (index, sent)
                done, _ = self.ray.wait(list(flying), num_returns=1, timeout=_TICK_S)
                for ref in done:
                    index, sent = flying.pop(ref)
                    result = self._get(ref, index, sent, dispatch)
                    if result is not None:
                        remaining -= 1
                        yield result
                now = time.perf_counter()
                for ref, (index, sent) in list(flying.items()):
                    if now - sent.at > self.timeout:
                        del flying[ref]
                        self._replace(index)
                        dispatch.lost(sent, f"no result after {self.timeout:g} s (--candidate-timeout)")
        finally:
            for index, _ in flying.values():  # abandoned mid-batch: late answers must not reach the next batch
                self._replace(index)

    def _get(self, ref: Any, index: int, sent: Sent, dispatch: Dispatch) -> CandidateResult | None:
        """The result behind ``ref``, or ``None`` after re-queuing a candidate whose actor died."""
        exceptions = self.ray.exceptions
        try:
            result: CandidateResult = self.ray.get(ref)
        except (exceptions.RayActorError, exceptions.ObjectLostError, exceptions.WorkerCrashedError) as exc:
            self._replace(index)
            dispatch.lost(sent, f"actor lost ({type(exc).__name__})")
            return None
        except exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, OnnxPruneError):
                raise cause from None
            raise BackendError(f"--backend ray: candidate {sent.task.id} failed ({type(cause or exc).__name__}: "
                               f"{str(cause or exc).strip().splitlines()[0]}); rerun with --backend local to see "
                               "the full error") from exc
        return dataclasses.replace(result, roundtrip=time.perf_counter() - sent.at, attempts=sent.attempt)

    def close(self) -> None:
        """Kill the actors; shut down the Ray this executor started (idempotent)."""
        for actor in self._actors:
            self.ray.kill(actor, no_restart=True)
        self._actors = []
        if self._owns and self.ray.is_initialized():
            self.ray.shutdown()
            self._owns = False
