"""The only place stages meet: load -> analyze -> (embed -> search) -> rewrite -> evaluate -> report.

Commands in ``onnxprune/commands`` call these functions; stages never call each other
except through the plain dataclasses they return. One module per job keeps files small:
:mod:`.evaluating` (eval, bench, cost), :mod:`.pruning` (analyze, prune, repair),
:mod:`.compressing` (policy search and ``compress``), :mod:`.latency_first` (measured latency
target and int8 after pruning; :mod:`.latency_fit`, :mod:`.width_menu`), :mod:`.quantizing` (``quantize``),
:mod:`.finetuning` (``finetune``, ``compress --finetune-epochs``),
:mod:`.reporting` (HTML reports).

Names are imported on first use (PEP 562), so a worker process that only needs
:mod:`.candidates` does not pay for the search agents' imports (torch, torch-geometric).
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES: dict[str, str] = {
    "AGENTS": "compressing", "compress_file": "compressing", "DeployOptions": "deploying",
    "bench_model": "evaluating", "evaluate_model": "evaluating", "model_cost": "evaluating",
    "affected_consumers": "pruning", "analyze_file": "pruning", "calibration_feeds": "pruning",
    "group_scores": "pruning", "prune_file": "pruning", "repair_pruned": "pruning",
    "FinetuneSettings": "finetuning", "finetune_compressed": "finetuning", "finetune_file": "finetuning",
    "finetune_finalists": "finetuning", "searched_path": "finetuning",
    "check_model_widths": "evaluating", "Int8Settings": "latency_first",
    "compress_latency_first": "latency_first", "quantize_tuned": "latency_first", "LatencySettings": "latency_fit",
    "QuantizeSettings": "quantizing", "quantize_file": "quantizing",
    "report_files": "reporting", "write_report": "reporting", "prune_depth_file": "depth",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    """Import ``name`` from its module on first use."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
