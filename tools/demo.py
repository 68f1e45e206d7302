"""The bundled demo (``make demo``): compress the digits CNN and score it before and after.

Runs on a fresh machine with no ``../shared``: the model is committed (``models/digits_cnn.onnx``,
made by ``tools/train_digits.py``) and the data ships inside scikit-learn. Steps, each through
the ``onnxprune`` CLI (the commands are printed as they run):

1. write the digits splits to ``build/digits_{calib,val,test}.npz`` (uint8 pixels 0..16 and
   labels; ``calib`` is the train split the model was trained on);
2. ``onnxprune compress models/digits_cnn.onnx --target 0.5 --data build/digits_val.npz ...
   --round-to 8 --reconstruct --calib build/digits_calib.npz`` (the search scores candidates on
   the validation split only; the best one is repaired by least squares on the train split;
   channel counts in multiples of 8: with free widths the pruned model was 1.2x / 1.34x *slower*
   than the original at batch 1 / 64, with multiples of 8 it is 0.79x / 0.57x), or,
   in a build without ``compress``, ``onnxprune prune --ratio 0.5``;
3. ``onnxprune eval`` on the test split: the original, and the compressed model with
   ``--baseline`` (fidelity);
4. ``onnxprune bench`` of the compressed model against the original (alternating runs);
5. a before/after table: accuracy, MACs, params, size on disk, latency.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `models` lives at the repo root

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from models.digits import PIXEL_SCALE, digits_split  # noqa: E402
from onnxprune.cli import main as onnxprune  # noqa: E402
from onnxprune.io import write_bytes_atomic  # noqa: E402

BUILD = ROOT / "build"
PIXELS = ("--scale", f"{PIXEL_SCALE:g}", "--layout", "nchw")  # raw 0..16 pixels -> the model's input
COMPRESS_ARGS = ("compress", "models/digits_cnn.onnx", "--target", "0.5", "--data", "build/digits_val.npz",
                 *PIXELS, "--episodes", "60", "--seed", "0", "--round-to", "8", "--reconstruct", "--calib",
                 "build/digits_calib.npz",
                 "-o", "build/digits_pruned.onnx")
PRUNE_ARGS = ("prune", "models/digits_cnn.onnx", "--ratio", "0.5", "-o", "build/digits_pruned.onnx")
EVAL_ARGS = ("--data", "build/digits_test.npz", *PIXELS)
BENCH_ARGS = ("--batch", "1,64", "--runs", "100")


def run(console: Console, *args: str) -> None:
    """Run one CLI command from the repo root, echoing it; stop the demo if it fails."""
    console.print(f"\n[bold]$ onnxprune {shlex.join(args)}[/bold]")
    code = onnxprune(list(args))
    if code != 0:
        console.print(f"[red]onnxprune {args[0]} exited with {code}; demo stopped[/red]")
        sys.exit(code)


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON report written by a command."""
    return json.loads(path.read_text())


def write_splits() -> tuple[int, int, int]:
    """Write the calibration (= train), validation and test splits as raw pixels; return their sizes."""
    split = digits_split()
    BUILD.mkdir(exist_ok=True)
    for name, images, labels in (("calib", split.train_images, split.train_labels),
                                 ("val", split.val_images, split.val_labels),
                                 ("test", split.test_images, split.test_labels)):
        buffer = io.BytesIO()
        np.savez(buffer, images=images, labels=labels)
        write_bytes_atomic(BUILD / f"digits_{name}.npz", buffer.getvalue())
    return len(split.train_labels), len(split.val_labels), len(split.test_labels)


def compress_step() -> tuple[str, ...] | None:
    """The CLI arguments of the compression step this build supports (None: neither command)."""
    for name, args in (("compress", COMPRESS_ARGS), ("prune", PRUNE_ARGS)):
        if importlib.util.find_spec(f"onnxprune.commands.{name}") is not None:
            return args
    return None


def _ratio(before: float, after: float) -> str:
    return f"{after / before:.2f}x" if before else "-"


def summary(before: dict[str, Any], after: dict[str, Any] | None, bench: dict[str, Any]) -> Table:
    """The before/after table (the "compressed" column is empty when compression was skipped)."""
    run_info = bench["run"]
    table = Table(title="digits CNN: before / after",
                  caption=f"latency: {run_info['provider']}, {run_info['cpu']}, {run_info['threads']} threads, "
                          f"medians of at least {bench['protocol']['runs']} runs and "
                          f"{bench['protocol']['min_time']:g} s per model, alternating original and compressed")
    for name in ("", "original", "compressed", "after / before"):
        table.add_column(name, justify="right" if name else "left")
    top1 = before["accuracy"]["top1"]
    if after is None:
        table.add_row("top-1", f"{top1:.2f} %", "-", "-")
    else:
        new = after["accuracy"]["top1"]
        table.add_row("top-1", f"{top1:.2f} %", f"{new:.2f} %", f"{new - top1:+.2f} points")
        table.add_row("top-1 agreement with original", "", f"{100 * after['fidelity']['agreement']:.2f} %", "")
    for label, key in (("MACs (batch 1)", "macs"), ("params", "params"), ("size on disk (bytes)", "bytes_on_disk")):
        old = before["cost"][key]
        if after is None:
            table.add_row(label, f"{old:,}", "-", "-")
        else:
            table.add_row(label, f"{old:,}", f"{after['cost'][key]:,}", _ratio(old, after["cost"][key]))
    for row in bench["rows"]:
        noisy = "" if row.get("verdict", "stable") == "stable" else ", unstable: noisy host"
        label = f"latency, batch {row['batch']} (ms{noisy})"
        if row["baseline"] is None:
            table.add_row(label, f"{row['model']['median_ms']:.3f}", "-", "-")
        else:
            old, new = row["baseline"]["median_ms"], row["model"]["median_ms"]
            table.add_row(label, f"{old:.3f}", f"{new:.3f}", _ratio(old, new))
    return table


def main() -> int:
    """Run the demo; returns the exit code."""
    start = time.perf_counter()
    console = Console()
    os.chdir(ROOT)  # the printed commands use paths relative to the repo root
    calib, val, test = write_splits()
    console.print(f"wrote {calib} calibration (train), {val} validation and {test} test digits to "
                  "build/digits_{calib,val,test}.npz")
    step = compress_step()
    if step is not None:
        run(console, *step)
    else:
        console.print("[yellow]notice: neither `onnxprune compress` nor `onnxprune prune` is in this build; "
                      "the demo scores and times the original model only[/yellow]")
    pruned = step is not None
    run(console, "eval", "models/digits_cnn.onnx", *EVAL_ARGS, "--json", "build/eval_original.json")
    before, after = read_json(BUILD / "eval_original.json"), None
    if pruned:
        run(console, "eval", "build/digits_pruned.onnx", *EVAL_ARGS, "--baseline", "models/digits_cnn.onnx",
            "--json", "build/eval_pruned.json")
        after = read_json(BUILD / "eval_pruned.json")
        run(console, "bench", "build/digits_pruned.onnx", "--baseline", "models/digits_cnn.onnx", *BENCH_ARGS,
            "--json", "build/bench.json")
    else:
        run(console, "bench", "models/digits_cnn.onnx", *BENCH_ARGS, "--json", "build/bench.json")
    console.print()
    console.print(summary(before, after, read_json(BUILD / "bench.json")))
    console.print(f"demo finished in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
