"""Pipeline: fine-tune (load student + teacher -> data -> [QAT hooks] -> train -> write back -> save).

The student is the pruned ONNX file itself: it is interpreted as a torch module
(:class:`onnxprune.finetune.GraphModule`), trained by distillation from the teacher's outputs
(ONNX Runtime on the original model) plus cross-entropy on the labels, and the best-on-validation
values go back into the student's own initializers. With a bits plan the forward pass is
fake-quantized (QAT); the written model is then the simulated model at those bits and, where
ONNX Runtime's quantizer takes it, the deployable QDQ model beside it (``<out>.qdq.onnx``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import torch

from onnxprune.errors import DataError, InvalidModel, OnnxPruneError, OutputError, PlanError
from onnxprune.evaluate import DataSpec, Runtime, evaluate, open_data
from onnxprune.evaluate.cost import disk_bytes
from onnxprune.evaluate.data import ArrayData, check_label_range
from onnxprune.evaluate.metrics import AccuracyCounter
from onnxprune.finetune import GraphModule, write_back
from onnxprune.finetune.augment import resolve, spatial_axes
from onnxprune.finetune.norm import ConvNorms, eligible_convs
from onnxprune.finetune.qat import project, qat_hooks
from onnxprune.finetune.train import (EpochLog, TrainConfig, Validate, Validation, better, distill_loss, torch_device,
                                      train)
from onnxprune.io import save_model
from onnxprune.load import load
from onnxprune.quantize import FLOAT, QuantPlan, calibrate, find_layers, simulate
from onnxprune.quantize.deploy import to_qdq
from onnxprune.report import FinalistTuning, FinetuneReport

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class FinetuneSettings:
    """What to train on and how.

    Attributes:
        data: The training file (``.npz`` or image folder) with its preprocessing.
        val_images: Samples of ``data`` set aside (seeded) to pick the best epoch; the rest train.
        config: Training hyper-parameters (its ``augment``/``axes`` are resolved from ``augment``).
        augment: ``auto``, ``none``, ``flip`` or ``crop-flip`` (``auto``: by the preprocessing preset).
        preset: The ``--preprocess`` preset name (for ``augment=auto``).
        quant_plan: Bits per layer for quantization-aware training (``None``: float training).
        calib_images: Training samples the QAT activation ranges are calibrated on.
        threads: Torch and ONNX Runtime threads (``None``: all).
        resume: Continue from ``<out>.finetune.pt``.
        normalize: Normalize folded Convs' outputs while training (:mod:`onnxprune.finetune.norm`),
            folded back into their weights (with ``quant_plan``: the folded weights are fake-quantized).
        device: ``auto`` (CUDA when torch sees a GPU, else CPU), ``cpu`` or ``cuda``: where torch trains;
            the teacher and the validation run in ONNX Runtime on the same kind of device where it can.
    """

    data: DataSpec
    val_images: int = 5000
    config: TrainConfig = TrainConfig()
    augment: str = "auto"
    preset: str | None = None
    quant_plan: QuantPlan | None = None
    calib_images: int = 512
    threads: int | None = None
    resume: bool = False
    normalize: bool = True
    device: str = "auto"


def checkpoint_path(output: Path) -> Path:
    """Where the per-epoch training state is kept: ``out.onnx`` -> ``out.onnx.finetune.pt``."""
    return output.with_name(output.name + ".finetune.pt")


def _arrays(spec: DataSpec, session_inputs: tuple, what: str) -> ArrayData:
    data = open_data(spec, session_inputs)
    if not isinstance(data, ArrayData):
        raise DataError(f"fine-tuning needs {what} as an .npz file or image folder (--data), not a hook")
    return data


def _check_teacher(teacher: Runtime, teacher_model: onnx.ModelProto,
                   sample: np.ndarray, student_out: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The teacher function (first output on a batch); raise InvalidModel when it does not fit the student."""
    session = teacher.create(teacher_model)
    if len(session.inputs) != 1:
        raise InvalidModel(f"the teacher has {len(session.inputs)} inputs; it must take the student's one input")
    name = session.inputs[0].name
    try:
        out = session.run({name: sample})[0]
    except OnnxPruneError as exc:
        raise InvalidModel(f"the teacher cannot run on the student's inputs ({exc}); pass the model the "
                           "student was pruned from") from exc
    if out.shape != student_out.shape:
        raise InvalidModel(f"the teacher's first output has shape {tuple(out.shape)}, the student's "
                           f"{tuple(student_out.shape)}; pass the model the student was pruned from")
    return lambda batch: session.run({name: batch})[0]


def _batched(run: Callable[[np.ndarray], np.ndarray], images: np.ndarray, size: int = 500) -> np.ndarray:
    """``run`` over ``images`` in batches of ``size``, outputs concatenated."""
    return np.concatenate([np.asarray(run(images[i:i + size]), dtype=np.float32)
                           for i in range(0, len(images), size)])


def _validator(val: ArrayData, teacher: Callable[[np.ndarray], np.ndarray], runtime: Runtime, config: TrainConfig,
               finish: Callable[[Mapping[str, np.ndarray]], onnx.ModelProto]) -> Validate:
    """Values -> top-1 and distillation loss of the written-back (with QAT: simulated) model on ``val``.

    The teacher's outputs on ``val`` are computed once; the loss is the training loss's distillation
    term at ``config.temperature`` (mean squared error for non-classifier outputs).
    """
    reference = torch.from_numpy(_batched(teacher, val.images))

    def score(values: Mapping[str, np.ndarray]) -> Validation:
        session = runtime.create(finish(values))
        name = session.inputs[0].name
        out = _batched(lambda batch: session.run({name: batch})[0], val.images)
        top1 = None
        if val.labels is not None and out.ndim == 2:
            counter = AccuracyCounter()
            counter.update(out, val.labels)
            top1 = counter.result().top1 / 100.0
        loss = distill_loss(torch.from_numpy(out), reference, None, config)[1]
        return Validation(top1=top1, loss=float(loss))
    return score


def finetune_file(path: str | os.PathLike[str], teacher: str | os.PathLike[str], output: str | os.PathLike[str],
                  settings: FinetuneSettings, *, on_step: Callable[[int, int, int, float], None] | None = None,
                  on_epoch: Callable[[EpochLog], None] | None = None) -> FinetuneReport:
    """Fine-tune the model at ``path`` from ``teacher`` and save it atomically to ``output``.

    Raises:
        OutputError: ``output`` is the input or the teacher.
        InvalidModel: the teacher's outputs do not match the student's.
        DataError: data of the wrong shape, labels out of range, too few samples, a bad checkpoint.
        UnsupportedInput: an op the interpreter cannot train.
    """
    started = time.perf_counter()
    source, target, teacher_path = Path(path).resolve(), Path(output).resolve(), Path(teacher).resolve()
    if target in (source, teacher_path):
        raise OutputError(f"-o {output} is an input model; choose another output path (inputs are never modified)")
    device = torch_device(settings.device)
    student = load(source).proto
    teacher_model = load(teacher_path).proto
    runtime = Runtime("auto" if device.type == "cuda" else "cpu", settings.threads)
    inputs = runtime.create(student).inputs
    if len(inputs) != 1:
        raise DataError(f"{source.name} has {len(inputs)} inputs; fine-tuning takes single-input models")
    val_spec = dataclasses.replace(settings.data, val_split=settings.val_images, disjoint_from=None)
    train_spec = dataclasses.replace(settings.data, val_split=None,
                                     disjoint_from=(settings.val_images, settings.data.seed))
    train_data, val_data = _arrays(train_spec, inputs, "training data"), _arrays(val_spec, inputs, "validation data")
    previous = torch.get_num_threads()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    try:
        return _run(source, teacher_path, target, student, teacher_model, train_data, val_data, runtime,
                    dataclasses.replace(settings, device=device.type), started, on_step, on_epoch)
    finally:
        torch.set_num_threads(previous)


def student_module(student: onnx.ModelProto, plan: QuantPlan | None, input_name: str, calib: np.ndarray,
                   normalize: bool, runtime: Runtime) -> tuple[GraphModule, dict[str, tuple[float, float]], int]:
    """The trainable module of ``student``: QAT hooks for ``plan``, training-time normalization of folded Convs.

    Returns:
        The module, the calibrated activation ranges (QAT) and how many Convs are normalized.
    """
    layers = {q.node: q for q in find_layers(student)}
    ranges: dict[str, tuple[float, float]] = {}
    if plan is not None:
        plan.check_layers(layers)
        tensors = sorted({layers[n].activation for n, (_, a) in plan.bits.items() if a != FLOAT})
        ranges = calibrate(student, {input_name: calib}, tensors, runtime=runtime)
    trainable = {name for name in GraphModule(student).param_names}
    convs = eligible_convs(student, trainable) if normalize else {}
    bits = {n: plan.of(n)[0] for n in convs} if plan is not None else {}
    norms = None
    if convs:
        shapes = {i.name: tuple(i.dims) for i in student.graph.initializer}
        norms = ConvNorms(convs, {n: shapes[w][0] for n, (w, _) in convs.items()}, weight_bits=bits)
    hooks = qat_hooks(layers, plan, ranges, frozenset(norms.weight_bits) if norms else frozenset()) if plan else {}
    if norms is not None:
        for name, inner in norms.input_hooks().items():
            outer = hooks.get(name)
            hooks[name] = inner if outer is None else (lambda node, args, o=outer, i=inner: i(node, o(node, args)))
    module = GraphModule(student, input_hooks=hooks, output_hooks=norms.hooks() if norms else None)
    if norms is not None:
        module.add_module("norms", norms)
        norms.initialize(module, calib)
    logger.info("training-time normalization on %d Convs (%d with QAT on the folded weight)", len(convs), len(bits))
    return module, ranges, len(convs)


def _run(source: Path, teacher_path: Path, target: Path, student: onnx.ModelProto, teacher_model: onnx.ModelProto,
         train_data: ArrayData, val_data: ArrayData, runtime: Runtime, settings: FinetuneSettings, started: float,
         on_step: Callable[[int, int, int, float], None] | None,
         on_epoch: Callable[[EpochLog], None] | None) -> FinetuneReport:
    images, labels = train_data.images, train_data.labels
    plan = settings.quant_plan
    layers = {q.node: q for q in find_layers(student)}
    module, ranges, normalized = student_module(student, plan, train_data.input_name, images[:settings.calib_images],
                                                settings.normalize, runtime)
    probe = images[:2]
    module.eval()
    student_out = module(torch.from_numpy(probe))[0].detach().numpy()
    teach = _check_teacher(runtime, teacher_model, probe, student_out)
    if student_out.ndim == 2 and labels is not None:
        classes = student_out.shape[1]
        check_label_range(labels, classes, "training data")
        if val_data.labels is not None:
            check_label_range(val_data.labels, classes, "validation data")
    axes = spatial_axes(tuple(images.shape), settings.data.preprocess.layout)
    config = dataclasses.replace(settings.config, augment=resolve(settings.augment, settings.preset, axes), axes=axes)

    def finish(values: Mapping[str, np.ndarray]) -> onnx.ModelProto:
        if plan is None:
            return write_back(student, values)
        return simulate(write_back(student, project(values, layers, plan)), plan, ranges)

    validate = _validator(val_data, teach, runtime, config, finish)
    result = train(module, images, labels, teach, config, validate=validate, checkpoint=checkpoint_path(target),
                   resume=settings.resume, on_step=on_step, on_epoch=on_epoch, device=settings.device)
    teacher_top1 = _teacher_top1(teacher_model, val_data, runtime)
    tuned = finish(result.values)
    _set_metadata(tuned, {"onnxprune.command": "finetune", "onnxprune.finetune": f"{config.epochs} epochs, best "
                          f"{result.best_epoch + 1} by {config.select}, {'QAT' if plan is not None else 'float'}"})
    saved = save_model(tuned, target)
    deployable, why = None, None
    if plan is not None:
        deployable, why = _deployable(write_back(student, project(result.values, layers, plan)), plan,
                                      {train_data.input_name: images[:settings.calib_images]}, target)
    return FinetuneReport(
        source=str(source), teacher=str(teacher_path), output=saved, epochs=config.epochs,
        resumed_from=result.resumed_from, train_samples=int(images.shape[0]), val_samples=int(val_data.images.shape[0]),
        augment=config.augment, qat=plan is not None, teacher_top1=teacher_top1, top1_before=result.initial_top1,
        top1_after=result.best_top1, best_epoch=result.best_epoch, history=result.history,
        loss_before=result.initial_loss, loss_after=result.best_loss, select=config.select,
        deployable=deployable, deployable_reason=why, bytes_after=disk_bytes(saved),
        normalized=normalized, threads=torch.get_num_threads(), seconds=time.perf_counter() - started,
        device=settings.device)


def searched_path(output: Path) -> Path:
    """Where ``compress --finetune-epochs`` keeps the searched model before tuning: ``out.onnx`` -> ``out.searched.onnx``."""
    return output.with_name(f"{output.stem}.searched.onnx")


def finetune_compressed(output: str | os.PathLike[str], source: str | os.PathLike[str], settings: FinetuneSettings,
                        *, quantized: bool = False, **callbacks: Callable) -> FinetuneReport:
    """Fine-tune ``compress``'s written model in place of it (teacher: ``source``).

    The searched model moves to :func:`searched_path` and the tuned one is written at ``output``.
    With ``quantized`` (``compress --quantize``) the student is the pruned float model
    ``<out>.float.onnx`` trained with QAT at the bits of ``<out>.bits.json``: ``output`` becomes the
    tuned simulated model and ``<out>.qdq.onnx`` the deployable model of the tuned weights.

    Raises:
        OutputError: ``quantized`` and the float model or bits plan is missing.
    """
    target = Path(output).resolve()
    searched = searched_path(target)
    student = searched
    if quantized:
        student = target.with_name(f"{target.stem}.float.onnx")
        bits = target.with_name(f"{target.stem}.bits.json")
        if not (student.exists() and bits.exists()):
            raise OutputError(f"{student.name} / {bits.name} not found beside {target.name}; rerun compress "
                              "--quantize (it writes both)")
        settings = dataclasses.replace(settings, quant_plan=QuantPlan.read(str(bits)))
    os.replace(target, searched)
    return finetune_file(student, source, target, settings, **callbacks)


def finetune_finalists(output: str | os.PathLike[str], source: str | os.PathLike[str], files: Sequence[Path],
                       settings: FinetuneSettings, *, short_epochs: int = 1,
                       **callbacks: Callable) -> tuple[FinetuneReport, FinalistTuning]:
    """``compress --finetune-candidates``: short-tune every finalist, tune the best one in full at ``output``.

    Each of ``files`` (``output`` itself first, then ``compress``'s ``<out>.finalist<k>.onnx``) is
    trained ``short_epochs`` epochs with ``settings`` (same validation split); the finalist that scores
    best after it by ``settings.config.select`` (``loss``: the lowest validation distillation loss;
    ``top1`` and ``last``: the highest validation top-1; ties: the earlier one) is then trained from its untuned values
    for ``settings.config.epochs`` epochs and written at ``output``; the searched ``output`` moves
    to :func:`searched_path`. The short-tuned models and their checkpoints are removed.

    Raises:
        PlanError: ``short_epochs`` < 1.
    """
    if short_epochs < 1:
        raise PlanError(f"--finetune-candidate-epochs {short_epochs}: give 1 or more")
    target = Path(output).resolve()
    short_settings = dataclasses.replace(settings, config=dataclasses.replace(settings.config, epochs=short_epochs),
                                         resume=False)
    reports = []
    for k, path in enumerate(files):
        tmp = target.with_name(f"{target.stem}.candidate{k}.tmp.onnx")
        try:
            reports.append(finetune_file(path, source, tmp, short_settings))
        finally:
            for leftover in (tmp, checkpoint_path(tmp), tmp.with_name(f"{tmp.stem}.qdq.onnx")):
                leftover.unlink(missing_ok=True)
        logger.info("finalist %d (%s): validation top-1 %s -> %s after %d epoch(s)", k, Path(path).name,
                    reports[-1].top1_before, reports[-1].top1_after, short_epochs)
    chosen = 0  # the finalist whose short tune scores best by the same rule that keeps an epoch
    select = "top1" if settings.config.select == "last" else settings.config.select
    for k in range(1, len(reports)):
        scores = [Validation(reports[i].top1_after, reports[i].loss_after) for i in (k, chosen)]
        if better(scores[0], scores[1], select) and scores[0] != scores[1]:
            chosen = k
    searched = searched_path(target)
    os.replace(target, searched)
    student = searched if chosen == 0 else Path(files[chosen])
    final = finetune_file(student, source, target, settings, **callbacks)
    return final, FinalistTuning(files=tuple(Path(f) for f in files), short=tuple(reports), chosen=chosen)


def _set_metadata(model: onnx.ModelProto, values: Mapping[str, str]) -> None:
    """Set (replace) metadata entries of ``model``."""
    kept = [p for p in model.metadata_props if p.key not in values]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in values.items():
        model.metadata_props.add(key=key, value=value)


def _teacher_top1(teacher: onnx.ModelProto, val: ArrayData, runtime: Runtime) -> float | None:
    if val.labels is None:
        return None
    result = evaluate(runtime.create(teacher), val)
    return result.accuracy.top1 / 100.0 if result.accuracy is not None else None


def _deployable(grid_model: onnx.ModelProto, plan: QuantPlan, feeds: Mapping[str, np.ndarray], target: Path
                ) -> tuple[Path | None, str | None]:
    """Write the QDQ model of the QAT weights beside ``target`` (or say why not)."""
    try:
        result = to_qdq(grid_model, plan, feeds)
    except OnnxPruneError as exc:
        logger.warning("no deployable QDQ model: %s", exc)
        return None, str(exc)
    return save_model(result.model, target.with_name(f"{target.stem}.qdq.onnx")), None
