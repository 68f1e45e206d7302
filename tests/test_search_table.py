"""tools/search_table.py pairs each learned agent with random search of the same seed and budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tool_loader import load_tool


def _write(path: Path, seed: int, episodes: int, rows: dict[str, float]) -> Path:
    """A bench_search JSON with one ResNet-20 result of ``rows`` (agent -> test top-1)."""
    result = {"model": "resnet20", "episodes": episodes,
              "rows": [{"agent": a, "test_top1": v} for a, v in rows.items()]}
    path.write_text(json.dumps({"args": {"seed": str(seed)}, "results": [result]}), encoding="utf-8")
    return path


def test_paired_gaps_and_verdicts(tmp_path: Path) -> None:
    tool = load_tool("search_table")
    files = [_write(tmp_path / "s0.json", 0, 100, {"uniform": 80.0, "random": 81.0, "gnnrl": 83.0, "agmc": 82.5}),
             _write(tmp_path / "s1.json", 1, 100, {"random": 84.0, "gnnrl": 83.5, "agmc": 85.0}),
             _write(tmp_path / "s0_300.json", 0, 300, {"gnnrl": 86.0})]
    runs = tool.read_runs(files)
    rows = {(v.agent, v.episodes): v for v in tool.verdicts(runs)}
    assert set(rows) == {("gnnrl", 100), ("agmc", 100), ("gnnrl", 300)}
    gnnrl = rows[("gnnrl", 100)]
    assert gnnrl.top1 == {0: 83.0, 1: 83.5}
    assert gnnrl.over_uniform == pytest.approx({0: 3.0, 1: 3.5})
    assert gnnrl.over_random == pytest.approx({0: 2.0, 1: -0.5})
    assert gnnrl.mean_over_random == pytest.approx(0.75)
    assert (gnnrl.beats_uniform_each, gnnrl.beats_random_each, gnnrl.beats_random_mean) == (True, False, True)
    agmc = rows[("agmc", 100)]
    assert agmc.over_uniform == pytest.approx({0: 2.5, 1: 5.0})
    assert agmc.beats_random_each is True
    lone = rows[("gnnrl", 300)]  # no random run at 300 episodes: no paired verdict
    assert lone.over_random == {} and lone.beats_random_each is None and lone.mean_over_random is None


def test_later_file_wins_and_json_written(tmp_path: Path) -> None:
    tool = load_tool("search_table")
    old = _write(tmp_path / "old.json", 0, 100, {"uniform": 80.0, "random": 81.0, "gnnrl": 79.0})
    new = _write(tmp_path / "new.json", 0, 100, {"gnnrl": 82.0})
    out = tmp_path / "table.json"
    assert tool.main([str(old), str(new), "--json", str(out)]) == 0
    saved = json.loads(out.read_text(encoding="utf-8"))
    (verdict,) = saved["verdicts"]
    assert verdict["top1"] == {"0": 82.0} and verdict["over_random"] == {"0": pytest.approx(1.0)}
