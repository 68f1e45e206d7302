"""The fine-tuning loop: distillation from a teacher's outputs (+ cross-entropy), SGD, cosine schedule.

Contract:
    requires: a :class:`~onnxprune.finetune.GraphModule` of the student, its training inputs in
    memory (one input, batch first) with optional integer labels, and a teacher function that
    maps an input batch to the teacher's first output (the same shape as the student's).
    guarantees: :func:`train` runs ``config.epochs`` epochs of SGD (momentum, weight decay on
    every trainable initializer, learning rate ``lr * (1 + cos(pi * step / steps)) / 2`` per
    step); each epoch's order and augmentation come from ``numpy.random.default_rng([seed, epoch])``,
    so a run resumed from its checkpoint ends with the same values as one never interrupted. The
    loss of a batch is ``alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)``
    for 2-D outputs (classification logits; CE only with labels, else the KL term alone) and the
    mean squared error to the teacher for any other output. After each epoch the checkpoint is
    written atomically and ``validate`` scores the current values (a :class:`Validation`: top-1 and
    the distillation loss to the teacher on held-out inputs); the returned values are the epoch's
    that ``config.select`` prefers (``loss``: the lowest validation distillation loss, ``top1``: the
    highest validation top-1, ``last``: the last epoch; the untrained values count as epoch -1 and
    win only when strictly better; without the chosen score the other one decides, without either
    the last epoch is kept). Training runs on ``device`` (the
    module is moved there; inputs stay in host memory and go over batch by batch); the values
    returned and checkpointed are host (numpy / CPU) copies, so a run resumes on either device.
    Divergence guard: an epoch whose validation top-1 falls below half the best so far (the run
    blew up: at a too-high rate rounded QAT weights do) is undone (weights and optimizer back to
    the epoch's start), the learning rate is halved for the rest of the run and the epoch runs
    again, at most :data:`MAX_BACKOFFS` times per run; the undone epoch stays in the history
    with ``undone=True``.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from onnxprune.errors import DataError, PlanError, RuntimeUnavailable
from onnxprune.finetune.augment import Augment, augment
from onnxprune.finetune.interpreter import GraphModule

logger = logging.getLogger(__name__)

CHECKPOINT_VERSION = 3
#: Default peak learning rate of quantization-aware training (float fine-tuning: ``TrainConfig.lr``).
QAT_LR = 0.001
#: How often one run may undo a collapsed epoch and halve its learning rate.
MAX_BACKOFFS = 3
Teacher = Callable[[np.ndarray], np.ndarray]
Validate = Callable[[Mapping[str, np.ndarray]], "Validation"]
#: How the kept epoch is chosen (see the module contract).
SELECTIONS = ("loss", "top1", "last")


@dataclass(frozen=True)
class Validation:
    """Scores of one set of values on the validation inputs.

    Attributes:
        top1: Top-1 against the labels (fraction), ``None`` without labels or for non-classifiers.
        loss: Distillation loss to the teacher's outputs (the training loss's distillation term),
            ``None`` when not measured.
    """

    top1: float | None = None
    loss: float | None = None


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters.

    Attributes:
        epochs: Passes over the training inputs.
        batch_size: Samples per step (the last, smaller batch of an epoch is dropped).
        lr: Peak learning rate (cosine-annealed to 0 over all steps).
        momentum: SGD momentum.
        weight_decay: L2 penalty on every trainable initializer.
        temperature: Distillation temperature ``T``.
        alpha: Weight of the distillation term; ``1 - alpha`` goes to cross-entropy when labels exist.
        augment: Per-batch augmentation (:mod:`onnxprune.finetune.augment`).
        axes: Spatial (height, width) axes of the input batch for the augmentation.
        seed: Seed of the sample order and augmentation.
        select: Which epoch's values are kept: ``loss`` (lowest validation distillation loss: it
            keeps ranking students when top-1 on the validation split saturates, e.g. on images the
            teacher was trained on), ``top1`` or ``last``.
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    temperature: float = 4.0
    alpha: float = 0.9
    augment: Augment = "none"
    axes: tuple[int, int] | None = None
    seed: int = 0
    select: str = "loss"

    def check(self, samples: int) -> None:
        """Raise DataError/PlanError on settings that cannot train ``samples`` inputs."""
        if self.epochs < 1 or self.batch_size < 1:
            raise PlanError(f"--epochs {self.epochs} / --batch-size {self.batch_size}: both must be >= 1")
        if samples < self.batch_size:
            raise DataError(f"{samples} training samples are fewer than --batch-size {self.batch_size}; "
                            "lower --batch-size or give more data")
        if not (self.lr > 0 and 0 <= self.momentum < 1 and self.weight_decay >= 0 and self.temperature > 0
                and 0 <= self.alpha <= 1):
            raise PlanError("need --lr > 0, 0 <= momentum < 1, --weight-decay >= 0, --temperature > 0 and "
                            "0 <= --alpha <= 1")
        if self.select not in SELECTIONS:
            raise PlanError(f"--select-by {self.select}: use one of {', '.join(SELECTIONS)}")


@dataclass(frozen=True)
class EpochLog:
    """One finished epoch: mean losses, validation top-1 (fraction) and loss when scored, learning rate, wall time."""

    epoch: int
    loss: float
    distill: float
    ce: float | None
    val_top1: float | None
    lr: float
    seconds: float
    undone: bool = False
    val_loss: float | None = None


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        values: Trainable initializer name -> the kept epoch's value (``config.select``).
        best_epoch: The epoch ``values`` come from (``-1``: the untrained values scored best).
        best_top1: Its validation top-1 (fraction), ``None`` without it.
        history: Every epoch's log, resumed ones included.
        resumed_from: The first epoch this call ran (``0`` for a fresh run).
        initial_top1: Validation top-1 of the values before any training.
        best_loss: The kept epoch's validation distillation loss, ``None`` without it.
        initial_loss: Validation distillation loss before any training.
    """

    values: Mapping[str, np.ndarray]
    best_epoch: int
    best_top1: float | None
    history: tuple[EpochLog, ...]
    resumed_from: int
    initial_top1: float | None = None
    best_loss: float | None = None
    initial_loss: float | None = None


def torch_device(requested: str) -> torch.device:
    """The torch device for ``--device`` ``auto`` (CUDA when torch sees a GPU, else CPU), ``cpu`` or ``cuda``.

    Raises:
        RuntimeUnavailable: ``cuda`` without a CUDA build of torch and a visible GPU, or an unknown name.
    """
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cpu":
        return torch.device("cpu")
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeUnavailable("--device cuda: this torch sees no GPU (a CPU build, or no driver); install a "
                                     "CUDA build of torch or use --device cpu")
        return torch.device("cuda")
    raise RuntimeUnavailable(f"unknown device '{requested}' for training; use auto, cpu or cuda")


def distill_loss(student: Tensor, teacher: Tensor, labels: Tensor | None, config: TrainConfig
                 ) -> tuple[Tensor, Tensor, Tensor | None]:
    """(total, distillation term, cross-entropy term) of one batch (see the module contract)."""
    if student.dim() != 2:
        kd = F.mse_loss(student, teacher)
        return kd, kd, None
    t = config.temperature
    kd = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1), log_target=True,
                  reduction="batchmean") * (t * t)
    if labels is None:
        return kd, kd, None
    ce = F.cross_entropy(student, labels)
    return config.alpha * kd + (1.0 - config.alpha) * ce, kd, ce


def _values(module: GraphModule) -> dict[str, np.ndarray]:
    """The trainable initializers' values (normalization folded in when the module carries ``norms``)."""
    norms = getattr(module, "norms", None)
    if norms is not None:
        return norms.folded(module)
    return {name: p.detach().cpu().numpy().copy() for name, p in module.named_initializers().items()}


def _snapshot(module: GraphModule, optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], dict[str, Any]]:
    """Copies of the module's and the optimizer's state (to undo a collapsed epoch)."""
    return ({k: v.detach().clone() for k, v in module.state_dict().items()}, copy.deepcopy(optimizer.state_dict()))


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _identity(module: GraphModule, config: TrainConfig, samples: int) -> dict[str, Any]:
    shapes = {n: list(p.shape) for n, p in module.state_dict().items()}
    return {"config": {**dataclasses.asdict(config), "axes": list(config.axes) if config.axes else None},
            "samples": samples, "shapes": shapes}


def _read_checkpoint(path: Path, identity: Mapping[str, Any]) -> dict[str, Any]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user problem
        raise DataError(f"cannot read the checkpoint {path.name} ({type(exc).__name__}); delete it or drop "
                        "--resume") from exc
    if payload.get("version") != CHECKPOINT_VERSION or payload.get("identity") != dict(identity):
        raise DataError(f"the checkpoint {path.name} was made with other settings or data; rerun with the "
                        "same options, or delete it to start over")
    return payload


def better(new: Validation, best: Validation, select: str) -> bool:
    """Whether ``new`` replaces ``best`` as the kept epoch under ``select`` (see the module contract)."""
    if select == "last":
        return True
    order = ("loss", "top1") if select == "loss" else ("top1", "loss")
    for key in order:
        a, b = getattr(new, key), getattr(best, key)
        if a is not None and b is not None:
            return a < b if key == "loss" else a > b
    return True


def _collapsed(score: Validation, best: Validation, initial: Validation) -> bool:
    """Whether an epoch blew up: top-1 under half the best, or (without top-1) the loss over 4x the initial one."""
    if score.top1 is not None and best.top1 is not None:
        return score.top1 < 0.5 * best.top1
    if score.loss is not None and initial.loss is not None:
        return not math.isfinite(score.loss) or score.loss > 4.0 * initial.loss
    return False


def train(module: GraphModule, inputs: np.ndarray, labels: np.ndarray | None, teacher: Teacher, config: TrainConfig,
          *, validate: Validate | None = None, checkpoint: Path | None = None, resume: bool = False,
          on_step: Callable[[int, int, int, float], None] | None = None,
          on_epoch: Callable[[EpochLog], None] | None = None, device: torch.device | str = "cpu") -> TrainResult:
    """Fine-tune ``module`` in place (see the module contract).

    Args:
        module: The student (its parameters are trained; hooks, e.g. QAT, stay active).
        inputs: Training inputs ``(N, ...)`` as the model takes them.
        labels: Integer labels ``(N,)`` or ``None``.
        teacher: Input batch -> teacher output batch (e.g. ONNX Runtime on the original model).
        config: Hyper-parameters (``config.select``: which epoch is returned).
        validate: Values -> :class:`Validation`; called before training and after each epoch.
        checkpoint: Where the state is saved after each epoch (``None``: not saved).
        resume: Continue from ``checkpoint`` (it must exist and match these settings).
        on_step: Called after each step with (epoch, step, steps per epoch, loss).
        on_epoch: Called after each epoch with its log.
        device: Where the module trains (see :func:`torch_device`); it is left there.
    """
    samples = int(inputs.shape[0])
    config.check(samples)
    device = torch.device(device)
    module.to(device)
    steps = samples // config.batch_size
    total = steps * config.epochs
    optimizer = torch.optim.SGD(module.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    identity = _identity(module, config, samples)
    history: list[EpochLog] = []
    start, lr_scale, backoffs = 0, 1.0, 0
    if resume and checkpoint is not None:
        payload = _read_checkpoint(checkpoint, identity)
        module.load_state_dict(payload["state"])
        optimizer.load_state_dict(payload["optimizer"])
        start, history = payload["epoch"], [EpochLog(**e) for e in payload["history"]]
        lr_scale, backoffs = float(payload["lr_scale"]), int(payload["backoffs"])
        initial = Validation(**payload["initial"])
        saved = payload["best"]
        best = {"epoch": saved["epoch"], "score": Validation(**saved["score"]),
                "values": {n: t.numpy() for n, t in saved["values"].items()}}
        logger.info("resuming at epoch %d of %d from %s", start + 1, config.epochs, checkpoint)
    else:
        initial = validate(_values(module)) if validate is not None else Validation()
        best = {"epoch": -1, "score": initial, "values": _values(module)}
    cached: dict[int, np.ndarray] = {}
    epoch = start
    while epoch < config.epochs:
        guarded = validate is not None and backoffs < MAX_BACKOFFS
        snapshot = _snapshot(module, optimizer) if guarded else None
        log = _epoch(module, optimizer, inputs, labels, teacher, config, epoch, steps, total, cached, on_step,
                     device, lr_scale)
        values = _values(module)
        score = validate(values) if validate is not None else Validation()
        log = dataclasses.replace(log, val_top1=score.top1, val_loss=score.loss)
        if snapshot is not None and _collapsed(score, best["score"], initial):
            module.load_state_dict(snapshot[0])
            optimizer.load_state_dict(snapshot[1])
            lr_scale, backoffs = lr_scale * 0.5, backoffs + 1
            history.append(dataclasses.replace(log, undone=True))
            logger.warning("epoch %d collapsed (validation %s): undone, learning rate halved to %.3g; it runs "
                           "again", epoch + 1, score, config.lr * lr_scale)
            if on_epoch is not None:
                on_epoch(history[-1])
            continue
        history.append(log)
        if better(score, best["score"], config.select):
            best = {"epoch": epoch, "score": score, "values": values}
        if checkpoint is not None:
            _save_checkpoint(checkpoint, {
                "version": CHECKPOINT_VERSION, "identity": identity, "epoch": epoch + 1,
                "initial": dataclasses.asdict(initial), "state": module.state_dict(),
                "optimizer": optimizer.state_dict(),
                "best": {"epoch": best["epoch"], "score": dataclasses.asdict(best["score"]),
                         "values": {n: torch.from_numpy(v) for n, v in best["values"].items()}},
                "history": [dataclasses.asdict(e) for e in history], "lr_scale": lr_scale, "backoffs": backoffs})
        if on_epoch is not None:
            on_epoch(history[-1])
        epoch += 1
    kept: Validation = best["score"]
    return TrainResult(values=best["values"], best_epoch=best["epoch"], best_top1=kept.top1,
                       history=tuple(history), resumed_from=start, initial_top1=initial.top1,
                       best_loss=kept.loss, initial_loss=initial.loss)


def _epoch(module: GraphModule, optimizer: torch.optim.Optimizer, inputs: np.ndarray, labels: np.ndarray | None,
           teacher: Teacher, config: TrainConfig, epoch: int, steps: int, total: int, cached: dict[int, np.ndarray],
           on_step: Callable[[int, int, int, float], None] | None, device: torch.device,
           lr_scale: float = 1.0) -> EpochLog:
    """One pass over a seeded permutation of ``inputs``; returns its mean losses."""
    started = time.perf_counter()
    rng = np.random.default_rng([config.seed, epoch])
    order = rng.permutation(inputs.shape[0])
    sums = np.zeros(3)
    lr = config.lr
    module.train()
    for step in range(steps):
        index = order[step * config.batch_size:(step + 1) * config.batch_size]
        batch = augment(inputs[index], config.augment, config.axes, rng)
        if config.augment == "none":  # same inputs every epoch: the teacher runs once per sample
            missing = [i for i in index if int(i) not in cached]
            if missing:
                for i, row in zip(missing, teacher(inputs[np.asarray(missing)])):
                    cached[int(i)] = row
            target = np.stack([cached[int(i)] for i in index])
        else:
            target = teacher(batch)
        lr = config.lr * lr_scale * 0.5 * (1.0 + math.cos(math.pi * (epoch * steps + step) / total))
        for group in optimizer.param_groups:
            group["lr"] = lr
        student = module(torch.from_numpy(batch).to(device))[0]
        y = torch.from_numpy(labels[index].astype(np.int64)).to(device) if labels is not None else None
        teach = torch.from_numpy(np.asarray(target, dtype=np.float32)).to(device)
        loss, kd, ce = distill_loss(student, teach, y, config)
        if not torch.isfinite(loss):
            raise DataError(f"epoch {epoch + 1} step {step + 1}: the loss is not finite; lower --lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sums += (loss.item(), kd.item(), ce.item() if ce is not None else 0.0)
        if on_step is not None:
            on_step(epoch, step, steps, loss.item())
    mean = sums / steps
    return EpochLog(epoch=epoch, loss=float(mean[0]), distill=float(mean[1]),
                    ce=float(mean[2]) if labels is not None else None, val_top1=None, lr=lr,
                    seconds=time.perf_counter() - started)
