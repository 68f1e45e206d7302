"""Benchmark (issue 18): latency-first compression of CIFAR ResNet-56, measured speed-ups and top-1.

Models (each written by the ``onnxprune`` CLI in a child process, from ../shared's weights):

- ``int8``: ``onnxprune quantize`` of the original (int8 QDQ, ``--max-drop``).
- ``macs50``: ``compress --target 0.5 --width-menu`` (50 % of the MACs, widths from the measured menu).
- ``lat50``: ``compress --metric latency --target 0.5 --width-menu`` (measured target, refit loop).
- ``lat50_int8``: ``compress --metric latency --target T --width-menu --quantize-int8 --max-drop``
  (the menu timed in int8, so ``T = --int8-target``, default 0.25, is a share of the unpruned int8
  model's latency: in int8 the Convs are a smaller share, and the menu keeps fewer fast widths; its ``.int8.onnx``).

Every search uses ``--agent`` (default agmc) with ``--episodes``, ``--reconstruct`` (candidates
repaired on 128 images, finalists on ``--calib-size``), candidates scored on a seeded 1,000-image
split of train.npz, calibration images disjoint from it. Top-1 is ``onnxprune eval`` on all of
test.npz. Then, in this one process, for each ``--threads`` value, each model is timed against
the original at each ``--batch`` size with ``onnxprune.evaluate.bench`` (runs alternating A,B,B,A
in blocks until the medians settle; rows on a busy host say ``unstable``). Goals printed beside:
macs50 >= 1.5x, lat50 >= 1.9x, lat50_int8 >= 3x (batch 1 and 64).

Needs ../shared (exits 2 without it). Prints a table, its runtime, and writes JSON (default
build/bench_latency.json). ``--quick`` checks the wiring in minutes: uniform agent, one episode,
one thread, short timing; ``--skip macs50,int8`` leaves parts out; ``--work DIR`` keeps the models
and ``--reuse`` times models already in DIR without searching again.

Usage: python tools/bench_latency.py [--quick] [--agent agmc] [--episodes 60] [--threads 1,2] [--batch 1,64]
       [--skip PARTS] [--work DIR] [--reuse] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `models` lives at the repo root

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from onnxprune.evaluate import Protocol, Runtime, bench  # noqa: E402
from onnxprune.io import write_json_atomic  # noqa: E402
from tools.bench_round_to import SHARED, TEST, TRAIN, cli, export  # noqa: E402

PARTS: tuple[str, ...] = ("int8", "macs50", "lat50", "lat50_int8")
GOALS = {"int8": 2.0, "macs50": 1.5, "lat50": 1.9, "lat50_int8": 3.0}


def build(part: str, original: Path, work: Path, args: argparse.Namespace) -> tuple[Path, Path | None]:
    """Write the model of ``part`` (unless ``--reuse`` finds it); returns it and its compress report."""
    data = ["--data", str(TRAIN), "--preprocess", "cifar", "--val-split", "1000", "--device", "cpu",
            "--threads", "1"]
    search = ["--agent", args.agent, "--episodes", str(args.episodes), "--reconstruct", "--calib", str(TRAIN),
              "--calib-size", str(args.calib_size), "--width-menu", "--latency-batch", str(args.latency_batch), *data]
    out = work / f"{part.removesuffix('_int8')}{'_q' if part.endswith('_int8') else ''}.onnx"
    report = work / f"{out.stem}.compress.json"
    model = out.with_name(f"{out.stem}.int8.onnx") if part == "lat50_int8" else out
    if args.reuse and model.exists():
        return model, report if report.exists() else None
    if part == "int8":
        cli("quantize", str(original), "-o", str(out), "--calib", str(TRAIN), "--preprocess", "cifar",
            "--data", str(TRAIN), "--val-size", "1000", "--max-drop", str(args.max_drop), "--threads", "1")
        return out, None
    metric = [] if part == "macs50" else ["--metric", "latency"]
    int8 = ["--quantize-int8", "--max-drop", str(args.max_drop)] if part == "lat50_int8" else []
    target = str(args.int8_target) if part == "lat50_int8" else "0.5"
    cli("compress", str(original), "-o", str(out), "--target", target, *metric, *search, *int8, "--json", str(report))
    return model, report


def top1(model: Path, work: Path) -> float:
    """Top-1 (percent) of ``model`` on all of test.npz."""
    scored = work / f"{model.stem}.eval.json"
    cli("eval", str(model), "--data", str(TEST), "--preprocess", "cifar", "--device", "cpu", "--json", str(scored))
    return float(json.loads(scored.read_text())["accuracy"]["top1"])


def summary(report: Path | None) -> dict[str, Any]:
    """MACs ratio, widths and the latency check of a compress report."""
    if report is None or not report.exists():
        return {}
    comp = json.loads(report.read_text())
    check = comp.get("latency_check") or {}
    return {"macs_ratio": comp["after"]["macs"] / comp["before"]["macs"], "widths": [g["after"] for g in comp["groups"]],
            "passes": check.get("passes"), "why": check.get("why"), "int8": comp.get("int8"),
            "search_seconds": comp.get("search_seconds")}


def time_all(models: dict[str, Path], original: Path, threads: list[int], batches: list[int],
             protocol: Protocol) -> dict[str, dict[str, Any]]:
    """Speed-up of every model over ``original`` per thread count and batch, alternating runs in this process."""
    import numpy as np

    out: dict[str, dict[str, Any]] = {name: {} for name in models}
    for count in threads:
        runtime = Runtime(device="cpu", threads=count)
        for name, path in models.items():
            result = bench(runtime, path, original, batches, protocol=protocol, rng=np.random.default_rng(0))
            out[name][f"t{count}"] = [{"batch": r.batch, "ms": r.model.median_ms, "baseline_ms": r.baseline.median_ms,
                                       "speedup": 1.0 / r.ratio, "verdict": r.verdict, "reason": r.reason}
                                      for r in result.rows if r.ratio and r.baseline is not None]
    return out


def table(results: dict[str, dict[str, Any]], threads: list[int], batches: list[int]) -> Table:
    """One row per model: top-1, MACs, speed-ups per thread count and batch, and the goal."""
    out = Table(title="ResNet-56 CIFAR-10: measured speed-up over the float original (alternating runs, one process)")
    cols = [f"t{t} b{b}" for t in threads for b in batches]
    for col in ("model", "test top-1 %", "MACs", *cols, "goal"):
        out.add_column(col, justify="left" if col == "model" else "right")
    for name, row in results.items():
        cells = []
        for t in threads:
            for cell in row["latency"].get(f"t{t}", []):
                mark = "" if cell["verdict"] == "stable" else " ?"
                cells.append(f"{cell['speedup']:.2f}x{mark}")
        macs = f"{row['macs_ratio']:.3f}" if row.get("macs_ratio") else "-"
        goal = f">= {GOALS[name]}x" if name in GOALS else ""
        out.add_row(name, f"{row['top1']:.2f}", macs, *cells, goal)
    out.caption = "?: unstable row (noisy host; rerun on a quiet one)"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="uniform agent, 1 episode, 1 thread, short timing")
    parser.add_argument("--agent", default="agmc")
    parser.add_argument("--episodes", type=int, default=60)
    parser.add_argument("--calib-size", type=int, default=2000)
    parser.add_argument("--latency-batch", type=int, default=1)
    parser.add_argument("--max-drop", type=float, default=0.01)
    parser.add_argument("--int8-target", type=float, default=0.25,
                        help="lat50_int8's --target: a share of the unpruned int8 model's latency (the width menu "
                             "is timed in int8; 0.5 is out of reach at --max-ratio 0.8 on ResNet-56)")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--batch", default="1,64")
    parser.add_argument("--skip", default="", help=f"comma-separated parts to leave out: {','.join(PARTS)}")
    parser.add_argument("--work", type=Path, default=None, help="folder for the models (default: a new temp dir)")
    parser.add_argument("--reuse", action="store_true", help="time models already in --work instead of searching")
    parser.add_argument("--json", type=Path, default=ROOT / "build" / "bench_latency.json")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    console = Console(width=160)
    if not (TRAIN.is_file() and TEST.is_file()):
        console.print(f"needs ../shared (CIFAR-10 and the ResNet weights) beside the repo: {SHARED} is absent")
        return 2
    if args.quick:
        args.agent, args.episodes, args.calib_size, args.threads = "uniform", 1, 500, "1"
    protocol = Protocol(runs=10, warmup=3, min_time=0.5, max_time=2.0) if args.quick else Protocol()
    threads, batches = [int(t) for t in args.threads.split(",")], [int(b) for b in args.batch.split(",")]
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_latency_"))
    work.mkdir(parents=True, exist_ok=True)
    original = work / "resnet56.onnx"
    if not original.exists():  # --reuse times the models already in --work against their own original
        original = export(56, work)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    models, results = {"float": original}, {"float": {"macs_ratio": 1.0}}
    for part in (p for p in PARTS if p not in skip):
        tick = time.perf_counter()
        models[part], report = build(part, original, work, args)
        results[part] = summary(report)
        console.print(f"{part}: written {models[part].name} in {time.perf_counter() - tick:.0f} s")
    for name, path in models.items():
        results[name]["top1"] = top1(path, work)
    timed = time_all({k: v for k, v in models.items()}, original, threads, batches, protocol)
    for name in results:
        results[name]["latency"] = timed[name]
    console.print(table(results, threads, batches))
    seconds = time.perf_counter() - started
    write_json_atomic(args.json, {"agent": args.agent, "episodes": args.episodes, "threads": threads,
                                  "batches": batches, "quick": args.quick, "work": str(work), "seconds": seconds,
                                  "results": results})
    console.print(f"wrote {args.json}; models in {work}; runtime {seconds / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
