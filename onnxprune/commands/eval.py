"""``onnxprune eval``: accuracy (and fidelity to a baseline) of a model with ONNX Runtime."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from onnxprune import pipeline
from onnxprune.commands._runtime_options import add_runtime_options, progress_bar, run_caption, runtime_from
from onnxprune.errors import DataError
from onnxprune.evaluate import PRESETS, DataSpec, EvalResult, make_preprocess
from onnxprune.evaluate.cost import CostReport
from onnxprune.io import write_json_atomic

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Add the ``eval`` subcommand."""
    parser = subparsers.add_parser(
        "eval", help="score a model: top-1/top-5, fidelity to a baseline, cost",
        description="Score an ONNX model with ONNX Runtime on labelled data (top-1/top-5) and, with "
                    "--baseline, its fidelity to that model (top-1 agreement, output MSE, cosine).")
    parser.add_argument("model", type=Path, help="the .onnx model to score")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, metavar="PATH",
                        help="an .npz with 'images' (+ 'labels') or a folder with one sub-folder per class")
    source.add_argument("--data-module", metavar="PKG.MOD:FUNC",
                        help="a function (no arguments) yielding (feeds dict, labels or None) batches")
    parser.add_argument("--preprocess", choices=sorted(PRESETS), default=None,
                        help="preset: cifar/imagenet = /255, ImageNet mean/std, NCHW; none = as stored")
    parser.add_argument("--scale", type=float, help="divide raw values by this (overrides the preset)")
    parser.add_argument("--mean", nargs="+", metavar="M", help="per-channel mean, e.g. 0.485,0.456,0.406")
    parser.add_argument("--std", nargs="+", metavar="S", help="per-channel std, e.g. 0.229,0.224,0.225")
    parser.add_argument("--layout", choices=("nchw", "nhwc"), help="the model input's layout")
    parser.add_argument("--dtype", help="element type fed to the model (default: the model's)")
    parser.add_argument("--val-split", type=int, metavar="N", help="score a fixed, seeded subset of N samples")
    parser.add_argument("--seed", type=int, default=0, help="seed of --val-split (default 0)")
    parser.add_argument("--baseline", type=Path, metavar="PATH", help="reference model for fidelity")
    parser.add_argument("--batch-size", type=int, default=500, metavar="N", help="samples per run (default 500)")
    add_runtime_options(parser)
    parser.set_defaults(run=run)


def _floats(values: list[str] | None, flag: str) -> tuple[float, ...] | None:
    if values is None:
        return None
    try:
        return tuple(float(v) for part in values for v in part.split(",") if v.strip())
    except ValueError as exc:
        raise DataError(f"{flag} {' '.join(values)}: give numbers, e.g. {flag} 0.485,0.456,0.406") from exc


def data_spec(args: argparse.Namespace) -> DataSpec:
    """Build the :class:`DataSpec` from the command line."""
    preprocess = make_preprocess(args.preprocess, scale=args.scale, mean=_floats(args.mean, "--mean"),
                                 std=_floats(args.std, "--std"), layout=args.layout, dtype=args.dtype)
    return DataSpec(path=args.data, hook=args.data_module, preprocess=preprocess,
                    val_split=args.val_split, seed=args.seed)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} %"


def _table(result: EvalResult, costs: tuple[CostReport, CostReport | None], has_baseline: bool) -> Table:
    table = Table(title=f"onnxprune eval: {result.samples} samples")
    table.add_column("metric")
    table.add_column("model", justify="right")
    if has_baseline:
        table.add_column("baseline", justify="right")
    acc, base = result.accuracy, result.baseline_accuracy
    model_cost, base_cost = costs

    def row(name: str, model: str, baseline: str = "") -> None:
        table.add_row(name, model, *([baseline] if has_baseline else []))

    row("top-1", _pct(acc.top1 if acc else None), _pct(base.top1 if base else None))
    row("top-5", _pct(acc.top5 if acc else None), _pct(base.top5 if base else None))
    if result.fidelity is not None:
        fid = result.fidelity
        row("top-1 agreement", "-" if fid.agreement is None else f"{100 * fid.agreement:.2f} %", "100 %")
        row("output MSE", f"{fid.mse:.4g}", "0")
        row("output cosine", f"{fid.cosine:.6f}", "1")
    for name, attr, fmt in (("MACs (batch 1)", "macs", "{:,}"), ("params", "params", "{:,}"),
                            ("size on disk", "bytes_on_disk", "{:,} B")):
        value = getattr(model_cost, attr)
        other = getattr(base_cost, attr) if base_cost is not None else None
        row(name, "n/a" if value is None else fmt.format(value), "n/a" if other is None else fmt.format(other))
    base_ips = (result.samples / result.baseline_seconds) if result.baseline_seconds else None
    row("images/s", f"{result.images_per_second:,.0f}", "-" if base_ips is None else f"{base_ips:,.0f}")
    return table


def run(args: argparse.Namespace) -> int:
    """Score the model and print (and optionally save) the results."""
    spec = data_spec(args)
    runtime = runtime_from(args)
    with progress_bar("scoring") as advance:
        result = pipeline.evaluate_model(args.model, spec, runtime=runtime, baseline=args.baseline,
                                         batch_size=args.batch_size, on_batch=advance)
    costs = (pipeline.model_cost(args.model),
             pipeline.model_cost(args.baseline) if args.baseline is not None else None)
    console = Console()
    console.print(_table(result, costs, args.baseline is not None))
    console.print(run_caption(result.run), highlight=False)
    if args.json is not None:
        payload = {"command": "eval", "model": str(args.model),
                   "baseline": None if args.baseline is None else str(args.baseline),
                   "data": {"path": None if spec.path is None else str(spec.path), "hook": spec.hook,
                            "preprocess": spec.preprocess.as_dict(), "val_split": spec.val_split,
                            "seed": spec.seed},
                   **result.as_dict(),
                   "cost": costs[0].as_dict(),
                   "baseline_cost": None if costs[1] is None else costs[1].as_dict()}
        write_json_atomic(args.json, payload)
    return 0
