"""Benchmark of the evaluate stage (issue 3): scoring throughput and latency repeatability.

1. Throughput: ``onnxprune.evaluate.evaluate`` on ResNet-56 (CPU, batch 500) against a bare
   ONNX Runtime loop (``session.run`` over slices of the same preprocessed array, same thread
   count), in short adjacent pairs of rounds; target: within 10 %. The end-to-end
   ``onnxprune eval`` CLI time (model load, data, cost, scoring) is reported too.
2. Repeatability: ``--repeats`` (3) separate ``onnxprune bench`` processes, each timing a pruned
   ResNet-56 (``prune --ratio 0.5 --round-to 8``) against the original in blocks until the medians
   settle (``--min-time``/``--max-time``); per batch size: the original's and the pruned model's
   medians and their largest difference (target: within 5 %), the ratio's (it cancels host-speed
   drift between processes), each run's verdict, and the CPU share other processes and the
   hypervisor took meanwhile. Without ``--bench-threads`` bench runs with its own default
   threads (every CPU but one, at least 1), so the default protocol is what gets measured.

Uses ../shared (pretrained ResNet-56, CIFAR-10 test set) when present, else random weights and
random images of the same shape. Prints a table and writes JSON (default build/bench_eval.json).

Usage: python tools/bench_eval.py [--rounds 10] [--round-images 2000] [--images 10000] [--threads 2]
       [--bench-runs 20] [--bench-batch 1,64] [--bench-threads N] [--min-time 2] [--max-time 10]
       [--no-spin] [--repeats 3] [--skip-throughput] [--json PATH]
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


def prune_half(model: Path, work: Path) -> Path:
    """The baseline pair of the ratio check: ``onnxprune prune --ratio 0.5 --round-to 8`` of ``model``."""
    out = work / "resnet56_p50.onnx"
    subprocess.run([sys.executable, "-m", "onnxprune.cli", "prune", str(model), "-o", str(out), "--ratio", "0.5",
                    "--round-to", "8"], check=True, cwd=ROOT, capture_output=True)
    return out


def repeatability(model: Path, pruned: Path, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """``args.repeats`` separate ``onnxprune bench pruned --baseline model`` processes, compared per batch size.

    Each process times the original (the baseline column: the same model every time) and the
    pruned model alternately, so one set of runs gives the repeatability of an absolute median
    and of a ratio, which cancels host-speed drift between processes.
    """
    reports = []
    flags = ["--batch", args.bench_batch, "--runs", str(args.bench_runs), "--min-time", str(args.min_time),
             "--max-time", str(args.max_time), "--device", "cpu"]
    flags += ["--threads", str(args.bench_threads)] if args.bench_threads is not None else []  # else bench's default
    flags += ["--no-spin"] if args.no_spin else []
    for i in range(args.repeats):
        out = work / f"bench{i}.json"
        done = subprocess.run([sys.executable, "-m", "onnxprune.cli", "bench", str(pruned), "--baseline", str(model),
                               *flags, "--json", str(out)], check=True, cwd=ROOT, capture_output=True, text=True)
        reports.append(json.loads(out.read_text()))
        if done.stderr.strip():
            print(f"bench run {i + 1}: {done.stderr.strip().splitlines()[-1]}")
    rows = []
    for index, first in enumerate(reports[0]["rows"]):
        per_run = [r["rows"][index] for r in reports]
        rows.append({"batch": first["batch"], **_spread("original", [row["baseline"]["median_ms"] for row in per_run]),
                     **_spread("pruned", [row["model"]["median_ms"] for row in per_run]),
                     **_spread("ratio", [row["ratio"] for row in per_run]),
                     "original_half_width": [row["baseline"]["half_width"] for row in per_run],
                     "ratio_half_width": [row["ratio_half_width"] for row in per_run],
                     "verdict": [row["verdict"] for row in per_run], "steal": [row["steal"] for row in per_run],
                     "others": [row["others"] for row in per_run], "seconds": [row["seconds"] for row in per_run]})
    return {"command": ["onnxprune", "bench", "PRUNED", "--baseline", "MODEL", *flags], "rows": rows,
            "threads": [r["run"]["threads"] for r in reports], "threads_note": reports[0].get("threads_note"),
            "load_average": [r.get("load_average") for r in reports], "warnings": [r.get("warning") for r in reports]}


def _spread(name: str, values: list[float]) -> dict[str, Any]:
    """Values of the runs and their largest relative difference, (max - min) / min."""
    return {name: values, f"{name}_difference": (max(values) - min(values)) / min(values)}


def _repeatability_rows(table: Table, rep: dict[str, Any]) -> None:
    """Add the repeatability rows (per batch size) to the summary table."""
    n = len(rep["load_average"])
    note = f" ({rep['threads_note']})" if rep.get("threads_note") else ""
    table.add_row("bench threads used" + note, " / ".join(map(str, rep["threads"])), "", "")
    for row in rep["rows"]:
        b = row["batch"]
        stable = sum(v == "stable" for v in row["verdict"])
        for name, unit in (("original", "ms"), ("pruned", "ms"), ("ratio", "")):
            values = " / ".join(f"{v:.3f}" for v in row[name])
            table.add_row(f"bench batch {b}: {name} medians of {n} processes {unit}".rstrip(), values, "", "")
            diff = row[f"{name}_difference"]
            met = ("yes" if diff <= 0.05 else "NO") + ("" if stable == n else " (noisy host)")
            table.add_row(f"bench batch {b}: {name} largest difference", f"{100 * diff:.1f} %", "<= 5 %", met)
        table.add_row(f"bench batch {b}: verdicts stable", f"{stable} of {n}", "", "")
        host = " / ".join("?" if o is None else f"{100 * o:.0f}%+{100 * s:.1f}%"
                          for o, s in zip(row["others"], row["steal"]))
        table.add_row(f"bench batch {b}: other processes + steal", host, "", "")
    for i, load in enumerate(rep["load_average"]):
        if load:
            table.add_row(f"host load average during bench run {i + 1}", "{:.2f} -> {:.2f}".format(*load), "", "")


def main(argv: list[str] | None = None) -> int:
    """Run both benchmarks, print the table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="paired evaluate/bare rounds")
    parser.add_argument("--round-images", type=int, default=2000, help="images per round")
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bench-runs", type=int, default=20, help="bench --runs (a floor; --min-time rules)")
    parser.add_argument("--bench-batch", default="1,64", help="bench --batch")
    parser.add_argument("--bench-threads", type=int, default=None,
                        help="bench --threads (default: none passed, bench's default: every CPU but one)")
    parser.add_argument("--min-time", type=float, default=2.0, help="bench --min-time")
    parser.add_argument("--max-time", type=float, default=10.0, help="bench --max-time")
    parser.add_argument("--no-spin", action="store_true", help="bench --no-spin")
    parser.add_argument("--repeats", type=int, default=3, help="separate bench processes")
    parser.add_argument("--skip-throughput", action="store_true", help="only the repeatability part")
    parser.add_argument("--json", type=Path, default=ROOT / "build" / "bench_eval.json")
    args = parser.parse_args(argv)
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        work = Path(tmp)
        model, data, source = build_inputs(work, args.images)
        tput = None
        if not args.skip_throughput:
            tput = throughput(model, data, args.threads, args.rounds, min(args.round_images, args.images))
            tput["cli_eval_s"] = cli_eval_seconds(model, data, args.threads, work)
        rep = repeatability(model, prune_half(model, work), args, work)
    table = Table(title=f"evaluate benchmark: ResNet-56 ({source}), CPU, {cpu_model()}, "
                        f"throughput {args.threads} threads, bench threads below")
    for name in ("measure", "value", "target", "met"):
        table.add_column(name, justify="left" if name == "measure" else "right")
    if tput is not None:
        table.add_row(f"evaluate() top-1 on {tput['full_set_images']} images", f"{tput['top1']:.2f} %", "", "")
        table.add_row(f"evaluate(), batch {BATCH}, images/s (median of rounds)", f"{tput['evaluate_ips']:,.0f}", "", "")
        table.add_row("bare ORT loop, images/s (median of rounds)", f"{tput['bare_ips']:,.0f}", "", "")
        table.add_row(f"evaluate / bare throughput (median of {tput['rounds']} pairs)", f"{tput['ratio']:.3f}",
                      ">= 0.90", "yes" if tput["ratio"] >= 0.9 else "NO")
        table.add_row(f"onnxprune eval CLI, {tput['full_set_images']} images (s)", f"{tput['cli_eval_s']:.1f}", "", "")
    table.add_row("bench (repeatability), " + " ".join(rep["command"][2:]), "", "", "")
    _repeatability_rows(table, rep)
    Console(width=120).print(table)
    print(f"host load average (1 min): {load_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end, "
          f"on {os.cpu_count()} CPUs")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.json, {"model": f"resnet56 ({source})", "threads": args.threads, "cpu": cpu_model(),
                                  "load_average_start": load_start, "load_average_end": os.getloadavg()[0],
                                  "throughput": tput, "repeatability": rep})
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
