"""Per-episode time of the GNN-RL agent (PPO over the m-GNN policy) against random search (issue 6).

For each depth, the shared CIFAR-10 weights are exported to ONNX and ``compress`` runs with
``--agent gnnrl`` and ``--agent random`` for the same episodes, the reward scored on a seeded
subset of ``--val-size`` train images (GNN-RL's protocol uses 1,000). The per-episode time is the
mean gap between consecutive episodes (PPO updates included, the setup excluded); the agent's
own cost is the difference to random search, which does nothing but build and score, and is also
timed alone (``agent-only``: the same PPO episodes with a constant score and no model built,
so the machine's load moves it less). Prints a table and writes JSON. No accuracy claims: the
episodes are too few to compare agents. ``--learn N`` adds a check that PPO learns at all: on
ResNet-20 with a synthetic score (mean kept fraction of the first four groups), the mean reward
per block of 20 episodes for gnnrl (3 steps and 1 step per episode) and random search.

    .venv/bin/python tools/bench_gnnrl.py --depths 20,56 --episodes 8 --json bench_gnnrl.json
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from models.export import export_onnx  # noqa: E402
from models.resnet_cifar import resnet_cifar  # noqa: E402
from onnxprune import pipeline  # noqa: E402
from onnxprune.evaluate import DataSpec, Runtime, make_preprocess  # noqa: E402
from onnxprune.analyze import analyze  # noqa: E402
from onnxprune.analyze.importance import weight_importance  # noqa: E402
from onnxprune.io import write_json_atomic  # noqa: E402
from onnxprune.load import load  # noqa: E402
from onnxprune.search.env import CompressionEnv  # noqa: E402
from onnxprune.search.baselines import random_search  # noqa: E402
from onnxprune.search.ppo import PPOConfig, ppo_search  # noqa: E402
from onnxprune.search.space import SearchSpace  # noqa: E402


def _episode_times(src: Path, out: Path, agent: str, episodes: int, data: DataSpec, runtime: Runtime,
                   target: float) -> dict[str, Any]:
    stamps: list[float] = []
    start = time.perf_counter()
    report = pipeline.compress_file(src, out, target=target, agent=agent, episodes=episodes, seed=0, data=data,
                                    round_to=1, runtime=runtime, on_episode=lambda *_: stamps.append(time.perf_counter()))
    total = time.perf_counter() - start
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return {"agent": agent, "episodes": report.episodes, "total_s": total, "setup_s": stamps[0] - start,
            "per_episode_s": sum(gaps) / len(gaps) if gaps else total, "max_gap_s": max(gaps, default=total),
            "best_val_top1": 100.0 * report.best.accuracy if report.best.accuracy is not None else None,
            "macs_ratio": report.after.macs / report.before.macs, "groups": len(report.groups)}


def _agent_only(src: Path, episodes: int, target: float) -> float:
    """Seconds per episode of the PPO agent alone (policy, Algorithm 1 per step, updates)."""
    analysis = analyze(load(src))
    space = SearchSpace.build(analysis, weight_importance(analysis))
    env = CompressionEnv(space, target=target, metric="macs", apply=lambda plan: plan, score=lambda _: 0.5)
    ppo_search(env, 1, seed=0)  # warm-up: first forward/backward passes
    start = time.perf_counter()
    ppo_search(env, episodes, seed=0)
    return (time.perf_counter() - start) / episodes


def _learning(src: Path, episodes: int, seed: int) -> dict[str, list[float]]:
    """Mean reward per 20 episodes on a synthetic score (kept fraction of the first four groups)."""
    analysis = analyze(load(src))
    space = SearchSpace.build(analysis, weight_importance(analysis))

    def score(plan: Any) -> float:
        kept = [len(plan.keep.get(g, range(n))) / n for g, n in zip(space.group_ids[:4], space.sizes[:4])]
        return float(sum(kept) / len(kept))

    def env() -> CompressionEnv[Any]:
        return CompressionEnv(space, target=0.5, metric="macs", apply=lambda plan: plan, score=score)

    runs = {f"gnnrl steps={k}": ppo_search(env(), episodes, seed=seed, config=PPOConfig(steps=k))[0] for k in (3, 1)}
    runs["random"] = random_search(env(), episodes, seed=seed)
    return {name: [sum(h[0] for h in st.history[i:i + 20]) / len(st.history[i:i + 20])
                   for i in range(0, episodes, 20)] for name, st in runs.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="20,56", help="comma-separated CIFAR ResNet depths")
    parser.add_argument("--episodes", type=int, default=8, help="episodes per agent")
    parser.add_argument("--val-size", type=int, default=1000, help="train images scoring each candidate")
    parser.add_argument("--target", type=float, default=0.5, help="fraction of MACs removed")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: all)")
    parser.add_argument("--learn", type=int, default=0, metavar="N", help="synthetic learning check, N episodes")
    parser.add_argument("--json", type=Path, default=None, help="write the rows as JSON")
    args = parser.parse_args()
    train = SHARED / "data" / "cifar10" / "train.npz"
    if not train.exists():
        print(f"needs {train} (the project's ../shared material)")
        return 2
    data = DataSpec(path=train, preprocess=make_preprocess("cifar"), val_split=args.val_size, seed=0)
    runtime = Runtime(device="cpu", threads=args.threads)
    rows: list[dict[str, Any]] = []
    learning: dict[str, list[float]] = {}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for depth in (int(d) for d in args.depths.split(",")):
            src = tmp / f"resnet{depth}.onnx"
            export_onnx(resnet_cifar(depth, weights=SHARED / "weights" / f"resnet{depth}_cifar10.npz"),
                        (1, 3, 32, 32), src, dynamic_batch=True)
            if args.learn and depth == 20:
                learning = _learning(src, args.learn, seed=0)
            agent_only = _agent_only(src, args.episodes, args.target)
            print(f"resnet{depth} agent only {agent_only:.3f} s/episode", flush=True)
            for agent in ("gnnrl", "random"):
                timed = _episode_times(src, tmp / f"{depth}_{agent}.onnx", agent, args.episodes, data, runtime,
                                       args.target)
                row = {"depth": depth, "agent_only_s": agent_only if agent == "gnnrl" else None, **timed}
                rows.append(row)
                print(f"resnet{depth} {agent:6} {row['per_episode_s']:.2f} s/episode", flush=True)
    table = Table(title=f"per-episode time, {args.episodes} episodes, reward on {args.val_size} train images, "
                        f"target {args.target:.0%} MACs")
    for column in ("model", "groups", "agent", "s / ep", "overhead s / ep", "agent-only s / ep", "max gap s",
                   "setup s", "best val top-1 %"):
        table.add_column(column, justify="right")
    by_key = {(r["depth"], r["agent"]): r for r in rows}
    for r in rows:
        base = by_key.get((r["depth"], "random"))
        overhead = r["per_episode_s"] - base["per_episode_s"] if base and r["agent"] == "gnnrl" else None
        table.add_row(f"resnet{r['depth']}", str(r["groups"]), r["agent"], f"{r['per_episode_s']:.2f}",
                      f"{overhead:.2f}" if overhead is not None else "-",
                      f"{r['agent_only_s']:.3f}" if r["agent_only_s"] is not None else "-", f"{r['max_gap_s']:.2f}",
                      f"{r['setup_s']:.1f}", f"{r['best_val_top1']:.2f}" if r["best_val_top1"] is not None else "-")
    console = Console(width=140)
    console.print(table)
    if learning:
        curve = Table(title="synthetic learning check (ResNet-20): mean reward per 20 episodes")
        curve.add_column("agent")
        for i in range(len(next(iter(learning.values())))):
            curve.add_column(f"ep {20 * i}-{20 * i + 19}", justify="right")
        for name, values in learning.items():
            curve.add_row(name, *(f"{v:.4f}" for v in values))
        console.print(curve)
    load_after = os.getloadavg()
    console.print(f"load average (1 min) before {load_before[0]:.1f}, after {load_after[0]:.1f}; "
                  f"{os.cpu_count()} CPUs; ORT threads {runtime.threads}")
    if args.json is not None:
        write_json_atomic(args.json, {"rows": rows, "learning": learning, "load": [load_before, load_after]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
