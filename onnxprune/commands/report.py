"""``onnxprune report``: one self-contained HTML page of a compress run, or of several side by side."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from onnxprune import pipeline


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``report`` subcommand."""
    parser = subparsers.add_parser(
        "report", help="HTML report of compress --json runs (two or more: side by side)",
        description="Write one self-contained HTML file (plots inline as SVG, no scripts, nothing fetched): "
                    "summary, per-group widths and bits, search curve, candidates with the Pareto front, "
                    "latency by op type with why-not-faster flags, and the command and versions to reproduce.")
    parser.add_argument("runs", type=Path, nargs="+", metavar="RUN_JSON", help="files written by compress --json")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the .html file to write")
    parser.add_argument("--bench", type=Path, action="append", default=[], metavar="BENCH_JSON",
                        help="bench --baseline [--profile] --json of a run's model, in the order of the runs "
                             "(measured latency, op types)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Write the report and say where."""
    path = pipeline.report_files(args.runs, args.output, benches=args.bench)
    Console().print(f"wrote report {path}")
    return 0
