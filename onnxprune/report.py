"""Reports passed from the pipeline to commands: plain data with ``to_json``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onnxprune.analyze.cost import Cost
from onnxprune.plan import Plan


@dataclass(frozen=True)
class GroupRow:
    """One line of the analyze table."""

    id: int
    channels: int
    unit_width: int
    macs: int
    params: int
    producers: int
    consumers: int
    frozen_reason: str | None


@dataclass(frozen=True)
class AnalyzeReport:
    """What ``onnxprune analyze`` shows."""

    model: str
    cost: Cost
    rows: tuple[GroupRow, ...]
    links: int

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "macs": self.cost.macs, "params": self.cost.params,
                "links_through_pads": self.links,
                "groups": [{**r.__dict__, "status": "frozen" if r.frozen_reason else
                            ("prunable" if r.channels > 1 else "single channel"),
                            "macs_share": r.macs / self.cost.macs if self.cost.macs else 0.0,
                            "params_share": r.params / self.cost.params if self.cost.params else 0.0}
                           for r in self.rows]}


@dataclass(frozen=True)
class PruneReport:
    """What ``onnxprune prune`` did."""

    source: str
    output: Path
    plan: Plan
    before: Cost
    after: Cost
    bytes_before: int
    bytes_after: int
    groups_pruned: int
    groups_frozen: int
    repaired_layers: int = 0
    repair_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "output": str(self.output), "plan": self.plan.to_json(),
                "repaired_layers": self.repaired_layers, "repair_seconds": self.repair_seconds,
                "before": {**self.before.__dict__, "bytes": self.bytes_before},
                "after": {**self.after.__dict__, "bytes": self.bytes_after},
                "groups_pruned": self.groups_pruned, "groups_frozen": self.groups_frozen}
