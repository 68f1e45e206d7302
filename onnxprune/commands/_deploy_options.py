"""Deploy flags shared by ``prune`` and ``compress``: ``--opset``, ``--keep-opset``, ``--no-simplify``,
``--triton-*``; and the opset notice both print."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from onnxprune.deploy.opset import OpsetChoice
from onnxprune.deploy.triton import TritonOptions
from onnxprune.errors import OutputError, UnsupportedInput
from onnxprune.pipeline.deploying import DeployOptions

logger = logging.getLogger(__name__)

_TRITON_FLAGS = ("triton_name", "max_batch", "triton_force")


def add_deploy_options(parser: argparse.ArgumentParser, *, triton: bool) -> None:
    """Add ``--opset``, ``--keep-opset`` and ``--no-simplify`` (and the Triton flags when ``triton``)."""
    parser.add_argument("--opset", type=int, default=None, metavar="N",
                        help="convert the output to this opset (default: the input's; where the pruned model "
                             "cannot go back to an input opset below 13, the upgraded one, with a notice)")
    parser.add_argument("--keep-opset", action="store_true",
                        help="fail instead of writing an upgraded opset when the input's cannot be kept")
    parser.add_argument("--no-simplify", action="store_true",
                        help="skip output simplification (constant folding, dead/Identity nodes, onnxslim)")
    if not triton:
        return
    parser.add_argument("--triton-repo", type=Path, default=None, metavar="DIR",
                        help="also write a Triton model repository entry DIR/<name>/ at the end")
    parser.add_argument("--triton-name", default=None, metavar="NAME",
                        help="model name in --triton-repo (default: the output file's stem)")
    parser.add_argument("--max-batch", type=int, default=None, metavar="N",
                        help="Triton max_batch_size (needs a dynamic batch dim; default 0: no Triton batching)")
    parser.add_argument("--triton-force", action="store_true", help="replace an existing DIR/<name>")


def _triton_options(args: argparse.Namespace, output: Path) -> TritonOptions | None:
    if args.triton_repo is None:
        given = [f"--{flag.replace('_', '-')}" for flag in _TRITON_FLAGS if getattr(args, flag) not in (None, False)]
        if given:
            raise UnsupportedInput(f"{', '.join(given)} need(s) --triton-repo DIR; add it or drop them")
        return None
    name = args.triton_name
    if name is None:
        name = output.stem
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*", name):
            raise OutputError(f"the output name {name!r} is not a valid Triton model name; pass --triton-name "
                              "with letters, digits, '_', '.' and '-' only")
    return TritonOptions(name=name, max_batch=args.max_batch if args.max_batch is not None else 0)


def deploy_options(args: argparse.Namespace, output: Path) -> DeployOptions:
    """The :class:`DeployOptions` the flags ask for (``output`` names the default Triton model).

    Raises:
        UnsupportedInput: Triton flags without ``--triton-repo``.
        OutputError: no ``--triton-name`` and an output file stem that is no valid name.
    """
    triton = _triton_options(args, output) if hasattr(args, "triton_repo") else None
    return DeployOptions(opset=args.opset, keep_opset=args.keep_opset, simplify=not args.no_simplify,
                         triton_repo=args.triton_repo if triton is not None else None, triton=triton,
                         force=bool(getattr(args, "triton_force", False)))


def print_opset_notice(choice: OpsetChoice | None) -> None:
    """Print the one-line notice of an opset upgrade nobody asked for (to stderr; nothing otherwise)."""
    notice = choice.notice() if choice is not None else None
    if notice is not None:
        print(f"onnxprune: note: {notice}", file=sys.stderr)
