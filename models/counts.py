"""Reference cost counts measured in PyTorch (to cross-check the ONNX cost model).

MACs count only the multiply-accumulates of convolutions (transposed included) and matrix
products (``mm``, ``addmm``, ``bmm``); biases, normalisation, activations and pooling are
free. Parameters count every ``nn.Parameter`` (BatchNorm weight/bias included, running
statistics excluded).
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

logger = logging.getLogger(__name__)

_COUNTED = ("convolution", "mm", "addmm", "bmm")


def torch_macs(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Count the MACs of one forward pass of ``module`` on a zero input of ``input_shape``.

    Args:
        module: The module (run as is; put it in eval mode first).
        input_shape: Shape of the single float32 input.

    Returns:
        ``FLOPs // 2`` of the conv/mm/addmm/bmm operators, as counted by ``FlopCounterMode``.
    """
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(torch.zeros(tuple(input_shape)))
    flops = 0
    for op, count in counter.get_flop_counts().get("Global", {}).items():
        name = getattr(op, "__name__", str(op)).split(".")[-1]
        if name in _COUNTED:
            flops += int(count)
        else:
            logger.debug("not counted as MACs: %s (%d flops)", op, count)
    return flops // 2


def torch_params(module: nn.Module) -> int:
    """Return the number of parameter elements of ``module`` (buffers excluded)."""
    return sum(p.numel() for p in module.parameters())
