"""Export a zoo module to ONNX with either PyTorch exporter, BatchNorm kept or folded.

Both exporters name the graph input ``input`` and the graph output ``output``.

* ``torchscript``: ``torch.onnx.export(..., dynamo=False)`` with constant folding. The
  module is exported in eval mode with ``training=TrainingMode.PRESERVE``, which keeps
  ``BatchNormalization`` nodes (``TrainingMode.EVAL`` would fuse them into the Conv).
* ``dynamo``: ``torch.onnx.export(..., dynamo=True, optimize=False)`` followed by a light,
  deterministic clean-up (constant folding, dead-node removal, constants lifted to
  initializers, duplicate initializers merged). The full onnxscript optimizer is not used
  because its rewrite rules fuse BatchNorm into Conv. Its opset is at least 18 (the lowest
  the dynamo exporter implements; down-converting ``Pad`` to 17 is not possible).

With ``fold_bn=True`` the BatchNorm layers are folded in torch first
(:func:`models.fuse.fold_batchnorm`), so neither exporter emits a ``BatchNormalization``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import onnx
import onnxscript
import torch
from torch import nn

from models.fuse import fold_batchnorm
from onnxprune.io import save_model

logger = logging.getLogger(__name__)

Exporter = Literal["torchscript", "dynamo"]
DYNAMO_MIN_OPSET = 18
_NOISY_LOGGERS = ("torch.onnx", "torch.export", "torch._export", "torch.fx", "onnxscript")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence exporter warnings, log chatter and stdout prints; restore the levels after."""
    saved = {name: logging.getLogger(name).level for name in _NOISY_LOGGERS}
    try:
        for name in _NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _example_input(input_shape: tuple[int, ...], dynamic_batch: bool) -> torch.Tensor:
    shape = list(input_shape)
    if dynamic_batch and shape[0] == 1:
        shape[0] = 2  # torch.export specialises a size-1 dim, so trace the batch at 2
    return torch.randn(shape, generator=torch.Generator().manual_seed(0))


def _export_torchscript(module: nn.Module, example: torch.Tensor, dynamic_batch: bool,
                        opset: int) -> onnx.ModelProto:
    buffer = io.BytesIO()
    dynamic_axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None
    torch.onnx.export(module, (example,), buffer, dynamo=False, opset_version=opset,
                      input_names=["input"], output_names=["output"], dynamic_axes=dynamic_axes,
                      do_constant_folding=True, training=torch.onnx.TrainingMode.PRESERVE)
    return onnx.load_model_from_string(buffer.getvalue())


def _export_dynamo(module: nn.Module, example: torch.Tensor, dynamic_batch: bool,
                   opset: int) -> onnx.ModelProto:
    dynamic_shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    program = torch.onnx.export(module, (example,), dynamo=True, optimize=False, verbose=False,
                                opset_version=max(opset, DYNAMO_MIN_OPSET),
                                input_names=["input"], output_names=["output"],
                                dynamic_shapes=dynamic_shapes)
    model = program.model
    ir_passes = onnxscript.ir.passes.common
    onnxscript.optimizer.fold_constants(model)
    ir_passes.RemoveUnusedNodesPass()(model)
    ir_passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)
    ir_passes.DeduplicateInitializersPass()(model)
    ir_passes.RemoveUnusedNodesPass()(model)
    proto = onnxscript.ir.serde.serialize_model(model)
    for node in proto.graph.node:  # drop stack traces / fx names: keeps the file deterministic
        del node.metadata_props[:]
    return proto


def export_onnx(module: nn.Module, input_shape: tuple[int, ...], path: str | Path | None = None,
                *, exporter: Exporter = "torchscript", fold_bn: bool = False,
                dynamic_batch: bool = False, opset: int = 17) -> onnx.ModelProto:
    """Export ``module`` (as in eval mode; the argument is not modified) to ONNX.

    Args:
        module: The PyTorch module; exported in eval mode from a copy.
        input_shape: Shape of the single float32 input, batch first.
        path: Optional destination file (written atomically).
        exporter: ``"torchscript"`` (legacy ``dynamo=False``) or ``"dynamo"``.
        fold_bn: Fold BatchNorm in torch before exporting (no ``BatchNormalization`` node);
            when False every BatchNorm stays a ``BatchNormalization`` node.
        dynamic_batch: Make the batch dimension symbolic (``batch``).
        opset: Default-domain opset; the dynamo exporter uses ``max(opset, 18)``.

    Returns:
        The exported model.

    Raises:
        ValueError: If ``exporter`` is not one of the two names.
    """
    if exporter not in ("torchscript", "dynamo"):
        raise ValueError(f"unknown exporter {exporter!r}; use 'torchscript' or 'dynamo'")
    prepared = fold_batchnorm(module) if fold_bn else copy.deepcopy(module).eval()
    example = _example_input(tuple(input_shape), dynamic_batch)
    with _quiet(), torch.no_grad():
        if exporter == "torchscript":
            proto = _export_torchscript(prepared, example, dynamic_batch, opset)
        else:
            proto = _export_dynamo(prepared, example, dynamic_batch, opset)
    logger.debug("exported %s with %s: %d nodes", type(module).__name__, exporter,
                 len(proto.graph.node))
    if path is not None:
        save_model(proto, path)
    return proto
