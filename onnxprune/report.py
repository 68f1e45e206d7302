"""Reports passed from the pipeline to commands: plain data with ``to_json``."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dataclasses_field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from onnxprune.analyze.cost import Cost
from onnxprune.deploy.opset import OpsetChoice
from onnxprune.evaluate.runtime import RunInfo
from onnxprune.plan import Plan
from onnxprune.search.env import Episode


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
class LayerRow:
    """One MAC layer of the analyze table: its MACs and the bits the file computes it with (32 = float)."""

    node: str
    op_type: str
    macs: int
    w_bits: int
    a_bits: int
    quantizable: bool


@dataclass(frozen=True)
class AnalyzeReport:
    """What ``onnxprune analyze`` shows."""

    model: str
    cost: Cost
    rows: tuple[GroupRow, ...]
    links: int
    layers: tuple[LayerRow, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "macs": self.cost.macs, "params": self.cost.params,
                "links_through_pads": self.links, "layers": [r.__dict__ for r in self.layers],
                "groups": [{**r.__dict__, "status": "frozen" if r.frozen_reason else
                            ("prunable" if r.channels > 1 else "single channel"),
                            "macs_share": r.macs / self.cost.macs if self.cost.macs else 0.0,
                            "params_share": r.params / self.cost.params if self.cost.params else 0.0}
                           for r in self.rows]}


@dataclass(frozen=True)
class PruneReport:
    """What ``onnxprune prune`` did (``opset``: the input's and the written opset)."""

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
    opset: OpsetChoice | None = None

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "output": str(self.output), "plan": self.plan.to_json(),
                "opset": self.opset.to_json() if self.opset else None,
                "repaired_layers": self.repaired_layers, "repair_seconds": self.repair_seconds,
                "before": {**self.before.__dict__, "bytes": self.bytes_before},
                "after": {**self.after.__dict__, "bytes": self.bytes_after},
                "groups_pruned": self.groups_pruned, "groups_frozen": self.groups_frozen}


@dataclass(frozen=True)
class GroupWidth:
    """Channels of one prunable group before and after."""

    id: int
    before: int
    after: int


@dataclass(frozen=True)
class FrozenGroup:
    """A group the search could not prune, and why (``macs``: MACs of its producers and consumers)."""

    id: int
    channels: int
    macs: int
    reason: str


@dataclass(frozen=True)
class EpisodeCost:
    """One evaluated candidate of the search: its reward, accuracy and costs (for plots).

    ``params`` and ``latency`` are ``None`` for episodes run before a ``--resume`` (the checkpoint
    keeps reward, accuracy and MACs only) and ``latency`` also without a latency table.
    """

    index: int
    reward: float
    accuracy: float | None
    macs: int
    params: int | None = None
    latency: float | None = None


@dataclass(frozen=True)
class CompressReport:
    """The result of a policy search and the saved model.

    Attributes:
        source: The input model.
        output: Where the pruned model was written.
        agent: The agent that searched (``uniform`` for data-free runs).
        metric: The resource the target applies to.
        target: Fraction of ``metric`` removed as requested.
        seed: The run's seed.
        episodes: Episodes evaluated in total (including before a resume).
        data_free: True when no data was given (uniform ratio, weight-norm criterion).
        before: Cost of the input.
        after: Cost of the output.
        bytes_before: Input size on disk.
        bytes_after: Output size on disk.
        accuracy_before: Validation top-1 (percent) of the input, when data was given.
        accuracy_after: Validation top-1 (percent) of the output, when data was given.
        groups: Per-group widths.
        search_seconds: Wall time of the search (this process).
        best: The chosen episode.
        triton_dir: The Triton model folder written (``--triton-repo``), if any.
        latency_ms: Predicted Conv/Gemm milliseconds before and after (latency table), if measured.
        accuracy_unrepaired: The chosen candidate's searched score (percent) when a repair followed.
        repair_seconds: Time of the final repair and re-ranking.
        finalists: ``(episode, searched %, repaired %)`` of each finalist re-ranked by the final repair.
        finalist_files: With ``save_finalists``: the finalists' finished models, best-scoring first
            (the first is ``output``), for per-finalist fine-tuning.
        agmc_pool: The ``agmc`` encoder's graph pooling (``mean`` / ``diffpool``), ``None`` for other agents.
        provider: The ONNX Runtime execution provider that scored the candidates (``None``: data-free).
        round_to: Kept channel counts are multiples of this (where a group has more channels).
        bits: Joint search (``--quantize``): layer -> ``(w_bits, a_bits)`` of the written model.
        quant: Joint search: :func:`onnxprune.quantize.bops_report` of the written model (BOPs,
            vs float32 and vs all-int8, per layer; stored bytes).
        joint_before: Joint search: the target metric (``bops`` / ``bytes``) of the float32 input.
        joint_after: Joint search: the target metric of the written model.
        opset: The input's and the written default-domain opset.
        frozen: Groups the search could not prune, with their reason.
        history: Every evaluated episode in order (reward, accuracy in ``[0, 1]``, MACs, params, latency ms).
        run: Where candidates were scored (provider, CPU, threads, device), ``None`` when data-free.
        command: The command line that produced the run (``onnxprune compress ...``), when known.
        versions: ``(package, version)`` of Python and the packages the result depends on.
        latency_check: With latency settings (``--latency-batch``, ``--width-menu``): table and
            predicted ms, the whole-model correction, the width menu, and (after the measured
            check of :mod:`onnxprune.pipeline.latency_first`) measured vs predicted per pass.
        int8: ``--quantize-int8``: the int8 model written, its top-1, layers kept float, latency.
    """

    source: str
    output: Path
    agent: str
    metric: str
    target: float
    seed: int
    episodes: int
    data_free: bool
    before: Cost
    after: Cost
    bytes_before: int
    bytes_after: int
    accuracy_before: float | None
    accuracy_after: float | None
    groups: tuple[GroupWidth, ...]
    search_seconds: float
    best: Episode
    triton_dir: Path | None = None
    latency_ms: tuple[float, float] | None = None
    accuracy_unrepaired: float | None = None
    repair_seconds: float = 0.0
    finalists: tuple[tuple[int, float | None, float | None], ...] = ()
    agmc_pool: str | None = None
    provider: str | None = None
    round_to: int = 1
    bits: Mapping[str, tuple[int, int]] = dataclasses_field(default_factory=lambda: MappingProxyType({}))
    quant: Mapping[str, Any] | None = None
    joint_before: float | None = None
    joint_after: float | None = None
    opset: OpsetChoice | None = None
    frozen: tuple[FrozenGroup, ...] = ()
    history: tuple[EpisodeCost, ...] = ()
    run: RunInfo | None = None
    command: tuple[str, ...] = ()
    versions: tuple[tuple[str, str], ...] = ()
    finalist_files: tuple[Path, ...] = ()
    latency_check: Mapping[str, Any] | None = None
    int8: Mapping[str, Any] | None = None

    @property
    def achieved(self) -> float:
        """Fraction of the metric removed."""
        if self.joint_before is not None and self.joint_after is not None:
            before, after = self.joint_before, self.joint_after
        elif self.latency_ms is not None and self.metric == "latency":
            before, after = self.latency_ms
        else:
            before, after = getattr(self.before, self.metric), getattr(self.after, self.metric)
        return 1.0 - after / before if before else 0.0

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"source": self.source, "output": str(self.output), "agent": self.agent, "metric": self.metric,
                "target": self.target, "achieved": self.achieved, "seed": self.seed, "episodes": self.episodes,
                "data_free": self.data_free,
                "before": {**self.before.__dict__, "bytes": self.bytes_before},
                "after": {**self.after.__dict__, "bytes": self.bytes_after},
                "accuracy_before": self.accuracy_before, "accuracy_after": self.accuracy_after,
                "groups": [g.__dict__ for g in self.groups], "search_seconds": self.search_seconds,
                "best": self.best.to_json(), "latency_ms": list(self.latency_ms) if self.latency_ms else None,
                "triton_dir": str(self.triton_dir) if self.triton_dir else None,
                "accuracy_unrepaired": self.accuracy_unrepaired, "repair_seconds": self.repair_seconds,
                "finalists": [{"episode": i, "searched": a, "repaired": b} for i, a, b in self.finalists],
                "agmc_pool": self.agmc_pool, "provider": self.provider,
                "round_to": self.round_to, "bits": {k: list(v) for k, v in self.bits.items()},
                "quant": dict(self.quant) if self.quant is not None else None,
                "joint_before": self.joint_before, "joint_after": self.joint_after,
                "opset": self.opset.to_json() if self.opset else None,
                "frozen": [g.__dict__ for g in self.frozen], "history": [e.__dict__ for e in self.history],
                "run": self.run.__dict__ if self.run else None, "command": list(self.command),
                "versions": dict(self.versions), "finalist_files": [str(f) for f in self.finalist_files],
                "latency_check": dict(self.latency_check) if self.latency_check is not None else None,
                "int8": dict(self.int8) if self.int8 is not None else None}


@dataclass(frozen=True)
class QuantizeReport:
    """What ``onnxprune quantize`` did.

    Attributes:
        source: The input file.
        output: The written model.
        mode: ``deploy`` (QDQ int8/int4 through ONNX Runtime) or ``simulate`` (float model on the grids).
        plan: Bits asked per layer (node name -> (w, a); 32 = float).
        written: Bits the written model stores per layer (the plan's for ``simulate``).
        bops: BOPs/bytes report of the written bits (``onnxprune.quantize.BopsReport.as_dict``).
        bytes_before: Input file size.
        bytes_after: Output file size.
        accuracy_before: Float top-1 (fraction) on the validation images, when data was given.
        accuracy_after: The written model's top-1 on them.
        fallen_back: Layers ``--max-drop`` sent back to float, most sensitive first.
        opset: Default-domain opset of the written model.
        seconds: Wall time.
    """

    source: str
    output: Path
    mode: str
    plan: dict[str, tuple[int, int]]
    written: dict[str, tuple[int, int]]
    bops: dict[str, Any]
    bytes_before: int
    bytes_after: int
    accuracy_before: float | None
    accuracy_after: float | None
    fallen_back: tuple[str, ...]
    opset: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "output": str(self.output), "mode": self.mode,
                "plan": {k: list(v) for k, v in self.plan.items()},
                "written": {k: list(v) for k, v in self.written.items()}, "bops": self.bops,
                "bytes_before": self.bytes_before, "bytes_after": self.bytes_after,
                "accuracy_before": self.accuracy_before, "accuracy_after": self.accuracy_after,
                "fallen_back": list(self.fallen_back), "opset": self.opset, "seconds": self.seconds}


@dataclass(frozen=True)
class FinetuneReport:
    """What ``onnxprune finetune`` did.

    Attributes:
        source: The student file (the pruned model).
        teacher: The teacher file (the original model).
        output: The written model (the student with trained initializers; simulated bits with QAT).
        epochs: Epochs asked.
        resumed_from: First epoch this run trained (``0``: fresh).
        train_samples: Training samples.
        val_samples: Validation samples that picked the best epoch.
        augment: The augmentation used.
        qat: Whether the forward pass was fake-quantized.
        teacher_top1: The teacher's validation top-1 (fraction), when labelled.
        top1_before: The student's validation top-1 before training.
        top1_after: The written model's validation top-1 (the best epoch's).
        best_epoch: The epoch written (``-1``: no epoch beat the untrained student, which was kept).
        loss_before: The student's validation distillation loss to the teacher before training.
        loss_after: The written model's validation distillation loss.
        select: How the written epoch was chosen (``loss``, ``top1`` or ``last``).
        history: Per-epoch logs (``onnxprune.finetune.train.EpochLog``).
        deployable: The QDQ model written beside the output (QAT), if any.
        deployable_reason: Why no QDQ model was written, if so.
        bytes_after: Output size on disk.
        normalized: Convs normalized while training (folded back into the written weights).
        threads: Torch threads used.
        seconds: Wall time.
        device: Where torch trained (``cpu`` or ``cuda``).
    """

    source: str
    teacher: str
    output: Path
    epochs: int
    resumed_from: int
    train_samples: int
    val_samples: int
    augment: str
    qat: bool
    teacher_top1: float | None
    top1_before: float | None
    top1_after: float | None
    best_epoch: int
    history: tuple[Any, ...]
    deployable: Path | None
    deployable_reason: str | None
    bytes_after: int
    normalized: int
    threads: int
    seconds: float
    device: str = "cpu"
    loss_before: float | None = None
    loss_after: float | None = None
    select: str = "loss"

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"normalized": self.normalized, "select": self.select, "loss_before": self.loss_before,
                "loss_after": self.loss_after, "source": self.source, "teacher": self.teacher,
                "output": str(self.output), "epochs": self.epochs, "device": self.device,
                "resumed_from": self.resumed_from, "train_samples": self.train_samples,
                "val_samples": self.val_samples, "augment": self.augment, "qat": self.qat,
                "teacher_top1": self.teacher_top1, "top1_before": self.top1_before, "top1_after": self.top1_after,
                "best_epoch": self.best_epoch, "history": [e.__dict__ for e in self.history],
                "deployable": str(self.deployable) if self.deployable else None,
                "deployable_reason": self.deployable_reason, "bytes_after": self.bytes_after,
                "threads": self.threads, "seconds": self.seconds}


@dataclass(frozen=True)
class FinalistTuning:
    """``compress --finetune-candidates``: each finalist's short tune and the one tuned in full.

    Attributes:
        files: The finalists' models (the searched ``-o`` model first).
        short: Each finalist's short-tune report, in ``files`` order.
        chosen: Position in ``files`` of the finalist with the best validation top-1 after its short tune.
    """

    files: tuple[Path, ...]
    short: tuple[FinetuneReport, ...]
    chosen: int

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"chosen": self.chosen, "chosen_file": str(self.files[self.chosen]),
                "candidates": [{"file": str(f), "epochs": r.epochs, "top1_before": r.top1_before,
                                "top1_after": r.top1_after} for f, r in zip(self.files, self.short)]}
