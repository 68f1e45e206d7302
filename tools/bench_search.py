"""Benchmark (issue 6): policy search agents on CIFAR ResNets at 50 % of MACs removed.

For each depth, the shared weights are exported to ONNX and every agent (uniform, random,
DDPG on AMC's state ``amc``, DDPG on AGMC's encoder-decoder state ``agmc``, and ``gnnrl`` when
the pipeline offers it) runs ``onnxprune compress`` with the reward scored on a fixed seeded
subset of ``--val-size`` images of train.npz (never the test set). The chosen plan is then
reconstructed by compress's ``repair`` (least squares on another seeded subset of
``--calib-size`` train images, the same for every row; kept only if it scores at least as well
on the reward images; ``--candidate-images N`` also reconstructs every candidate before it is
scored) and scored on the full test.npz; CPU latency is timed against the unpruned model in the same
process (``pipeline.bench_model``). No fine-tuning. Prints a table and writes JSON.

    .venv/bin/python tools/bench_search.py --depths 20,56 --episodes 20:60,56:30
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import onnx

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))

from models.export import export_onnx  # noqa: E402
from models.resnet_cifar import resnet_cifar  # noqa: E402
from onnxprune import pipeline  # noqa: E402
from onnxprune.analyze import analyze  # noqa: E402
from onnxprune.evaluate import DataSpec, Runtime, make_preprocess, timing_threads  # noqa: E402
from onnxprune.io import save_model  # noqa: E402
from onnxprune.load import load  # noqa: E402
from onnxprune.rewrite import prune_model  # noqa: E402
from onnxprune.rewrite.reconstruct import ReconstructOptions  # noqa: E402

AGENTS = ("uniform", "random", "amc", "agmc", "gnnrl")


def _top1(path: Path, data: DataSpec, runtime: Runtime) -> float:
    result = pipeline.evaluate_model(path, data, runtime=runtime)
    assert result.accuracy is not None  # test.npz has labels
    return result.accuracy.top1


def _repair_settings(args: argparse.Namespace) -> Any:
    """``RepairSettings`` for compress (final reconstruction; optional per-candidate), if the pipeline has it."""
    if "repair" not in inspect.signature(pipeline.compress_file).parameters:
        return None
    from onnxprune.pipeline.pruning import RepairSettings

    calib = DataSpec(path=SHARED / "data/cifar10/train.npz", preprocess=make_preprocess("cifar"),
                     val_split=args.calib_size, seed=1)
    return RepairSettings(calib=calib, candidate_images=args.candidate_images,
                          options=ReconstructOptions(threads=args.threads))


def _ppo_config(text: str) -> Any:
    """``PPOConfig`` from ``key=value,key=value`` overrides of its defaults."""
    from onnxprune.search.ppo import PPOConfig

    defaults = PPOConfig()
    values: dict[str, Any] = {}
    for item in filter(None, text.split(",")):
        key, _, raw = item.partition("=")
        kind = type(getattr(defaults, key))
        values[key] = raw.lower() in ("1", "true", "yes") if kind is bool else kind(raw)
    return PPOConfig(**values)


def _run_agent(src: Path, tmp: Path, agent: str, episodes: int, args: argparse.Namespace,
               calib: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    prep = make_preprocess("cifar")
    val = DataSpec(path=SHARED / "data/cifar10/train.npz", preprocess=prep, val_split=args.val_size, seed=0)
    test = DataSpec(path=SHARED / "data/cifar10/test.npz", preprocess=prep)
    stamps: list[float] = []
    out = tmp / f"{agent}.onnx"
    repair = _repair_settings(args)
    extra = {"repair": repair} if repair is not None else {}
    t0 = time.perf_counter()
    seen: list[float] = []

    def on_episode(episode: Any, *_: Any) -> None:
        stamps.append(time.perf_counter())
        seen.append(100.0 * episode.accuracy)

    if agent == "gnnrl" and args.ppo:
        extra["ppo"] = _ppo_config(args.ppo)
    report = pipeline.compress_file(src, out, target=args.target, agent=agent, episodes=episodes, seed=args.seed,
                                    round_to=args.round_to, data=val, runtime=runtime, on_episode=on_episode, **extra)
    repair_s = float(getattr(report, "repair_seconds", 0.0) or 0.0)
    search_s = time.perf_counter() - t0 - repair_s  # analysis, scoring the input, the episodes
    per_episode = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else search_s
    if repair is None:  # older pipeline: reconstruct the final plan here, the same way for every row
        analysis = analyze(load(src))
        fixed, _ = pipeline.repair_pruned(analysis, report.best.plan, prune_model(analysis, report.best.plan),
                                          calib, mode="reconstruct", options=ReconstructOptions(threads=args.threads))
        out = save_model(fixed, tmp / f"{agent}.rec.onnx")
    timing = Runtime(device="cpu", threads=timing_threads(None))  # bench's default: one CPU left to the OS
    bench = pipeline.bench_model(out, runtime=timing, baseline=src, batches=(args.bench_batch,),
                                 runs=args.bench_runs)
    row = {"agent": agent, "episodes": report.episodes, "search_s": search_s, "per_episode_s": per_episode,
           "val_top1_searched": 100.0 * report.best.accuracy if report.best.accuracy is not None else None,
           "val_top1": report.accuracy_after, "test_top1": _top1(out, test, runtime),
           "repair_s": repair_s,
           "macs": report.after.macs, "params": report.after.params,
           "macs_ratio": report.after.macs / report.before.macs,
           "params_ratio": report.after.params / report.before.params,
           "latency_ratio": bench.rows[0].ratio, "keeps": list(report.best.keeps),
           "best_episode": report.best.index, "val_by_episode": seen,
           "finalists": [list(f) for f in getattr(report, "finalists", ())],
           "val_last10_mean": sum(seen[-10:]) / len(seen[-10:]) if seen else None,
           "val_first10_mean": sum(seen[:10]) / len(seen[:10]) if seen else None}
    print(f"  {agent:8} ep {row['episodes']:4d}  search {search_s:7.1f} s ({per_episode:5.2f} s/ep)  "
          f"val {row['val_top1_searched']:6.2f} -> {row['val_top1']:6.2f}  test {row['test_top1']:6.2f}  "
          f"MACs {row['macs_ratio']:.3f}  lat {row['latency_ratio']:.3f}  best ep {report.best.index}  "
          f"val first/last 10 {row['val_first10_mean']:.1f}/{row['val_last10_mean']:.1f}", flush=True)
    return row


def _run_depth(depth: int, episodes: int, args: argparse.Namespace) -> dict[str, Any]:
    runtime = Runtime(device="cpu", threads=args.threads)
    prep = make_preprocess("cifar")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        src = tmp / f"resnet{depth}.onnx"
        export_onnx(resnet_cifar(depth, weights=SHARED / "weights" / f"resnet{depth}_cifar10.npz"), (1, 3, 32, 32),
                    src, exporter="torchscript", dynamic_batch=True)
        base = onnx.load(src)
        cost = pipeline.model_cost(src)
        calib = {} if _repair_settings(args) is not None else pipeline.calibration_feeds(
            src, DataSpec(path=SHARED / "data/cifar10/train.npz", preprocess=prep, val_split=args.calib_size, seed=1),
            threads=args.threads)
        test_top1 = _top1(src, DataSpec(path=SHARED / "data/cifar10/test.npz", preprocess=prep), runtime)
        print(f"resnet{depth}: test top-1 {test_top1:.2f} %, {cost.macs:,} MACs, {cost.params:,} params, "
              f"{len(base.graph.node)} nodes", flush=True)
        rows = []
        for agent in args.agents.split(","):
            if agent not in pipeline.AGENTS:
                print(f"  {agent:8} not offered by pipeline.AGENTS {pipeline.AGENTS}; skipped", flush=True)
                continue
            rows.append(_run_agent(src, tmp, agent, 1 if agent == "uniform" else episodes, args, calib, runtime))
    return {"model": f"resnet{depth}", "test_top1": test_top1, "macs": cost.macs, "params": cost.params,
            "episodes": episodes, "rows": rows}


def _print(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\nCIFAR-10, {args.target:.0%} of MACs removed, reward on {args.val_size} train images, top-1 on the "
          f"full test set after reconstruction ({args.calib_size} calibration images), no fine-tuning")
    head = (f"{'model':>9} {'agent':>8} {'top-1':>6} {'val':>6} {'val rec':>7} {'MACs':>11} {'params':>8} "
            f"{'lat':>6} {'ep':>4} {'best':>4} {'search s':>9} {'s/ep':>6} {'rec s':>6}")
    print(head)
    for res in results:
        print(f"{res['model']:>9} {'base':>8} {res['test_top1']:>6.2f} {'':>6} {'':>7} {res['macs']:>11,} "
              f"{res['params']:>8,} {1.0:>6.3f}")
        for r in res["rows"]:
            print(f"{res['model']:>9} {r['agent']:>8} {r['test_top1']:>6.2f} {r['val_top1_searched']:>6.2f} "
                  f"{r['val_top1']:>7.2f} {r['macs']:>11,} {r['params']:>8,} {r['latency_ratio']:>6.3f} "
                  f"{r['episodes']:>4} {r['best_episode']:>4} {r['search_s']:>9.1f} {r['per_episode_s']:>6.2f} {r['repair_s']:>6.1f}")
        per_ep = [r["per_episode_s"] for r in res["rows"] if r["agent"] != "uniform"]
        if per_ep:
            mean = sum(per_ep) / len(per_ep)
            print(f"{res['model']:>9}: {mean:.2f} s per episode (mean over agents) -> 300 episodes ~ "
                  f"{300 * mean / 60:.1f} min of search")
    load = os.getloadavg()
    print(f"host load average (1, 5 min) at the end: {load[0]:.1f}, {load[1]:.1f}; ORT threads {args.threads}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="20,56")
    parser.add_argument("--episodes", default="20:60,56:30", help="depth:episodes pairs (random and the agents)")
    parser.add_argument("--agents", default=",".join(AGENTS))
    parser.add_argument("--target", type=float, default=0.5, help="fraction of MACs removed")
    parser.add_argument("--val-size", type=int, default=5000, help="train images scoring the reward")
    parser.add_argument("--calib-size", type=int, default=2000,
                        help="train images (apart from the reward's) for the final reconstruction")
    parser.add_argument("--candidate-images", type=int, default=128,
                        help="reconstruct every candidate on this many of them before scoring (0: final only)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--round-to", type=int, default=1, help="channel counts multiples of this (1: the papers' setting)")
    parser.add_argument("--ppo", default="", metavar="K=V,...",
                        help="PPOConfig overrides for gnnrl, e.g. mirrored=true,minibatches=1")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bench-batch", type=int, default=32)
    parser.add_argument("--bench-runs", type=int, default=30)
    parser.add_argument("--json", type=Path, default=ROOT / "build" / "bench_search.json")
    args = parser.parse_args()
    episodes = {int(k): int(v) for k, v in (p.split(":") for p in args.episodes.split(","))}
    results = []
    for depth in (int(d) for d in args.depths.split(",")):
        results.append(_run_depth(depth, episodes.get(depth, 30), args))
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "results": results}, indent=2) + "\n")
    _print(results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
