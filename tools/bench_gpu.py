"""GPU check: the CUDA execution provider scores pruned models like the CPU one, and times them.

For ResNet-56 (pretrained when ../shared is present, else random weights) and its 50 %-MACs
pruned versions (``onnxprune compress --target 0.5 --agent uniform``, reconstructed on 1,000
train images when ../shared is present, else data-free; free channel counts ``--round-to 1`` and
multiples of 8 ``--round-to 8``):

1. Scores: the ``onnxprune eval`` CLI on ``--data`` with ``--device cpu`` and ``--device cuda``
   (top-1 of each, and the provider each run reports); in-process, the logits of both providers
   on the first ``--compare`` images: top-1 agreement and the largest absolute difference.
2. Latency: ``onnxprune bench --device cuda --baseline <original>`` at ``--batch`` sizes (median
   ms, ratio to the original, verdict).

Without the CUDA EP it says so and exits 2 (nothing to check). Models and data can be given
ready-made in ``--work`` (``resnet56.onnx``, ``r56_c50.onnx``, ``r56_c50_r8.onnx``, ``test.npz``)
for a machine without ../shared. Prints a table and writes JSON (default build/bench_gpu.json).

Usage: python tools/bench_gpu.py [--work DIR] [--data test.npz] [--compare 1000]
       [--batch 1,64,256] [--max-time 5] [--device cuda|cpu] [--json PATH]
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

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from onnxprune.evaluate import DataSpec, Runtime, make_preprocess, open_data  # noqa: E402
from onnxprune.io import write_json_atomic  # noqa: E402

MODELS = ("resnet56.onnx", "r56_c50.onnx", "r56_c50_r8.onnx")


def cli(*args: str) -> None:
    """Run ``onnxprune`` with ``args`` in a child process; raise with its stderr when it fails."""
    done = subprocess.run([sys.executable, "-m", "onnxprune.cli", *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"onnxprune {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")


def build(work: Path, images: int) -> None:
    """Export ResNet-56, compress it twice (free widths, multiples of 8), write the test images."""
    from models.export import export_onnx
    from models.resnet_cifar import resnet_cifar

    weights = SHARED / "weights" / "resnet56_cifar10.npz"
    test = SHARED / "data" / "cifar10" / "test.npz"
    net = resnet_cifar(56, weights=weights) if weights.is_file() else resnet_cifar(56, seed=0)
    original = work / MODELS[0]
    export_onnx(net, (1, 3, 32, 32), original, exporter="torchscript", dynamic_batch=True)
    train = SHARED / "data" / "cifar10" / "train.npz"
    scored = (["--agent", "uniform", "--data", str(train), "--preprocess", "cifar", "--val-split", "1000",
               "--reconstruct", "--calib", str(train), "--calib-size", "1000"] if train.is_file() else [])
    cli("compress", str(original), "-o", str(work / MODELS[1]), "--target", "0.5", "--round-to", "1", *scored)
    cli("compress", str(original), "-o", str(work / MODELS[2]), "--target", "0.5", "--round-to", "8", *scored)
    if test.is_file():
        with np.load(test, allow_pickle=False) as npz:
            np.savez(work / "test.npz", images=npz["images"][:images], labels=npz["labels"][:images])
    else:
        rng = np.random.default_rng(0)
        np.savez(work / "test.npz", images=rng.integers(0, 256, (images, 32, 32, 3), dtype=np.uint8),
                 labels=rng.integers(0, 10, images))


def scores(model: Path, data: Path, work: Path, device: str) -> dict[str, Any]:
    """``onnxprune eval`` on the CPU and on ``device``: top-1 and the provider each reports."""
    out: dict[str, Any] = {}
    for name, dev in (("cpu", "cpu"), ("cuda", device)):
        report = work / f"{model.stem}.{name}.eval.json"
        cli("eval", str(model), "--data", str(data), "--preprocess", "cifar", "--device", dev, "--json", str(report))
        result = json.loads(report.read_text())
        out[name] = {"top1": result["accuracy"]["top1"], "provider": result["run"]["provider"]}
    return out


def agreement(model: Path, data: Path, count: int, device: str) -> dict[str, Any]:
    """Logits of the same images on both providers: top-1 agreement and largest absolute difference."""
    cpu, cuda = Runtime("cpu").session(model), Runtime(device).session(model)
    dataset = open_data(DataSpec(path=data, preprocess=make_preprocess("cifar")), cpu.inputs)
    images = dataset.images[:count]
    a = cpu.run({cpu.inputs[0].name: images})[0]
    b = cuda.run({cuda.inputs[0].name: images})[0]
    return {"images": int(len(images)), "top1_agreement": float(np.mean(a.argmax(1) == b.argmax(1))),
            "max_abs_diff": float(np.abs(a - b).max()), "logit_scale": float(np.abs(a).max())}


def latency(model: Path, baseline: Path, batches: str, work: Path, device: str,
            max_time: float) -> list[dict[str, Any]]:
    """``onnxprune bench --device <device>`` rows of ``model`` against ``baseline``."""
    report = work / f"{model.stem}.bench.json"
    cli("bench", str(model), "--baseline", str(baseline), "--batch", batches, "--device", device,
        "--max-time", str(max_time), "--json", str(report))
    result = json.loads(report.read_text())
    return [{"batch": r["batch"], "ms": r["model"]["median_ms"], "baseline_ms": r["baseline"]["median_ms"],
             "ratio": r["ratio"], "verdict": r["verdict"], "provider": result["run"]["provider"]}
            for r in result["rows"]]


def table(results: dict[str, Any]) -> Table:
    """One row per model and batch size."""
    out = Table(title=f"CUDA EP check ({results['gpu']})")
    for col in ("model", "top-1 CPU %", "top-1 CUDA %", "agree", "max |diff|", "batch", "CUDA ms",
                "ratio", "verdict"):
        out.add_column(col, justify="left" if col == "model" else "right")
    for name, entry in results["models"].items():
        s, a = entry["scores"], entry["agreement"]
        rows = entry["latency"] or [{"batch": "-", "ms": float("nan"), "ratio": float("nan"), "verdict": "-"}]
        for i, row in enumerate(rows):
            head = [name, f"{s['cpu']['top1']:.2f}", f"{s['cuda']['top1']:.2f}", f"{a['top1_agreement']:.4f}",
                    f"{a['max_abs_diff']:.1e}"] if i == 0 else ["", "", "", "", ""]
            out.add_row(*head, str(row["batch"]), f"{row['ms']:.3f}", f"{row['ratio']:.3f}", row["verdict"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="folder with the models and test.npz (else built)")
    parser.add_argument("--images", type=int, default=5000, help="test images written when building")
    parser.add_argument("--compare", type=int, default=1000, help="images whose logits are compared")
    parser.add_argument("--batch", default="1,64,256")
    parser.add_argument("--max-time", type=float, default=5.0, help="bench --max-time per batch size (s)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="the provider checked against the CPU (cpu: a dry run of this script)")
    parser.add_argument("--json", type=Path, default=ROOT / "build" / "bench_gpu.json")
    args = parser.parse_args(argv)
    console = Console(width=140)
    import onnxruntime as ort

    if args.device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        console.print("no CUDA execution provider here (pip install 'onnxprune[gpu]' on a machine with a GPU)")
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    if not all((work / m).is_file() for m in MODELS) or not (work / "test.npz").is_file():
        build(work, args.images)
    results: dict[str, Any] = {"gpu": _gpu_name(), "ort": ort.__version__, "models": {}}
    original = work / MODELS[0]
    for name in MODELS:
        model = work / name
        results["models"][name] = {
            "scores": scores(model, work / "test.npz", work, args.device),
            "agreement": agreement(model, work / "test.npz", args.compare, args.device),
            "latency": latency(model, original, args.batch, work, args.device, args.max_time) if name != MODELS[0] else [],
        }
    console.print(table(results))
    write_json_atomic(args.json, results)
    console.print(f"wrote {args.json}")
    return 0


def _gpu_name() -> str:
    """The GPU's name from nvidia-smi, or ``unknown``."""
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=30)
        return done.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
