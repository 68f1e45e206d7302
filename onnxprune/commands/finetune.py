"""``onnxprune finetune``: train a pruned (or quantized) ONNX model by distillation from the original."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from onnxprune.errors import DataError
from onnxprune.evaluate import DataSpec, make_preprocess
from onnxprune.evaluate.preprocess import PRESETS
from onnxprune.finetune.augment import AUGMENTS
from onnxprune.finetune.train import QAT_LR, SELECTIONS, EpochLog, TrainConfig
from onnxprune.io import write_json_atomic
from onnxprune.pipeline.finetuning import FinetuneSettings, checkpoint_path, finetune_file
from onnxprune.quantize import QuantPlan
from onnxprune.report import FinetuneReport


def add_training_options(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """Hyper-parameters shared by ``finetune`` and ``compress --finetune-epochs`` (``prefix``: ``finetune-``)."""
    d = TrainConfig()
    parser.add_argument(f"--{prefix}lr", type=float, default=None, metavar="LR",
                        help=f"peak learning rate, cosine-annealed (default {d.lr}; {QAT_LR} for quantization-aware "
                             "training, whose rounded weights diverge at float rates)")
    parser.add_argument(f"--{prefix}batch-size", type=int, default=d.batch_size, metavar="N",
                        help=f"samples per step (default {d.batch_size})")
    parser.add_argument(f"--{prefix}weight-decay", type=float, default=d.weight_decay, metavar="W",
                        help=f"SGD weight decay (default {d.weight_decay})")
    parser.add_argument(f"--{prefix}temperature", type=float, default=d.temperature, metavar="T",
                        help=f"distillation temperature (default {d.temperature})")
    parser.add_argument(f"--{prefix}alpha", type=float, default=d.alpha, metavar="A",
                        help=f"weight of distillation vs cross-entropy on the labels (default {d.alpha})")
    parser.add_argument(f"--{prefix}augment", choices=AUGMENTS, default="auto",
                        help="crop-flip, flip or none (auto: crop-flip for --preprocess cifar, flip for imagenet)")
    parser.add_argument(f"--{prefix}val-images", type=int, default=5000, metavar="N",
                        help="images of --data set aside (seeded) to keep the best epoch (default 5000)")
    parser.add_argument(f"--{prefix}select-by", choices=SELECTIONS, default=d.select,
                        help="which epoch is written: loss (default: lowest distillation loss to the teacher on "
                             "the validation images; it still ranks when their top-1 saturates, as on images the "
                             "teacher was trained on), top1 (highest validation top-1) or last")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "finetune", help="fine-tune a pruned/quantized model by distillation (+ QAT), weights written back",
        description="Train the model's own initializers (the graph is run as a torch module) by distillation "
                    "from --teacher's outputs plus cross-entropy on the labels: SGD with momentum, cosine "
                    "schedule, augmentation for image presets, best epoch on a validation split of --data. "
                    "The written model is the input with new numbers (same nodes, names, layout). With "
                    "--quant-plan the forward pass is fake-quantized (QAT) and the simulated model is written, "
                    "plus the deployable QDQ model as <out>.qdq.onnx.")
    parser.add_argument("model", type=Path, help="the model to tune, e.g. a pruned .onnx (never modified)")
    parser.add_argument("--teacher", type=Path, required=True, help="the original model whose outputs are matched")
    parser.add_argument("--data", type=Path, required=True, metavar="FILE", help="training .npz or image folder")
    parser.add_argument("--preprocess", choices=sorted(PRESETS), default=None, help="preset for --data")
    parser.add_argument("--scale", type=float, help="divide raw values by this (overrides the preset)")
    parser.add_argument("--layout", choices=("nchw", "nhwc"), help="the model input's layout")
    parser.add_argument("-o", "--output", type=Path, required=True, help="where to write the tuned model")
    parser.add_argument("--epochs", type=int, default=10, metavar="N", help="passes over the data (default 10)")
    add_training_options(parser)
    parser.add_argument("--quant-plan", type=Path, default=None, metavar="BITS.json",
                        help="quantization-aware training at these bits (a bits plan, e.g. from compress --quantize)")
    parser.add_argument("--resume", action="store_true", help="continue from <output>.finetune.pt")
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="torch and ONNX Runtime threads")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where torch trains: CUDA when torch sees a GPU, else CPU (auto); the teacher and "
                             "validation run in ONNX Runtime, on CUDA too where onnxruntime-gpu is installed")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, order and augmentation")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the report as JSON")
    parser.set_defaults(run=run)


def settings_from(args: argparse.Namespace, data: Path, epochs: int, prefix: str = "", *, resume: bool = False,
                  quant_plan: Path | None = None) -> FinetuneSettings:
    """FinetuneSettings from parsed options (``prefix``: ``finetune_`` for compress's copies)."""
    def opt(name: str):  # noqa: ANN202 - argparse values
        return getattr(args, prefix + name)
    if epochs < 1 or opt("val_images") < 1:
        raise DataError("--epochs and --val-images take a positive number")
    preprocess = make_preprocess(args.preprocess, scale=args.scale, layout=args.layout)
    qat = quant_plan is not None or bool(getattr(args, "quantize", False))
    lr = opt("lr") if opt("lr") is not None else (QAT_LR if qat else TrainConfig().lr)
    config = TrainConfig(epochs=epochs, batch_size=opt("batch_size"), lr=lr, weight_decay=opt("weight_decay"),
                         temperature=opt("temperature"), alpha=opt("alpha"), seed=args.seed,
                         select=opt("select_by"))
    return FinetuneSettings(data=DataSpec(path=data, preprocess=preprocess, seed=args.seed),
                            val_images=opt("val_images"), config=config, augment=opt("augment"),
                            preset=args.preprocess, threads=args.threads,
                            quant_plan=QuantPlan.read(str(quant_plan)) if quant_plan else None, resume=resume,
                            device=getattr(args, "device", "auto") or "auto")


def run_training(model: Path, teacher: Path, output: Path, settings: FinetuneSettings, *,
                 runner: Callable[..., FinetuneReport] | None = None) -> FinetuneReport:
    """Fine-tune with a progress bar (loss and validation top-1).

    ``runner``: ``pipeline.finetune_compressed`` (called as ``runner(output, teacher, settings, ...)``)
    to tune a compress result in place; default :func:`finetune_file` of ``model``.
    """
    epochs = settings.config.epochs
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[info]}"), disable=not Console(stderr=True).is_terminal) as progress:
        task = progress.add_task("finetune", total=epochs, info="")
        last: dict[str, str] = {"val": ""}

        def on_step(epoch: int, step: int, steps: int, loss: float) -> None:
            progress.update(task, completed=epoch + (step + 1) / steps,
                            info=f"epoch {epoch + 1} loss {loss:.3f}{last['val']}")

        def on_epoch(log: EpochLog) -> None:
            parts = ([f"top-1 {100 * log.val_top1:.2f} %"] if log.val_top1 is not None else []) + (
                [f"loss {log.val_loss:.4f}"] if log.val_loss is not None else [])
            last["val"] = f" | val {', '.join(parts)}" if parts else ""
            progress.update(task, completed=log.epoch + 1)

        if runner is not None:
            return runner(output, teacher, settings, on_step=on_step, on_epoch=on_epoch)
        return finetune_file(model, teacher, output, settings, on_step=on_step, on_epoch=on_epoch)


def table(report: FinetuneReport) -> Table:
    """Per-epoch losses and validation top-1."""
    out = Table(title=f"finetune {Path(report.source).name} -> {report.output.name}"
                      f"{' (QAT)' if report.qat else ''}: {report.train_samples:,} training images, "
                      f"augment {report.augment}, {report.device}, {report.threads} threads")
    for col in ("epoch", "loss", "distill", "CE", "val top-1 %", "val distill", "lr", "s"):
        out.add_column(col, justify="right")
    for e in report.history:
        kept = " *" if e.epoch == report.best_epoch and not e.undone else ""
        out.add_row(f"{e.epoch + 1}{' undone' if e.undone else ''}{kept}", f"{e.loss:.4f}", f"{e.distill:.4f}",
                    "-" if e.ce is None else f"{e.ce:.4f}",
                    "-" if e.val_top1 is None else f"{100 * e.val_top1:.2f}",
                    "-" if e.val_loss is None else f"{e.val_loss:.4f}", f"{e.lr:.4g}", f"{e.seconds:.1f}")
    undone = sum(e.undone for e in report.history)
    if undone:
        out.caption = (f"{undone} epoch(s) collapsed and were undone, each halving the learning rate "
                       "(pass a lower --lr)")
    return out


def summary(report: FinetuneReport) -> str:
    """One line: validation top-1 teacher / before / after and what was written."""
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.2f} %"
    def num(v: float | None) -> str:
        return "-" if v is None else f"{v:.4f}"
    kept = "the untrained model (no epoch beat it)" if report.best_epoch < 0 else f"epoch {report.best_epoch + 1}"
    return (f"validation top-1: teacher {pct(report.teacher_top1)}, before {pct(report.top1_before)}, after "
            f"{pct(report.top1_after)}; distillation loss {num(report.loss_before)} -> {num(report.loss_after)} "
            f"(kept {kept}, by {report.select}); {report.seconds / 60:.1f} min; wrote {report.output}")


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args, args.data, args.epochs, resume=args.resume, quant_plan=args.quant_plan)
    report = run_training(args.model, args.teacher, args.output, settings)
    console = Console()
    console.print(table(report))
    console.print(summary(report))
    if report.deployable is not None:
        console.print(f"deployable QDQ model: {report.deployable}")
    elif report.qat:
        console.print(f"no deployable QDQ model: {report.deployable_reason}")
    console.print(f"checkpoint: {checkpoint_path(report.output.resolve())} (--resume continues it)")
    if args.json is not None:
        write_json_atomic(args.json, report.to_json())
    return 0
