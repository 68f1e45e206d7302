"""HTML reports of compression runs: read run JSON files, build the page, write it atomically."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from onnxprune.errors import DataError
from onnxprune.io import write_bytes_atomic
from onnxprune.reporting.runs import read_json, view

logger = logging.getLogger(__name__)


def write_report(runs: Sequence[Mapping[str, Any]], output: str | os.PathLike[str], *,
                 labels: Sequence[str] | None = None, benches: Sequence[Mapping[str, Any] | None] = ()) -> Path:
    """Write the HTML page of compress JSON dicts ``runs`` (two or more: a comparison) to ``output``.

    ``benches[i]`` is a ``bench --json`` dict timing run ``i``'s model against its input (optional).
    """
    from onnxprune.reporting.page import build_html  # matplotlib is imported only when a report is made

    return write_bytes_atomic(output, build_html(runs, labels=labels, benches=benches).encode("utf-8"))


def report_files(runs: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str], *,
                 benches: Sequence[str | os.PathLike[str]] = ()) -> Path:
    """Read run JSON files (and ``bench --json`` files, in the same order) and write their HTML report.

    Raises:
        DataError: a file is missing or is not a compress (or bench) JSON report; more benches than runs.
    """
    if len(benches) > len(runs):
        raise DataError(f"{len(benches)} --bench files for {len(runs)} runs; pass at most one per run, in order")
    if Path(output).resolve() in {Path(r).resolve() for r in runs}:
        raise DataError(f"-o {output} is an input run JSON; choose another output path")
    dicts = [read_json(r, "run JSON") for r in runs]
    bench_dicts = [read_json(b, "bench JSON") for b in benches]
    for i, (path, run) in enumerate(zip(runs, dicts)):  # errors name the file
        view(run, str(path), bench_dicts[i] if i < len(bench_dicts) else None)
    labels = [Path(r).stem for r in runs]
    if len(set(labels)) < len(labels):
        labels = [str(r) for r in runs]
    return write_report(dicts, output, labels=labels, benches=bench_dicts)
