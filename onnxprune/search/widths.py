"""A measured width menu: per prunable group, only the widths the runtime runs fast.

Widths are not equally fast: ONNX Runtime's CPU kernels block channels by 8 or 16 (NCHWc,
AVX-512), int8 convolutions prefer multiples of 16 or 32, and a width that crosses no block
boundary saves MACs but no time. The menu is *measured*, never assumed: groups with the same
signature (same size, same member tensor shapes: e.g. the 9 inner groups of one ResNet stage)
form a *class*; for each candidate width (multiples of the space's rounding between the fewest
channels a group may keep and its size) every group of the class is cut to it, the whole model
is timed against the unpruned one (see :mod:`onnxprune.pipeline.width_menu`), and a width stays
on the menu only if it is faster than every larger width on the menu by at least ``tolerance``
of the model's time (a Pareto menu: a smaller width that is not faster only loses accuracy).
The full width is always on the menu. This module holds the pure parts; it times nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from onnxprune.analyze.types import Analysis
from onnxprune.errors import PlanError

logger = logging.getLogger(__name__)

#: A width must be at least this fraction of the unpruned model's time faster than every larger
#: width on the menu to stay (1 %: about the noise of a short alternating measurement on a quiet host).
TOLERANCE = 0.01


def candidate_widths(size: int, fewest: int, granule: int) -> tuple[int, ...]:
    """Widths a group of ``size`` channels may be timed at: multiples of ``granule`` from ``fewest``, and ``size``.

    Args:
        size: Channels of the group.
        fewest: Fewest channels the group may keep (``SearchSpace.min_keep``).
        granule: The space's rounding (1: every width).

    Raises:
        PlanError: ``granule`` below 1 or ``fewest`` outside ``[1, size]``.
    """
    if granule < 1 or not 1 <= fewest <= size:
        raise PlanError(f"width menu: granule {granule} / fewest {fewest} out of range for a group of {size}")
    start = -(-fewest // granule) * granule
    return tuple(sorted({*range(start, size, granule), size}))


def pareto_widths(times: Mapping[int, float], tolerance: float = TOLERANCE) -> tuple[int, ...]:
    """The widths of ``times`` (width -> model time relative to the unpruned model) worth keeping.

    Walking from the largest width down, a width is kept when it is faster than the fastest
    larger width kept so far by at least ``tolerance``; the largest width is always kept.

    Example:
        ``{64: 1.00, 56: 0.995, 48: 0.95, 40: 0.96, 32: 0.90}`` with ``tolerance=0.01`` keeps
        ``(32, 48, 64)``: 56 saves only 0.5 %, 40 is slower than 48.
    """
    if not times:
        raise PlanError("width menu: no widths were timed")
    kept: list[int] = []
    best = float("inf")
    for width in sorted(times, reverse=True):
        if not kept or times[width] < best - tolerance:
            kept.append(width)
            best = min(best, times[width])
    return tuple(sorted(kept))


def snap(width: int, menu: Sequence[int]) -> int:
    """The menu width nearest ``width`` (ties go to the larger width, which keeps more accuracy)."""
    return min(menu, key=lambda w: (abs(w - width), -w))


def group_classes(analysis: Analysis, group_ids: Sequence[int]) -> tuple[tuple[int, ...], ...]:
    """``group_ids`` partitioned by signature: equal size and equal member tensor shapes and axes.

    Groups of one class cost the same per channel wherever they sit, so one timing serves them all.
    """
    by_id = {g.id: g for g in analysis.groups}
    classes: dict[tuple[Any, ...], list[int]] = {}
    for gid in group_ids:
        group = by_id[gid]
        members = sorted((tuple(analysis.model.shapes.get(m.tensor) or ()), m.axis) for m in group.members)
        key = (group.size, tuple((tuple(-1 if d is None else d for d in s), a) for s, a in members))
        classes.setdefault(key, []).append(gid)
    return tuple(tuple(ids) for ids in classes.values())


@dataclass(frozen=True)
class ClassTiming:
    """Measured widths of one class of groups.

    Attributes:
        groups: Group ids of the class.
        size: Channels of each group.
        times: Width -> model time relative to the unpruned model, every group of the class at that width.
        menu: The widths kept (:func:`pareto_widths`).
    """

    groups: tuple[int, ...]
    size: int
    times: Mapping[int, float]
    menu: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"groups": list(self.groups), "size": self.size,
                "times": {str(w): t for w, t in sorted(self.times.items())}, "menu": list(self.menu)}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ClassTiming:
        """Inverse of :meth:`to_json`."""
        return cls(tuple(int(g) for g in obj["groups"]), int(obj["size"]),
                   {int(w): float(t) for w, t in obj["times"].items()}, tuple(int(w) for w in obj["menu"]))


@dataclass(frozen=True)
class WidthMenu:
    """Allowed widths per group, measured on one device.

    Attributes:
        device: Where it was measured (provider, CPU, threads, ORT version).
        batch: Batch size of the timed runs.
        precision: ``float32`` or ``int8`` (probe models quantized to QDQ before timing).
        granule: Candidate widths were multiples of this.
        classes: The timed classes.
    """

    device: str
    batch: int
    precision: str
    granule: int
    classes: tuple[ClassTiming, ...]

    def widths(self, group_id: int) -> tuple[int, ...]:
        """Allowed widths of ``group_id``, ascending.

        Raises:
            PlanError: the menu has no such group (measured for another model or space).
        """
        for timing in self.classes:
            if group_id in timing.groups:
                return timing.menu
        raise PlanError(f"the width menu has no group {group_id}; delete the .widths.json file to measure again")

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"device": self.device, "batch": self.batch, "precision": self.precision, "granule": self.granule,
                "classes": [c.to_json() for c in self.classes]}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> WidthMenu:
        """Inverse of :meth:`to_json`.

        Raises:
            PlanError: a malformed file.
        """
        try:
            return cls(str(obj["device"]), int(obj["batch"]), str(obj["precision"]), int(obj["granule"]),
                       tuple(ClassTiming.from_json(c) for c in obj["classes"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanError(f"malformed width menu ({exc}); delete the .widths.json file to measure again") from exc
