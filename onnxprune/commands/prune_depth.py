"""``onnxprune prune-depth``: drop whole residual branches, each replaced by its calibration mean."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from onnxprune.commands._deploy_options import add_deploy_options, deploy_options, print_opset_notice
from onnxprune.commands._tables import cost_table
from onnxprune.errors import DataError
from onnxprune.evaluate import DataSpec, make_preprocess
from onnxprune.evaluate.preprocess import PRESETS
from onnxprune.io import write_json_atomic

if TYPE_CHECKING:
    from onnxprune.pipeline.depth import DepthReport


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prune-depth", help="depth pruning: replace residual branches by constants (fine-tune afterwards)",
        description="Find every residual branch (an Add whose one input is a closed sub-graph with a "
                    "Conv/Gemm/MatMul and the shape of the Add's output), score each by the distance of the "
                    "model's output to the original's on --calib when that branch alone is replaced by its "
                    "calibration mean, and drop the cheapest ones per MAC until --target of the MACs is "
                    "removed (or --blocks branches). Whole blocks save more latency per MAC than narrower "
                    "ones, but lose accuracy at once: fine-tune the result with `onnxprune finetune`.")
    parser.add_argument("model", type=Path, help="the .onnx file (never modified)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="where to write the result")
    amount = parser.add_mutually_exclusive_group(required=True)
    amount.add_argument("--target", type=float, default=None, help="fraction of the MACs to remove, in (0, 1)")
    amount.add_argument("--blocks", type=int, default=None, metavar="N", help="number of branches to drop")
    parser.add_argument("--calib", type=Path, required=True, metavar="FILE",
                        help="calibration images (.npz or image folder), preprocessed like the model's data")
    parser.add_argument("--calib-size", type=int, default=1000, metavar="N",
                        help="calibration images used (default 1000; all of them when the data has fewer)")
    parser.add_argument("--preprocess", choices=sorted(PRESETS), default=None, help="preset for --calib")
    parser.add_argument("--threads", type=int, default=2, metavar="N", help="ONNX Runtime threads (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the calibration subset")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the report as JSON")
    add_deploy_options(parser, triton=False)
    parser.set_defaults(run=run)


def _branch_table(report: DepthReport) -> Table:
    table = Table(title=f"residual branches of {Path(report.source).name} (loss: output distance when dropped alone)")
    for col in ("branch output", "nodes", "MACs", "loss", "dropped"):
        table.add_column(col, justify="right")
    for row in report.rows:
        table.add_row(row.output, str(row.nodes), f"{row.macs:,}", f"{row.loss:.4f}", "yes" if row.dropped else "")
    return table


def run(args: argparse.Namespace) -> int:
    from onnxprune.pipeline.depth import prune_depth_file

    if args.calib_size < 1 or args.threads < 1:
        raise DataError("--calib-size and --threads take a positive number")
    calib = DataSpec(path=args.calib, preprocess=make_preprocess(args.preprocess), val_split=args.calib_size,
                     seed=args.seed)
    console = Console()
    with Progress(TextColumn("scoring branches"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  disable=not Console(stderr=True).is_terminal) as progress:
        task = progress.add_task("branches", total=None)
        report = prune_depth_file(args.model, args.output, calib=calib, target=args.target, count=args.blocks,
                                  threads=args.threads, deploy=deploy_options(args, args.output),
                                  on_branch=lambda done, total: progress.update(task, completed=done, total=total))
    console.print(_branch_table(report))
    console.print(cost_table(f"{args.model.name} -> {report.output.name}", report.before, report.after,
                             report.bytes_before, report.bytes_after))
    print_opset_notice(report.opset)
    dropped = sum(r.dropped for r in report.rows)
    console.print(f"dropped {dropped} of {len(report.rows)} residual branches; output distance to the original on "
                  f"{report.calib_images} calibration images {report.loss:.4f}; wrote {report.output} "
                  "(fine-tune it: onnxprune finetune)")
    if args.json is not None:
        write_json_atomic(args.json, report.to_json())
    return 0
