"""Benchmark: what ``--round-to`` does to accuracy and real CPU latency at 50 % of MACs removed.

For CIFAR ResNet-20 and ResNet-56 (pretrained weights and data from ../shared), each
``--round-to`` value: ``onnxprune compress --target 0.5 --agent uniform`` with reconstruction
(reward images and calibration images from train.npz), ``onnxprune eval`` on all of test.npz and
``onnxprune bench --baseline <original>`` at ``--batch`` sizes (bench's default threads). The
uniform agent keeps the comparison to the rounding alone: same ratios, same criterion.

Needs ../shared (exits 2 without it). Prints a table and writes JSON (default build/bench_round_to.json).

Usage: python tools/bench_round_to.py [--depths 20,56] [--round-to 1,4,8,16] [--batch 1,32] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `models` lives at the repo root

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from onnxprune.io import write_json_atomic  # noqa: E402

TRAIN = SHARED / "data" / "cifar10" / "train.npz"
TEST = SHARED / "data" / "cifar10" / "test.npz"


def cli(*args: str) -> None:
    """Run ``onnxprune`` with ``args`` in a child process; raise with its stderr when it fails."""
    done = subprocess.run([sys.executable, "-m", "onnxprune.cli", *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"onnxprune {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")


def export(depth: int, work: Path) -> Path:
    """The pretrained CIFAR ResNet of ``depth`` as ONNX (dynamic batch)."""
    from models.export import export_onnx
    from models.resnet_cifar import resnet_cifar

    path = work / f"resnet{depth}.onnx"
    export_onnx(resnet_cifar(depth, weights=SHARED / "weights" / f"resnet{depth}_cifar10.npz"), (1, 3, 32, 32),
                path, exporter="torchscript", dynamic_batch=True)
    return path


def measure(original: Path, round_to: int, batches: str, work: Path) -> dict[str, Any]:
    """Compress ``original`` at ``round_to``, then score it on test.npz and time it against ``original``."""
    out = work / f"{original.stem}_r{round_to}.onnx"
    report, scored, timed = (work / f"{out.stem}.{kind}.json" for kind in ("compress", "eval", "bench"))
    cli("compress", str(original), "-o", str(out), "--target", "0.5", "--agent", "uniform", "--round-to",
        str(round_to), "--data", str(TRAIN), "--preprocess", "cifar", "--val-split", "1000", "--reconstruct",
        "--calib", str(TRAIN), "--calib-size", "2000", "--device", "cpu", "--json", str(report))
    cli("eval", str(out), "--data", str(TEST), "--preprocess", "cifar", "--device", "cpu", "--json", str(scored))
    cli("bench", str(out), "--baseline", str(original), "--batch", batches, "--device", "cpu", "--json", str(timed))
    comp, ev, be = (json.loads(p.read_text()) for p in (report, scored, timed))
    return {"round_to": round_to, "macs_ratio": comp["after"]["macs"] / comp["before"]["macs"],
            "params": comp["after"]["params"], "top1": ev["accuracy"]["top1"],
            "widths": [g["after"] for g in comp["groups"]],
            "latency": [{"batch": r["batch"], "ms": r["model"]["median_ms"], "ratio": r["ratio"],
                         "verdict": r["verdict"]} for r in be["rows"]],
            "threads": be["run"]["threads"], "cpu": be["run"]["cpu"]}


def table(results: dict[str, list[dict[str, Any]]], batches: list[int]) -> Table:
    """One row per model and rounding."""
    out = Table(title="compress --target 0.5 --agent uniform --reconstruct: --round-to vs accuracy and CPU latency")
    for col in ("model", "round-to", "MACs", "params", "test top-1 %", *(f"latency b{b}" for b in batches)):
        out.add_column(col, justify="left" if col == "model" else "right")
    for model, rows in results.items():
        for row in rows:
            lat = [f"{r['ratio']:.3f}{'' if r['verdict'] == 'stable' else ' ?'}" for r in row["latency"]]
            out.add_row(model, str(row["round_to"]), f"{row['macs_ratio']:.3f}x", f"{row['params']:,}",
                        f"{row['top1']:.2f}", *lat)
    out.caption = "latency: pruned / original median (bench's default threads); ?: unstable row"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="20,56")
    parser.add_argument("--round-to", default="1,4,8,16")
    parser.add_argument("--batch", default="1,32")
    parser.add_argument("--json", type=Path, default=ROOT / "build" / "bench_round_to.json")
    args = parser.parse_args(argv)
    console = Console(width=140)
    if not (TRAIN.is_file() and TEST.is_file()):
        console.print(f"needs ../shared (CIFAR-10 and the ResNet weights) beside the repo: {SHARED} is absent")
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench_round_to_"))
    results: dict[str, list[dict[str, Any]]] = {}
    for depth in (int(d) for d in args.depths.split(",")):
        original = export(depth, work)
        results[f"resnet{depth}"] = rows = []
        for r in (int(v) for v in args.round_to.split(",")):
            rows.append(measure(original, r, args.batch, work))
            console.print(f"resnet{depth} round-to {r}: top-1 {rows[-1]['top1']:.2f} %, latency "
                          + ", ".join(f"b{x['batch']} {x['ratio']:.3f}" for x in rows[-1]["latency"]))
    console.print(table(results, [int(b) for b in args.batch.split(",")]))
    write_json_atomic(args.json, {"batches": args.batch, "results": results})
    console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
