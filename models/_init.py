"""Seeded random initialisation shared by the zoo models.

Every parameter and every normalisation running statistic is drawn from an explicit
``torch.Generator`` so that a model built twice with the same seed is bit-identical and
normalisation layers are far from identity (so that folding or dropping them matters).
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

logger = logging.getLogger(__name__)

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm2d, nn.LayerNorm,
          nn.GroupNorm)


def _fan_in(module: nn.Module) -> int:
    weight = module.weight
    receptive = math.prod(weight.shape[2:]) if weight.dim() > 2 else 1
    if isinstance(module, _TRANSPOSED):
        stride = math.prod(module.stride)
        return max(1, weight.shape[0] // module.groups * receptive // stride)
    return max(1, weight.shape[1] * receptive)


def _uniform(shape: torch.Size, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=gen)


@torch.no_grad()
def randomize_(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Re-draw all weights, biases and normalisation statistics of ``module`` in place.

    Conv/Linear weights use a He-normal scale (``sqrt(2 / fan_in)``); biases are
    ``N(0, 0.1)``. Norm layers get ``gamma ~ U(0.5, 1.5)``, ``beta ~ N(0, 0.1)`` and, where
    tracked, ``running_mean ~ N(0, 0.2)``, ``running_var ~ U(0.5, 2.0)``.

    Args:
        module: The module to re-initialise (modified in place).
        generator: Source of randomness.

    Returns:
        ``module`` itself, for chaining.
    """
    for sub in module.modules():
        if isinstance(sub, _WEIGHTED + _TRANSPOSED):
            std = math.sqrt(2.0 / _fan_in(sub))
            sub.weight.copy_(torch.randn(sub.weight.shape, generator=generator) * std)
            if sub.bias is not None:
                sub.bias.copy_(torch.randn(sub.bias.shape, generator=generator) * 0.1)
        elif isinstance(sub, _NORMS):
            if getattr(sub, "weight", None) is not None:
                sub.weight.copy_(_uniform(sub.weight.shape, 0.5, 1.5, generator))
            if getattr(sub, "bias", None) is not None:
                sub.bias.copy_(torch.randn(sub.bias.shape, generator=generator) * 0.1)
            if getattr(sub, "running_mean", None) is not None:
                mean = torch.randn(sub.running_mean.shape, generator=generator) * 0.2
                sub.running_mean.copy_(mean)
            if getattr(sub, "running_var", None) is not None:
                sub.running_var.copy_(_uniform(sub.running_var.shape, 0.5, 2.0, generator))
    return module


def seeded_generator(seed: int) -> torch.Generator:
    """Return a CPU ``torch.Generator`` seeded with ``seed``."""
    return torch.Generator().manual_seed(int(seed))
