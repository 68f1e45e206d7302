"""Timing threads: every CPU but one (at least 1) unless ``--threads`` is given; eval keeps every CPU."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from evaluate_models import two_conv_classifier

from onnxprune import pipeline
from onnxprune.cli import build_parser, main
from onnxprune.commands._runtime_options import runtime_from
from onnxprune.evaluate import threads_note, timing_threads
from onnxprune.evaluate.runtime import available_cpus

#: A bench protocol that stops after a few runs (no speed is asserted).
QUICK = ["--runs", "4", "--warmup", "1", "--min-time", "0", "--max-time", "0", "--tolerance", "0.9"]


def _affinity(monkeypatch: pytest.MonkeyPatch, cpus: int) -> None:
    """Make this process look as if it may run on ``cpus`` CPUs."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cpus)), raising=False)


@pytest.mark.parametrize(("cpus", "threads"), [(1, 1), (2, 1), (3, 2), (16, 15)])
def test_rule_leaves_one_cpu_free(cpus: int, threads: int) -> None:
    assert timing_threads(None, cpus) == threads


@pytest.mark.parametrize("requested", [1, 2, 7])
def test_explicit_threads_are_kept(requested: int) -> None:
    assert timing_threads(requested, 16) == requested
    assert timing_threads(requested, 1) == requested
    assert threads_note(requested, requested, 16) is None


def test_rule_honours_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    _affinity(monkeypatch, 5)
    assert available_cpus() == 5
    assert timing_threads(None) == 4
    _affinity(monkeypatch, 1)
    assert timing_threads(None) == 1


def test_note_says_when_the_rule_lowered_the_count() -> None:
    assert threads_note(None, 1, 2) == "1 of 2 CPUs: one left to the OS for repeatable timings; --threads 2 to use all"
    assert threads_note(None, 15, 16) is not None and "15 of 16 CPUs" in threads_note(None, 15, 16)
    assert threads_note(None, 1, 1) is None  # one CPU: nothing was held back


def test_bench_runtime_uses_the_rule_and_eval_every_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    _affinity(monkeypatch, 6)
    parser = build_parser()
    assert runtime_from(parser.parse_args(["bench", "m.onnx"]), timing=True).threads == 5
    assert runtime_from(parser.parse_args(["bench", "m.onnx", "--threads", "6"]), timing=True).threads == 6
    assert runtime_from(parser.parse_args(["eval", "m.onnx", "--data", "d.npz"])).threads == 6


@pytest.mark.parametrize("cpus", [None, 4])
def test_bench_json_records_the_default_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                cpus: int | None) -> None:
    if cpus is not None:
        _affinity(monkeypatch, cpus)
    total = available_cpus()
    model, out = two_conv_classifier(tmp_path / "m.onnx"), tmp_path / "bench.json"
    assert main(["bench", str(model), *QUICK, "--device", "cpu", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["run"]["threads"] == max(1, total - 1)
    assert report["threads_note"] == threads_note(None, max(1, total - 1), total)
    if total > 1:
        assert report["threads_note"].startswith(f"{total - 1} of {total} CPUs")


def test_bench_json_records_explicit_threads(tmp_path: Path) -> None:
    model, out = two_conv_classifier(tmp_path / "m.onnx"), tmp_path / "bench.json"
    assert main(["bench", str(model), *QUICK, "--device", "cpu", "--threads", "2", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["run"]["threads"] == 2 and report["threads_note"] is None


@pytest.mark.parametrize(("latency_threads", "expected"), [(None, 2), (1, 1)])
def test_compress_latency_table_uses_timing_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    latency_threads: int | None, expected: int) -> None:
    _affinity(monkeypatch, 3)
    model, out = two_conv_classifier(tmp_path / "m.onnx"), tmp_path / "out.onnx"
    # the latency reward needs the table; the MACs target keeps the search itself deterministic
    pipeline.compress_file(model, out, target=0.3, reward="latency", latency_threads=latency_threads)
    device = json.loads((tmp_path / "out.onnx.latency.json").read_text())["device"]
    assert f"|threads={expected}|" in device
