"""``onnxprune quantize``: int8/int4 QDQ for deployment, or a simulated model at any bits."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from onnxprune import pipeline
from onnxprune.commands._model_options import add_input_shape_option, parse_input_shapes
from onnxprune.errors import DataError, PlanError
from onnxprune.evaluate import DataSpec, make_preprocess
from onnxprune.io import write_json_atomic
from onnxprune.quantize import A_BITS, METHODS, W_BITS, QuantPlan
from onnxprune.report import QuantizeReport


def _bits(text: str, allowed: tuple[int, ...], what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise PlanError(f"--{what} '{text}' is not an integer; pick one of {list(allowed)}") from None
    if value not in allowed:
        raise PlanError(f"--{what} {value} not in {list(allowed)}; pick one of those")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "quantize", help="int8/int4 QDQ model (ONNX Runtime), or a simulated low-bit model",
        description="Quantize weights (per-channel) and activations (calibrated). By default writes the "
                    "deployable QDQ model (int8; int4 weights for --bits <= 4, at opset 21); --simulate writes a "
                    "float model whose weights and activations sit on their low-bit grids, for any bits.")
    parser.add_argument("model", type=Path, help="the .onnx file (never modified)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="where to write the quantized model")
    parser.add_argument("--bits", default="8", help=f"weight bits of every layer, one of {list(W_BITS)}")
    parser.add_argument("--a-bits", default="8", help=f"activation bits of every layer, one of {list(A_BITS)}")
    parser.add_argument("--plan", default=None, metavar="BITS.json", help="per-layer bits plan instead of --bits")
    parser.add_argument("--keep-float", default="", metavar="LAYERS",
                        help="comma-separated layers left float: first, last or node names")
    parser.add_argument("--calib", type=Path, required=True, metavar="FILE",
                        help="calibration images (.npz or image folder)")
    parser.add_argument("--calib-size", type=int, default=512, metavar="N", help="calibration images used")
    parser.add_argument("--method", choices=METHODS, default="minmax", help="activation range calibration")
    parser.add_argument("--preprocess", default=None, help="preprocessing preset of the images (e.g. cifar)")
    parser.add_argument("--simulate", action="store_true", help="write the simulated model (any bits) instead")
    parser.add_argument("--data", type=Path, default=None, metavar="FILE",
                        help="labelled validation images: top-1 before/after (default with --max-drop: --calib)")
    parser.add_argument("--val-size", type=int, default=2000, metavar="N", help="validation images used")
    parser.add_argument("--max-drop", type=float, default=None, metavar="F",
                        help="fall back to float, most sensitive layers first, until top-1 drops at most F "
                             "(fraction, e.g. 0.002)")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the calibration and validation subsets")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the report as JSON")
    add_input_shape_option(parser)
    parser.set_defaults(run=run)


def _table(report: QuantizeReport) -> Table:
    table = Table(title=f"{Path(report.source).name} -> {report.output.name} ({report.mode})")
    for column in ("", "before", "after", "ratio"):
        table.add_column(column, justify="right")
    bops = report.bops
    table.add_row("BOPs", f"{bops['bops_float32']:,}", f"{bops['bops']:,}",
                  f"{bops['bops'] / bops['bops_float32']:.4f}" if bops["bops_float32"] else "-")
    table.add_row("bytes on disk", f"{report.bytes_before:,}", f"{report.bytes_after:,}",
                  f"{report.bytes_after / report.bytes_before:.3f}")
    if report.accuracy_before is not None and report.accuracy_after is not None:
        table.add_row("top-1 %", f"{100 * report.accuracy_before:.2f}", f"{100 * report.accuracy_after:.2f}",
                      f"{100 * (report.accuracy_after - report.accuracy_before):+.2f} pt")
    return table


def _layers(report: QuantizeReport) -> Table:
    table = Table(title="bits per layer (asked -> written; 32 = float)")
    for column in ("layer", "MACs", "asked w/a", "written w/a"):
        table.add_column(column, justify="right")
    for row in report.bops["layers"]:
        asked = report.plan.get(row["node"], (32, 32))
        table.add_row(row["node"], f"{row['macs']:,}", f"{asked[0]}/{asked[1]}", f"{row['w_bits']}/{row['a_bits']}")
    return table


def run(args: argparse.Namespace) -> int:
    if args.calib_size < 1 or args.val_size < 1:
        raise DataError("--calib-size and --val-size take a positive number of images")
    preprocess = make_preprocess(args.preprocess)
    val_path = args.data if args.data is not None else (args.calib if args.max_drop is not None else None)
    val = None if val_path is None else DataSpec(path=val_path, preprocess=preprocess, val_split=args.val_size,
                                                 seed=args.seed)
    same = val_path is not None and Path(val_path).resolve() == Path(args.calib).resolve()
    calib = DataSpec(path=args.calib, preprocess=preprocess, val_split=args.calib_size, seed=args.seed + 1,
                     disjoint_from=(args.val_size, args.seed) if same else None)
    settings = pipeline.QuantizeSettings(
        calib=calib, w_bits=_bits(args.bits, W_BITS, "bits"), a_bits=_bits(args.a_bits, A_BITS, "a-bits"),
        plan=QuantPlan.read(args.plan) if args.plan else None,
        keep_float=tuple(k for k in args.keep_float.split(",") if k), method=args.method,
        simulate=args.simulate, max_drop=args.max_drop, val=val, threads=args.threads)
    report = pipeline.quantize_file(args.model, args.output, settings,
                                    input_shapes=parse_input_shapes(args.input_shape))
    console = Console()
    console.print(_table(report))
    if args.verbose or args.debug:
        console.print(_layers(report))
    bops = report.bops
    console.print(f"BOPs: {100 * bops['reduction_vs_float32']:.2f} % fewer than float32, "
                  f"{bops['ratio_vs_int8']:.3f}x all-int8; opset {report.opset}; {report.seconds:.1f} s")
    if report.fallen_back:
        console.print(f"--max-drop: {len(report.fallen_back)} layers back to float: {', '.join(report.fallen_back)}")
    console.print(f"wrote {report.output}")
    if args.json is not None:
        write_json_atomic(args.json, report.to_json())
    return 0
