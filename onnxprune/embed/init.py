"""Seeded parameter initialisation for the encoders (no global RNG involved)."""

from __future__ import annotations

import logging

import torch
from torch import nn

logger = logging.getLogger(__name__)

VECTOR_SCALE = 0.1


@torch.no_grad()
def reset_parameters_(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Re-draw every parameter of ``module`` from ``generator``, in ``named_parameters`` order.

    Matrices (and higher) get Glorot-uniform values, biases zeros, other vectors (learned
    initial states) ``U(-0.1, 0.1)``. The same generator state always gives the same module.

    Args:
        module: The module to initialise (modified in place).
        generator: Source of randomness.

    Returns:
        ``module``, for chaining.
    """
    for name, param in module.named_parameters():
        if param.dim() >= 2:
            nn.init.xavier_uniform_(param, generator=generator)
        elif name.rsplit(".", 1)[-1].startswith("bias"):
            param.zero_()
        else:
            param.uniform_(-VECTOR_SCALE, VECTOR_SCALE, generator=generator)
    return module


def make_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(int(seed))
