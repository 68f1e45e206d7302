"""The pruning plan: which units of each group to keep. Frozen and JSON round-trippable."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from onnxprune.errors import PlanError


@dataclass(frozen=True)
class Plan:
    """Kept channel (unit) indices per group; groups not named keep everything.

    Attributes:
        keep: group id -> sorted kept unit indices.
        bits: layer (node name) -> (weight bits, activation bits); empty for float.
    """

    keep: Mapping[int, tuple[int, ...]] = field(default_factory=lambda: MappingProxyType({}))
    bits: Mapping[str, tuple[int, int]] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        object.__setattr__(self, "keep", MappingProxyType(
            {int(g): tuple(sorted(int(i) for i in idx)) for g, idx in self.keep.items()}))
        object.__setattr__(self, "bits", MappingProxyType(
            {str(k): (int(w), int(a)) for k, (w, a) in self.bits.items()}))

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"keep": {str(g): list(v) for g, v in self.keep.items()},
                "bits": {k: list(v) for k, v in self.bits.items()}}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Plan:
        """Inverse of :meth:`to_json`; raises PlanError on malformed input."""
        try:
            keep = {int(g): tuple(int(i) for i in v) for g, v in obj.get("keep", {}).items()}
            bits = {str(k): (int(v[0]), int(v[1])) for k, v in obj.get("bits", {}).items()}
        except (TypeError, ValueError, IndexError, AttributeError) as exc:
            raise PlanError(f"malformed plan ({exc}); expected {{'keep': {{group: [indices]}}}}") from exc
        return cls(keep=keep, bits=bits)

    @classmethod
    def read(cls, path: str) -> Plan:
        """Read a plan JSON file."""
        try:
            with open(path, encoding="utf-8") as fh:
                return cls.from_json(json.load(fh))
        except (OSError, json.JSONDecodeError) as exc:
            raise PlanError(f"cannot read plan {path} ({exc}); pass a JSON file written by onnxprune") from exc


#: The CLI's default ``--round-to``. Channel counts that are multiples of 8 are what ONNX Runtime's
#: kernels run fast; free counts often run slower than the unpruned model at the same MACs.
#: Measured at 50 % of MACs removed (uniform ratios, reconstructed; ``tools/bench_round_to.py``,
#: ``tools/bench_gpu.py``): ResNet-56 on an H200 (CUDA EP), free widths 1.20x / 0.99x / 1.10x the
#: original's latency at batch 1 / 64 / 256, multiples of 8 1.04x / 0.82x / 0.86x; on a 2-vCPU
#: EPYC (1 thread) 0.87x / 0.93x vs 0.80x / 0.79x at batch 1 / 32; ResNet-20 0.83x vs 0.72x.
#: Accuracy cost: ResNet-20 79.86 -> 79.76 %, ResNet-56 82.83 -> 80.66 % (test top-1, uniform).
ROUND_TO = 8


def keep_count(size: int, ratio: float, round_to: int = 1) -> int:
    """Channels kept when removing ``ratio`` of ``size``, rounded to a multiple of ``round_to``.

    At least one channel (or ``round_to``) stays; a group smaller than ``round_to`` is kept whole.
    """
    if not 0.0 <= ratio < 1.0:
        raise PlanError(f"--ratio {ratio} is outside [0, 1); pass the fraction of channels to remove")
    if round_to < 1:
        raise PlanError(f"--round-to {round_to} must be >= 1")
    return round_width(max(1, size - int(np.floor(ratio * size + 1e-9))), size, round_to)


def round_width(keep: int, size: int, round_to: int) -> int:
    """``keep`` channels of a ``size``-channel group moved to the nearest multiple of ``round_to``.

    The whole group is a width too: a group of 100 channels asked to keep 100 (or 99) keeps 100,
    not 96, so a group the policy leaves alone is never cut by the rounding. Groups of
    ``round_to`` channels or fewer stay whole.
    """
    if round_to <= 1:
        return keep
    if size <= round_to:
        return size
    nearest = min(size, max(round_to, int(round(keep / round_to)) * round_to))
    return size if abs(size - keep) < abs(nearest - keep) else nearest


def ratio_plan(scores: Sequence[np.ndarray], prunable: Sequence[bool], ratio: float, round_to: int = 1) -> Plan:
    """Remove ``ratio`` of the units of every prunable group, keeping the highest scores.

    Args:
        scores: Per-group unit scores (e.g. :func:`onnxprune.analyze.importance.weight_importance`).
        prunable: Per-group flag.
        ratio: Fraction in [0, 1) of each group's channels to remove.
        round_to: Kept counts are multiples of this (where the group is large enough).
    """
    keep: dict[int, tuple[int, ...]] = {}
    for gid, (score, ok) in enumerate(zip(scores, prunable)):
        count = keep_count(score.size, ratio, round_to)
        if not ok or count == score.size:
            continue
        order = np.argsort(-score, kind="stable")[:count]
        keep[gid] = tuple(sorted(int(i) for i in order))
    return Plan(keep=keep)
