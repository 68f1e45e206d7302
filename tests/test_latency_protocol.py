"""Latency protocol: the stopping rule, the interval of the median and the verdict, on a fake clock.

Sessions here are fakes whose ``run_raw`` advances a fake nanosecond clock by a scripted time,
so every assertion is exact and nothing depends on the speed of the machine.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pytest

from onnxprune.errors import DataError
from onnxprune.evaluate import Protocol
from onnxprune.evaluate.latency import BenchResult, LatencyRow, measure, noise_warning
from onnxprune.evaluate.runtime import RunInfo, TensorSpec
from onnxprune.evaluate.stability import (MIN_BLOCKS, CpuTimes, HostUse, Interval, block_size, busy_reason, cpu_times,
                                          decide, host_use, median_interval)

MS = 1_000_000


class FakeClock:
    """A nanosecond clock that only moves when a fake session runs."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


class FakeSession:
    """Stands in for :class:`Session`: each run advances the clock by ``duration(call index)`` ns."""

    def __init__(self, clock: FakeClock, duration: Callable[[int], int], label: str, log: list[str],
                 host: FakeHost | None = None) -> None:
        self.clock, self.duration, self.label, self.log, self.host = clock, duration, label, log, host
        self.inputs = (TensorSpec("x", (None, 2), np.dtype(np.float32)),)
        self.fixed_batch: int | None = None
        self.calls = 0

    def run_raw(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        self.clock.now += self.duration(self.calls)
        self.calls += 1
        self.log.append(self.label)
        if self.host is not None:
            self.host.tick()
        return [feeds["x"]]


class FakeHost:
    """A ``/proc/stat`` whose counters advance by one second of host time per run, ``others`` of it busy."""

    def __init__(self, path: Path, others: float) -> None:
        self.path, self.others, self.user, self.idle = path, others, 0, 0
        self.tick()

    def tick(self) -> None:
        hz = os.sysconf("SC_CLK_TCK")
        self.user += round(hz * self.others)
        self.idle += hz - round(hz * self.others)
        self.path.write_text(f"cpu  {self.user} 0 0 {self.idle} 0 0 0 0 0 0\n")


def _run(protocol: Protocol, model: Callable[[int], int], baseline: Callable[[int], int] | None = None,
         host: FakeHost | None = None) -> tuple[LatencyRow, list[str]]:
    clock, log = FakeClock(), []
    a = FakeSession(clock, model, "A", log, host)
    b = FakeSession(clock, baseline, "B", log, host) if baseline is not None else None
    stat = host.path if host is not None else Path("/nonexistent/stat")
    row = measure(a, b, 1, protocol=protocol, rng=np.random.default_rng(0), clock=clock, stat=stat)
    return row, log


def _constant(ms: float) -> Callable[[int], int]:
    return lambda i: int(ms * MS)


def test_quiet_host_stops_at_min_time_with_a_zero_width_interval() -> None:
    protocol = Protocol(runs=5, warmup=1, min_time=0.1, max_time=1.0)
    row, _ = _run(protocol, _constant(1.0))
    # the 1 ms pilot sizes blocks so that 10 of them fill 0.1 s: 10 runs each
    assert (row.block_runs, row.blocks, row.model.runs) == (10, 10, 100)
    assert row.seconds == pytest.approx(0.1) and row.verdict == "stable"
    assert row.model.median_ms == pytest.approx(1.0) and row.model.half_width == 0.0
    assert row.steal is None and row.others is None  # no /proc/stat given


def test_run_count_dominates_when_min_time_is_zero() -> None:
    row, _ = _run(Protocol(runs=37, warmup=0, min_time=0.0, max_time=0.0), _constant(2.0))
    assert row.block_runs == 4 and row.blocks == 10 and row.model.runs == 40  # ceil(37 / 10) per block
    assert row.verdict == "stable"


def test_fewer_runs_than_blocks_still_time_six_blocks() -> None:
    row, _ = _run(Protocol(runs=2, warmup=0, min_time=0.0, max_time=0.0), _constant(1.0))
    assert row.blocks == MIN_BLOCKS and row.model.runs == MIN_BLOCKS and row.verdict == "stable"


def test_drifting_host_is_extended_to_max_time_then_unstable() -> None:
    # blocks of 10 runs alternate between a fast and a 30 % slower host
    def drifting(i: int) -> int:
        return int((1.0 if (i // 10) % 2 == 0 else 1.3) * MS)

    protocol = Protocol(runs=5, warmup=0, min_time=0.1, max_time=0.5)
    row, _ = _run(protocol, drifting)
    assert row.block_runs == 10  # pilot: the first (fast) run
    assert row.verdict == "unstable"
    assert 0.5 <= row.seconds < 0.5 + 10 * 1.3e-3 + 1e-9  # stopped at the first block past max_time
    assert row.model.ci_low_ms == pytest.approx(1.0) and row.model.ci_high_ms == pytest.approx(1.3)
    assert row.model.half_width is not None and row.model.half_width >= 0.15 / 1.3


def test_a_disturbance_at_the_start_is_outlasted() -> None:
    # the first three blocks are slow, then the host is quiet: more blocks push them out of the interval
    def settling(i: int) -> int:
        return int((1.5 if i < 30 else 1.0) * MS)

    row, _ = _run(Protocol(runs=5, warmup=0, min_time=0.15, max_time=2.0), settling)
    assert row.verdict == "stable" and row.model.half_width == 0.0
    # 3 slow blocks (the pilot run was the first slow run): 14 blocks give [x(3), x(12)], which holds a slow one;
    # 15 give [x(4), x(12)] (coverage 96.5 %), all quiet
    assert row.seconds > 0.15 and row.blocks == 15


def test_baseline_runs_alternate_and_the_ratio_has_an_interval() -> None:
    protocol = Protocol(runs=8, warmup=0, min_time=0.0, max_time=0.0)
    row, log = _run(protocol, _constant(1.0), _constant(2.0))
    timed = log[2:]  # after one pilot round A,B
    assert timed[:8] == ["A", "B", "B", "A", "A", "B", "B", "A"]
    assert timed.count("A") == timed.count("B") == row.model.runs == row.baseline.runs
    assert row.ratio == pytest.approx(0.5) and row.ratio_low == pytest.approx(0.5)
    assert row.ratio_high == pytest.approx(0.5) and row.ratio_half_width == 0.0


def test_drift_that_hits_both_models_leaves_the_ratio_settled() -> None:
    def drift(base: float) -> Callable[[int], int]:
        return lambda i: int(base * (1.0 if (i // 10) % 2 == 0 else 1.4) * MS)

    protocol = Protocol(runs=5, warmup=0, min_time=0.1, max_time=0.3)
    row, _ = _run(protocol, drift(1.0), drift(2.0))
    assert row.verdict == "unstable"
    assert row.ratio_half_width == pytest.approx(0.0, abs=1e-9) and row.ratio == pytest.approx(0.5)
    assert row.reason == "medians within +-{:.1f} %, not +-2 %, after 1 s".format(100 * row.model.half_width)
    result = BenchResult(rows=(row,), memory_mb=0.0, baseline_memory_mb=0.0, profile=None, protocol=protocol,
                         run=RunInfo("CPUExecutionProvider", "1", "cpu", 2, "cpu"), load_average=(3.0, 3.5), cpus=2)
    warning = noise_warning(result)
    assert warning == ("unstable latency, the host was noisy (load average 3.0 on 2 CPUs): batch 1: "
                       f"{row.reason}; rerun, or try fewer --threads, --no-spin or a longer --max-time")
    report = result.as_dict()
    assert report["unstable"] == [1] and report["warning"] == warning
    assert report["rows"][0]["verdict"] == "unstable" and report["protocol"]["max_time"] == 0.3


def test_a_settled_figure_on_a_busy_host_is_unstable(tmp_path: Path) -> None:
    quick = Protocol(runs=5, warmup=0, min_time=0.0, max_time=0.0)
    def drifting(i: int) -> int:
        return int((1.0 if (i // 10) % 2 == 0 else 1.3) * MS)

    busy_drift, _ = _run(Protocol(runs=5, warmup=0, min_time=0.1, max_time=1.0), drifting,
                         host=FakeHost(tmp_path / "stat0", others=0.5))
    assert busy_drift.verdict == "unstable" and busy_drift.seconds < 0.1 + 10 * 1.3e-3  # stopped at min_time
    assert busy_drift.reason is not None and busy_drift.reason.startswith("medians within")
    assert busy_drift.reason.endswith(" and other processes used 50 % of the CPU time")
    busy, _ = _run(quick, _constant(1.0), host=FakeHost(tmp_path / "stat", others=0.5))
    assert busy.model.half_width == 0.0 and busy.verdict == "unstable"
    assert busy.others == pytest.approx(0.5, abs=0.01) and busy.steal == 0.0
    assert busy.reason == "other processes used 50 % of the CPU time"
    quiet, _ = _run(quick, _constant(1.0), host=FakeHost(tmp_path / "stat2", others=0.02))
    assert quiet.verdict == "stable" and quiet.reason is None and quiet.others == pytest.approx(0.02, abs=0.01)
    result = BenchResult(rows=(quiet,), memory_mb=0.0, baseline_memory_mb=None, profile=None, protocol=quick,
                         run=RunInfo("CPUExecutionProvider", "1", "cpu", 2, "cpu"))
    assert noise_warning(result) is None and result.as_dict()["unstable"] == []
    both = BenchResult(rows=(quiet, busy), memory_mb=0.0, baseline_memory_mb=None, profile=None, protocol=quick,
                       run=RunInfo("CPUExecutionProvider", "1", "cpu", 2, "cpu"))
    assert noise_warning(both) == ("unstable latency, the host was noisy: batch 1: other processes used 50 % of the "
                                   "CPU time; rerun when the host is quiet")


@pytest.mark.parametrize(("n", "k", "coverage"), [(6, 1, 1 - 2 / 64), (10, 2, 1 - 2 * 11 / 1024),
                                                  (16, 4, 1 - 2 * (1 + 16 + 120 + 560) / 2**16)])
def test_median_interval_uses_binomial_order_statistics(n: int, k: int, coverage: float) -> None:
    values = list(np.random.default_rng(n).permutation(np.arange(1.0, n + 1)))
    interval = median_interval(values)
    assert (interval.low, interval.high) == (float(k), float(n - k + 1))
    assert interval.coverage == pytest.approx(coverage) and interval.coverage >= 0.95
    assert interval.half_width == pytest.approx((n - 2 * k + 1) / 2 / float(np.median(values)))


def test_median_interval_of_thousands_of_blocks_matches_the_normal_approximation() -> None:
    n = 5000
    interval = median_interval(list(np.arange(float(n))))
    k = int(interval.low) + 1  # values 0..n-1: x(k) = k - 1
    assert abs(k - (n / 2 - 1.96 * np.sqrt(n) / 2)) < 2 and interval.high == n - k
    assert 0.95 <= interval.coverage < 0.952


def test_too_few_blocks_never_count_as_stable() -> None:
    five = median_interval([1.0] * 5)
    assert five.half_width == 0.0 and five.coverage == pytest.approx(1 - 2 / 32) and not five.within(0.5)
    assert median_interval([1.0] * 6).within(0.0)
    assert not Interval(1.0, 1.1, 0.05, 0.99, 10).within(0.02)


def test_decide_waits_for_runs_and_blocks_even_past_max_time() -> None:
    protocol = Protocol(runs=100, min_time=1.0, max_time=2.0)
    quiet = [[1.0] * 8]
    assert not decide(quiet, 99, 50.0, protocol).stop
    assert not decide([[1.0] * 5], 100, 50.0, protocol).stop
    assert not decide(quiet, 100, 0.9, protocol).stop  # min_time not reached
    assert decide(quiet, 100, 1.0, protocol).verdict == "stable"
    noisy = [[1.0, 1.3] * 4]
    assert not decide(noisy, 100, 1.9, protocol).stop
    assert decide(noisy, 100, 2.0, protocol).verdict == "unstable"
    assert not decide([*noisy, *quiet], 100, 3.9, protocol).stop  # two sessions: the times count double
    assert decide([*noisy, *quiet], 100, 4.0, protocol).verdict == "unstable"
    assert not decide(noisy, 100, 0.9, protocol, busy=True).stop
    assert decide(noisy, 100, 1.0, protocol, busy=True).verdict == "unstable"  # a busy host: no extension


def test_block_size_fills_min_time_with_the_target_number_of_blocks() -> None:
    protocol = Protocol(runs=50, min_time=2.0, blocks=10)
    assert block_size(1.4 * MS, protocol, 1) == 142  # 2 s / (10 x 1.4 ms)
    assert block_size(150 * MS, protocol, 2) == 5  # the 50 runs need 5 per block
    assert block_size(5e9, protocol, 1) == 5


@pytest.mark.parametrize(("kwargs", "flag"), [({"runs": 0}, "--runs 0"), ({"warmup": -1}, "--warmup -1"),
                                              ({"min_time": -1.0}, "--min-time -1.0"),
                                              ({"min_time": math.nan}, "--min-time nan"),
                                              ({"min_time": 3.0, "max_time": 2.0}, "--max-time 2.0"),
                                              ({"tolerance": 0.0}, "--tolerance 0.0"),
                                              ({"tolerance": 1.5}, "--tolerance 1.5"), ({"blocks": 3}, "blocks 3")])
def test_protocol_rejects_bad_settings(kwargs: dict[str, float], flag: str) -> None:
    with pytest.raises(DataError) as info:
        Protocol(**kwargs)  # type: ignore[arg-type]
    assert str(info.value).startswith(flag) and "\n" not in str(info.value)


def test_cpu_times_reads_proc_stat_and_host_use_splits_steal_and_others(tmp_path: Path) -> None:
    tick = os.sysconf("SC_CLK_TCK")
    stat = tmp_path / "stat"
    stat.write_text(f"cpu  {3 * tick} 0 {tick} {10 * tick} {tick} 0 0 {2 * tick} 0 0\ncpu0 1 2 3\n")
    times = cpu_times(stat)
    assert times is not None
    assert (times.steal, times.busy, times.total) == pytest.approx((2.0, 6.0, 17.0))
    (tmp_path / "bad").write_text("intr 1 2 3\n")
    assert cpu_times(tmp_path / "bad") is None and cpu_times(tmp_path / "missing") is None
    before = CpuTimes(steal=1.0, busy=10.0, total=40.0, own=5.0)
    after = CpuTimes(steal=1.5, busy=18.0, total=50.0, own=9.0)  # 10 s: 8 busy = 0.5 steal + 4 own + 3.5 others
    use = host_use(before, after)
    assert use is not None and use.steal == pytest.approx(0.05) and use.others == pytest.approx(0.35)
    assert host_use(after, before) is None and host_use(None, after) is None
    assert busy_reason(use) == "other processes used 35 % of the CPU time" and busy_reason(None) is None
    assert busy_reason(HostUse(steal=0.2, others=0.0)) == "the hypervisor stole 20 % of it"
