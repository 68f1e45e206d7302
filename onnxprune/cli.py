"""Command-line entry point: parses arguments, calls ``onnxprune.commands``, maps errors.

Each subcommand lives in ``onnxprune/commands/<name>.py`` with two functions:
``register(subparsers)`` adds its parser, ``run(args) -> int`` does the work (through
``onnxprune.pipeline``) and prints. The list below is the only place commands are named.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from onnxprune.errors import OnnxPruneError

#: Subcommand modules, in the order ``--help`` lists them.
COMMANDS: tuple[str, ...] = ("analyze", "prune", "prune_depth", "quantize", "compress", "finetune", "eval", "bench", "check",
                             "export_triton", "report")


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="onnxprune",
        description="Compress exported ONNX models: structured channel pruning with GNN/RL policy search, "
                    "int8/int4 or simulated low-bit quantization, and fine-tuning (distillation, QAT) from the ONNX file.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("-v", "--verbose", action="store_true", help="show info logs")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"onnxprune.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"onnxprune.commands.{name}":
                continue  # command not built yet
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (2 for user errors)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = tuple(sys.argv[1:] if argv is None else argv)  # recorded by reports, to reproduce the run
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except OnnxPruneError as exc:
        if args.debug:
            raise
        print(f"onnxprune: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("onnxprune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
