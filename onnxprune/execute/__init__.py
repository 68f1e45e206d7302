"""Candidate evaluation behind one small interface: ``local``, ``process`` or ``ray``.

The search fits every candidate in the main process (rescaling, plan, cost, latency from the
table timed on the user's device) and hands only the plans to an :class:`Executor`; workers hold
the original model and its data and return scores. :func:`open_executor` builds the one the
settings name; Ray is imported only for ``ray``.
"""

from __future__ import annotations

from onnxprune.errors import BackendError
from onnxprune.execute.base import (BACKENDS, DEFAULT_TIMEOUT_S, CandidateResult, CandidateTask, Evaluator,
                                    EvaluatorSpec, Executor, ExecutorSettings)
from onnxprune.execute.local import LocalExecutor
from onnxprune.execute.process import ProcessExecutor

__all__ = ["BACKENDS", "DEFAULT_TIMEOUT_S", "CandidateResult", "CandidateTask", "Evaluator", "EvaluatorSpec",
           "Executor", "ExecutorSettings", "LocalExecutor", "ProcessExecutor", "check_settings", "open_executor"]


def check_settings(settings: ExecutorSettings) -> None:
    """Refuse settings that cannot run, before anything is loaded.

    Raises:
        BackendError: an unknown backend, fewer than 1 worker, a timeout not above 0, or ``ray``
            without Ray installed (the message says ``pip install 'onnxprune[ray]'``).
    """
    if settings.backend not in BACKENDS:
        raise BackendError(f"--backend {settings.backend}: use one of {', '.join(BACKENDS)}")
    if settings.workers < 1:
        raise BackendError(f"--workers {settings.workers}: give 1 or more")
    if not settings.candidate_timeout > 0:
        raise BackendError(f"--candidate-timeout {settings.candidate_timeout:g}: give seconds above 0")
    if settings.address is not None and settings.backend != "ray":
        raise BackendError(f"--ray-address goes with --backend ray, not {settings.backend}; add --backend ray "
                           "or drop --ray-address")
    if settings.backend == "ray":
        from onnxprune.execute.ray_actors import import_ray

        import_ray()


def open_executor(settings: ExecutorSettings, spec: EvaluatorSpec, local: Evaluator) -> Executor:
    """The executor ``settings`` name.

    Args:
        settings: Backend and its options.
        spec: The workers' picklable evaluator recipe (``process``, ``ray``).
        local: The in-process evaluator (``local``), usually built already by the caller.
    """
    check_settings(settings)
    if settings.backend == "local":
        return LocalExecutor(local)
    if settings.backend == "process":
        return ProcessExecutor(spec, settings.workers, timeout=settings.candidate_timeout,
                               max_attempts=settings.max_attempts)
    from onnxprune.execute.ray_actors import RayExecutor

    return RayExecutor(spec, settings.workers, address=settings.address, timeout=settings.candidate_timeout,
                       max_attempts=settings.max_attempts)
