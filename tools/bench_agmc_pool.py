"""Benchmark: per-episode time of the AGMC agent with mean vs DiffPool pooling (issue 6).

Exports ResNet-56 (TorchScript, random weights: the graph is what matters) and runs
``ddpg_search`` with the ``agmc`` state for ``--episodes`` episodes per pooling, the paper's DDPG
settings except a replay batch of ``--batch`` (default 64, reached after the first episodes) and
no warm-up beyond ``--warmup`` episodes, so the updates run. The environment scores a candidate
without running it (node count of the rewritten model, as ``tests/search/test_ppo.py``'s
``_cheap_env``), so the times are the agent's own: acting (a state per group), the rescale and
rewrite of the environment (the same for both), and one update per group step once learning
starts. The pools are interleaved over ``--rounds`` rounds; the table gives the median
seconds per episode of each, over the episodes after warm-up and over all episodes.

    .venv/bin/python tools/bench_agmc_pool.py --json build/bench_agmc_pool.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.export import export_onnx  # noqa: E402
from models.resnet_cifar import resnet_cifar  # noqa: E402
from onnxprune.analyze import analyze  # noqa: E402
from onnxprune.analyze.importance import weight_importance  # noqa: E402
from onnxprune.io import write_json_atomic  # noqa: E402
from onnxprune.load import load  # noqa: E402
from onnxprune.rewrite import prune_model  # noqa: E402
from onnxprune.search.ddpg import DDPGConfig, ddpg_search  # noqa: E402
from onnxprune.search.env import CompressionEnv  # noqa: E402
from onnxprune.search.space import SearchSpace  # noqa: E402
from onnxprune.search.states import AGMC_POOLS, AGMCStates  # noqa: E402


def _env(depth: int, folder: Path) -> CompressionEnv:
    path = folder / f"resnet{depth}.onnx"
    export_onnx(resnet_cifar(depth, seed=0).eval(), (1, 3, 32, 32), path, exporter="torchscript")
    analysis = analyze(load(path))
    space = SearchSpace.build(analysis, weight_importance(analysis))
    return CompressionEnv(space, target=0.5, metric="macs", apply=lambda plan: prune_model(analysis, plan),
                          score=lambda m: float(len(m.graph.node)) / 1000.0)


def _episode_times(env: CompressionEnv, pool: str, episodes: int, config: DDPGConfig) -> list[float]:
    """Seconds of each episode (the time between ``on_episode`` calls; the first from the search's start)."""
    states = AGMCStates(env.space, generator=torch.Generator().manual_seed(0), pool=pool)
    marks = [time.perf_counter()]
    ddpg_search(env, states, episodes, seed=0, agent="agmc", config=config,
                on_episode=lambda *_: marks.append(time.perf_counter()))
    return [b - a for a, b in zip(marks[:-1], marks[1:])]


def main() -> int:
    """Run the benchmark, print the table, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=56, help="ResNet depth (default 56)")
    parser.add_argument("--episodes", type=int, default=5, help="episodes per search (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="random episodes before updates (default 2)")
    parser.add_argument("--batch", type=int, default=64, help="replay batch (default 64, the paper's)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved searches per pool (default 1)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        env = _env(args.depth, Path(folder))
        config = DDPGConfig(warmup=args.warmup, batch_size=args.batch)
        times: dict[str, list[list[float]]] = {pool: [] for pool in AGMC_POOLS}
        for _ in range(args.rounds):
            for pool in AGMC_POOLS:
                times[pool].append(_episode_times(env, pool, args.episodes, config))
    learning = {pool: statistics.median(t for run in runs for t in run[args.warmup:]) for pool, runs in times.items()}
    overall = {pool: statistics.median(t for run in runs for t in run) for pool, runs in times.items()}
    groups = len(env.space)
    table = Table(title=f"AGMC agent, resnet{args.depth} ({groups} groups), s / episode (cheap score), "
                        f"{args.episodes} episodes x {args.rounds}, warm-up {args.warmup}, batch {args.batch}")
    for column in ("pooling", "learning episodes", "all episodes"):
        table.add_column(column, justify="right")
    for pool in AGMC_POOLS:
        table.add_row(pool, f"{learning[pool]:.3f}", f"{overall[pool]:.3f}")
    table.add_row("diffpool - mean", f"{learning['diffpool'] - learning['mean']:+.3f}",
                  f"{overall['diffpool'] - overall['mean']:+.3f}")
    Console().print(table)
    if args.json is not None:
        write_json_atomic(args.json, {"model": f"resnet{args.depth}", "groups": groups, "episodes": args.episodes,
                                      "warmup": args.warmup, "batch": args.batch, "rounds": args.rounds,
                                      "threads": config.torch_threads, "s_per_learning_episode": learning,
                                      "s_per_episode": overall, "episode_seconds": times})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
