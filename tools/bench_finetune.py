"""Benchmark: fine-tuning a pruned CIFAR ResNet from its ONNX file (issue 17's figures).

For each depth (pretrained weights and data from ../shared): the float32 export (the teacher);
the student ``--student PATH`` or, by default, ``onnxprune compress --target 0.5 --agent uniform
--round-to 8 --reconstruct`` (50 % MACs, repaired on train.npz); then
:func:`onnxprune.pipeline.finetuning.finetune_file`: distillation from the teacher + cross-entropy
on train.npz minus a seeded 5,000-image validation split (best epoch on it), crop+flip
augmentation, SGD with momentum and a cosine schedule, on this machine's CPU. With ``--qat-plan``
the forward pass is fake-quantized at those bits. Top-1 is measured on all of test.npz
(``onnxprune eval``) for the teacher, the student and the tuned model.

Needs ../shared (exits 2 without it). Prints a table and writes JSON (default build/bench_finetune.json).

Usage: python tools/bench_finetune.py [--depth 56] [--student PATH] [--epochs 10] [--lr 0.02]
           [--batch-size 128] [--threads N] [--qat-plan BITS.json] [--work DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from onnxprune.evaluate import DataSpec, make_preprocess  # noqa: E402
from onnxprune.finetune.train import TrainConfig  # noqa: E402
from onnxprune.io import write_json_atomic  # noqa: E402
from onnxprune.pipeline.finetuning import FinetuneSettings, finetune_file  # noqa: E402
from onnxprune.quantize import QuantPlan  # noqa: E402
from tools.bench_round_to import SHARED, TEST, TRAIN, cli, export  # noqa: E402


def test_top1(path: Path, work: Path) -> float:
    """Top-1 (percent) of ``path`` on all of test.npz."""
    scored = work / f"{path.stem}.eval.json"
    cli("eval", str(path), "--data", str(TEST), "--preprocess", "cifar", "--device", "cpu", "--json", str(scored))
    return float(json.loads(scored.read_text())["accuracy"]["top1"])


def student_model(teacher: Path, work: Path) -> Path:
    """The default student: uniform 50 % MACs, multiples of 8, least-squares repaired on train.npz."""
    out = work / f"{teacher.stem}_p50_r8.onnx"
    if not out.exists():
        cli("compress", str(teacher), "-o", str(out), "--target", "0.5", "--agent", "uniform", "--round-to", "8",
            "--data", str(TRAIN), "--preprocess", "cifar", "--val-split", "1000", "--reconstruct",
            "--calib", str(TRAIN), "--calib-size", "2000", "--device", "cpu")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=56)
    parser.add_argument("--student", type=Path, default=None)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--qat-plan", type=Path, default=None)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--select-by", choices=("loss", "top1", "last"), default="loss",
                        help="which epoch is written (validation distillation loss, top-1, or the last)")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "bench_finetune")
    parser.add_argument("--json", type=Path, default=ROOT / "build" / "bench_finetune.json")
    args = parser.parse_args(argv)
    if not TRAIN.exists():
        print(f"needs {SHARED} (CIFAR-10 and the ResNet weights); not found", file=sys.stderr)
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    teacher = args.work / f"resnet{args.depth}.onnx"
    if not teacher.exists():
        teacher = export(args.depth, args.work)
    student = args.student or student_model(teacher, args.work)
    tuned = args.work / f"{student.stem}_tuned.onnx"
    settings = FinetuneSettings(
        data=DataSpec(path=TRAIN, preprocess=make_preprocess("cifar"), seed=0), val_images=5000,
        config=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                           select=args.select_by), augment="auto",
        preset="cifar", quant_plan=QuantPlan.read(str(args.qat_plan)) if args.qat_plan else None,
        threads=args.threads, resume=args.resume)
    console = Console()
    started = time.perf_counter()
    report = finetune_file(student, teacher, tuned, settings,
                           on_epoch=lambda e: console.print(f"epoch {e.epoch + 1}: loss {e.loss:.3f}, val top-1 "
                                                            f"{100 * (e.val_top1 or 0):.2f} %, val distill "
                                                            f"{e.val_loss or 0:.4f}, {e.seconds:.0f} s"))
    wall = time.perf_counter() - started
    rows: dict[str, Any] = {"teacher": test_top1(teacher, args.work), "student": test_top1(student, args.work),
                            "tuned": test_top1(tuned, args.work)}
    epoch_s = [e.seconds for e in report.history]
    result = {"depth": args.depth, "student": str(student), "qat": report.qat, "epochs": args.epochs, "lr": args.lr,
              "batch_size": args.batch_size, "threads": report.threads, "train_samples": report.train_samples,
              "val_samples": report.val_samples, "augment": report.augment, "best_epoch": report.best_epoch,
              "val_top1_before": report.top1_before, "val_top1_after": report.top1_after,
              "select_by": report.select, "val_loss_before": report.loss_before, "val_loss_after": report.loss_after,
              "test_top1": rows, "minutes_per_epoch": sum(epoch_s) / len(epoch_s) / 60 if epoch_s else None,
              "wall_minutes": wall / 60, "history": [e.__dict__ for e in report.history],
              "deployable": str(report.deployable) if report.deployable else None}
    table = Table(title=f"ResNet-{args.depth}: fine-tuning from the ONNX file ({args.epochs} epochs, "
                        f"{report.threads} threads, {result['minutes_per_epoch']:.1f} min/epoch)")
    for col in ("model", "test top-1 %"):
        table.add_column(col, justify="right")
    for name, top1 in rows.items():
        table.add_row(name, f"{top1:.2f}")
    console.print(table)
    write_json_atomic(args.json, result)
    console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
