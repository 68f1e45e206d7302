"""Benchmark of the evaluate stage (issue 3): scoring throughput and latency repeatability.

1. Throughput: ``onnxprune.evaluate.evaluate`` on ResNet-56 (CPU, batch 500) against a bare
   ONNX Runtime loop (``session.run`` over slices of the same preprocessed array, same thread
   count), in short adjacent pairs of rounds; target: within 10 %. The end-to-end
   ``onnxprune eval`` CLI time (model load, data, cost, scoring) is reported too.
2. Repeatability: two separate ``onnxprune bench`` processes on the same model; target: medians
   within 5 %.

Uses ../shared (pretrained ResNet-56, CIFAR-10 test set) when present, else random weights and
random images of the same shape. Prints a table and writes JSON (default build/bench_eval.json).

Usage: python tools/bench_eval.py [--rounds 10] [--round-images 2000] [--images 10000] [--threads 2]
       [--bench-runs 100] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `models` lives at the repo root

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from onnxprune.evaluate import DataSpec, Runtime, evaluate, make_preprocess, open_data  # noqa: E402
from onnxprune.evaluate.data import ArrayData  # noqa: E402
from onnxprune.evaluate.runtime import cpu_model  # noqa: E402
from onnxprune.io import write_json_atomic  # noqa: E402

BATCH = 500


def build_inputs(work: Path, images: int) -> tuple[Path, Path, str]:
    """Export ResNet-56 and write the data it is scored on; returns (model, data, description)."""
    from models.export import export_onnx
    from models.resnet_cifar import resnet_cifar

    weights = SHARED / "weights" / "resnet56_cifar10.npz"
    test = SHARED / "data" / "cifar10" / "test.npz"
    have_shared = weights.is_file() and test.is_file()
    net = resnet_cifar(56, weights=weights) if have_shared else resnet_cifar(56, seed=0)
    model = work / "resnet56.onnx"
    export_onnx(net, (1, 3, 32, 32), model, exporter="torchscript", dynamic_batch=True)
    data = work / "data.npz"
    if have_shared:
        with np.load(test, allow_pickle=False) as npz:
            np.savez(data, images=npz["images"][:images], labels=npz["labels"][:images])
    else:
        rng = np.random.default_rng(0)
        np.savez(data, images=rng.integers(0, 256, (images, 32, 32, 3), dtype=np.uint8),
                 labels=rng.integers(0, 10, images))
    return model, data, "pretrained, CIFAR-10 test" if have_shared else "random weights, random images"


def throughput(model: Path, data: Path, threads: int, rounds: int, chunk: int) -> dict[str, Any]:
    """Paired rounds: evaluate() then a bare ORT loop on the same ``chunk`` preprocessed images.

    Short, adjacent pairs put both sides under the same background load; the figure is the
    median over pairs of (bare seconds / evaluate seconds), i.e. evaluate's relative throughput.
    """
    import onnxruntime as ort

    runtime = Runtime("cpu", threads=threads)
    session = runtime.session(model)
    dataset = open_data(DataSpec(path=data, preprocess=make_preprocess("cifar")), session.inputs)
    full = evaluate(session, dataset, batch_size=BATCH)  # also warms the session up
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    bare = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    name = bare.get_inputs()[0].name
    bare.run(None, {name: dataset.images[:BATCH]})
    ours, theirs = [], []
    for r in range(rounds):
        start = (r * chunk) % max(dataset.size - chunk + 1, 1)
        part = ArrayData(name, dataset.images[start:start + chunk], dataset.labels[start:start + chunk]
                         if dataset.labels is not None else None, dataset.source)
        pair = {}
        for side in (("ours", "bare") if r % 2 == 0 else ("bare", "ours")):  # alternate who goes first
            t0 = time.perf_counter()
            if side == "ours":
                evaluate(session, part, batch_size=BATCH)
            else:
                for i in range(0, part.size, BATCH):
                    bare.run(None, {name: part.images[i:i + BATCH]})
            pair[side] = time.perf_counter() - t0
        ours.append(pair["ours"])
        theirs.append(pair["bare"])
    ratios = [b / a for a, b in zip(ours, theirs)]
    return {"images_per_round": chunk, "rounds": rounds, "evaluate_s": ours, "bare_s": theirs,
            "evaluate_ips": chunk / float(np.median(ours)), "bare_ips": chunk / float(np.median(theirs)),
            "ratio": float(np.median(ratios)), "full_set_images": full.samples,
            "full_set_ips": full.images_per_second, "top1": full.accuracy.top1 if full.accuracy else None}


def cli_eval_seconds(model: Path, data: Path, threads: int, work: Path) -> float:
    """Wall time of one ``onnxprune eval`` process (imports, load, data, cost, scoring)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "onnxprune.cli", "eval", str(model), "--data", str(data),
                    "--preprocess", "cifar", "--device", "cpu", "--threads", str(threads),
                    "--json", str(work / "eval.json")], check=True, cwd=ROOT, capture_output=True)
    return time.perf_counter() - start


def repeatability(model: Path, threads: int, runs: int, work: Path) -> dict[str, Any]:
    """Two separate ``onnxprune bench`` processes on the same model: medians per batch size."""
    reports = []
    for i in range(2):
        out = work / f"bench{i}.json"
        subprocess.run([sys.executable, "-m", "onnxprune.cli", "bench", str(model), "--batch", "1,64",
                        "--runs", str(runs), "--device", "cpu", "--threads", str(threads), "--json", str(out)],
                       check=True, cwd=ROOT, capture_output=True)
        reports.append(json.loads(out.read_text()))
    rows = []
    for a, b in zip(reports[0]["rows"], reports[1]["rows"]):
        m1, m2 = a["model"]["median_ms"], b["model"]["median_ms"]
        rows.append({"batch": a["batch"], "median_ms": [m1, m2], "p90_ms": [a["model"]["p90_ms"], b["model"]["p90_ms"]],
                     "difference": abs(m1 - m2) / min(m1, m2)})
    return {"runs": runs, "rows": rows, "load_average": [r.get("load_average") for r in reports]}


def main(argv: list[str] | None = None) -> int:
    """Run both benchmarks, print the table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="paired evaluate/bare rounds")
    parser.add_argument("--round-images", type=int, default=2000, help="images per round")
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bench-runs", type=int, default=100)
    parser.add_argument("--json", type=Path, default=ROOT / "build" / "bench_eval.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        work = Path(tmp)
        model, data, source = build_inputs(work, args.images)
        tput = throughput(model, data, args.threads, args.rounds, min(args.round_images, args.images))
        tput["cli_eval_s"] = cli_eval_seconds(model, data, args.threads, work)
        rep = repeatability(model, args.threads, args.bench_runs, work)
    table = Table(title=f"evaluate benchmark: ResNet-56 ({source}), CPU, {args.threads} threads, {cpu_model()}")
    for name in ("measure", "value", "target", "met"):
        table.add_column(name, justify="left" if name == "measure" else "right")
    table.add_row(f"evaluate() top-1 on {tput['full_set_images']} images", f"{tput['top1']:.2f} %", "", "")
    table.add_row(f"evaluate(), batch {BATCH}, images/s (median of rounds)", f"{tput['evaluate_ips']:,.0f}", "", "")
    table.add_row("bare ORT loop, images/s (median of rounds)", f"{tput['bare_ips']:,.0f}", "", "")
    table.add_row(f"evaluate / bare throughput (median of {tput['rounds']} pairs)", f"{tput['ratio']:.3f}",
                  ">= 0.90", "yes" if tput["ratio"] >= 0.9 else "NO")
    table.add_row(f"onnxprune eval CLI, {tput['full_set_images']} images (s)", f"{tput['cli_eval_s']:.1f}", "", "")
    for row in rep["rows"]:
        m1, m2 = row["median_ms"]
        table.add_row(f"bench batch {row['batch']}: medians of 2 runs (ms)", f"{m1:.3f} / {m2:.3f}", "", "")
        table.add_row(f"bench batch {row['batch']}: difference", f"{100 * row['difference']:.1f} %", "<= 5 %",
                      "yes" if row["difference"] <= 0.05 else "NO")
    for i, load in enumerate(rep["load_average"]):
        if load:
            table.add_row(f"host load average during bench run {i + 1}", "{:.2f} -> {:.2f}".format(*load), "", "")
    Console(width=110).print(table)
    print(f"host load average (1 min) at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.json, {"model": f"resnet56 ({source})", "threads": args.threads, "cpu": cpu_model(),
                                  "load_average_end": os.getloadavg()[0],
                                  "throughput": tput, "repeatability": rep})
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
