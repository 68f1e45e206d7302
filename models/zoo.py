"""The test zoo: small seeded models covering the structures a pruner must handle.

Each :class:`ZooEntry` builds an eval-mode module with random weights and randomized
normalisation statistics (so BatchNorm matters) from an integer seed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from models._init import randomize_, seeded_generator
from models.nets import BottleneckResNet, DenseNet, MobileNetV2, SENet, VggBN
from models.nets_misc import (MLP, ConvTransposeNet, InstanceNormNet, ResizeNet, ShuffleNetV2,
                          TransformerBlock)
from models.resnet_cifar import resnet_cifar

logger = logging.getLogger(__name__)

IMAGE = (1, 3, 32, 32)
# (cin, width, cout, stride, groups) per bottleneck block
BOTTLENECK_PLAN = ((16, 8, 32, 1, 1), (32, 8, 32, 1, 1), (32, 16, 64, 2, 1), (64, 16, 64, 1, 1))
RESNEXT_PLAN = ((32, 32, 64, 1, 8), (64, 32, 64, 1, 8), (64, 64, 128, 2, 4))


@dataclass(frozen=True)
class ZooEntry:
    """One zoo model.

    Attributes:
        name: Short identifier (``resnet20``, ``mobilenetv2``, ...).
        build: ``seed -> module``: eval mode, random weights, randomized BN statistics.
        input_shape: Shape of the single float32 input, batch 1.
    """

    name: str
    build: Callable[[int], nn.Module]
    input_shape: tuple[int, ...]


def _seeded(factory: Callable[[], nn.Module]) -> Callable[[int], nn.Module]:
    """Wrap a constructor into ``seed -> randomized eval module`` (global RNG untouched)."""

    def build(seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            module = factory()
        return randomize_(module, seeded_generator(seed)).eval()

    return build


def _resnet20(seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        return resnet_cifar(20, seed=seed)


def zoo_entries() -> tuple[ZooEntry, ...]:
    """Return all zoo entries, in a fixed order."""
    return (
        ZooEntry("resnet20", _resnet20, IMAGE),
        ZooEntry("bottleneck_resnet", _seeded(lambda: BottleneckResNet(BOTTLENECK_PLAN)), IMAGE),
        ZooEntry("vgg_bn", _seeded(VggBN), IMAGE),
        ZooEntry("mobilenetv2", _seeded(MobileNetV2), IMAGE),
        ZooEntry("densenet", _seeded(DenseNet), IMAGE),
        ZooEntry("se_net", _seeded(SENet), IMAGE),
        ZooEntry("shufflenetv2", _seeded(ShuffleNetV2), IMAGE),
        ZooEntry("resnext", _seeded(lambda: BottleneckResNet(RESNEXT_PLAN, stem=32)), IMAGE),
        ZooEntry("mlp", _seeded(MLP), (1, 32)),
        ZooEntry("transformer", _seeded(TransformerBlock), (1, 8, 32)),
        ZooEntry("convtranspose_net", _seeded(ConvTransposeNet), IMAGE),
        ZooEntry("resize_net", _seeded(ResizeNet), IMAGE),
        ZooEntry("instancenorm_net", _seeded(InstanceNormNet), IMAGE),
    )
