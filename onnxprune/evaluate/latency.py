"""Latency: warm-up, then timed runs alternating model and baseline; profiling; session memory.

Contract:
    requires: sessions from one :class:`~onnxprune.evaluate.runtime.Runtime` (same provider and
    threads), inputs with static non-batch dims.
    guarantees: model and baseline are timed in the same process on the same random inputs,
    interleaved A,B,B,A,... so that drift in machine load hits both equally; each figure is the
    median (and p90) of single ``run`` calls measured with ``perf_counter_ns``, taken in blocks
    for at least ``min_time`` seconds and ``runs`` runs and then until the medians settle (see
    :mod:`onnxprune.evaluate.stability`); a row that did not settle by ``max_time``, or that
    ran while other work took a tenth or more of the host's CPU time, says ``unstable`` (with
    the reason) instead of passing a noisy number off as a measurement. Nothing here asserts
    speed; the numbers are reported as they are, with what else used the host's CPUs.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onnxprune.errors import DataError, UnsupportedInput
from onnxprune.evaluate.footprint import OpChange, OpTime, compare_profiles, profile_ops, rss_bytes
from onnxprune.evaluate.runtime import ModelSource, RunInfo, Runtime, Session, TensorSpec, available_cpus
from onnxprune.evaluate.stability import (HostUse, Protocol, block_size, busy_reason, cpu_times, decide, host_use,
                                          median_interval)

logger = logging.getLogger(__name__)

PROC_STAT = Path("/proc/stat")


@dataclass(frozen=True)
class Timing:
    """Latency of ``runs`` single runs at one batch size, in milliseconds.

    Attributes:
        runs: Timed runs.
        median_ms: Median of all runs.
        p90_ms: 90th percentile.
        mean_ms: Mean.
        min_ms: Fastest run.
        ci_low_ms: Lower bound of the 95 % interval of the median (from block medians).
        ci_high_ms: Upper bound of that interval.
        half_width: Half the interval's width relative to the median (0.02: +-2 %).
    """

    runs: int
    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    ci_low_ms: float | None = None
    ci_high_ms: float | None = None
    half_width: float | None = None


@dataclass(frozen=True)
class LatencyRow:
    """One batch size: the model, the baseline, their ratio and whether the figures settled.

    Attributes:
        batch: Batch size.
        model: Timing of the model.
        baseline: Timing of the baseline (``None`` without one).
        ratio: Model median / baseline median (below 1: the model is faster).
        ratio_low: Lower bound of the 95 % interval of the ratio (from per-block ratios).
        ratio_high: Upper bound of that interval.
        ratio_half_width: Half its width relative to the median block ratio.
        verdict: ``stable`` when every median's interval is within the protocol's tolerance
            and other work took less than :data:`~onnxprune.evaluate.stability.BUSY` of the
            host's CPU time, else ``unstable``.
        reason: Why a row is unstable (``None`` when stable).
        seconds: Seconds of timed runs (all sessions).
        blocks: Blocks timed.
        block_runs: Runs of each session per block.
        steal: Share of the host's CPU time stolen by the hypervisor meanwhile (``None``: unknown).
        others: Share of the host's CPU time used by other processes meanwhile (``None``: unknown).
    """

    batch: int
    model: Timing
    baseline: Timing | None
    ratio: float | None
    ratio_low: float | None = None
    ratio_high: float | None = None
    ratio_half_width: float | None = None
    verdict: str = "stable"
    reason: str | None = None
    seconds: float = 0.0
    blocks: int = 0
    block_runs: int = 0
    steal: float | None = None
    others: float | None = None


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


def timing(samples_ns: Sequence[int], block_medians_ns: Sequence[float] = ()) -> Timing:
    """Summarize run times in nanoseconds; with block medians, add the interval of the median."""
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    interval = median_interval([m / 1e6 for m in block_medians_ns]) if block_medians_ns else None
    return Timing(runs=len(ms), median_ms=float(np.median(ms)), p90_ms=float(np.percentile(ms, 90)),
                  mean_ms=float(ms.mean()), min_ms=float(ms.min()),
                  ci_low_ms=interval.low if interval else None, ci_high_ms=interval.high if interval else None,
                  half_width=interval.half_width if interval else None)


def _check_batch(session: Session, batch: int) -> None:
    if session.fixed_batch not in (None, batch):
        raise DataError(f"{session.label} has its batch fixed to {session.fixed_batch}; "
                        f"bench it with --batch {session.fixed_batch}")


def _same_interface(a: Session, b: Session) -> bool:
    return [(i.name, i.shape[1:], i.dtype) for i in a.inputs] == [(i.name, i.shape[1:], i.dtype) for i in b.inputs]


Pair = tuple[Session, Mapping[str, np.ndarray]]


def _pilot(pairs: Sequence[Pair], warmup: int, clock: Callable[[], int]) -> float:
    """Warm-up, not recorded (at least one run of each session); returns the median time of one round."""
    rounds: list[int] = []
    for _ in range(max(warmup, 1)):
        start = clock()
        for session, feeds in pairs:
            session.run_raw(feeds)
        rounds.append(clock() - start)
    return float(np.median(rounds))


def _timed_blocks(pairs: Sequence[Pair], size: int, protocol: Protocol, clock: Callable[[], int],
                  host: Callable[[], HostUse | None]) -> tuple[list[list[int]], list[list[float]], str, int]:
    """Blocks of ``size`` interleaved runs (A,B then B,A) until :func:`decide` stops.

    ``host`` reports what else used the CPUs since timing began (read between blocks).

    Returns:
        Per session its run times and block medians (ns), the verdict and the timed nanoseconds.
    """
    times: list[list[int]] = [[] for _ in pairs]
    medians: list[list[float]] = [[] for _ in pairs]
    begin, done = clock(), 0
    while True:
        for _ in range(size):
            order = range(len(pairs)) if done % 2 == 0 else reversed(range(len(pairs)))
            for k in order:
                session, feeds = pairs[k]
                start = clock()
                session.run_raw(feeds)
                times[k].append(clock() - start)
            done += 1
        for k in range(len(pairs)):
            medians[k].append(float(np.median(times[k][-size:])))
        elapsed = clock() - begin
        decision = decide(medians, done, elapsed / 1e9, protocol, busy=busy_reason(host()) is not None)
        if decision.stop and decision.verdict is not None:
            return times, medians, decision.verdict, elapsed


def _unstable_reason(verdict: str, medians: Sequence[Sequence[float]], elapsed_ns: int, protocol: Protocol,
                     use: HostUse | None) -> str | None:
    """Why a row is unstable: medians that did not settle, a busy host, or both; ``None`` if stable."""
    reasons = []
    if verdict != "stable":
        widest = max(median_interval(m).half_width for m in medians)
        reasons.append(f"medians within +-{100 * widest:.1f} %, not +-{100 * protocol.tolerance:g} %, "
                       f"after {elapsed_ns / 1e9:.0f} s")
    busy = busy_reason(use)
    if busy is not None:
        reasons.append(busy)
    return " and ".join(reasons) or None


def measure(model: Session, baseline: Session | None, batch: int, *, protocol: Protocol,
            rng: np.random.Generator, clock: Callable[[], int] = time.perf_counter_ns,
            stat: Path = PROC_STAT) -> LatencyRow:
    """Time ``model`` (and ``baseline``, alternating) at one batch size until the figures settle.

    Runs are taken in blocks, each holding ``block_runs`` runs of every session interleaved
    A,B,B,A,...; timing goes on for ``protocol.min_time`` seconds per session and
    ``protocol.runs`` runs, and then until every median's 95 % interval (from the block medians)
    is within ``protocol.tolerance``, or ``protocol.max_time`` seconds per session have passed
    (verdict ``unstable``); on a busy host (see :func:`~onnxprune.evaluate.stability.busy_reason`)
    it stops at ``min_time`` and says ``unstable``.

    Args:
        model: The session to time.
        baseline: The session to compare with; fed the same inputs when the interfaces match.
        batch: Batch size; must equal a model's fixed batch if it has one.
        protocol: Run counts, times and tolerance.
        rng: Source of the random inputs.
        clock: Nanosecond clock (tests pass a fake one).
        stat: The host's CPU counters, for steal and other processes (a missing file: unknown).

    Raises:
        DataError: a batch size a fixed-batch model cannot take.
    """
    for session in (model, baseline):
        if session is not None:
            _check_batch(session, batch)
    feeds = random_feeds(model.inputs, batch, rng)
    pairs: list[Pair] = [(model, feeds)]
    if baseline is not None:
        same = _same_interface(model, baseline)
        pairs.append((baseline, feeds if same else random_feeds(baseline.inputs, batch, rng)))
    gc_was_enabled = gc.isenabled()
    gc.disable()
    cpu_before = cpu_times(stat)
    try:
        size = block_size(_pilot(pairs, protocol.warmup, clock), protocol, len(pairs))
        times, medians, verdict, elapsed = _timed_blocks(pairs, size, protocol, clock,
                                                         lambda: host_use(cpu_before, cpu_times(stat)))
    finally:
        if gc_was_enabled:
            gc.enable()
    use = host_use(cpu_before, cpu_times(stat))
    reason = _unstable_reason(verdict, medians, elapsed, protocol, use)
    model_t = timing(times[0], medians[0])
    base_t = timing(times[1], medians[1]) if len(pairs) > 1 else None
    ratio = ratio_ci = None
    if base_t is not None and base_t.median_ms > 0:
        ratio = model_t.median_ms / base_t.median_ms
        ratio_ci = median_interval([m / b for m, b in zip(medians[0], medians[1]) if b > 0] or [ratio])
    return LatencyRow(batch=batch, model=model_t, baseline=base_t, ratio=ratio,
                      ratio_low=ratio_ci.low if ratio_ci else None, ratio_high=ratio_ci.high if ratio_ci else None,
                      ratio_half_width=ratio_ci.half_width if ratio_ci else None,
                      verdict="stable" if reason is None else "unstable", reason=reason,
                      seconds=elapsed / 1e9, blocks=len(medians[0]), block_runs=size,
                      steal=use.steal if use else None, others=use.others if use else None)


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


@dataclass(frozen=True)
class BenchResult:
    """Latency of a model (and its baseline) at several batch sizes, with memory and profile.

    Attributes:
        rows: One row per batch size.
        memory_mb: RSS growth from creating the model's session and running it at the largest batch.
        baseline_memory_mb: The same for the baseline.
        profile: Top op types by kernel time (``None`` unless profiling was asked for).
        baseline_profile: The same for the baseline (profiled with the same runs and batch).
        profile_change: Op types of the baseline (before) and the model (after) side by side,
            the top ones by time in either (with a baseline and profiling only).
        protocol: Run counts, times and tolerance used.
        run: Where it ran.
        load_average: The host's 1-minute load average before and after timing (``None`` where the
            OS does not report it): other work on the machine shifts every latency figure.
        steal: Share of the host's CPU time stolen by the hypervisor while timing (``None``: unknown).
        others: Share of the host's CPU time used by other processes while timing (``None``: unknown).
        cpus: CPUs of the host (to read the load average against).
    """

    rows: tuple[LatencyRow, ...]
    memory_mb: float
    baseline_memory_mb: float | None
    profile: tuple[OpTime, ...] | None
    protocol: Protocol
    run: RunInfo
    load_average: tuple[float, float] | None = None
    steal: float | None = None
    others: float | None = None
    cpus: int = 1
    baseline_profile: tuple[OpTime, ...] | None = None
    profile_change: tuple[OpChange, ...] | None = None

    @property
    def unstable(self) -> tuple[int, ...]:
        """Batch sizes whose rows are ``unstable``."""
        return tuple(row.batch for row in self.rows if row.verdict != "stable")

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (with ``unstable`` and ``warning``)."""
        return {**asdict(self), "unstable": list(self.unstable), "warning": noise_warning(self)}


def noise_warning(result: BenchResult) -> str | None:
    """One line naming the unstable rows, why, and what to do; ``None`` when every row is stable."""
    noisy = [row for row in result.rows if row.verdict != "stable"]
    if not noisy:
        return None
    why = "; ".join(f"batch {row.batch}: {row.reason}" for row in noisy)
    load = f" (load average {result.load_average[0]:.1f} on {result.cpus} CPUs)" if result.load_average else ""
    busy = any("CPU time" in (row.reason or "") for row in noisy)
    advice = ("rerun when the host is quiet" if busy
              else "rerun, or try fewer --threads, --no-spin or a longer --max-time")
    return f"unstable latency, the host was noisy{load}: {why}; {advice}"


def bench(runtime: Runtime, model: ModelSource, baseline: ModelSource | None, batches: Sequence[int], *,
          protocol: Protocol, rng: np.random.Generator, profile_top: int | None = None,
          on_row: Callable[[int, int | None], None] | None = None) -> BenchResult:
    """Measure ``model`` against ``baseline`` at each batch size, alternating runs.

    Args:
        runtime: Creates the sessions (device, threads).
        model: The model to time.
        baseline: The reference model, or ``None``.
        batches: Batch sizes.
        protocol: Run counts, times and tolerance (see :func:`measure`).
        rng: Source of the random inputs.
        profile_top: Profile the model (and the baseline) and keep this many op types (``None``: no
            profiling).
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
    cpu_before = cpu_times(PROC_STAT)
    rows = []
    for batch in batches:
        rows.append(measure(session, base_session, batch, protocol=protocol, rng=rng))
        if on_row is not None:
            on_row(1, len(batches))
    use = host_use(cpu_before, cpu_times(PROC_STAT))
    profile, base_profile, change = None, None, None
    if profile_top is not None:
        runs = max(protocol.runs // 4, 3)
        full = profile_ops(runtime, model, random_feeds(session.inputs, largest, rng), runs=runs)
        profile = full[:profile_top]
        if baseline is not None and base_session is not None:
            base_full = profile_ops(runtime, baseline, random_feeds(base_session.inputs, largest, rng), runs=runs)
            base_profile, change = base_full[:profile_top], compare_profiles(base_full, full, top=profile_top)
    load_after = _load_average()
    load = (load_before, load_after) if load_before is not None and load_after is not None else None
    return BenchResult(rows=tuple(rows), memory_mb=memory, baseline_memory_mb=base_memory, profile=profile,
                       protocol=protocol, run=session.info, load_average=load,
                       steal=use.steal if use else None, others=use.others if use else None, cpus=available_cpus(),
                       baseline_profile=base_profile, profile_change=change)


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
