"""Pipeline: depth pruning (load -> residual branches -> calibration means -> rank -> drop -> save).

Each residual branch (:mod:`onnxprune.analyze.blocks`) is scored by how far the model's first
output moves from the original's on the calibration images when that branch alone is replaced by
its calibration mean (:mod:`onnxprune.rewrite.depth`): the distillation loss (KL at T = 1) for
class scores, the mean squared error otherwise. Branches are then dropped in order of that loss
per MAC saved until ``target`` of the model's MACs is removed (or ``count`` branches are
dropped), one per ``Add``, never two that share a node. The ranking is one-shot (each branch
alone); the report gives the loss of the combined drop as well. Dropping whole blocks saves
more latency per MAC than narrowing them (no narrow, overhead-bound convs), but removes a lot
of accuracy at once: fine-tune the result (``onnxprune finetune``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxprune.analyze import cost as analyze_cost
from onnxprune.analyze.blocks import ResidualBranch, find_branches
from onnxprune.deploy.opset import OpsetChoice
from onnxprune.errors import OutputError, PlanError
from onnxprune.evaluate import DataSpec
from onnxprune.evaluate.cost import disk_bytes
from onnxprune.io import save_model
from onnxprune.load import load, normalize, read
from onnxprune.pipeline.deploying import DeployOptions, check_deploy, finish, run_metadata
from onnxprune.pipeline.pruning import calibration_feeds
from onnxprune.plan import Plan
from onnxprune.analyze.cost import Cost
from onnxprune.rewrite.capture import make_session, run_batches
from onnxprune.rewrite.depth import drop_branches

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class BranchRow:
    """One residual branch: where it is, what it costs, how much dropping it alone hurts, whether it was dropped."""

    output: str
    add: str
    nodes: int
    macs: int
    loss: float
    dropped: bool


@dataclasses.dataclass(frozen=True)
class DepthReport:
    """What ``onnxprune prune-depth`` did (``loss``: first output's distance to the original, dropped set)."""

    source: str
    output: Path
    rows: tuple[BranchRow, ...]
    before: Cost
    after: Cost
    bytes_before: int
    bytes_after: int
    loss: float
    calib_images: int
    seconds: float
    opset: OpsetChoice | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"source": self.source, "output": str(self.output), "loss": self.loss,
                "calib_images": self.calib_images, "seconds": self.seconds,
                "opset": self.opset.to_json() if self.opset else None,
                "before": {**self.before.__dict__, "bytes": self.bytes_before},
                "after": {**self.after.__dict__, "bytes": self.bytes_after},
                "branches": [dataclasses.asdict(r) for r in self.rows]}


def _distance(outputs: np.ndarray, reference: np.ndarray) -> float:
    """KL(softmax(reference) || softmax(outputs)) per sample for 2-D scores, else the mean squared error."""
    if outputs.ndim != 2:
        return float(np.mean((outputs.astype(np.float64) - reference) ** 2))

    def log_softmax(z: np.ndarray) -> np.ndarray:
        z = z.astype(np.float64) - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    target = log_softmax(reference)
    return float(np.mean(np.sum(np.exp(target) * (target - log_softmax(outputs)), axis=1)))


def _first_output(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], threads: int) -> np.ndarray:
    session = make_session(model, threads)
    name = model.graph.output[0].name
    count = len(next(iter(feeds.values())))
    return np.concatenate([session.run([name], {k: v[i:i + 200] for k, v in feeds.items()})[0]
                           for i in range(0, count, 200)])


def branch_means(model: onnx.ModelProto, branches: Sequence[ResidualBranch], feeds: Mapping[str, np.ndarray],
                 threads: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Each branch output's mean over the calibration batch (shape ``(1, *shape[1:])``) and the first output."""
    names = [b.output for b in branches]
    first = model.graph.output[0].name
    sums: dict[str, np.ndarray] = {}
    reference: list[np.ndarray] = []
    count = 0
    for _, values in run_batches(model, feeds, [*names, first], batch_size=100, threads=threads):
        for name, value in zip(names, values):
            sums[name] = sums.get(name, 0.0) + value.astype(np.float64).sum(axis=0, keepdims=True)
        reference.append(values[-1])
        count += len(values[-1])
    return {n: (s / count).astype(np.float32) for n, s in sums.items()}, np.concatenate(reference)


def choose(branches: Sequence[ResidualBranch], losses: Sequence[float], total_macs: int, *,
           target: float | None, count: int | None) -> list[int]:
    """Indices of the branches to drop: lowest loss per MAC first, until ``target`` of the MACs or ``count`` branches."""
    order = sorted(range(len(branches)), key=lambda k: (losses[k] / max(branches[k].macs, 1), k))
    chosen: list[int] = []
    used: set[str] = set()
    adds: set[str] = set()
    removed = 0
    for k in order:
        if (count is not None and len(chosen) >= count) or (target is not None and removed >= target * total_macs):
            break
        b = branches[k]
        if b.add in adds or used.intersection(b.nodes):
            continue
        chosen.append(k)
        used.update(b.nodes)
        adds.add(b.add)
        removed += b.macs
    return sorted(chosen)


def prune_depth_file(path: str | os.PathLike[str], output: str | os.PathLike[str], *, calib: DataSpec,
                     target: float | None = None, count: int | None = None, threads: int = 2,
                     deploy: DeployOptions | None = None,
                     on_branch: Callable[[int, int], None] | None = None) -> DepthReport:
    """Drop residual branches of ``path`` (see the module docstring) and save atomically to ``output``.

    Args:
        path: The model (never modified).
        output: Where to write the result.
        calib: Calibration data (its ``val_split`` images rank the branches and give the means).
        target: Fraction of the model's MACs to remove, in (0, 1).
        count: Number of branches to drop instead of ``target``.
        threads: ONNX Runtime threads.
        deploy: Opset and simplification of the written model.
        on_branch: Progress callback (branches scored, branches in all).

    Raises:
        PlanError: neither or both of ``target`` / ``count``, out of range, or no residual branch.
        OutputError: ``output`` is the input.
    """
    started = time.perf_counter()
    if (target is None) == (count is None):
        raise PlanError("pass one of --target (fraction of MACs to remove) or --blocks (branches to drop)")
    if (target is not None and not 0.0 < target < 1.0) or (count is not None and count < 1):
        raise PlanError("--target takes a fraction in (0, 1), --blocks a positive number")
    source, destination = Path(path).resolve(), Path(output).resolve()
    if source == destination:
        raise OutputError(f"-o {output} is the input model; choose another output path (the input is never modified)")
    deploy = deploy or DeployOptions()
    original = read(source, interface_only=True)
    check_deploy(original, deploy, np.random.default_rng(calib.seed))
    model = load(source)
    branches = find_branches(model)
    if not branches:
        raise PlanError(f"{source.name} has no residual branch (an Add whose one input is a closed sub-graph with a "
                        "Conv/Gemm/MatMul); depth pruning does not apply, use prune or compress")
    feeds = calibration_feeds(source, calib, threads=threads)
    means, reference = branch_means(model.proto, branches, feeds, threads)
    losses = []
    for k, b in enumerate(branches):
        dropped = drop_branches(model.proto, [b], means)
        losses.append(_distance(_first_output(dropped, feeds, threads), reference))
        if on_branch is not None:
            on_branch(k + 1, len(branches))
    before = analyze_cost.model_cost(model)
    chosen = choose(branches, losses, before.macs, target=target, count=count)
    pruned = drop_branches(model.proto, [branches[k] for k in chosen], means)
    loss = _distance(_first_output(pruned, feeds, threads), reference)
    final, opset = finish(original, pruned, deploy, run_metadata("prune-depth", Plan(), target=target, blocks=len(chosen),
                                                              dropped=",".join(branches[k].output for k in chosen)),
                      np.random.default_rng(calib.seed))
    saved = save_model(final, destination)
    after = analyze_cost.model_cost(normalize(final, name=destination.name))
    rows = tuple(BranchRow(output=b.output, add=b.add, nodes=len(b.nodes), macs=b.macs, loss=losses[k],
                           dropped=k in chosen) for k, b in enumerate(branches))
    return DepthReport(source=str(source), output=saved, rows=rows, before=before, after=after,
                       bytes_before=disk_bytes(source), bytes_after=disk_bytes(saved), loss=loss,
                       calib_images=len(reference), seconds=time.perf_counter() - started, opset=opset)
