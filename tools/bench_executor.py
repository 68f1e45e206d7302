"""Benchmark: random search on the ``local``, ``process`` and ``ray`` executors, and their projected scaling.

CIFAR ResNet-56 (pretrained weights from ../shared) at 50 % of MACs, ``--candidates`` random
candidates (seed 0, free widths), each scored on ``--images`` images of train.npz (a seeded
subset, CIFAR preprocessing, CPU). Every backend runs the same search from scratch: its wall time
includes starting the workers (each loads the model and the images itself), fitting the candidates
in the main process, and scoring them. Per candidate it records the worker's evaluation time
(prune + score) and the hand-over overhead (round trip seen by the driver minus the worker's time:
pickling the plan and result, queueing, waking up). The episodes of every backend are compared
with ``local``'s (they must be identical).

Projection for N workers, each with its own CPU core(s):
``T(N) = fit + startup + ceil(C / N) * (t_candidate + t_transfer)``, ``fit`` the main process's
fitting time, ``t_candidate`` / ``t_transfer`` the medians measured on that backend, and
``startup`` what the measured run leaves over (``wall - fit - ceil(C / workers) * (t_c + t_x)``).
On a shared host (another job on the same cores) the measured figures are slower than on an idle one.

Needs ../shared (exits 2 without it). Prints a table and writes JSON (default build/bench_executor.json).

Usage: python tools/bench_executor.py [--candidates 64] [--images 5000] [--workers 2] [--backends local,process,ray]
       [--local-threads N] [--project 1,2,4,8,16,32,64] [--json PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `models` lives at the repo root

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from onnxprune.analyze import analyze  # noqa: E402
from onnxprune.analyze.importance import weight_importance  # noqa: E402
from onnxprune.evaluate import DataSpec, make_preprocess  # noqa: E402
from onnxprune.evaluate.runtime import available_cpus  # noqa: E402
from onnxprune.execute import CandidateResult, CandidateTask, Executor, ExecutorSettings, open_executor  # noqa: E402
from onnxprune.io import write_json_atomic  # noqa: E402
from onnxprune.load import load  # noqa: E402
from onnxprune.pipeline.candidates import CandidateSpec  # noqa: E402
from onnxprune.search.baselines import random_search  # noqa: E402
from onnxprune.search.env import CompressionEnv  # noqa: E402
from onnxprune.search.space import SearchSpace  # noqa: E402

TRAIN = SHARED / "data" / "cifar10" / "train.npz"


class Recording:
    """An executor wrapper that keeps every result (for the per-candidate and per-transfer times)."""

    def __init__(self, inner: Executor) -> None:
        self.inner, self.name, self.workers = inner, inner.name, inner.workers
        self.results: list[CandidateResult] = []
        self.plan_bytes: list[int] = []

    def run(self, tasks: Sequence[CandidateTask]) -> Iterator[CandidateResult]:
        self.plan_bytes += [len(t.plan) for t in tasks]
        for result in self.inner.run(tasks):
            self.results.append(result)
            yield result

    def close(self) -> None:
        self.inner.close()


def export(work: Path) -> Path:
    """The pretrained CIFAR ResNet-56 as ONNX (dynamic batch)."""
    from models.export import export_onnx
    from models.resnet_cifar import resnet_cifar

    path = work / "resnet56.onnx"
    export_onnx(resnet_cifar(56, weights=SHARED / "weights" / "resnet56_cifar10.npz"), (1, 3, 32, 32), path,
                exporter="torchscript", dynamic_batch=True)
    return path


def run_backend(backend: str, workers: int, spec: CandidateSpec, space: SearchSpace, args: argparse.Namespace
                ) -> dict[str, Any]:
    """One seeded random search on ``backend``; times, results and episodes."""
    ray_init = 0.0
    if backend == "ray":
        import ray

        started = time.perf_counter()
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        ray_init = time.perf_counter() - started
    started = time.perf_counter()
    local_spec = dataclasses.replace(spec, threads=args.local_threads)
    settings = ExecutorSettings(backend=backend, workers=workers, threads=1)
    inner = open_executor(settings, spec, local_spec.build() if backend == "local" else lambda plan: (None, None))
    executor = Recording(inner)
    fit_seconds = [0.0]
    env = CompressionEnv(space, target=0.5, metric="macs", apply=lambda plan: plan, score=None, executor=executor)
    fit = env.fit

    def timed_fit(actions: Any) -> Any:
        begin = time.perf_counter()
        out = fit(actions)
        fit_seconds[0] += time.perf_counter() - begin
        return out

    env.fit = timed_fit  # type: ignore[method-assign]
    try:
        state = random_search(env, args.candidates, seed=0)
    finally:
        executor.close()
        if backend == "ray":
            import ray

            ray.shutdown()
    wall = time.perf_counter() - started
    seconds = np.array([r.seconds for r in executor.results])
    transfer = np.array([max(r.roundtrip - r.seconds, 0.0) for r in executor.results]) if backend != "local" \
        else np.zeros(len(executor.results))
    return {"backend": backend, "workers": workers if backend != "local" else 1,
            "threads_per_worker": args.local_threads if backend == "local" else 1, "wall_s": wall,
            "ray_init_s": ray_init, "fit_s": fit_seconds[0], "candidate_s": float(np.median(seconds)),
            "candidate_s_mean": float(seconds.mean()), "transfer_s": float(np.median(transfer)),
            "transfer_s_p90": float(np.percentile(transfer, 90)), "plan_bytes": int(np.median(executor.plan_bytes)),
            "hosts": sorted({r.worker for r in executor.results}), "best_accuracy": state.best.accuracy if state.best else None,
            "episodes": [e for e in state.history]}


def project(row: dict[str, Any], counts: Sequence[int], candidates: int) -> dict[str, float]:
    """Projected wall seconds for each worker count (see the module docstring)."""
    per = row["candidate_s"] + row["transfer_s"]
    startup = max(row["wall_s"] - row["fit_s"] - math.ceil(candidates / row["workers"]) * per, 0.0)
    row["startup_s"] = startup
    return {str(n): row["fit_s"] + startup + math.ceil(candidates / n) * per for n in counts}


def tables(rows: list[dict[str, Any]], counts: Sequence[int], args: argparse.Namespace) -> tuple[Table, Table]:
    """The measured figures per backend, and the projected wall time per worker count."""
    measured = Table(title=f"random search, {args.candidates} candidates, ResNet-56 at 50 % MACs, {args.images} "
                           f"images, host of {available_cpus()} CPUs (shared with other jobs)")
    for col in ("backend", "workers", "wall s", "speed-up", "startup s", "fit s", "candidate s", "transfer ms",
                "identical"):
        measured.add_column(col, justify="left" if col == "backend" else "right")
    base = rows[0]["wall_s"]
    for row in rows:
        measured.add_row(row["backend"], str(row["workers"]), f"{row['wall_s']:.1f}", f"{base / row['wall_s']:.2f}x",
                         f"{row['startup_s']:.1f}", f"{row['fit_s']:.2f}", f"{row['candidate_s']:.2f}",
                         f"{1000 * row['transfer_s']:.1f}", "yes" if row["identical"] else "NO")
    projected = Table(title="projected wall s with N workers (one core each): fit + startup + ceil(C/N) * "
                            "(candidate + transfer)")
    projected.add_column("backend")
    for n in counts:
        projected.add_column(f"N={n}", justify="right")
    for row in rows:
        if row["backend"] != "local":
            projected.add_row(row["backend"], *(f"{row['projected_s'][str(n)]:.0f}" for n in counts))
    return measured, projected


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=64)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--backends", default="local,process,ray")
    parser.add_argument("--local-threads", type=int, default=available_cpus(),
                        help="ONNX Runtime threads of the local backend (default: every CPU)")
    parser.add_argument("--project", default="1,2,4,8,16,32,64", help="worker counts to project")
    parser.add_argument("--json", type=Path, default=ROOT / "build" / "bench_executor.json")
    args = parser.parse_args()
    if not TRAIN.exists():
        print(f"needs {TRAIN} (../shared); absent", file=sys.stderr)
        return 2
    counts = [int(n) for n in args.project.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        model = export(Path(tmp))
        analysis = analyze(load(model))
        space = SearchSpace.build(analysis, weight_importance(analysis), max_ratio=0.8, round_to=1)
        data = DataSpec(path=TRAIN, preprocess=make_preprocess("cifar"), val_split=args.images, seed=0)
        spec = CandidateSpec(source=model, data=data, device="cpu", threads=1)
        rows = []
        for backend in args.backends.split(","):
            rows.append(run_backend(backend, args.workers, spec, space, args))
            print(f"{backend}: {rows[-1]['wall_s']:.1f} s", file=sys.stderr)
    for row in rows:
        row["identical"] = row["episodes"] == rows[0]["episodes"]
        row["projected_s"] = project(row, counts, args.candidates)
    for out in tables(rows, counts, args):
        Console().print(out)
    write_json_atomic(args.json, {"candidates": args.candidates, "images": args.images, "cpus": available_cpus(),
                                  "rows": rows})
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
