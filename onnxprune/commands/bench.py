"""``onnxprune bench``: latency of a model against a baseline, measured in one process."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from onnxprune import pipeline
from onnxprune.commands._runtime_options import add_runtime_options, progress_bar, run_caption, runtime_from
from onnxprune.errors import DataError
from onnxprune.evaluate import BenchResult, Protocol, threads_note
from onnxprune.evaluate.latency import noise_warning
from onnxprune.io import write_json_atomic
from onnxprune.pipeline.width_menu import WidthCheck

logger = logging.getLogger(__name__)

#: Default --max-time (seconds per model and batch size).
MAX_TIME = 10.0


def register(subparsers: Any) -> None:
    """Add the ``bench`` subcommand."""
    parser = subparsers.add_parser(
        "bench", help="latency (median/p90) at chosen batch sizes, as a ratio to a baseline",
        description="Time an ONNX model with ONNX Runtime on random inputs: warm-up, then timed runs "
                    "alternating with the baseline's in the same process, in blocks, for at least --min-time "
                    "seconds and --runs runs and until the 95 % interval of each median is within --tolerance "
                    "(else up to --max-time, then the row says 'unstable'); median and p90 in ms.")
    parser.add_argument("model", type=Path, help="the .onnx model to time")
    parser.add_argument("--baseline", type=Path, metavar="PATH", help="reference model timed alternately")
    parser.add_argument("--batch", default="1", metavar="B[,B...]", help="batch sizes, e.g. 1,64 (default 1)")
    parser.add_argument("--runs", type=int, default=20, metavar="N",
                        help="at least N timed runs per model and batch size (default 20)")
    parser.add_argument("--warmup", type=int, default=10, metavar="N", help="warm-up runs (default 10)")
    parser.add_argument("--min-time", type=float, default=2.0, metavar="S",
                        help="at least S seconds of timed runs per model and batch size (default 2)")
    parser.add_argument("--max-time", type=float, default=None, metavar="S",
                        help="extend a noisy measurement up to S seconds per model, then report it "
                             "unstable (default 10, or --min-time if longer)")
    parser.add_argument("--tolerance", type=float, default=0.02, metavar="F",
                        help="stable when the 95 %% interval of each median is within F of it (default 0.02)")
    parser.add_argument("--profile", type=int, nargs="?", const=10, default=None, metavar="TOP",
                        help="profile with ORT and list the TOP op types by kernel time (default 10); with "
                             "--baseline, before (baseline) and after (model) side by side")
    parser.add_argument("--widths", action="store_true",
                        help="per class of equal prunable groups, time the model with one step fewer channels (the "
                             "multiple of 16 below, or 8 fewer) at the largest --batch: 'slow width' when that saves "
                             "1.5x or more its MACs share in time, 'no gain' when at most 0.25x")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    add_runtime_options(parser, timing=True)
    parser.set_defaults(run=run)


def parse_batches(text: str) -> tuple[int, ...]:
    """Parse ``1,64`` into ``(1, 64)``.

    Raises:
        DataError: anything but a comma-separated list of positive integers.
    """
    try:
        batches = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise DataError(f"--batch {text}: give comma-separated batch sizes, e.g. --batch 1,64") from exc
    if not batches or min(batches) < 1:
        raise DataError(f"--batch {text}: give positive batch sizes, e.g. --batch 1,64")
    return batches


def protocol_from(args: argparse.Namespace) -> Protocol:
    """The timing protocol the flags ask for (``--max-time`` defaults to 10 s, or ``--min-time`` if longer).

    Raises:
        DataError: a flag out of range.
    """
    max_time = args.max_time if args.max_time is not None else max(MAX_TIME, args.min_time)
    return Protocol(runs=args.runs, warmup=args.warmup, min_time=args.min_time, max_time=max_time,
                    tolerance=args.tolerance)


def _footer(result: BenchResult, note: str | None) -> str:
    text = run_caption(result.run) + (f" ({note})" if note else "")
    text += f"\nsession memory {result.memory_mb:.1f} MiB"
    if result.baseline_memory_mb is not None:
        text += f" (baseline {result.baseline_memory_mb:.1f} MiB)"
    if result.load_average is not None:
        text += "; host load average {:.2f} -> {:.2f} on {} CPUs".format(*result.load_average, result.cpus)
    if result.others is not None and result.steal is not None:
        text += (f"\nwhile timing: other processes used {100 * result.others:.0f} % of the host's CPU time, "
                 f"the hypervisor stole {100 * result.steal:.1f} %")
    return text


def _pm(half_width: float | None) -> str:
    return "" if half_width is None else f"+-{100 * half_width:.1f} %"


def _table(result: BenchResult, has_baseline: bool) -> Table:
    table = Table(title="onnxprune bench: latency in ms (+-: 95 % interval of the median)")
    names = ["batch", "median", "+-", "p90"]
    if has_baseline:
        names += ["baseline median", "+-", "ratio", "ratio +-"]
    for name in [*names, "runs", "seconds", "others", "steal", "verdict"]:
        table.add_column(name, justify="right")
    for row in result.rows:
        cells = [str(row.batch), f"{row.model.median_ms:.3f}", _pm(row.model.half_width), f"{row.model.p90_ms:.3f}"]
        if has_baseline and row.baseline is not None and row.ratio is not None:
            cells += [f"{row.baseline.median_ms:.3f}", _pm(row.baseline.half_width), f"{row.ratio:.3f}",
                      _pm(row.ratio_half_width)]
        host = ["?" if share is None else f"{100 * share:.{digits}f} %"
                for share, digits in ((row.others, 0), (row.steal, 1))]
        verdict = row.verdict if row.verdict == "stable" else f"[bold red]{row.verdict}[/]"
        table.add_row(*cells, str(row.model.runs), f"{row.seconds:.1f}", *host, verdict)
    return table


def _profile_table(result: BenchResult) -> Table:
    if result.profile_change is not None:
        return _change_table(result)
    table = Table(title="ORT profile: top op types by kernel time (model)")
    for name in ("op type", "ms", "share", "calls"):
        table.add_column(name, justify="left" if name == "op type" else "right")
    for op in result.profile or ():
        table.add_row(op.op_type, f"{op.total_ms:.2f}", f"{100 * op.share:.1f} %", str(op.calls))
    return table


def _change_table(result: BenchResult) -> Table:
    """Kernel time per op type, baseline (before) against model (after), same runs and batch."""
    table = Table(title="ORT kernel time per op type: baseline (before) vs model (after)")
    for name in ("op type", "before ms", "share", "after ms", "share", "ratio"):
        table.add_column(name, justify="left" if name == "op type" else "right")
    for op in result.profile_change or ():
        table.add_row(op.op_type, f"{op.baseline_ms:.3f}", f"{100 * op.baseline_share:.1f} %", f"{op.model_ms:.3f}",
                      f"{100 * op.model_share:.1f} %", "-" if op.ratio is None else f"{op.ratio:.3f}")
    return table


def _widths_table(checks: Sequence[WidthCheck], batch: int) -> Table:
    """One row per class of groups: what one step fewer channels saves in MACs and in measured time."""
    table = Table(title=f"group widths: one step fewer channels, timed end to end at batch {batch}")
    for name in ("groups", "width", "probe", "MACs saved", "time saved", "time/MACs", "verdict"):
        table.add_column(name, justify="left" if name in ("groups", "verdict") else "right")
    for c in checks:
        ids = ",".join(map(str, c.groups)) if len(c.groups) <= 4 else f"{c.groups[0]}..{c.groups[-1]} ({len(c.groups)})"
        verdict = c.verdict if c.verdict == "ok" else f"[bold yellow]{c.verdict}[/]"
        table.add_row(ids, str(c.width), str(c.probe), f"{100 * c.macs_saved:.1f} %", f"{100 * c.time_saved:.1f} %",
                      f"{c.payoff:.2f}", verdict)
    table.caption = ("slow width: the runtime pads these channels to a block, the step down is nearly free in "
                     "accuracy per ms; no gain: cutting there does not pay")
    return table


def run(args: argparse.Namespace) -> int:
    """Time the model (and baseline) and print (and optionally save) the results."""
    batches = parse_batches(args.batch)
    protocol = protocol_from(args)
    runtime = runtime_from(args, timing=True)
    with progress_bar("timing batch sizes") as advance:
        result = pipeline.bench_model(args.model, runtime=runtime, baseline=args.baseline, batches=batches,
                                      protocol=protocol, seed=args.seed,
                                      profile_top=args.profile, on_row=advance)
    console = Console()
    if not console.is_terminal:  # a log file: no terminal width to fit, keep each row on one line
        console = Console(width=160)
    console.print(_table(result, args.baseline is not None))
    note = threads_note(args.threads, result.run.threads)
    console.print(_footer(result, note), highlight=False)
    if result.profile is not None:
        console.print(_profile_table(result))
    checks = None
    if args.widths:
        checks = pipeline.check_model_widths(args.model, runtime=runtime, batch=max(batches), seed=args.seed)
        console.print(_widths_table(checks, max(batches)))
    warning = noise_warning(result)
    if warning is not None:
        print(f"onnxprune: warning: {warning}", file=sys.stderr)
    if args.json is not None:
        write_json_atomic(args.json, {"command": "bench", "model": str(args.model),
                                      "baseline": None if args.baseline is None else str(args.baseline),
                                      "batches": list(batches), "runs": args.runs, "threads_note": note,
                                      **result.as_dict(),
                                      "widths": None if checks is None else [
                                          {**dataclasses.asdict(c), "payoff": c.payoff} for c in checks]})
    return 0
