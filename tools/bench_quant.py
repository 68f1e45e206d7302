"""Benchmark: int8 QDQ and pruned + int8 CIFAR ResNets against float32 (issue 16's figures).

For each depth (pretrained weights and data from ../shared): the float32 export; ``onnxprune
quantize`` (int8 QDQ, 512 calibration images from train.npz, minmax); ``onnxprune compress
--target 0.5 --agent uniform --round-to N --reconstruct`` (50 % MACs, multiples of N, repaired on
train.npz); that pruned model quantized the same way. Each is scored on all of test.npz
(``onnxprune eval``) and timed with ``onnxprune bench --baseline <float32>`` (alternating runs
in one process) at ``--batch`` sizes. No fine-tuning.

Needs ../shared (exits 2 without it). Prints a table and writes JSON (default build/bench_quant.json).

Usage: python tools/bench_quant.py [--depths 56] [--batch 1,64] [--round-to 8,16] [--threads N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from onnxprune.io import write_json_atomic  # noqa: E402
from tools.bench_round_to import SHARED, TEST, TRAIN, cli, export  # noqa: E402


def variants(original: Path, work: Path, round_to: list[int]) -> dict[str, Path]:
    """float32, int8, and per ``round_to`` the pruned (50 % MACs) and pruned + int8 files of ``original``."""
    quant = ("--calib", str(TRAIN), "--calib-size", "512", "--preprocess", "cifar")
    int8 = work / f"{original.stem}_int8.onnx"
    cli("quantize", str(original), "-o", str(int8), *quant)
    out = {"float32": original, "int8": int8}
    for n in round_to:
        pruned, both = work / f"{original.stem}_p50_r{n}.onnx", work / f"{original.stem}_p50_r{n}_int8.onnx"
        cli("compress", str(original), "-o", str(pruned), "--target", "0.5", "--agent", "uniform", "--round-to",
            str(n), "--data", str(TRAIN), "--preprocess", "cifar", "--val-split", "1000", "--reconstruct",
            "--calib", str(TRAIN), "--calib-size", "2000", "--device", "cpu")
        cli("quantize", str(pruned), "-o", str(both), *quant)
        out[f"pruned 50% ({n}s)"] = pruned
        out[f"pruned 50% ({n}s) + int8"] = both
    return out


def measure(name: str, path: Path, original: Path, batches: str, threads: str | None, work: Path) -> dict[str, Any]:
    """Top-1 on test.npz, file size and latency ratios of ``path`` against ``original``."""
    scored, timed = work / f"{path.stem}.eval.json", work / f"{path.stem}.bench.json"
    cli("eval", str(path), "--data", str(TEST), "--preprocess", "cifar", "--device", "cpu", "--json", str(scored))
    extra = ("--threads", threads) if threads else ()
    cli("bench", str(path), "--baseline", str(original), "--batch", batches, "--device", "cpu", *extra,
        "--json", str(timed))
    ev, be = json.loads(scored.read_text()), json.loads(timed.read_text())
    return {"model": name, "top1": ev["accuracy"]["top1"], "bytes": path.stat().st_size,
            "file_ratio": path.stat().st_size / original.stat().st_size,
            "latency": [{"batch": r["batch"], "ratio": r["ratio"], "speedup": 1 / r["ratio"], "verdict": r["verdict"]}
                        for r in be["rows"]],
            "threads": be["run"]["threads"], "cpu": be["run"]["cpu"]}


def table(depth: int, rows: list[dict[str, Any]], batches: list[int]) -> Table:
    """One row per variant."""
    out = Table(title=f"ResNet-{depth}: test top-1, file size and speed-up vs float32 (alternating, one process)")
    for col in ("model", "test top-1 %", "file", *(f"speed-up b{b}" for b in batches)):
        out.add_column(col, justify="left" if col == "model" else "right")
    for row in rows:
        speed = {r["batch"]: f"{r['speedup']:.2f}x" + ("" if r["verdict"] == "stable" else " (noisy)")
                 for r in row["latency"]}
        out.add_row(row["model"], f"{row['top1']:.2f}", f"{row['file_ratio']:.3f}x",
                    *(speed.get(b, "-") for b in batches))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="56")
    parser.add_argument("--batch", default="1,64")
    parser.add_argument("--round-to", default="8,16", help="channel multiples of the pruned variants")
    parser.add_argument("--threads", default=None, help="bench threads (default: bench's)")
    parser.add_argument("--json", type=Path, default=ROOT / "build" / "bench_quant.json")
    args = parser.parse_args()
    if not TRAIN.exists():
        print(f"needs {SHARED} (CIFAR-10 and the ResNet weights)", file=sys.stderr)
        return 2
    batches = [int(b) for b in args.batch.split(",")]
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for depth in (int(d) for d in args.depths.split(",")):
            original = export(depth, work)
            results[f"resnet{depth}"] = [measure(name, path, original, args.batch, args.threads, work)
                                         for name, path in variants(original, work, [int(n) for n in args.round_to.split(",")]).items()]
            Console().print(table(depth, results[f"resnet{depth}"], batches))
    write_json_atomic(args.json, results)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
