"""Options shared by the commands that run models (eval, bench): device, threads, JSON output."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from onnxprune.evaluate import RunInfo, Runtime, timing_threads


def add_runtime_options(parser: argparse.ArgumentParser, *, timing: bool = False) -> None:
    """Add ``--device``, ``--threads``, ``--no-spin`` and ``--json``.

    Args:
        parser: The command's parser.
        timing: The command times models: ``--threads`` defaults to :func:`timing_threads`.
    """
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="execution provider: CUDA when onnxruntime-gpu and a GPU are present (auto)")
    threads_help = ("intra-op threads (default: every CPU this process may use but one, at least 1: timed "
                    "threads on every CPU compete with the OS and latency stops repeating)" if timing else
                    "intra-op threads (default: every CPU this process may use)")
    parser.add_argument("--threads", type=int, default=None, metavar="N", help=threads_help)
    parser.add_argument("--no-spin", action="store_true",
                        help="idle ORT threads sleep instead of busy-waiting: slower at small batches, "
                             "repeatable latency on shared or virtual CPUs")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results as JSON")


def runtime_from(args: argparse.Namespace, *, timing: bool = False) -> Runtime:
    """Create the :class:`Runtime` the options ask for (``timing``: threads by :func:`timing_threads`)."""
    threads = timing_threads(args.threads) if timing else args.threads
    return Runtime(device=args.device, threads=threads, spin=not args.no_spin)


def run_caption(info: RunInfo) -> str:
    """One line stating where the figures were measured."""
    return (f"{info.provider} (device {info.device}), ONNX Runtime {info.ort_version}, "
            f"{info.cpu}, {info.threads} threads")


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int | None], None]]:
    """A rich progress bar on stderr (hidden when stderr is not a terminal).

    Yields:
        A callback ``(advance, total)`` to call after each unit of work.
    """
    console = Console(stderr=True)
    # auto_refresh=False: no refresh thread competing with the work being measured.
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True, auto_refresh=False,
                  disable=not console.is_terminal) as progress:
        task = progress.add_task(description, total=None)

        def advance(count: int, total: int | None) -> None:
            progress.update(task, advance=count, total=total, refresh=True)

        yield advance
