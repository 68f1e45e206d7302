"""Benchmark: what training AGMC's encoder-decoder through the critic adds to a DDPG update (issue 6).

Exports ResNet-56 (TorchScript, random weights: the graph is what matters), builds the ``agmc``
state (GCN 3 x 64 + LSTM 64, state 128) and two DDPG agents with the paper's settings (actor and
critic 300-300, batch 64, replay 2,000): one with ``train_encoder`` (replayed states rebuilt from
their memos with gradients, next states by the target encoder) and one with the fixed encoder.
Both replay buffers are filled with the same transitions of random-action episodes (acting
through the real state builder), then ``--updates`` updates of each are timed, interleaved in
``--rounds`` rounds (median of the rounds, ``--threads`` torch threads, default 1 as in a search).
A search does one update per group step, so the added cost per episode is ``groups x`` the
difference per update; the acting cost per episode (state of every group) is reported too.

    .venv/bin/python tools/bench_agmc_encoder.py --json build/bench_agmc_encoder.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
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
from onnxprune.search.ddpg import DDPGAgent, DDPGConfig  # noqa: E402
from onnxprune.search.space import SearchSpace  # noqa: E402
from onnxprune.search.states import AGMCStates  # noqa: E402


def _space(depth: int, folder: Path) -> SearchSpace:
    path = folder / f"resnet{depth}.onnx"
    export_onnx(resnet_cifar(depth, seed=0).eval(), (1, 3, 32, 32), path, exporter="torchscript")
    analysis = analyze(load(path))
    return SearchSpace.build(analysis, weight_importance(analysis))


def _fill(agents: list[DDPGAgent], states: AGMCStates, transitions: int, rng: np.random.Generator) -> float:
    """Play random episodes into every agent's buffer; returns seconds of acting per episode."""
    steps, times = len(states.space), []
    while agents[0].buffer.size < transitions:
        start = time.perf_counter()
        states.begin()
        observed, memos, actions = [], [], []
        for t in range(steps):
            observed.append(states.state(t, actions))
            memos.append(states.memo())
            actions.append(float(rng.uniform(0.0, 0.8)))
        times.append(time.perf_counter() - start)
        reward = float(rng.normal())
        for t in range(steps):
            last = t == steps - 1
            for agent in agents:
                agent.buffer.add(observed[t], actions[t], reward, observed[t] if last else observed[t + 1], last,
                                 memos[t], memos[t] if last else memos[t + 1])
    return statistics.median(times)


def _time_updates(agent: DDPGAgent, updates: int) -> float:
    start = time.perf_counter()
    for _ in range(updates):
        agent.update()
    return (time.perf_counter() - start) / updates


def main() -> int:
    """Run the benchmark, print the table, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=56, help="ResNet depth (default 56)")
    parser.add_argument("--updates", type=int, default=30, help="updates timed per round (default 30)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        space = _space(args.depth, Path(folder))
    config = DDPGConfig()
    states = AGMCStates(space, generator=torch.Generator().manual_seed(0))
    agents = [DDPGAgent(states.dim, space.max_ratio, replace(config, train_encoder=train),
                        generator=torch.Generator().manual_seed(0), rng=np.random.default_rng(0), states=states)
              for train in (True, False)]
    acting = _fill(agents, states, config.buffer_size, np.random.default_rng(0))
    for agent in agents:
        _time_updates(agent, 3)  # warm-up
    rounds: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.rounds):
        for train, agent in zip((True, False), agents):
            rounds[train].append(_time_updates(agent, args.updates))
    trained, fixed = statistics.median(rounds[True]), statistics.median(rounds[False])
    groups = len(space)
    figures = {"model": f"resnet{args.depth}", "groups": groups, "nodes": int(len(states.graph.fields[-1].nodes)),
               "mean_field_nodes": float(np.mean([len(f.nodes) for f in states.graph.fields[:-1]])),
               "threads": args.threads, "update_ms_trained": 1e3 * trained, "update_ms_fixed": 1e3 * fixed,
               "added_ms_per_update": 1e3 * (trained - fixed),
               "added_s_per_episode": groups * (trained - fixed), "acting_s_per_episode": acting,
               "rounds_ms_trained": [1e3 * r for r in rounds[True]],
               "rounds_ms_fixed": [1e3 * r for r in rounds[False]]}
    table = Table(title=f"AGMC encoder training cost, resnet{args.depth} ({groups} groups, {args.threads} thread)")
    for column in ("", "ms / update", "s / episode (x groups)"):
        table.add_column(column, justify="right")
    table.add_row("fixed encoder", f"{1e3 * fixed:.2f}", f"{groups * fixed:.3f}")
    table.add_row("trained encoder", f"{1e3 * trained:.2f}", f"{groups * trained:.3f}")
    table.add_row("added by training", f"{1e3 * (trained - fixed):.2f}", f"{groups * (trained - fixed):.3f}")
    table.add_row("acting (states of one episode)", "", f"{acting:.3f}")
    Console().print(table)
    if args.json is not None:
        write_json_atomic(args.json, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
