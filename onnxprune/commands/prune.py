"""``onnxprune prune``: remove a fraction of channels from every prunable group (or apply a plan)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from onnxprune import pipeline
from onnxprune.commands._deploy_options import add_deploy_options, deploy_options, print_opset_notice
from onnxprune.commands._tables import cost_table
from onnxprune.commands._repair_options import add_repair_options, repair_mode
from onnxprune.commands._model_options import add_input_shape_option, parse_input_shapes
from onnxprune.analyze.importance import ALL_CRITERIA
from onnxprune.errors import DataError, PlanError
from onnxprune.evaluate import DataSpec, make_preprocess
from onnxprune.io import write_json_atomic
from onnxprune.plan import Plan


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise PlanError(f"--ratio '{text}' is not a number; pass a fraction in [0, 1)") from None
    if not 0.0 <= value < 1.0:
        raise PlanError(f"--ratio {value} is outside [0, 1); pass the fraction of channels to remove")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("prune", help="structured channel pruning to a smaller ONNX file",
                                   description="Remove the least important channels of every prunable group.")
    parser.add_argument("model", type=Path, help="the .onnx file (never modified)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="where to write the pruned model")
    parser.add_argument("--ratio", type=str, default="0.5", help="fraction of each group's channels to remove")
    parser.add_argument("--round-to", type=int, default=1, metavar="N",
                        help="keep channel counts multiples of N (default 1: exactly --ratio of each group; 8 gives "
                             "widths ONNX Runtime runs faster, as compress does by default)")
    parser.add_argument("--criterion", choices=ALL_CRITERIA, default="l1",
                        help="channel importance (activation and greedy need --calib)")
    add_repair_options(parser, layers="the")
    parser.add_argument("--preprocess", default=None, help="preprocessing preset of the calibration images")
    parser.add_argument("--seed", type=int, default=0, help="seed of the calibration subset and sampling")
    parser.add_argument("--plan", type=str, default=None, help="apply this plan JSON instead of --ratio")
    parser.add_argument("--save-plan", type=Path, default=None, help="write the applied plan as JSON")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the report as JSON")
    add_input_shape_option(parser)
    add_deploy_options(parser, triton=False)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    ratio = _ratio(args.ratio)
    deploy = deploy_options(args, args.output)
    plan = Plan.read(args.plan) if args.plan else None
    if args.calib_size < 1:
        raise DataError(f"--calib-size {args.calib_size}: give a positive number of images")
    calib = None if args.calib is None else DataSpec(path=args.calib, preprocess=make_preprocess(args.preprocess),
                                                     val_split=args.calib_size, seed=args.seed)
    mode = repair_mode(args)
    report = pipeline.prune_file(args.model, args.output, ratio=ratio, round_to=args.round_to,
                                 criterion=args.criterion, plan=plan,
                                 input_shapes=parse_input_shapes(args.input_shape), calib=calib,
                                 repair_mode=mode, deploy=deploy)
    table = cost_table(f"{args.model.name} -> {report.output.name}", report.before, report.after,
                       report.bytes_before, report.bytes_after)
    console = Console()
    console.print(table)
    print_opset_notice(report.opset)
    console.print(f"{report.groups_pruned} groups pruned, {report.groups_frozen} frozen; wrote {report.output}")
    if mode is not None:
        console.print(f"{mode}: {report.repaired_layers} layers repaired in {report.repair_seconds:.1f} s")
    if args.save_plan is not None:
        write_json_atomic(args.save_plan, report.plan.to_json())
    if args.json is not None:
        write_json_atomic(args.json, report.to_json())
    return 0
