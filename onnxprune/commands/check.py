"""``onnxprune check``: what a deployment target lacks or runs slowly in a model; ORT runs it once."""

from __future__ import annotations

import argparse
import logging
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from onnxprune.deploy.checks import check_target
from onnxprune.deploy.target_support import TARGETS
from onnxprune.io import write_json_atomic
from onnxprune.load import read

logger = logging.getLogger(__name__)
_STYLE = {"error": "red", "warning": "yellow", "info": "cyan"}


def register(subparsers: Any) -> None:
    """Add the ``check`` subcommand."""
    parser = subparsers.add_parser(
        "check", help="report ops and patterns a target lacks or runs slowly; run it once in ORT",
        description="Check a model against a deployment target's documented op support (TensorRT's ONNX "
                    "operator matrix, ONNX Runtime's kernels), tensor-core friendly widths and int4 Q/DQ; "
                    "for ORT targets load and run the model once on random inputs.")
    parser.add_argument("model", help="the .onnx model to check")
    parser.add_argument("--target", choices=TARGETS, required=True, help="deployment target")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random test inputs (default 0)")
    parser.add_argument("--no-run", action="store_true", help="static checks only")
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Check, print a table; exit 1 when the target lacks something (errors), else 0."""
    model = read(args.model, interface_only=True)  # a model above 2 GiB keeps its data on disk
    report = check_target(model, args.target, np.random.default_rng(args.seed), run=not args.no_run,
                          source=args.model)
    table = Table(title=f"{args.model} on {report.target}: {'OK' if report.ok else 'problems found'}")
    for column in ("severity", "rule", "node", "message"):
        table.add_column(column, overflow="fold")
    for finding in report.findings:
        table.add_row(f"[{_STYLE[finding.severity]}]{finding.severity}[/]", finding.rule, finding.node,
                      finding.message)
    console = Console()
    if report.findings:
        console.print(table)
    else:
        console.print(f"{args.model} on {report.target}: no findings")
    console.print(f"run: {report.run}")
    if args.json:
        write_json_atomic(args.json, report.to_json())
    return 0 if report.ok else 1
