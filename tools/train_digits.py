"""Train the bundled demo CNN on scikit-learn's digits and export it to models/digits_cnn.onnx.

Seeded and CPU-only (a few seconds). The ONNX file keeps its BatchNormalization nodes
(``models.export.export_onnx``: eval mode, ``TrainingMode.PRESERVE``), input ``input``
``(N, 1, 8, 8)`` with a dynamic batch, output ``output`` ``(N, 10)``.

Usage: python tools/train_digits.py [--seed 0] [-o models/digits_cnn.onnx]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `models` lives at the repo root

import onnx  # noqa: E402
import torch  # noqa: E402

from models.digits import accuracy, digits_split, train_digits_cnn  # noqa: E402
from models.export import export_onnx  # noqa: E402

logger = logging.getLogger(__name__)
DEFAULT_OUTPUT = ROOT / "models" / "digits_cnn.onnx"


def main(argv: list[str] | None = None) -> int:
    """Train, check the export keeps BatchNorm, save; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    split = digits_split()
    model = train_digits_cnn(split, torch.Generator().manual_seed(args.seed))
    proto = export_onnx(model, (1, 1, 8, 8), args.output, exporter="torchscript", dynamic_batch=True)
    ops = [n.op_type for n in proto.graph.node]
    bn = ops.count("BatchNormalization")
    if bn != 3:
        print(f"export lost BatchNorm: {bn} BatchNormalization nodes, expected 3", file=sys.stderr)
        return 1
    onnx.checker.check_model(proto)
    print(f"trained on {len(split.train_labels)} digits in {time.perf_counter() - start:.1f} s: "
          f"val top-1 {accuracy(model, split.val_images, split.val_labels):.2f} % on {len(split.val_labels)}, "
          f"test top-1 {accuracy(model, split.test_images, split.test_labels):.2f} % "
          f"on {len(split.test_labels)} digits; wrote {args.output} ({args.output.stat().st_size:,} B, "
          f"{len(ops)} nodes, {bn} BatchNormalization)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
