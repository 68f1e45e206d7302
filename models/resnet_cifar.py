"""He et al. (2016) CIFAR ResNets (depth 6n+2) with option-A shortcuts.

Module names match the published state_dicts in ``../shared/weights`` (``conv1``, ``bn1``,
``layer{1,2,3}.{i}.conv{1,2}``, ``layer{1,2,3}.{i}.bn{1,2}``, ``linear``), so
:func:`resnet_cifar` loads them strictly.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models._init import randomize_, seeded_generator

logger = logging.getLogger(__name__)


class OptionAShortcut(nn.Module):
    """Parameter-free shortcut: strided spatial slice plus zero channels on both sides."""

    def __init__(self, planes: int) -> None:
        super().__init__()
        self.pad = planes // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Subsample by 2 spatially and zero-pad ``planes // 4`` channels on each side."""
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    """conv3x3 -> BN -> ReLU -> conv3x3 -> BN, plus shortcut, then ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = OptionAShortcut(planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the residual block."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    """CIFAR ResNet: 16-32-64 channel stages of ``n`` BasicBlocks, GAP and a linear head."""

    def __init__(self, n: int, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, n, stride=1)
        self.layer2 = self._stage(16, 32, n, stride=2)
        self.layer3 = self._stage(32, 64, n, stride=2)
        self.linear = nn.Linear(64, num_classes)

    @staticmethod
    def _stage(in_planes: int, planes: int, n: int, stride: int) -> nn.Sequential:
        blocks = [BasicBlock(in_planes, planes, stride)]
        blocks += [BasicBlock(planes, planes, 1) for _ in range(n - 1)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the class logits for an NCHW batch."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def load_npz_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state_dict stored as plain numpy arrays (no pickle).

    Args:
        path: The ``.npz`` file.

    Returns:
        Parameter/buffer name -> tensor.
    """
    with np.load(Path(path), allow_pickle=False) as data:
        return {key: torch.from_numpy(np.array(data[key])) for key in data.files}


def resnet_cifar(depth: int, *, weights: str | Path | None = None, seed: int = 0) -> nn.Module:
    """Build a CIFAR ResNet of the given depth, in eval mode.

    Args:
        depth: Network depth, ``6n + 2`` (20, 32, 44, 56, 110, 1202, ...).
        weights: Optional ``.npz`` state_dict (e.g. ``../shared/weights/resnet20_cifar10.npz``),
            loaded strictly.
        seed: Seed of the random init used when ``weights`` is None (BN statistics included).

    Returns:
        The network in eval mode.

    Raises:
        ValueError: If ``depth`` is not of the form ``6n + 2`` with ``n >= 1``.
    """
    if depth < 8 or (depth - 2) % 6 != 0:
        raise ValueError(f"depth {depth} is not 6n+2 (n >= 1); use e.g. 20, 56 or 110")
    model = ResNetCifar((depth - 2) // 6)
    if weights is None:
        randomize_(model, seeded_generator(seed))
    else:
        model.load_state_dict(load_npz_state_dict(weights), strict=True)
        logger.debug("loaded %s into resnet%d", weights, depth)
    return model.eval()
