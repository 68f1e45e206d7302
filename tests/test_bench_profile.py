"""``bench --baseline --profile``: ORT kernel time per op type before (baseline) and after (model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from evaluate_models import tiny_classifier

from onnxprune.cli import main
from onnxprune.evaluate.footprint import OpTime, compare_profiles

QUICK = ["--runs", "8", "--warmup", "1", "--min-time", "0", "--max-time", "0", "--tolerance", "0.9",
         "--threads", "1"]


def test_bench_profile_compares_op_types_before_and_after(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    base = tiny_classifier(tmp_path / "orig.onnx")
    pruned, out = tmp_path / "pruned.onnx", tmp_path / "bench.json"
    assert main(["prune", str(base), "-o", str(pruned), "--ratio", "0.5"]) == 0
    capsys.readouterr()
    assert main(["bench", str(pruned), "--baseline", str(base), "--batch", "4", "--profile", *QUICK,
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "before ms" in printed and "after ms" in printed and "ratio" in printed
    report = json.loads(out.read_text())
    change = report["profile_change"]
    names = [row["op_type"] for row in change]  # graph op types, and ORT's own (e.g. ReorderInput)
    assert len(names) == len(set(names)) and {"Conv", "Gemm"} <= set(names)
    for row in change:
        assert row["baseline_ms"] >= 0 and row["model_ms"] >= 0
        assert 0 <= row["baseline_share"] <= 1 and 0 <= row["model_share"] <= 1
        assert row["ratio"] is None or row["ratio"] == pytest.approx(row["model_ms"] / row["baseline_ms"])
    # fewer op types than the default top 10: every op type is listed and the shares sum to 1
    assert sum(row["model_share"] for row in change) == pytest.approx(1.0, abs=1e-6)
    assert sum(row["baseline_share"] for row in change) == pytest.approx(1.0, abs=1e-6)
    assert {op["op_type"] for op in report["baseline_profile"]} <= set(names)
    # the same op types (their order may swap between close times under load)
    assert {op["op_type"] for op in report["profile"]} == {row["op_type"] for row in change if row["model_ms"] > 0}


def test_bench_profile_without_baseline_keeps_the_model_table(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    model, out = tiny_classifier(tmp_path / "m.onnx"), tmp_path / "bench.json"
    assert main(["bench", str(model), "--profile", "2", *QUICK, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "calls" in printed and "before ms" not in printed
    report = json.loads(out.read_text())
    assert len(report["profile"]) == 2 and report["profile_change"] is None and report["baseline_profile"] is None


def test_compare_profiles_marks_op_types_one_side_lacks() -> None:
    before = [OpTime("Conv", 3.0, 0.6, 4), OpTime("BatchNormalization", 1.5, 0.3, 4), OpTime("Gemm", 0.5, 0.1, 4)]
    after = [OpTime("Conv", 1.5, 0.75, 4), OpTime("Gemm", 0.5, 0.25, 4)]
    rows = compare_profiles(before, after)
    assert [r.op_type for r in rows] == ["Conv", "BatchNormalization", "Gemm"]
    assert (rows[0].ratio, rows[1].ratio, rows[1].model_ms, rows[2].ratio) == (0.5, None, 0.0, 1.0)
    assert [r.op_type for r in compare_profiles(before, after, top=1)] == ["Conv"]
