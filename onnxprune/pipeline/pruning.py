"""Pipeline: analyze and prune (load -> analyze -> importance -> rewrite -> repair -> save)."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx

from onnxprune.analyze import Analysis, analyze
from onnxprune.analyze import cost as analyze_cost
from onnxprune.analyze.cost import group_shares
from onnxprune.analyze.importance import consumer_inputs, importance
from onnxprune.errors import DataError, OutputError
from onnxprune.evaluate import DataSpec, Runtime, open_data
from onnxprune.evaluate.cost import disk_bytes
from onnxprune.io import save_model
from onnxprune.large import PROTOBUF_LIMIT
from onnxprune.load import load, normalize, read
from onnxprune.pipeline.deploying import DeployOptions, check_deploy, export_repo, finish, run_metadata
from onnxprune.plan import Plan, keep_count, ratio_plan
from onnxprune.quantize.layers import find_layers, stored_bits
from onnxprune.report import AnalyzeReport, GroupRow, LayerRow, PruneReport
from onnxprune.rewrite import prune_model
from onnxprune.rewrite.capture import channel_means
from onnxprune.rewrite.greedy import contribution_grams
from onnxprune.rewrite.prune import repair_plan, tensor_masks, unit_mask
from onnxprune.rewrite.reconstruct import ReconstructOptions, ReconstructReport, repair

logger = logging.getLogger(__name__)

def analyze_file(path: str | os.PathLike[str], *, input_shapes: Mapping[str, Sequence[int]] | None = None,
                 proto_limit: int = PROTOBUF_LIMIT) -> tuple[Analysis, AnalyzeReport]:
    """Load and analyze a model file; returns the analysis and its table rows.

    ``proto_limit``: byte size above which the model is handled in parts (:mod:`onnxprune.large`).
    """
    model = load(path, input_shapes=input_shapes, proto_limit=proto_limit)
    analysis = analyze(model)
    shares = group_shares(analysis)
    rows = tuple(GroupRow(id=g.id, channels=g.size, unit_width=g.unit_width, macs=shares[g.id][0],
                          params=shares[g.id][1], producers=len(g.producers), consumers=len(g.consumers),
                          frozen_reason=g.frozen_reason) for g in analysis.groups)
    stored = stored_bits(model.proto)
    quantizable = {q.node for q in find_layers(model.proto)}
    layers = tuple(LayerRow(node=n.name, op_type=n.op_type, macs=analyze_cost.node_macs(n, model.shapes.get),
                            w_bits=stored[n.name][0], a_bits=stored[n.name][1], quantizable=n.name in quantizable)
                   for n in model.proto.graph.node if n.name in stored)
    report = AnalyzeReport(model=str(path), cost=analyze_cost.model_cost(model), rows=rows,
                           links=len(analysis.links), layers=layers)
    return analysis, report


def _npz_count(path: Path) -> int | None:
    """Samples in an ``.npz``'s ``images`` (read from the array header only); None when unknown."""
    try:
        with zipfile.ZipFile(path) as archive, archive.open("images.npy") as member:
            major, _ = np.lib.format.read_magic(member)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, _ = read_header(member)  # the header only, no data
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    return int(shape[0]) if shape else None


def calibration_feeds(model: str | os.PathLike[str], data: DataSpec, *, threads: int | None = None
                      ) -> dict[str, np.ndarray]:
    """Load calibration inputs for ``model`` (``data.val_split`` samples, seeded) into memory.

    An ``.npz`` with fewer samples than ``data.val_split`` is used whole (logged).
    """
    if data.val_split is not None and data.path is not None and Path(data.path).is_file():
        count = _npz_count(Path(data.path))
        if count is not None and 0 < count < data.val_split:
            logger.info("calibration: %s has %d samples (< %d), using all", data.path, count, data.val_split)
            data = dataclasses.replace(data, val_split=None)
    session = Runtime("cpu", threads).session(model)
    parts: dict[str, list[np.ndarray]] = {}
    for batch in open_data(data, session.inputs).batches(1000):
        for name, value in batch.feeds.items():
            parts.setdefault(name, []).append(np.asarray(value))
    return {name: np.concatenate(values) for name, values in parts.items()}


def group_scores(analysis: Analysis, criterion: str, feeds: Mapping[str, np.ndarray] | None = None,
                 threads: int = 2, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Per-group unit scores; ``activation`` and ``greedy`` measure the consumers' inputs on ``feeds``."""
    means = grams = None
    if criterion == "activation" and feeds is not None:
        axes = {t: analysis.labels[t].axis for t in consumer_inputs(analysis)}
        means = channel_means(analysis.model.proto, feeds, axes, threads=threads)
    if criterion == "greedy" and feeds is not None:
        consumers = sorted({c for g in analysis.prunable_groups for c in g.consumers})
        grams = contribution_grams(analysis.model.proto, consumers, feeds, np.random.default_rng(seed),
                                   threads=threads)
    return importance(analysis, criterion, means, grams)


def affected_consumers(analysis: Analysis, plan: Plan) -> tuple[str, ...]:
    """Consumers whose input channels a plan removes (or zeroes, through a linked Pad)."""
    pruned = {gid for gid, keep in plan.keep.items() if len(keep) < analysis.groups[gid].size}
    pruned |= {link.out_group for link in analysis.links if link.in_group in pruned}
    return tuple(sorted({c for gid in pruned for c in analysis.groups[gid].consumers}))


def repair_pruned(analysis: Analysis, plan: Plan, pruned: onnx.ModelProto, feeds: Mapping[str, np.ndarray], *,
                  mode: str = "reconstruct", seed: int = 0, options: ReconstructOptions | None = None,
                  ) -> tuple[onnx.ModelProto, ReconstructReport]:
    """Re-fit (``reconstruct``) or bias-correct (``bias``) the layers that lost input channels."""
    masks = tensor_masks(analysis, unit_mask(analysis, plan))
    return repair(analysis.model.proto, pruned, affected_consumers(analysis, plan), masks, feeds,
                  np.random.default_rng(seed), mode=mode, options=options)


CANDIDATE_ROWS = 6144
"""Sampled output positions each layer of a candidate is fitted on (at least): few calibration
images get more positions each. ResNet-56, uniform 50 % MACs, 128 images: 10 positions per image
(1,280 rows) score 71.5 % on the reward images, 48 (6,144 rows) 82.6 %, 64 83.0 %."""


@dataclasses.dataclass(frozen=True)
class RepairSettings:
    """How ``compress`` repairs candidates.

    Attributes:
        calib: Calibration data (``val_split``: images used for the final repair).
        mode: ``reconstruct`` or ``bias``.
        candidate_images: When > 0, every candidate is also repaired on this many calibration
            images before it is scored (a fast mode; 0 repairs only the final best).
        options: Reconstruction settings.
    """

    calib: DataSpec
    mode: str = "reconstruct"
    candidate_images: int = 0
    options: ReconstructOptions = dataclasses.field(default_factory=ReconstructOptions)


@dataclasses.dataclass(frozen=True)
class RepairOutcome:
    """The final candidate of ``compress``: its score (fraction, None without data), repair time, repaired,
    and every finalist's score after the final repair."""

    accuracy: float | None
    seconds: float
    repaired: bool
    finalists: tuple[float | None, ...] = ()
    models: tuple[onnx.ModelProto, ...] = ()  # every finalist's final model, with ``keep_models``


def repairing_apply(analysis: Analysis, source: str | os.PathLike[str], repair: RepairSettings | None
                    ) -> Callable[[Plan], onnx.ModelProto]:
    """The candidate builder of ``compress``: prune, then repair on a small calibration subset if asked."""
    if repair is None or repair.candidate_images <= 0:
        return lambda plan: prune_model(analysis, plan)
    subset = dataclasses.replace(repair.calib, val_split=min(repair.candidate_images,
                                                             repair.calib.val_split or repair.candidate_images))
    feeds = calibration_feeds(source, subset, threads=repair.options.threads)
    images = max(len(next(iter(feeds.values()))), 1) if feeds else 1
    options = dataclasses.replace(repair.options, samples_per_image=max(
        repair.options.samples_per_image, -(-CANDIDATE_ROWS // images)))

    def apply(plan: Plan) -> onnx.ModelProto:
        pruned = prune_model(analysis, plan)
        return repair_pruned(analysis, plan, pruned, feeds, mode=repair.mode, seed=repair.calib.seed,
                             options=options)[0]

    return apply


def repair_best(analysis: Analysis, source: str | os.PathLike[str],
                finalists: Sequence[tuple[Plan, float | None]], repair: RepairSettings | None,
                score: Callable[[onnx.ModelProto], float] | None,
                quantize: Callable[[Plan, onnx.ModelProto], onnx.ModelProto] | None = None,
                keep_models: bool = False) -> tuple[int, onnx.ModelProto, RepairOutcome]:
    """Repair ``compress``'s finalists on all of ``repair.calib`` and keep the one that scores best.

    Each finalist is repaired and scored on the validation data; one whose repaired model scores
    below its searched score keeps its searched candidate (and score). The small per-candidate
    repair that ranked the search is only a proxy of this one, so re-ranking a few finalists
    usually finds a better final model than the proxy's best alone.

    Args:
        analysis: The input's analysis.
        source: The input model file.
        finalists: ``(plan, searched score as a fraction or None)``, best first (at least one).
        repair: Repair settings (None: the first finalist's plain pruned model is returned).
        score: Scores a model on the validation data (None without data: only the first is repaired).
        quantize: The joint search's simulation of a plan's bits: each repaired finalist is scored
            simulated (the returned model stays the pruned float one).
        keep_models: Also return every scored finalist's final model (``RepairOutcome.models``:
            repaired, or rebuilt as searched where the repair scored lower), for per-finalist tuning.

    Returns:
        The chosen finalist's position, its model, and the outcome.
    """
    plan, accuracy = finalists[0]
    if repair is None:
        models = tuple(prune_model(analysis, p) for p, _ in finalists) if keep_models else ()
        return 0, models[0] if models else prune_model(analysis, plan), RepairOutcome(accuracy, 0.0, False,
                                                                                     models=models)
    t0 = time.perf_counter()
    feeds = calibration_feeds(source, repair.calib, threads=repair.options.threads)
    results: list[tuple[float, onnx.ModelProto | None]] = []  # (score, repaired model or None: keep as searched)
    scores: list[float | None] = []
    for i, (plan, accuracy) in enumerate(finalists if score is not None else finalists[:1]):
        fixed, _ = repair_pruned(analysis, plan, prune_model(analysis, plan), feeds, mode=repair.mode,
                                 seed=repair.calib.seed, options=repair.options)
        new = score(quantize(plan, fixed) if quantize is not None else fixed) if score is not None else None
        scores.append(new)
        if new is not None and accuracy is not None and new < accuracy:
            logger.warning("finalist %d: the %s candidate scores %.2f %% < %.2f %% before; keeping it as searched",
                           i, repair.mode, 100 * new, 100 * accuracy)
            results.append((accuracy, None))
        else:
            results.append((new if new is not None else -1.0, fixed))
    index = max(range(len(results)), key=lambda k: (results[k][0], -k))
    value, model = results[index]
    logger.info("finalists re-ranked after %s: %s; chose %d", repair.mode,
                ", ".join("-" if v is None else f"{100 * v:.2f} %" for v in scores), index)
    repaired = model is not None
    rebuild = repairing_apply(analysis, source, repair) if model is None or (
        keep_models and any(m is None for _, m in results)) else None
    if model is None:  # kept as searched: rebuild that candidate (its small calibration set is loaded only now)
        model = rebuild(finalists[index][0])  # type: ignore[misc]
    models = tuple(m if m is not None else rebuild(finalists[k][0])  # type: ignore[misc]
                   for k, (_, m) in enumerate(results)) if keep_models else ()
    return index, model, RepairOutcome(
        value if value >= 0 else finalists[index][1], time.perf_counter() - t0, repaired, tuple(scores), models)


def prune_file(path: str | os.PathLike[str], output: str | os.PathLike[str], *, ratio: float = 0.0,
               round_to: int = 1, criterion: str = "l1", plan: Plan | None = None,
               input_shapes: Mapping[str, Sequence[int]] | None = None, calib: DataSpec | None = None,
               repair_mode: str | None = None, options: ReconstructOptions | None = None,
               deploy: DeployOptions | None = None, proto_limit: int = PROTOBUF_LIMIT) -> PruneReport:
    """Prune every prunable group of ``path`` by ``ratio`` (or apply ``plan``) and save to ``output``.

    With ``calib`` (calibration data), ``criterion="activation"`` is measured on it and
    ``repair_mode`` (``reconstruct`` or ``bias``) repairs the pruned layers. The output is
    written atomically and never over the input file; it is simplified and keeps the input's
    interface and metadata (``deploy``: opset, optional Triton repository; checked first).
    Models above ``proto_limit`` (protobuf's 2 GiB) go through every step in parts and are
    saved with external data (:mod:`onnxprune.large`).
    """
    source, target = Path(path).resolve(), Path(output).resolve()
    if source == target:
        raise OutputError(f"-o {output} is the input model; choose another output path (the input is never modified)")
    deploy = deploy or DeployOptions()
    original = read(source, interface_only=True, proto_limit=proto_limit)  # its interface, not its weights
    check_deploy(original, deploy, np.random.default_rng(calib.seed if calib is not None else 0),
                 proto_limit=proto_limit)
    analysis, _ = analyze_file(source, input_shapes=input_shapes, proto_limit=proto_limit)
    keep_count(1, ratio, round_to)  # validates ratio / round_to before any work
    if (repair_mode is not None or criterion in ("activation", "greedy")) and calib is None:
        raise DataError("--reconstruct, --bias-correct and --criterion activation|greedy need calibration data; "
                        "pass --calib FILE.npz")
    feeds = calibration_feeds(source, calib) if calib is not None else None
    threads = options.threads if options is not None else 2
    fields = {"criterion": criterion, "ratio": ratio} if plan is None else {}
    if plan is None:
        scores = group_scores(analysis, criterion, feeds, threads, seed=calib.seed if calib else 0)
        plan = repair_plan(analysis, ratio_plan(scores, [g.prunable for g in analysis.groups], ratio, round_to))
    pruned = prune_model(analysis, plan)
    fixed = None
    if repair_mode is not None and feeds is not None:
        pruned, fixed = repair_pruned(analysis, plan, pruned, feeds, mode=repair_mode, seed=calib.seed,
                                      options=options)
    final, opset = finish(original, pruned, deploy, run_metadata("prune", plan, repair=repair_mode, **fields),
                   np.random.default_rng(calib.seed if calib is not None else 0), proto_limit=proto_limit)
    saved = save_model(final, target, proto_limit=proto_limit)
    export_repo(final, deploy, proto_limit=proto_limit)
    after_model = normalize(final, name=target.name, input_shapes=input_shapes, proto_limit=proto_limit)
    return PruneReport(source=str(source), output=saved, plan=plan, before=analyze_cost.model_cost(analysis.model),
                       after=analyze_cost.model_cost(after_model), bytes_before=disk_bytes(source),
                       bytes_after=disk_bytes(saved), groups_pruned=len(plan.keep),
                       groups_frozen=sum(1 for g in analysis.groups if g.frozen_reason),
                       repaired_layers=sum(1 for f in fixed.layers if f.method != "skipped") if fixed else 0,
                       repair_seconds=fixed.seconds if fixed else 0.0, opset=opset)
