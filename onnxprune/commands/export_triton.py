"""``onnxprune export-triton``: write a Triton model repository entry for an ONNX model."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from rich.console import Console
from rich.table import Table

from onnxprune.deploy.triton import TritonOptions, export_triton
from onnxprune.io import write_json_atomic
from onnxprune.load import read

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Add the ``export-triton`` subcommand."""
    parser = subparsers.add_parser(
        "export-triton", help="write <repo>/<name>/config.pbtxt and <repo>/<name>/1/model.onnx for Triton",
        description="Write a Triton Inference Server model repository entry (onnxruntime_onnx platform). "
                    "The model is copied unchanged; config.pbtxt is derived from its inputs and outputs.")
    parser.add_argument("model", help="the .onnx model to serve")
    parser.add_argument("--name", required=True, help="model name in the repository (a plain folder name)")
    parser.add_argument("-o", "--output", required=True, metavar="REPO", help="model repository folder")
    parser.add_argument("--max-batch", type=int, default=0, metavar="N",
                        help="Triton max_batch_size; needs a dynamic first dim on every input and output "
                             "(default 0: no Triton batching, dims include the batch)")
    parser.add_argument("--instances", type=int, default=None, metavar="N", help="instances per device")
    parser.add_argument("--kind", choices=("cpu", "gpu"), default=None, help="instance kind (default gpu)")
    parser.add_argument("--dynamic-batching", action="store_true", help="enable Triton's dynamic batcher")
    parser.add_argument("--force", action="store_true", help="replace an existing <repo>/<name>")
    parser.add_argument("--json", metavar="PATH", help="also write what was exported as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Export and print the config's tensors."""
    model = read(args.model)
    options = TritonOptions(name=args.name, max_batch=args.max_batch, instances=args.instances,
                            kind=args.kind, dynamic_batching=args.dynamic_batching)
    result = export_triton(model, args.output, options, force=args.force)
    table = Table(title=f"Triton model {options.name} (max_batch_size {options.max_batch})")
    for column in ("tensor", "name", "data_type", "dims"):
        table.add_column(column)
    for kind, specs in (("input", result.inputs), ("output", result.outputs)):
        for spec in specs:
            table.add_row(kind, spec.name, spec.data_type, str(list(spec.dims)))
    console = Console()
    console.print(table)
    console.print(f"wrote {result.config_path} and {result.model_path}")
    if args.json:
        write_json_atomic(args.json, {
            "model_dir": str(result.model_dir), "config": str(result.config_path), "model": str(result.model_path),
            "max_batch_size": options.max_batch,
            "inputs": [vars(s) | {"dims": list(s.dims)} for s in result.inputs],
            "outputs": [vars(s) | {"dims": list(s.dims)} for s in result.outputs]})
    return 0
