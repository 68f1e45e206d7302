"""Options shared by the commands that repair pruned layers: ``prune`` and ``compress``."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_repair_options(parser: argparse.ArgumentParser, *, layers: str) -> None:
    """Add ``--reconstruct | --bias-correct``, ``--calib`` and ``--calib-size``.

    Args:
        parser: The command's parser.
        layers: Whose layers are repaired, for the help text (e.g. "the best candidate's").
    """
    repair = parser.add_mutually_exclusive_group()
    repair.add_argument("--reconstruct", action="store_true",
                        help=f"re-fit {layers} layers that lost input channels by least squares (needs --calib)")
    repair.add_argument("--bias-correct", action="store_true",
                        help=f"fold removed channels' mean contribution into {layers} biases (needs --calib)")
    parser.add_argument("--calib", type=Path, default=None, metavar="FILE",
                        help="calibration images (.npz or image folder), preprocessed like the model's data")
    parser.add_argument("--calib-size", type=int, default=2000, metavar="N",
                        help="calibration images used (all of them when the data has fewer)")


def repair_mode(args: argparse.Namespace) -> str | None:
    """``"reconstruct"``, ``"bias"`` or None, from the parsed options."""
    return "reconstruct" if args.reconstruct else ("bias" if args.bias_correct else None)
