"""Issue 6's verdict table: search-benchmark runs of several seeds side by side, with paired gaps.

Reads the JSON files that ``tools/bench_search.py`` writes (one or more runs each: models, seeds,
agents), groups rows by model, episode budget and agent, and prints test top-1 per seed, the
mean, and for every learned agent (``amc``, ``agmc``, ``gnnrl``) its gap to ``uniform`` (seed-free:
one plan) and to ``random`` search of the same seed and episode budget. The verdict columns apply
the issue's bar: at least +2 points over uniform, and above random, on each seed and on the mean.
Prints a table and writes JSON (default build/search_table.json).

    .venv/bin/python tools/search_table.py build/exp3/*.json build/exp4/*.json [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from onnxprune.io import write_json_atomic  # noqa: E402

LEARNED = ("amc", "agmc", "gnnrl")
UNIFORM_MARGIN = 2.0  # points over uniform the issue asks of the GNN agents


@dataclass(frozen=True)
class Run:
    """One searched row: a model, an episode budget, an agent and a seed, and its test top-1."""

    model: str
    episodes: int
    agent: str
    seed: int
    test_top1: float
    source: str


@dataclass(frozen=True)
class Verdict:
    """One agent on one model and budget, across seeds."""

    model: str
    episodes: int
    agent: str
    top1: dict[int, float]
    mean: float
    uniform: float | None
    random: dict[int, float]
    over_uniform: dict[int, float]
    over_random: dict[int, float]
    mean_over_random: float | None
    beats_uniform_each: bool
    beats_random_each: bool | None
    beats_random_mean: bool | None


def read_runs(paths: Iterable[Path]) -> list[Run]:
    """Every row of every bench_search JSON at ``paths`` (later files win for the same key)."""
    found: dict[tuple[str, int, str, int], Run] = {}
    for path in paths:
        data = json.loads(path.read_text(encoding="utf-8"))
        seed = int(data.get("args", {}).get("seed", 0))
        for result in data.get("results", []):
            for row in result.get("rows", []):
                agent = str(row["agent"])
                budget = int(result["episodes"]) if agent != "uniform" else 1
                run = Run(model=str(result["model"]), episodes=budget, agent=agent,
                          seed=0 if agent == "uniform" else seed, test_top1=float(row["test_top1"]),
                          source=str(path))
                found[(run.model, run.episodes, run.agent, run.seed)] = run
    return list(found.values())


def verdicts(runs: Sequence[Run]) -> list[Verdict]:
    """Per (model, budget, learned agent): top-1 by seed and the paired gaps to uniform and random."""
    uniform = {r.model: r.test_top1 for r in runs if r.agent == "uniform"}
    by_key: dict[tuple[str, int, str], dict[int, float]] = {}
    for r in runs:
        if r.agent != "uniform":
            by_key.setdefault((r.model, r.episodes, r.agent), {})[r.seed] = r.test_top1
    out = []
    for (model, budget, agent), top1 in sorted(by_key.items()):
        if agent not in LEARNED:
            continue
        random = by_key.get((model, budget, "random"), {})
        over_u = {s: v - uniform[model] for s, v in top1.items()} if model in uniform else {}
        over_r = {s: v - random[s] for s, v in top1.items() if s in random}
        paired = [top1[s] for s in over_r]
        mean_r = (sum(paired) - sum(random[s] for s in over_r)) / len(over_r) if over_r else None
        out.append(Verdict(model=model, episodes=budget, agent=agent, top1=dict(sorted(top1.items())),
                           mean=sum(top1.values()) / len(top1), uniform=uniform.get(model),
                           random=dict(sorted(random.items())), over_uniform=over_u, over_random=over_r,
                           mean_over_random=mean_r,
                           beats_uniform_each=bool(over_u) and min(over_u.values()) >= UNIFORM_MARGIN,
                           beats_random_each=min(over_r.values()) > 0 if over_r else None,
                           beats_random_mean=mean_r > 0 if mean_r is not None else None))
    return out


def _gaps(values: Mapping[int, float]) -> str:
    return " / ".join(f"{values[s]:+.2f}" for s in sorted(values)) or "-"


def _flag(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


def print_table(rows: Sequence[Verdict], console: Console) -> None:
    """The verdict table, one line per learned agent, model and episode budget."""
    table = Table(title="Search agents, test top-1 % by seed (50 % MACs)")
    for name in ("model", "episodes", "agent", "top-1 by seed", "mean", "random by seed",
                 "vs uniform", "vs random", "mean vs random", ">= +2 uniform each", "> random each"):
        table.add_column(name, justify="right" if name not in ("model", "agent") else "left")
    for v in rows:
        uniform = "-" if v.uniform is None else f"{v.uniform:.2f}"
        table.add_row(f"{v.model} (uniform {uniform})", str(v.episodes), v.agent,
                      " / ".join(f"{v.top1[s]:.2f}" for s in v.top1), f"{v.mean:.2f}",
                      " / ".join(f"{v.random[s]:.2f}" for s in v.random) or "-",
                      _gaps(v.over_uniform), _gaps(v.over_random),
                      "-" if v.mean_over_random is None else f"{v.mean_over_random:+.2f}",
                      _flag(v.beats_uniform_each), _flag(v.beats_random_each))
    console.print(table)


def main(argv: Sequence[str] | None = None) -> int:
    """Read the runs, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help="JSON files written by tools/bench_search.py")
    parser.add_argument("--json", type=Path, default=ROOT / "build" / "search_table.json")
    args = parser.parse_args(argv)
    runs = read_runs(args.files)
    rows = verdicts(runs)
    print_table(rows, Console(width=200))
    write_json_atomic(args.json, {"runs": [asdict(r) for r in runs], "verdicts": [asdict(v) for v in rows]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
