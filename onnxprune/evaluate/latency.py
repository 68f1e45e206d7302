"""Latency: warm-up, then timed runs alternating model and baseline; profiling; session memory.

Contract:
    requires: sessions from one :class:`~onnxprune.evaluate.runtime.Runtime` (same provider and
    threads), inputs with static non-batch dims.
    guarantees: model and baseline are timed in the same process on the same random inputs,
    interleaved A,B,B,A,... so that drift in machine load hits both equally; each figure is the
    median (and p90) of ``runs`` single ``run`` calls measured with ``perf_counter_ns``. Nothing
    here asserts speed; the numbers are reported as they are.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import resource
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onnxprune.errors import DataError, UnsupportedInput
from onnxprune.evaluate.runtime import ModelSource, RunInfo, Runtime, Session, TensorSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Timing:
    """Latency of ``runs`` single runs at one batch size, in milliseconds."""

    runs: int
    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float


@dataclass(frozen=True)
class LatencyRow:
    """One batch size: the model, the baseline and their ratio.

    Attributes:
        batch: Batch size.
        model: Timing of the model.
        baseline: Timing of the baseline (``None`` without one).
        ratio: Model median / baseline median (below 1: the model is faster).
    """

    batch: int
    model: Timing
    baseline: Timing | None
    ratio: float | None


@dataclass(frozen=True)
class OpTime:
    """Total kernel time of one op type over the profiled runs."""

    op_type: str
    total_ms: float
    share: float
    calls: int


def random_feeds(inputs: Sequence[TensorSpec], batch: int, rng: np.random.Generator, *,
                 symbolic: int | None = None) -> dict[str, np.ndarray]:
    """Random inputs: standard normal floats, integers in [0, 2) (valid indices), False bools.

    Args:
        inputs: The model's inputs; the first dim of each is the batch.
        batch: The batch size.
        rng: Source of the values.
        symbolic: Size for symbolic dims other than the batch; ``None`` refuses them.

    Raises:
        UnsupportedInput: an input has a symbolic dim other than the batch (and no ``symbolic``).
    """
    feeds: dict[str, np.ndarray] = {}
    for spec in inputs:
        if symbolic is None and any(d is None for d in spec.shape[1:]):
            raise UnsupportedInput(f"input '{spec.name}' has symbolic dims {spec.shape}; bench needs static "
                                   "dims other than the batch (re-export with a fixed input size)")
        shape = (batch, *(symbolic if d is None else d for d in spec.shape[1:])) if spec.shape else ()
        if spec.dtype.kind == "f":
            feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        elif spec.dtype.kind in "iu":
            feeds[spec.name] = rng.integers(0, 2, size=shape).astype(spec.dtype)
        elif spec.dtype.kind == "b":
            feeds[spec.name] = np.zeros(shape, dtype=np.bool_)
        else:
            raise UnsupportedInput(f"input '{spec.name}' has a type random inputs cannot fill; use a float, "
                                   "integer or bool input")
    return feeds


def timing(samples_ns: Sequence[int]) -> Timing:
    """Summarize run times in nanoseconds."""
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    return Timing(runs=len(ms), median_ms=float(np.median(ms)), p90_ms=float(np.percentile(ms, 90)),
                  mean_ms=float(ms.mean()), min_ms=float(ms.min()))


def _timed(session: Session, feeds: Mapping[str, np.ndarray]) -> int:
    start = time.perf_counter_ns()
    session.run_raw(feeds)
    return time.perf_counter_ns() - start


def _check_batch(session: Session, batch: int) -> None:
    if session.fixed_batch not in (None, batch):
        raise DataError(f"{session.label} has its batch fixed to {session.fixed_batch}; "
                        f"bench it with --batch {session.fixed_batch}")


def _same_interface(a: Session, b: Session) -> bool:
    return [(i.name, i.shape[1:], i.dtype) for i in a.inputs] == [(i.name, i.shape[1:], i.dtype) for i in b.inputs]


def measure(model: Session, baseline: Session | None, batch: int, *, warmup: int, runs: int,
            rng: np.random.Generator) -> LatencyRow:
    """Time ``model`` (and ``baseline``, alternating) at one batch size.

    Args:
        model: The session to time.
        baseline: The session to compare with; fed the same inputs when the interfaces match.
        batch: Batch size; must equal a model's fixed batch if it has one.
        warmup: Untimed runs of each session first.
        runs: Timed runs of each session.
        rng: Source of the random inputs.

    Raises:
        DataError: ``runs`` below 1 or a batch size a fixed-batch model cannot take.
    """
    if runs < 1 or warmup < 0:
        raise DataError(f"--runs {runs} / --warmup {warmup}: give at least one timed run and no negative warm-up")
    for session in (model, baseline):
        if session is not None:
            _check_batch(session, batch)
    feeds = random_feeds(model.inputs, batch, rng)
    base_feeds = None
    if baseline is not None:
        base_feeds = feeds if _same_interface(model, baseline) else random_feeds(baseline.inputs, batch, rng)
    pairs = [(model, feeds)] + ([(baseline, base_feeds)] if baseline is not None and base_feeds is not None else [])
    for _ in range(warmup):
        for session, f in pairs:
            session.run_raw(f)
    times: list[list[int]] = [[] for _ in pairs]
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i in range(runs):
            order = range(len(pairs)) if i % 2 == 0 else reversed(range(len(pairs)))
            for k in order:
                times[k].append(_timed(*pairs[k]))
    finally:
        if gc_was_enabled:
            gc.enable()
    model_t = timing(times[0])
    base_t = timing(times[1]) if len(times) > 1 else None
    ratio = model_t.median_ms / base_t.median_ms if base_t and base_t.median_ms > 0 else None
    return LatencyRow(batch=batch, model=model_t, baseline=base_t, ratio=ratio)


def rss_bytes() -> int:
    """Resident memory of this process now (Linux ``/proc``; else the peak so far)."""
    statm = Path("/proc/self/statm")
    if statm.is_file():
        return int(statm.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def session_memory(runtime: Runtime, model: ModelSource, batch: int,
                   rng: np.random.Generator) -> tuple[Session, float]:
    """Create (or reuse) the session for ``model``, run it once at ``batch``, return the RSS growth.

    The growth of resident memory across session creation and one run is the session's
    footprint (weights, optimized graph, arena); ORT keeps its arena afterwards, so this is its
    peak at that batch size. A session that already existed reports only its run.

    Returns:
        The session and the growth in MiB (0 if memory was returned meanwhile).

    Raises:
        DataError: the model's batch is fixed to another size.
    """
    before = rss_bytes()
    session = runtime.session(model)
    _check_batch(session, batch)
    session.run_raw(random_feeds(session.inputs, batch, rng))
    return session, max(rss_bytes() - before, 0) / 2**20


def profile_ops(runtime: Runtime, model: ModelSource, feeds: Mapping[str, np.ndarray], *, runs: int,
                top: int) -> tuple[OpTime, ...]:
    """Profile ``runs`` runs in a separate session and return the ``top`` op types by kernel time.

    The profiling session is not the timed one (profiling slows every kernel); its trace file
    is written to a temporary folder and removed.
    """
    totals: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    with tempfile.TemporaryDirectory(prefix="onnxprune-profile-") as tmp:
        session = runtime.create(model, profile_prefix=str(Path(tmp) / "ort"))
        for _ in range(runs + 1):
            session.run_raw(feeds)
        trace = Path(session.inner.end_profiling())
        events: list[dict[str, Any]] = json.loads(trace.read_text())
    for event in events:
        args = event.get("args") or {}
        if event.get("cat") == "Node" and str(event.get("name", "")).endswith("_kernel_time"):
            op = str(args.get("op_name", "?"))
            totals[op] += float(event.get("dur", 0)) / 1000.0
            calls[op] += 1
    whole = sum(totals.values()) or 1.0
    ranked = sorted(totals.items(), key=lambda kv: kv[1], reverse=True)[:top]
    return tuple(OpTime(op, ms, ms / whole, calls[op]) for op, ms in ranked)


@dataclass(frozen=True)
class BenchResult:
    """Latency of a model (and its baseline) at several batch sizes, with memory and profile.

    Attributes:
        rows: One row per batch size.
        memory_mb: RSS growth from creating the model's session and running it at the largest batch.
        baseline_memory_mb: The same for the baseline.
        profile: Top op types by kernel time (``None`` unless profiling was asked for).
        warmup: Warm-up runs per session and batch size.
        run: Where it ran.
        load_average: The host's 1-minute load average before and after timing (``None`` where the
            OS does not report it): other work on the machine shifts every latency figure.
    """

    rows: tuple[LatencyRow, ...]
    memory_mb: float
    baseline_memory_mb: float | None
    profile: tuple[OpTime, ...] | None
    warmup: int
    run: RunInfo
    load_average: tuple[float, float] | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)


def bench(runtime: Runtime, model: ModelSource, baseline: ModelSource | None, batches: Sequence[int], *,
          warmup: int, runs: int, rng: np.random.Generator, profile_top: int | None = None,
          on_row: Callable[[int, int | None], None] | None = None) -> BenchResult:
    """Measure ``model`` against ``baseline`` at each batch size, alternating runs.

    Args:
        runtime: Creates the sessions (device, threads).
        model: The model to time.
        baseline: The reference model, or ``None``.
        batches: Batch sizes.
        warmup: Warm-up runs per session and batch size.
        runs: Timed runs per session and batch size.
        rng: Source of the random inputs.
        profile_top: Profile the model and keep this many op types (``None``: no profiling).
        on_row: Called with ``(1, number of batch sizes)`` after each batch size (progress display).

    Raises:
        DataError: no batch sizes, a non-positive one, or one a fixed-batch model cannot take.
    """
    if not batches or min(batches) < 1:
        raise DataError(f"--batch {','.join(map(str, batches))}: give positive batch sizes, e.g. 1,64")
    largest = max(batches)
    load_before = _load_average()
    session, memory = session_memory(runtime, model, largest, rng)
    base_session, base_memory = None, None
    if baseline is not None:
        base_session, base_memory = session_memory(runtime, baseline, largest, rng)
    rows = []
    for batch in batches:
        rows.append(measure(session, base_session, batch, warmup=warmup, runs=runs, rng=rng))
        if on_row is not None:
            on_row(1, len(batches))
    profile = None
    if profile_top is not None:
        profile = profile_ops(runtime, model, random_feeds(session.inputs, largest, rng),
                              runs=max(runs // 4, 3), top=profile_top)
    load_after = _load_average()
    load = (load_before, load_after) if load_before is not None and load_after is not None else None
    return BenchResult(rows=tuple(rows), memory_mb=memory, baseline_memory_mb=base_memory, profile=profile,
                       warmup=warmup, run=session.info, load_average=load)


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
