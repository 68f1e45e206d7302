"""Benchmark (issue 4): criterion x {none, bias correction, reconstruction} at 50 % of MACs removed.

CIFAR ResNets with the shared weights, no fine-tuning. Plan A prunes only the inner channels
of every block (groups with one producer), plan B every prunable group (residual streams too),
each with a uniform ratio chosen so that the pruned model has ``--macs`` of the original MACs.
Calibration: ``--calib-size`` images of train.npz; top-1 on ``--test-size`` images of test.npz.
Prints a table and writes JSON (default build/bench_reconstruct.json).

    .venv/bin/python tools/bench_reconstruct.py --depths 56,20
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))

from models.export import export_onnx  # noqa: E402
from models.resnet_cifar import resnet_cifar  # noqa: E402
from onnxprune import pipeline  # noqa: E402
from onnxprune.analyze import Analysis, analyze  # noqa: E402
from onnxprune.analyze.cost import estimate_cost, model_cost  # noqa: E402
from onnxprune.evaluate import DataSpec, make_preprocess  # noqa: E402
from onnxprune.load import load  # noqa: E402
from onnxprune.plan import Plan, ratio_plan  # noqa: E402
from onnxprune.rewrite import prune_model  # noqa: E402
from onnxprune.rewrite.capture import make_session  # noqa: E402
from onnxprune.rewrite.prune import tensor_masks, unit_mask  # noqa: E402
from onnxprune.rewrite.reconstruct import ReconstructOptions  # noqa: E402


def _plan_for(analysis: Analysis, scores: tuple[np.ndarray, ...], inner_only: bool, macs_keep: float) -> Plan:
    """Uniform ratio on the chosen groups, bisected so the pruned MACs are ``macs_keep`` of the original."""
    chosen = [g.prunable and (len(g.producers) == 1 or not inner_only) for g in analysis.groups]
    total = model_cost(analysis.model).macs
    lo, hi = 0.0, 0.95
    for _ in range(20):
        mid = (lo + hi) / 2
        plan = ratio_plan(scores, chosen, mid)
        macs = estimate_cost(analysis, tensor_masks(analysis, unit_mask(analysis, plan))).macs
        lo, hi = (mid, hi) if macs > macs_keep * total else (lo, mid)
    return ratio_plan(scores, chosen, hi)


def _top1(model: object, images: np.ndarray, labels: np.ndarray) -> float:
    session = make_session(model, 2)  # type: ignore[arg-type]
    name = session.get_inputs()[0].name
    correct = 0
    for start in range(0, len(images), 500):
        logits = session.run(None, {name: images[start:start + 500]})[0]
        correct += int((logits.argmax(axis=1) == labels[start:start + 500]).sum())
    return 100.0 * correct / len(images)


def _run_depth(depth: int, args: argparse.Namespace) -> list[dict[str, object]]:
    module = resnet_cifar(depth, weights=SHARED / "weights" / f"resnet{depth}_cifar10.npz")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "model.onnx"
        export_onnx(module, (1, 3, 32, 32), src, exporter="torchscript", dynamic_batch=True)
        analysis = analyze(load(src))
        prep = make_preprocess("cifar")
        calib = pipeline.calibration_feeds(src, DataSpec(path=SHARED / "data/cifar10/train.npz", preprocess=prep,
                                                         val_split=args.calib_size, seed=0))
        test = DataSpec(path=SHARED / "data/cifar10/test.npz", preprocess=prep, val_split=args.test_size, seed=1)
        test_feeds = pipeline.calibration_feeds(src, test)
        with np.load(SHARED / "data/cifar10/test.npz", allow_pickle=False) as data:
            labels = data["labels"]
        from onnxprune.evaluate.data import split_indices
        if args.test_size is not None:
            labels = labels[split_indices(len(labels), args.test_size, np.random.default_rng(1))]
    images = next(iter(test_feeds.values()))
    base = _top1(analysis.model.proto, images, labels)
    print(f"resnet{depth}: baseline top-1 {base:.2f} % on {len(images)} test images", flush=True)
    rows = []
    options = ReconstructOptions(samples_per_image=args.samples, ridge=args.ridge, threads=2)
    for plan_name, inner_only in (("A inner", True), ("B +residual", False)):
        for criterion in args.criteria.split(","):
            scores = pipeline.group_scores(analysis, criterion, calib)
            plan = _plan_for(analysis, scores, inner_only, args.macs)
            pruned = prune_model(analysis, plan)
            macs = model_cost(load_proto(pruned)).macs / model_cost(analysis.model).macs
            row: dict[str, object] = {"model": f"resnet{depth}", "plan": plan_name, "criterion": criterion,
                                      "macs_kept": macs, "baseline": base, "none": _top1(pruned, images, labels)}
            for mode in ("bias", "reconstruct"):
                rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                t0, c0 = time.perf_counter(), time.process_time()
                fixed, _ = pipeline.repair_pruned(analysis, plan, pruned, calib, mode=mode, options=options)
                row[f"{mode}_s"] = time.perf_counter() - t0
                row[f"{mode}_cpu_s"] = time.process_time() - c0  # all threads; steadier than wall on a shared host
                row[f"{mode}_peak_rss_mb"] = max(rss0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024
                row[mode] = _top1(fixed, images, labels)
            print(f"  {plan_name:12} {criterion:10} MACs {macs:.3f}  none {row['none']:6.2f}  bias "
                  f"{row['bias']:6.2f}  reconstruct {row['reconstruct']:6.2f}  ({row['reconstruct_s']:.1f} s, {row['reconstruct_cpu_s']:.1f} s CPU, "
                  f"peak RSS {row['reconstruct_peak_rss_mb']:.0f} MB)", flush=True)
            rows.append(row)
            _save(args.json, [*args.done, *rows])
    return rows


def _save(path: Path, rows: list[dict[str, object]]) -> None:
    """Write the rows so far (a long run keeps what finished)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=2) + "\n")


def load_proto(proto: object) -> object:
    """Normalize an in-memory model for costing."""
    from onnxprune.load import normalize

    return normalize(proto)  # type: ignore[arg-type]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="56,20")
    parser.add_argument("--criteria", default="l1,l2,fpgm,bn,activation")
    parser.add_argument("--macs", type=float, default=0.5, help="fraction of MACs to keep")
    parser.add_argument("--calib-size", type=int, default=2000)
    parser.add_argument("--test-size", type=int, default=None, help="test images (default: all 10,000)")
    parser.add_argument("--samples", type=int, default=10, help="positions per image and layer")
    parser.add_argument("--ridge", type=float, default=1e-4)
    parser.add_argument("--json", type=Path, default=ROOT / "build" / "bench_reconstruct.json")
    args = parser.parse_args()
    rows: list[dict[str, object]] = []
    for depth in (int(d) for d in args.depths.split(",")):
        args.done = list(rows)
        rows += _run_depth(depth, args)
        _save(args.json, rows)
    print(f"\n{'model':>9} {'plan':>12} {'criterion':>10} {'MACs':>6} {'none':>7} {'bias':>7} {'recon':>7} "
          f"{'recon s':>8} {'RSS MB':>7}")
    for r in rows:
        print(f"{r['model']:>9} {r['plan']:>12} {r['criterion']:>10} {r['macs_kept']:>6.3f} {r['none']:>7.2f} "
              f"{r['bias']:>7.2f} {r['reconstruct']:>7.2f} {r['reconstruct_s']:>8.1f} "
              f"{r['reconstruct_peak_rss_mb']:>7.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
