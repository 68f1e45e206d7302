"""Benchmark (issue 16 item 5): joint pruning + bits search on CIFAR ResNets at a BOPs target.

For each depth the shared weights are exported to ONNX and each agent runs ``onnxprune compress
--quantize --metric bops`` (reward scored on a seeded subset of ``--val-size`` train images,
activation ranges and reconstruction on another seeded subset of ``--calib-size`` train images:
the search sees train.npz only). The written (simulated) model is scored on the full test.npz;
its BOPs are MACs x its plan's bits. No fine-tuning, unless ``--qat-epochs N``: then the written
pruned float model (``<out>.float.onnx``) is trained N epochs at its plan's bits (``<out>.bits.json``)
with quantization-aware training (distillation from the float32 export + cross-entropy on train.npz
minus a seeded 5,000-image validation split, best epoch on it) and the simulated result is scored on
test.npz too. The paper's rows (after fine-tuning) are printed beside. Prints a table and writes JSON.

    .venv/bin/python tools/bench_joint.py --depths 20 --episodes 20:30 --agents agmc --threads 1
    .venv/bin/python tools/bench_joint.py --depths 20 --episodes 20:30 --qat-epochs 8 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))

from models.export import export_onnx  # noqa: E402
from models.resnet_cifar import resnet_cifar  # noqa: E402
from onnxprune import pipeline  # noqa: E402
from onnxprune.evaluate import DataSpec, Runtime, make_preprocess  # noqa: E402
from onnxprune.finetune.train import QAT_LR, TrainConfig  # noqa: E402
from onnxprune.pipeline.finetuning import FinetuneSettings, finetune_file  # noqa: E402
from onnxprune.pipeline.joint import JointSettings  # noqa: E402
from onnxprune.pipeline.pruning import RepairSettings  # noqa: E402
from onnxprune.quantize import QuantPlan  # noqa: E402
from onnxprune.rewrite.reconstruct import ReconstructOptions  # noqa: E402

#: The paper's rows: float top-1, BOPs removed (%) and top-1 after fine-tuning.
PAPER = {20: (91.73, 96.36, 91.62), 56: (None, 98.51, 92.80)}
TARGETS = {20: 0.964, 56: 0.97}


def _top1(path: Path, data: DataSpec, runtime: Runtime) -> float:
    result = pipeline.evaluate_model(path, data, runtime=runtime)
    if result.accuracy is None:
        raise SystemExit("test.npz has no labels")
    return result.accuracy.top1


def _run(src: Path, tmp: Path, depth: int, agent: str, episodes: int, args: argparse.Namespace,
         runtime: Runtime) -> dict[str, Any]:
    prep = make_preprocess("cifar")
    val = DataSpec(path=SHARED / "data/cifar10/train.npz", preprocess=prep, val_split=args.val_size, seed=0)
    calib = DataSpec(path=SHARED / "data/cifar10/train.npz", preprocess=prep, val_split=args.calib_size, seed=1)
    test = DataSpec(path=SHARED / "data/cifar10/test.npz", preprocess=prep)
    repair = RepairSettings(calib=calib, candidate_images=args.candidate_images,
                            options=ReconstructOptions(threads=args.threads))
    target = args.target if args.target is not None else TARGETS[depth]
    out = tmp / f"{agent}.onnx"
    t0 = time.perf_counter()
    report = pipeline.compress_file(src, out, target=target, metric="bops", agent=agent, episodes=episodes,
                                    seed=args.seed, round_to=args.round_to, data=val, runtime=runtime, repair=repair,
                                    finalists=args.finalists, joint=JointSettings())
    seconds = time.perf_counter() - t0
    q = report.quant or {}
    row = {"agent": agent, "episodes": report.episodes, "target": target, "seconds": seconds,
           "bops_removed": q["reduction_vs_input_float32"], "bops_vs_int8": q["ratio_vs_input_int8"],
           "bops": q["bops"], "achieved": report.achieved, "bytes": q["bytes"],
           "bytes_float32": q["input_bytes_float32"], "macs_ratio": report.after.macs / report.before.macs,
           "val_top1": report.accuracy_after, "test_top1": _top1(out, test, runtime),
           "bits": {k: list(v) for k, v in report.bits.items()}, "keeps": list(report.best.keeps)}
    if args.qat_epochs:
        row.update(_qat(src, out, test, runtime, args))
    print(f"  {agent:8} ep {row['episodes']:3d}  {seconds:7.1f} s  BOPs removed {100 * row['bops_removed']:6.2f} %  "
          f"vs int8 {row['bops_vs_int8']:.3f}x  bytes {row['bytes']:,}  MACs {row['macs_ratio']:.3f}  "
          f"val {row['val_top1']:6.2f}  test {row['test_top1']:6.2f}", flush=True)
    return row


def _qat(src: Path, out: Path, test: DataSpec, runtime: Runtime, args: argparse.Namespace) -> dict[str, Any]:
    """Quantization-aware training of ``out``'s pruned float model at its bits; test top-1 of the result."""
    student = out.with_name(f"{out.stem}.float.onnx")
    plan = QuantPlan.read(str(out.with_name(f"{out.stem}.bits.json")))
    tuned = out.with_name(f"{out.stem}.qat.onnx")
    settings = FinetuneSettings(
        data=DataSpec(path=SHARED / "data/cifar10/train.npz", preprocess=make_preprocess("cifar"), seed=0),
        val_images=5000, config=TrainConfig(epochs=args.qat_epochs, batch_size=128, lr=args.qat_lr), augment="auto",
        preset="cifar", quant_plan=plan, threads=args.qat_threads)
    t0 = time.perf_counter()
    report = finetune_file(student, src, tuned, settings,
                           on_epoch=lambda e: print(f"    QAT epoch {e.epoch + 1}: loss {e.loss:.3f}, val top-1 "
                                                    f"{100 * (e.val_top1 or 0):.2f} %, {e.seconds:.0f} s", flush=True))
    seconds = time.perf_counter() - t0
    top1 = _top1(tuned, test, runtime)
    print(f"    QAT {args.qat_epochs} epochs {seconds / 60:.1f} min: test {top1:.2f}", flush=True)
    return {"qat_epochs": args.qat_epochs, "qat_lr": args.qat_lr, "qat_minutes": seconds / 60,
            "qat_minutes_per_epoch": seconds / 60 / args.qat_epochs, "qat_best_epoch": report.best_epoch,
            "qat_val_top1": report.top1_after, "qat_test_top1": top1,
            "qat_history": [e.__dict__ for e in report.history]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="20,56")
    parser.add_argument("--episodes", default="20:30,56:30", help="depth:episodes pairs")
    parser.add_argument("--agents", default="agmc")
    parser.add_argument("--target", type=float, default=None,
                        help="fraction of float32 BOPs removed (default: 0.964 for ResNet-20, 0.97 for ResNet-56)")
    parser.add_argument("--val-size", type=int, default=1000, help="train images scoring the reward")
    parser.add_argument("--calib-size", type=int, default=512, help="train images for ranges and reconstruction")
    parser.add_argument("--candidate-images", type=int, default=128, help="reconstruct every candidate on this many")
    parser.add_argument("--finalists", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--round-to", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--qat-epochs", type=int, default=0, help="quantization-aware training epochs (0: none)")
    parser.add_argument("--qat-lr", type=float, default=QAT_LR, help=f"QAT peak learning rate (cosine; default {QAT_LR})")
    parser.add_argument("--qat-threads", type=int, default=None, help="torch threads for QAT (default: all)")
    parser.add_argument("--json", type=Path, default=ROOT / "build" / "bench_joint.json")
    args = parser.parse_args()
    episodes = {int(k): int(v) for k, v in (p.split(":") for p in args.episodes.split(","))}
    runtime = Runtime(device="cpu", threads=args.threads)
    results = []
    for depth in (int(d) for d in args.depths.split(",")):
        with tempfile.TemporaryDirectory() as name:
            tmp = Path(name)
            src = tmp / f"resnet{depth}.onnx"
            export_onnx(resnet_cifar(depth, weights=SHARED / "weights" / f"resnet{depth}_cifar10.npz"),
                        (1, 3, 32, 32), src, exporter="torchscript", dynamic_batch=True)
            base = _top1(src, DataSpec(path=SHARED / "data/cifar10/test.npz", preprocess=make_preprocess("cifar")),
                         runtime)
            print(f"resnet{depth}: float32 test top-1 {base:.2f} %", flush=True)
            rows = [_run(src, tmp, depth, a, 1 if a == "uniform" else episodes.get(depth, 30), args, runtime)
                    for a in args.agents.split(",")]
        results.append({"model": f"resnet{depth}", "test_top1": base, "rows": rows})
    print("\nCIFAR-10 joint pruning + mixed precision, searched on train.npz, top-1 on test.npz, no fine-tuning")
    print(f"{'model':>9} {'row':>16} {'BOPs removed %':>15} {'vs int8':>8} {'bytes':>10} {'top-1':>7} {'drop':>6}"
          f" {'QAT top-1':>10}")
    for res in results:
        depth = int(res["model"][6:])
        paper = PAPER.get(depth)
        print(f"{res['model']:>9} {'float32':>16} {0.0:>15.2f} {16.0:>8.3f} {'':>10} {res['test_top1']:>7.2f}")
        for r in res["rows"]:
            print(f"{res['model']:>9} {r['agent'] + ' (ours)':>16} {100 * r['bops_removed']:>15.2f} "
                  f"{r['bops_vs_int8']:>8.3f} {r['bytes']:>10,} {r['test_top1']:>7.2f} "
                  f"{r['test_top1'] - res['test_top1']:>+6.2f}"
                  + (f" {r['qat_test_top1']:>10.2f}" if 'qat_test_top1' in r else ""))
        if paper is not None:
            ref = f"{paper[0]:.2f}" if paper[0] is not None else "-"
            print(f"{res['model']:>9} {'paper (FT)':>16} {paper[1]:>15.2f} {(1 - paper[1] / 100) * 16:>8.3f} "
                  f"{'':>10} {paper[2]:>7.2f}   (paper baseline {ref})")
    load = os.getloadavg()
    print(f"host load average (1, 5 min): {load[0]:.1f}, {load[1]:.1f}; ORT threads {args.threads}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results},
                                    indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
