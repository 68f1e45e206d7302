"""Run JSON files (``compress --json``, ``bench --json``) read, checked and normalized for the page.

Every field a section uses is optional except the costs: a section whose data a run lacks says
"not measured in this run" rather than failing, so JSON files from older or newer versions (bits per
layer, op-type profiles) render with what they hold.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxprune.errors import DataError

logger = logging.getLogger(__name__)

COSTS: tuple[str, ...] = ("macs", "params", "bops", "bytes")
"""Costs a run JSON may give ``before`` and ``after`` (``macs`` is required)."""


@dataclass(frozen=True)
class Candidate:
    """One searched episode: reward, accuracy (percent) and costs."""

    index: int
    reward: float
    accuracy: float | None
    macs: int
    latency: float | None = None


@dataclass(frozen=True)
class OpRow:
    """Kernel milliseconds of one op type before (baseline) and after (compressed model)."""

    op_type: str
    before_ms: float
    after_ms: float
    before_share: float
    after_share: float


@dataclass(frozen=True)
class LatencyRow:
    """Measured median milliseconds at one batch size (``bench --baseline``)."""

    batch: int
    before_ms: float | None
    after_ms: float
    stable: bool


@dataclass(frozen=True)
class RunView:
    """One run as the page shows it (see :func:`view`); missing data is empty or ``None``.

    ``groups``: ``(id, channels before, after)``; ``frozen``: ``(id, channels, MACs, reason)``;
    ``bits``: layer -> ``(w, a)``; ``chosen``: the saved episode; ``predicted_ms``: the latency
    table's Conv/Gemm milliseconds before and after; ``measured``/``profile``: from ``bench --json``;
    ``where``: where candidates were scored (and ``timed_on``: where the bench ran).
    """

    label: str
    raw: Mapping[str, Any]
    before: Mapping[str, int | None]
    after: Mapping[str, int | None]
    accuracy_before: float | None
    accuracy_after: float | None
    groups: tuple[tuple[int, int, int], ...]
    frozen: tuple[tuple[int, int, int, str], ...]
    bits: Mapping[str, tuple[int, int]]
    history: tuple[Candidate, ...]
    chosen: int | None
    predicted_ms: tuple[float, float] | None
    measured: tuple[LatencyRow, ...] = ()
    profile: tuple[OpRow, ...] = ()
    where: Mapping[str, Any] = field(default_factory=dict)
    bench_note: str | None = None
    command: tuple[str, ...] = ()
    versions: Mapping[str, str] = field(default_factory=dict)

    @property
    def quantized(self) -> bool:
        """True when some layer keeps fewer than 32 bits."""
        return any(min(b) < 32 for b in self.bits.values())


def read_json(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    """The JSON object in ``path``; a missing or malformed file is a one-line :class:`DataError`."""
    file = Path(path)
    try:
        obj = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{file}: no such {what} file; pass the file `onnxprune compress --json` wrote") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{file}: not a readable JSON {what} ({str(exc).splitlines()[0]}); "
                        "pass the file `onnxprune compress --json` wrote") from None
    if not isinstance(obj, dict):
        raise DataError(f"{file}: the JSON is not an object; pass the file `onnxprune compress --json` wrote")
    return obj


def _costs(run: Mapping[str, Any], side: str, label: str) -> dict[str, int | None]:
    costs = run.get(side)
    if not isinstance(costs, Mapping) or not isinstance(costs.get("macs"), (int, float)):
        raise DataError(f"{label}: no '{side}' costs with 'macs': not a compress --json report; "
                        "pass the file `onnxprune compress --json` wrote")
    return {k: int(costs[k]) if isinstance(costs.get(k), (int, float)) else None for k in COSTS}


def _bits(run: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """Bits per layer from ``bits`` (node -> [w, a]) or the ``quant`` BOPs report's layers."""
    bits = run.get("bits")
    if isinstance(bits, Mapping) and bits:
        return {str(k): (int(v[0]), int(v[1])) for k, v in bits.items()}
    quant = run.get("quant")
    layers = quant.get("layers") if isinstance(quant, Mapping) else None
    return {str(r["node"]): (int(r["w_bits"]), int(r["a_bits"])) for r in layers or ()}


def _history(run: Mapping[str, Any]) -> tuple[Candidate, ...]:
    rows = run.get("history") or ()
    return tuple(Candidate(index=int(r.get("index", i)), reward=float(r["reward"]),
                           accuracy=None if r.get("accuracy") is None else 100.0 * float(r["accuracy"]),
                           macs=int(r["macs"]), latency=r.get("latency")) for i, r in enumerate(rows))


def _profile(rows: Sequence[Mapping[str, Any]] | None) -> tuple[OpRow, ...]:
    return tuple(OpRow(op_type=str(r["op_type"]), before_ms=float(r["baseline_ms"]), after_ms=float(r["model_ms"]),
                       before_share=float(r.get("baseline_share", 0.0)), after_share=float(r.get("model_share", 0.0)))
                 for r in rows or ())


def _measured(bench: Mapping[str, Any]) -> tuple[LatencyRow, ...]:
    return tuple(LatencyRow(batch=int(r["batch"]), after_ms=float(r["model"]["median_ms"]),
                            before_ms=float(r["baseline"]["median_ms"]) if r.get("baseline") else None,
                            stable=r.get("verdict", "stable") == "stable") for r in bench.get("rows") or ())


def view(run: Mapping[str, Any], label: str, bench: Mapping[str, Any] | None = None) -> RunView:
    """Normalize a ``compress --json`` dict (and an optional ``bench --json`` dict of its model).

    Raises:
        DataError: ``run`` lacks the costs every report shows, or a field has the wrong type.
    """
    before, after = _costs(run, "before", label), _costs(run, "after", label)
    bench = bench if bench is not None else run.get("bench")
    try:
        groups = tuple((int(g["id"]), int(g["before"]), int(g["after"])) for g in run.get("groups") or ())
        frozen = tuple((int(g["id"]), int(g.get("channels", 0)), int(g.get("macs", 0)), str(g.get("reason", "")))
                       for g in run.get("frozen") or ())
        latency = run.get("latency_ms")
        best = run.get("best")
        where = dict(run.get("run") or {}) or ({"provider": run["provider"]} if run.get("provider") else {})
        profile = _profile(run.get("profile_change"))
        measured: tuple[LatencyRow, ...] = ()
        note = None
        if isinstance(bench, Mapping):
            measured, note = _measured(bench), bench.get("warning")
            profile = profile or _profile(bench.get("profile_change"))
            where = {**where, "timed_on": dict(bench.get("run") or {})}
        return RunView(label=label, raw=run, before=before, after=after,
                       accuracy_before=run.get("accuracy_before"), accuracy_after=run.get("accuracy_after"),
                       groups=groups, frozen=frozen, bits=_bits(run), history=_history(run),
                       chosen=int(best["index"]) if isinstance(best, Mapping) and "index" in best else None,
                       predicted_ms=(float(latency[0]), float(latency[1])) if latency else None,
                       measured=measured, profile=profile, where=where, bench_note=note,
                       command=tuple(str(a) for a in run.get("command") or ()),
                       versions={str(k): str(v) for k, v in (run.get("versions") or {}).items()})
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise DataError(f"{label}: malformed run JSON ({type(exc).__name__}: {exc}); "
                        "pass the file `onnxprune compress --json` wrote") from None
