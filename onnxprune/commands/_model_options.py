"""Options shared by the commands that load a model for analysis: ``--input-shape``."""

from __future__ import annotations

import argparse

from onnxprune.errors import UnsupportedInput


def add_input_shape_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--input-shape NAME:D0,D1,...`` (repeatable)."""
    parser.add_argument("--input-shape", action="append", default=None, metavar="NAME:D0,D1,...",
                        help="static shape for an input with symbolic dims, e.g. input:1,3,224,224 "
                             "(analysis and costs only; the model keeps its symbolic interface)")


def parse_input_shapes(values: list[str] | None) -> dict[str, tuple[int, ...]]:
    """Parse ``--input-shape`` values; raises UnsupportedInput on bad syntax."""
    shapes: dict[str, tuple[int, ...]] = {}
    for value in values or []:
        name, sep, dims = value.rpartition(":")
        try:
            parsed = tuple(int(d) for d in dims.split(","))
        except ValueError:
            parsed = ()
        if not sep or not name or not parsed or any(d <= 0 for d in parsed):
            raise UnsupportedInput(f"--input-shape '{value}' is malformed; write NAME:D0,D1,... "
                                   "with positive sizes, e.g. input:1,3,224,224")
        shapes[name] = parsed
    return shapes
