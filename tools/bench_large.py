"""Benchmark: a real model above protobuf's 2 GiB limit through the onnxprune CLI (issue 7).

Builds a stack of large Gemm+Relu layers with random weights, streamed into external data
(one layer in memory at a time) in a temporary folder, then runs each CLI step in its own
subprocess: analyze, prune --ratio 0.5, check --target ort-cpu, bench, export-triton, eval
(random labelled inputs), compress (data-free, and with --data: 2 random-agent candidates scored in
ORT) and check on the pruned output. Prints a table (step, exit code, seconds,
peak RSS of the step's process, bytes it wrote) and writes JSON (default build/bench_large.json).
The temporary folder is deleted at the end.

    .venv/bin/python tools/bench_large.py                      # 9 x 8192^2 float32: 2.4 GB
    .venv/bin/python tools/bench_large.py --layers 2 --width 512 --tmp /tmp   # a quick smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

import numpy as np
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parents[1]
ALIGN = 4096
CLASSES = 10
CLI = "import sys; from onnxprune.cli import main; sys.exit(main())"


def _tensor(name: str, array: np.ndarray, handle: BinaryIO, location: str) -> TensorProto:
    """Append ``array`` to the open data file (page-aligned) and return the tensor pointing at it."""
    offset = handle.tell()
    pad = -offset % ALIGN
    handle.write(b"\0" * pad)
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=array.shape)
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset + pad)), ("length", str(array.nbytes))):
        tensor.external_data.add(key=key, value=value)
    handle.write(np.ascontiguousarray(array, dtype="<f4").tobytes())
    return tensor


def build(folder: Path, layers: int, width: int, rng: np.random.Generator) -> Path:
    """Write ``folder/big.onnx`` (+ ``big.onnx.data``): ``layers`` x Gemm(width, width) + Relu, then Gemm to 10."""
    path, location = folder / "big.onnx", "big.onnx.data"
    nodes, inits, x = [], [], "input"
    with open(folder / location, "wb") as handle:
        for i in range(layers + 1):
            rows = CLASSES if i == layers else width
            weight = rng.standard_normal((rows, width), dtype=np.float32) / np.float32(np.sqrt(width))
            inits.append(_tensor(f"fc{i}.weight", weight, handle, location))
            del weight
            inits.append(_tensor(f"fc{i}.bias", rng.standard_normal(rows, dtype=np.float32) * 0.1, handle, location))
            y = "logits" if i == layers else f"h{i}"
            out = y if i == layers else f"{y}_pre"
            nodes.append(helper.make_node("Gemm", [x, f"fc{i}.weight", f"fc{i}.bias"], [out], name=f"fc{i}", transB=1))
            if i < layers:
                nodes.append(helper.make_node("Relu", [f"{y}_pre"], [y], name=f"relu{i}"))
            x = y
    graph = helper.make_graph(nodes, "big_mlp",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", width])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="bench_large")
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def tree_bytes(paths: list[Path]) -> int:
    """Bytes of the given files and folders (recursively); missing ones count 0."""
    total = 0
    for path in paths:
        if path.is_file():
            total += path.stat().st_size
        elif path.is_dir():
            total += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return total


def run_step(name: str, args: list[str], outputs: list[Path], log: Path) -> dict[str, object]:
    """Run one CLI step in a subprocess; its wall time, exit code, own peak RSS and bytes written."""
    with open(log, "ab") as out:
        out.write(f"\n$ onnxprune {' '.join(args)}\n".encode())
        out.flush()
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", CLI, *args], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"step": name, "command": "onnxprune " + " ".join(args), "rc": proc.returncode, "seconds": seconds,
            "peak_rss_mb": usage.ru_maxrss / 1024, "output_bytes": tree_bytes(outputs)}


def steps(folder: Path, model: Path, width: int, rng: np.random.Generator) -> list[tuple[str, list[str], list[Path]]]:
    """The CLI steps (name, arguments, outputs) on ``model``; writes the eval data file."""
    data = folder / "data.npz"
    np.savez(data, images=rng.standard_normal((64, width), dtype=np.float32), labels=rng.integers(0, CLASSES, 64))
    pruned, compressed, scored, repo = (folder / name for name in ("pruned.onnx", "compressed.onnx", "scored.onnx",
                                                                     "repo"))
    return [
        ("analyze", ["analyze", str(model), "--json", str(folder / "analyze.json")], [folder / "analyze.json"]),
        ("prune 0.5", ["prune", str(model), "--ratio", "0.5", "-o", str(pruned)],
         [pruned, pruned.with_name(pruned.name + ".data")]),
        ("check ort-cpu", ["check", str(model), "--target", "ort-cpu", "--json", str(folder / "check.json")],
         [folder / "check.json"]),
        ("bench b1 x5", ["bench", str(model), "--batch", "1", "--runs", "5", "--warmup", "2", "--min-time", "0",
                         "--max-time", "30"], []),
        ("export-triton", ["export-triton", str(model), "--name", "big", "-o", str(repo), "--max-batch", "8"], [repo]),
        ("eval (64 samples)", ["eval", str(model), "--data", str(data), "--batch-size", "32"], []),
        ("compress data-free", ["compress", str(model), "--target", "0.5", "-o", str(compressed)],
         [compressed, compressed.with_name(compressed.name + ".data")]),
        ("compress --data", ["compress", str(model), "--target", "0.5", "--data", str(data), "--agent", "random",
                             "--episodes", "2", "-o", str(scored)], [scored, scored.with_name(scored.name + ".data")]),
        ("check pruned", ["check", str(pruned), "--target", "ort-cpu"], []),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=9, help="hidden Gemm layers (default 9)")
    parser.add_argument("--width", type=int, default=8192, help="hidden width (default 8192: 256 MiB per layer)")
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()), help="where the temp folder goes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=ROOT / "build" / "bench_large.json")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    folder = Path(tempfile.mkdtemp(prefix="onnxprune-large-", dir=args.tmp))
    log = args.json.with_suffix(".log")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    log.write_bytes(b"")
    try:
        t0 = time.perf_counter()
        model = build(folder, args.layers, args.width, rng)
        size = tree_bytes([model, folder / "big.onnx.data"])
        rows: list[dict[str, object]] = [{"step": "build (not CLI)", "command": "", "rc": 0,
                                          "seconds": time.perf_counter() - t0, "peak_rss_mb": None,
                                          "output_bytes": size}]
        for name, cli_args, outputs in steps(folder, model, args.width, rng):
            rows.append(run_step(name, cli_args, outputs, log))
            print(f"{name:>20} rc={rows[-1]['rc']} {rows[-1]['seconds']:.1f} s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"model: {args.layers} x Gemm {args.width}x{args.width} + Gemm {CLASSES}x{args.width}, "
          f"{size / 1e9:.2f} GB of float32 weights (protobuf limit 2.15 GB); CLI output in {log}")
    print(f"{'step':>20} {'rc':>3} {'seconds':>8} {'peak RSS MB':>12} {'output MB':>10}")
    for row in rows:
        rss = f"{row['peak_rss_mb']:.0f}" if row["peak_rss_mb"] is not None else "-"
        print(f"{row['step']:>20} {row['rc']:>3} {row['seconds']:>8.1f} {rss:>12} {row['output_bytes'] / 1e6:>10.1f}")
    args.json.write_text(json.dumps({"layers": args.layers, "width": args.width, "model_bytes": size,
                                     "rows": rows}, indent=2) + "\n")
    return 0 if all(row["rc"] == 0 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
