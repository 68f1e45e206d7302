"""What ``compress`` writes and reports beside the best model: finalists, frozen groups, episodes, latency.

Contract:
    requires: the search's finished state and finalists (:mod:`onnxprune.pipeline.compressing`).
    guarantees: :func:`write_finalists` finishes and writes the next-best finalists like the best
    one (``<out>.finalist<k>.onnx``); the other functions turn search results into the report's
    plain rows (:mod:`onnxprune.report`) without changing anything on disk.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxprune.analyze import cost as analyze_cost
from onnxprune.analyze.types import Analysis
from onnxprune.io import save_model
from onnxprune.pipeline.deploying import DeployOptions, finish, run_metadata
from onnxprune.pipeline.latency_fit import LatencySettings, table_ms
from onnxprune.pipeline.pruning import RepairOutcome
from onnxprune.report import EpisodeCost, FrozenGroup
from onnxprune.search.baselines import SearchState
from onnxprune.search.env import Episode
from onnxprune.search.space import SearchSpace

logger = logging.getLogger(__name__)


def write_finalists(original: onnx.ModelProto, pool: Sequence[Episode], pick: int, fixed: RepairOutcome, count: int,
                    deploy: DeployOptions, target: Path, *, metadata: Mapping[str, Any], seed: int,
                    proto_limit: int) -> tuple[Path, ...]:
    """Finish and save the ``count - 1`` best finalists after ``pick`` as ``<out>.finalist<k>.onnx``."""
    scores = [s if s is not None else (pool[k].accuracy or -1.0) for k, s in enumerate(fixed.finalists)]
    ranked = [k for k in sorted(range(len(fixed.models)), key=lambda k: (-(scores[k] if k < len(scores) else -1), k))
              if k != pick][:count - 1]
    files = []
    for rank, k in enumerate(ranked, start=1):
        score = scores[k] if k < len(scores) else None
        accuracy = f"{100.0 * score:.2f}" if score is not None and score >= 0 else None
        final, _ = finish(original, fixed.models[k], deploy, run_metadata("compress", pool[k].plan, accuracy=accuracy,
                                                                          **metadata),
                          np.random.default_rng(seed), proto_limit=proto_limit)
        files.append(save_model(final, target.with_name(f"{target.stem}.finalist{rank}.onnx"), proto_limit=proto_limit))
    return tuple(files)


def latency_summary(space: SearchSpace, keeps: Sequence[int], latency: LatencySettings | None
                    ) -> dict[str, object] | None:
    """Table and predicted milliseconds of the input and the chosen candidate, the fit and the width menu."""
    if latency is None:
        return None
    summary: dict[str, object] = {"batch": latency.batch, "width_menu": [list(m) for m in space.menu]
                                  if space.menu is not None else None, "menu_precision": latency.precision}
    if space.latency is not None:
        correction = space.latency.correction
        summary.update(table_ms=[table_ms(space, space.sizes), table_ms(space, keeps)],
                       predicted_ms=[space.measure(space.sizes, "latency"), space.measure(keeps, "latency")],
                       correction=correction.to_json() if correction is not None else None)
    return summary


def frozen_groups(analysis: Analysis) -> tuple[FrozenGroup, ...]:
    """The analysis's frozen groups with their MACs and reason."""
    shares = analyze_cost.group_shares(analysis)
    return tuple(FrozenGroup(id=g.id, channels=g.size, macs=shares[g.id][0], reason=g.frozen_reason)
                 for g in analysis.groups if g.frozen_reason)


def episode_costs(state: SearchState, seen: Mapping[int, Episode]) -> tuple[EpisodeCost, ...]:
    """Every episode of ``state.history``; params and latency from ``seen`` (episodes run in this process)."""
    rows = []
    for index, (reward, accuracy, macs) in enumerate(state.history):
        episode = seen.get(index)
        rows.append(EpisodeCost(index=index, reward=reward, accuracy=accuracy, macs=macs,
                                params=episode.params if episode else None,
                                latency=episode.latency if episode else None))
    return tuple(rows)
