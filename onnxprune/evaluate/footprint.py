"""Footprint of a session: resident memory it adds, and an ORT profile of where its time goes.

Contract:
    requires: a :class:`~onnxprune.evaluate.runtime.Runtime` and a model it can load.
    guarantees: the memory figure is the growth of this process's RSS across creating the
    session and one run; the profile comes from a separate, profiling session (the timed one
    is never slowed down), and its trace file is removed. Op-type shares are of the kernel time
    of every op type (they sum to 1 over all of them); two profiles compare op by op.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import sys
import tempfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onnxprune.evaluate.runtime import ModelSource, Runtime

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OpTime:
    """Total kernel time of one op type over the profiled runs."""

    op_type: str
    total_ms: float
    share: float
    calls: int


@dataclass(frozen=True)
class OpChange:
    """Kernel time of one op type in the baseline (before) and the model (after), same runs and batch.

    ``*_ms`` is 0 and ``*_share`` 0 where that model has no such op; ``ratio`` is model / baseline
    milliseconds, ``None`` when either is 0.
    """

    op_type: str
    baseline_ms: float
    baseline_share: float
    model_ms: float
    model_share: float
    ratio: float | None


def rss_bytes() -> int:
    """Resident memory of this process now (Linux ``/proc``; else the peak so far)."""
    statm = Path("/proc/self/statm")
    if statm.is_file():
        return int(statm.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def profile_ops(runtime: Runtime, model: ModelSource, feeds: Mapping[str, np.ndarray], *, runs: int,
                top: int | None = None) -> tuple[OpTime, ...]:
    """Profile ``runs`` runs in a separate session and return the ``top`` op types by kernel time
    (``None``: every op type), most time first.

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


def compare_profiles(baseline: Sequence[OpTime], model: Sequence[OpTime], *, top: int | None = None
                     ) -> tuple[OpChange, ...]:
    """Op types of two full profiles side by side, the ``top`` (``None``: all) with the most time in either."""
    before = {op.op_type: op for op in baseline}
    after = {op.op_type: op for op in model}
    none = OpTime("", 0.0, 0.0, 0)
    rows = []
    for name in set(before) | set(after):
        b, a = before.get(name, none), after.get(name, none)
        ratio = a.total_ms / b.total_ms if a.total_ms > 0 and b.total_ms > 0 else None
        rows.append(OpChange(name, b.total_ms, b.share, a.total_ms, a.share, ratio))
    rows.sort(key=lambda r: (-max(r.baseline_ms, r.model_ms), r.op_type))
    return tuple(rows[:top])
