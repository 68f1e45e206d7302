"""When a latency figure can be trusted: the timing protocol, its stopping rule and its verdict.

Contract:
    requires: per-session run times grouped in equal-size blocks (consecutive runs, model and
    baseline interleaved within each block).
    guarantees: :func:`median_interval` is a distribution-free confidence interval of the median
    of the block medians (order statistics of a binomial count, no resampling, no RNG);
    :func:`decide` stops only after ``min_time`` seconds per session, ``runs`` runs and
    :data:`MIN_BLOCKS` blocks (enough for a 95 % interval), and calls a measurement *stable*
    only when every session's interval is within ``tolerance`` of its median; at ``max_time``
    it stops with *unstable*.
    :func:`cpu_times` / :func:`host_use` read the host's CPU time counters (Linux ``/proc/stat``)
    so that time stolen by the hypervisor and time used by other processes can be reported
    next to the figures.

Why blocks: on shared or virtual CPUs the speed of the host drifts over seconds (neighbours,
frequency, steal), so single runs are not independent; medians of blocks of consecutive runs
are much closer to independent, and their spread measures the drift the figure is exposed to.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onnxprune.errors import DataError

logger = logging.getLogger(__name__)

#: Confidence of the interval of a median.
CONFIDENCE = 0.95
#: Fewest blocks whose order statistics give a 95 % interval of the median ([min, max] of 6 blocks: 96.9 %).
MIN_BLOCKS = 6
#: Other processes (or the hypervisor) taking this share of the host's CPU time while timing make
#: a figure unstable however well it settled: it holds only for that load, which the next run
#: will not see (ResNet-56 on 2 vCPUs, other processes at 25-60 % of the CPU time: medians of 3
#: bench runs differed by 13-59 %, although single runs' intervals were within +-1 %).
BUSY = 0.10


@dataclass(frozen=True)
class Protocol:
    """How long to time each batch size and when to call the figure stable.

    Attributes:
        runs: At least this many timed runs of each session.
        warmup: Untimed runs of each session first (at least one, which also sizes the blocks).
        min_time: At least this many seconds of timed runs per session (model and baseline
            together: twice this).
        max_time: Extend an unstable measurement up to this many seconds per session, then
            stop and report it as unstable.
        tolerance: Stable when the 95 % interval of each median is within this fraction of it
            (half-width / median); with 0.02, two runs whose intervals hold the true median
            differ by at most about 4 %.
        blocks: Blocks the runs of ``min_time`` are split into (the unit of the stability estimate).

    Raises:
        DataError: a value out of range (named after its command-line flag).
    """

    runs: int = 20
    warmup: int = 10
    min_time: float = 2.0
    max_time: float = 10.0
    tolerance: float = 0.02
    blocks: int = 10

    def __post_init__(self) -> None:
        """Validate the settings (user input from the command line)."""
        if self.runs < 1:
            raise DataError(f"--runs {self.runs}: give at least one timed run")
        if self.warmup < 0:
            raise DataError(f"--warmup {self.warmup}: give zero or more warm-up runs")
        if not (math.isfinite(self.min_time) and self.min_time >= 0):
            raise DataError(f"--min-time {self.min_time}: give zero or more seconds, e.g. --min-time 2")
        if not (math.isfinite(self.max_time) and self.max_time >= self.min_time):
            raise DataError(f"--max-time {self.max_time}: give at least --min-time ({self.min_time} s), "
                            "e.g. --max-time 10")
        if not (0 < self.tolerance < 1):
            raise DataError(f"--tolerance {self.tolerance}: give a fraction between 0 and 1, e.g. 0.02")
        if self.blocks < MIN_BLOCKS:
            raise DataError(f"blocks {self.blocks}: give at least {MIN_BLOCKS} blocks for a 95 % interval")


@dataclass(frozen=True)
class Interval:
    """A confidence interval of a median, from block medians.

    Attributes:
        low: Lower bound.
        high: Upper bound.
        half_width: ``(high - low) / 2`` relative to the median of the block medians.
        coverage: The interval's exact coverage for independent blocks (below 0.95: too few blocks).
        blocks: Number of block medians it was computed from.
    """

    low: float
    high: float
    half_width: float
    coverage: float
    blocks: int

    def within(self, tolerance: float) -> bool:
        """Whether the interval is a 95 % one and no wider than ``tolerance`` of the median."""
        return self.coverage >= CONFIDENCE and self.half_width <= tolerance


def _order_statistic(n: int, confidence: float) -> tuple[int, float]:
    """The largest ``k`` whose interval ``[x(k), x(n-k+1)]`` covers the median with ``confidence``, and its coverage.

    Coverage of ``k`` is ``1 - 2 P(B <= k-1)`` with ``B ~ Binomial(n, 1/2)``; the cumulative
    counts are exact integers (no overflow for thousands of blocks).
    """
    total, term, below = 1 << n, 1, 1  # term = C(n, k-1), below = sum of C(n, i) for i < k
    k = 1
    while k + 1 <= (n + 1) // 2:
        nxt = term * (n - k + 1) // k  # C(n, k)
        if 1 - 2 * (below + nxt) / total < confidence:
            break
        k, term, below = k + 1, nxt, below + nxt
    return k, (1 - 2 * below / total) if n > 1 else 0.0


def median_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Distribution-free confidence interval of the median of ``values`` (e.g. block medians).

    The interval ``[x(k), x(n-k+1)]`` of the sorted values covers the true median with
    probability ``1 - 2 P(B <= k-1)``, ``B ~ Binomial(n, 1/2)``, for independent values; ``k`` is
    the largest with at least ``confidence``. With too few values the interval is ``[min, max]``
    and ``coverage`` says how much less it covers.

    Raises:
        ValueError: no values (a programming error: callers pass at least one block).
    """
    if not values:
        raise ValueError("median_interval needs at least one value")
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    n = len(ordered)
    k, coverage = _order_statistic(n, confidence)
    low, high = float(ordered[k - 1]), float(ordered[n - k])
    centre = float(np.median(ordered))
    half = (high - low) / (2 * centre) if centre > 0 else math.inf
    return Interval(low=low, high=high, half_width=half, coverage=coverage, blocks=n)


def block_size(pair_ns: float, protocol: Protocol, sessions: int) -> int:
    """Runs per block: ``protocol.blocks`` blocks fill ``min_time`` and hold ``runs`` runs.

    Args:
        pair_ns: Time of one run of every session (model + baseline), in nanoseconds.
        protocol: The protocol.
        sessions: Number of sessions timed (1 or 2).
    """
    by_time = int(protocol.min_time * sessions * 1e9 // (protocol.blocks * max(pair_ns, 1.0)))
    by_runs = math.ceil(protocol.runs / protocol.blocks)
    return max(1, by_time, by_runs)


@dataclass(frozen=True)
class Decision:
    """Outcome of :func:`decide` after a block: stop or not, and the verdict if stopping."""

    stop: bool
    verdict: str | None = None


def decide(block_medians: Sequence[Sequence[float]], runs_done: int, elapsed_s: float,
           protocol: Protocol, *, busy: bool = False) -> Decision:
    """The stopping rule, applied after each block.

    Never before ``runs`` runs and :data:`MIN_BLOCKS` blocks (the fewest that give a 95 %
    interval); then *stable* as soon as ``min_time`` seconds per session have passed and every
    session's interval is within ``tolerance``, or *unstable* once ``max_time`` seconds per
    session have passed without that, or as soon as ``min_time`` has passed on a ``busy`` host
    (waiting does not make a busy host's figures repeatable).

    Args:
        block_medians: Per session, the medians of its blocks so far.
        runs_done: Timed runs of each session so far.
        elapsed_s: Seconds of timed runs so far (all sessions together).
        protocol: The protocol.
        busy: Other work took :data:`BUSY` or more of the host's CPU time so far.

    Returns:
        ``stop=False`` to time another block; otherwise the verdict ``"stable"`` or ``"unstable"``.
    """
    sessions = len(block_medians)
    if runs_done < protocol.runs or min(len(m) for m in block_medians) < MIN_BLOCKS:
        return Decision(stop=False)
    stable = all(median_interval(medians).within(protocol.tolerance) for medians in block_medians)
    if stable and elapsed_s >= protocol.min_time * sessions:
        return Decision(stop=True, verdict="stable")
    if elapsed_s >= protocol.max_time * sessions or (busy and elapsed_s >= protocol.min_time * sessions):
        return Decision(stop=True, verdict="stable" if stable else "unstable")
    return Decision(stop=False)


@dataclass(frozen=True)
class CpuTimes:
    """The host's cumulative CPU time (seconds, all CPUs) and this process's CPU time at one moment.

    Attributes:
        steal: Time the hypervisor gave to other guests while this host wanted to run.
        busy: Time the host's CPUs were not idle (any process, steal included).
        total: All CPU time (busy + idle + iowait).
        own: CPU time of this process (all its threads).
    """

    steal: float
    busy: float
    total: float
    own: float


@dataclass(frozen=True)
class HostUse:
    """What else used the host's CPUs during a measurement, as shares of all its CPU time.

    Attributes:
        steal: Taken by the hypervisor for other guests (noisy neighbours outside this host).
        others: Used by other processes on this host (busy time minus this process's own).
    """

    steal: float
    others: float


def cpu_times(stat: Path = Path("/proc/stat")) -> CpuTimes | None:
    """Read the ``cpu`` line of ``/proc/stat``; ``None`` where it does not exist or has no steal field."""
    try:
        first = stat.read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if len(first) < 9 or first[0] != "cpu":
        return None
    tick = float(os.sysconf("SC_CLK_TCK"))
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) / tick for v in first[1:9])
    busy = user + nice + system + irq + softirq + steal
    return CpuTimes(steal=steal, busy=busy, total=busy + idle + iowait, own=time.process_time())


def host_use(before: CpuTimes | None, after: CpuTimes | None) -> HostUse | None:
    """Steal and other processes' share of the host's CPU time between two readings (``None``: unknown)."""
    if before is None or after is None or after.total <= before.total:
        return None
    total = after.total - before.total
    others = (after.busy - before.busy) - (after.steal - before.steal) - (after.own - before.own)
    return HostUse(steal=(after.steal - before.steal) / total, others=min(max(others / total, 0.0), 1.0))


def busy_reason(use: HostUse | None) -> str | None:
    """Why the host was too busy for a trustworthy figure (see :data:`BUSY`), or ``None``."""
    if use is None:
        return None
    parts = [f"other processes used {100 * use.others:.0f} % of the CPU time"] if use.others >= BUSY else []
    if use.steal >= BUSY:
        parts.append(f"the hypervisor stole {100 * use.steal:.0f} % of it")
    return ", ".join(parts) or None
