"""``onnxprune analyze``: the model's prunable channel groups and their costs."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from onnxprune import pipeline
from onnxprune.commands._model_options import add_input_shape_option, parse_input_shapes
from onnxprune.io import write_json_atomic


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("analyze", help="list prunable channel groups, their MACs/params share",
                                   description="Find the channel groups that must be pruned together.")
    parser.add_argument("model", type=Path, help="the .onnx file")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the table as JSON")
    parser.add_argument("--all", action="store_true", help="also list single-channel groups")
    parser.add_argument("--layers", action="store_true",
                        help="also list the Conv/Gemm/MatMul layers: MACs, bits (32 = float), quantizable")
    add_input_shape_option(parser)
    parser.set_defaults(run=run)


def _layer_table(report, name: str) -> Table:
    table = Table(title=f"MAC layers of {name}")
    for column in ("layer", "op", "MACs %", "w bits", "a bits", "quantizable"):
        table.add_column(column, justify="left" if column in ("layer", "op") else "right")
    macs = max(report.cost.macs, 1)
    for row in report.layers:
        table.add_row(row.node, row.op_type, f"{100 * row.macs / macs:.1f}", str(row.w_bits), str(row.a_bits),
                      "yes" if row.quantizable else "no")
    return table


def run(args: argparse.Namespace) -> int:
    _, report = pipeline.analyze_file(args.model, input_shapes=parse_input_shapes(args.input_shape))
    table = Table(title=f"channel groups of {args.model.name}")
    for column in ("group", "channels", "MACs %", "params %", "producers", "consumers", "status"):
        table.add_column(column, justify="left" if column == "status" else "right")
    macs, params = max(report.cost.macs, 1), max(report.cost.params, 1)
    prunable = 0
    for row in report.rows:
        status = f"frozen: {row.frozen_reason}" if row.frozen_reason else \
            ("prunable" if row.channels > 1 else "single channel")
        prunable += status == "prunable"
        if row.channels <= 1 and not args.all and not row.frozen_reason:
            continue
        width = f"{row.channels}x{row.unit_width}" if row.unit_width > 1 else str(row.channels)
        table.add_row(str(row.id), width, f"{100 * row.macs / macs:.1f}", f"{100 * row.params / params:.1f}",
                      str(row.producers), str(row.consumers), status)
    console = Console()
    console.print(table)
    console.print(f"{len(report.rows)} groups, {prunable} prunable, {report.links} channels linked through "
                  f"pads; MACs {report.cost.macs:,} (batch 1), params {report.cost.params:,}")
    if args.layers:
        console.print(_layer_table(report, args.model.name))
    quantized = sum(1 for r in report.layers if r.w_bits < 32)
    console.print(f"{len(report.layers)} MAC layers ({sum(r.quantizable for r in report.layers)} quantizable by "
                  f"`onnxprune quantize`, {quantized} stored quantized)")
    if args.json is not None:
        write_json_atomic(args.json, report.to_json())
    return 0
