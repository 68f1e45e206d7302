"""Benchmark: analyze + prune + save time and peak memory (issue 2).

Runs each case in a fresh subprocess (so peak RSS is the case's own) and prints a table;
writes JSON to ``--json`` (default build/bench_prune.json).

    .venv/bin/python tools/bench_prune.py            # ResNet-56 (shared weights if present) and ResNet-1202
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "weights"


def _case(depth: int, ratio: float) -> dict[str, float]:
    """Export (not timed), then time load + analyze + prune + save in this process."""
    sys.path.insert(0, str(ROOT))
    from models.export import export_onnx
    from models.resnet_cifar import resnet_cifar
    from onnxprune.analyze import analyze
    from onnxprune.analyze.importance import weight_importance
    from onnxprune.io import save_model
    from onnxprune.load import load
    from onnxprune.plan import ratio_plan
    from onnxprune.rewrite import prune_model

    weights = SHARED / f"resnet{depth}_cifar10.npz"
    module = resnet_cifar(depth, weights=weights if weights.exists() else None)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "model.onnx", Path(tmp) / "pruned.onnx"
        export_onnx(module, (1, 3, 32, 32), src, exporter="torchscript", dynamic_batch=True)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        model = load(src)
        t1 = time.perf_counter()
        analysis = analyze(model)
        t2 = time.perf_counter()
        plan = ratio_plan(weight_importance(analysis), [g.prunable for g in analysis.groups], ratio, 8)
        pruned = prune_model(analysis, plan)
        save_model(pruned, dst)
        t3 = time.perf_counter()
        return {"depth": depth, "nodes": len(model.proto.graph.node), "groups": len(analysis.groups),
                "load_s": t1 - t0, "analyze_s": t2 - t1, "prune_save_s": t3 - t2, "total_s": t3 - t0,
                "analyze_prune_save_s": t3 - t1,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "rss_before_mb": rss_before / 1024}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="56,1202")
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--json", type=Path, default=ROOT / "build" / "bench_prune.json")
    parser.add_argument("--case", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case is not None:
        print(json.dumps(_case(args.case, args.ratio)))
        return 0
    rows = []
    for depth in (int(d) for d in args.depths.split(",")):
        out = subprocess.run([sys.executable, __file__, "--case", str(depth), "--ratio", str(args.ratio)],
                             check=True, capture_output=True, text=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'model':>12} {'nodes':>6} {'groups':>6} {'load s':>7} {'analyze s':>9} {'prune+save s':>12} "
          f"{'total s':>8} {'peak MB':>8}")
    for r in rows:
        print(f"{'resnet' + str(r['depth']):>12} {r['nodes']:>6} {r['groups']:>6} {r['load_s']:>7.3f} "
              f"{r['analyze_s']:>9.3f} {r['prune_save_s']:>12.3f} {r['total_s']:>8.3f} {r['peak_rss_mb']:>8.0f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
