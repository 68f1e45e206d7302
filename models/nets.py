"""Small CNN architectures of the test zoo (random weights; see :mod:`models.zoo`).

Every network is ``torch.fx``-traceable, exportable by both ONNX exporters, and ends in a
small logit vector (classifiers) or logit map (dense nets).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
            act: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    """Conv (no bias, 'same' padding) -> BatchNorm -> optional activation."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided, optionally grouped) -> 1x1 residual block, 1x1 conv+BN projection."""

    def __init__(self, cin: int, width: int, cout: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(cin, width, 1), conv_bn(width, width, 3, stride, groups),
                                  conv_bn(width, cout, 1, act=None))
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = conv_bn(cin, cout, 1, stride, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual sum followed by ReLU."""
        return F.relu(self.body(x) + self.shortcut(x))


class BottleneckResNet(nn.Module):
    """Stem, four bottleneck blocks (two with projection shortcuts), GAP, linear head.

    ``groups > 1`` turns the 3x3 convs into grouped convs (a ResNeXt).
    """

    def __init__(self, plan: tuple[tuple[int, int, int, int, int], ...], stem: int = 16,
                 num_classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn(3, stem, 3)
        self.blocks = nn.Sequential(*(Bottleneck(*spec) for spec in plan))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(plan[-1][2], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits."""
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


class VggBN(nn.Module):
    """conv-BN-ReLU stacks with MaxPool down to 2x2, Flatten -> Linear -> ReLU -> Linear."""

    def __init__(self, cfg: tuple[int | str, ...] = (16, "M", 32, "M", 64, 64, "M", 64, "M"),
                 num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for item in cfg:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers.append(conv_bn(cin, int(item), 3))
                cin = int(item)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(cin * 4, 64), nn.ReLU(),
                                        nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits (a 32x32 input reaches the classifier as a 2x2 map)."""
        return self.classifier(self.features(x))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: [1x1 expand] -> 3x3 depthwise -> 1x1 linear projection (+ skip)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn(cin, hidden, 1, act=nn.ReLU6))
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
                   conv_bn(hidden, cout, 1, act=None)]
        self.body = nn.Sequential(*layers)
        self.use_skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block, adding the input when shapes allow."""
        out = self.body(x)
        return x + out if self.use_skip else out


class MobileNetV2(nn.Module):
    """A five-block MobileNetV2 (ReLU6, depthwise convs, skips on stride-1 same-width blocks)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        plan = ((16, 16, 1, 1), (16, 24, 2, 4), (24, 24, 1, 4), (24, 32, 2, 4), (32, 32, 1, 4))
        self.stem = conv_bn(3, 16, 3, act=nn.ReLU6)
        self.blocks = nn.Sequential(*(InvertedResidual(*spec) for spec in plan))
        self.head = conv_bn(32, 64, 1, act=nn.ReLU6)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits."""
        out = self.head(self.blocks(self.stem(x)))
        return self.fc(out.mean(dim=(2, 3)))


class DenseLayer(nn.Module):
    """Pre-activation BN-ReLU-1x1 conv-BN-ReLU-3x3 conv, output concatenated to the input."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, 4 * growth, 1, bias=False),
            nn.BatchNorm2d(4 * growth), nn.ReLU(),
            nn.Conv2d(4 * growth, growth, 3, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``cat([x, f(x)], dim=1)``."""
        return torch.cat([x, self.body(x)], dim=1)


class DenseNet(nn.Module):
    """Two dense blocks of three layers (growth 8) with a BN-ReLU-1x1-AvgPool transition."""

    def __init__(self, growth: int = 8, layers: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        channels = 16
        self.stem = nn.Conv2d(3, channels, 3, 1, 1, bias=False)
        block1 = []
        for _ in range(layers):
            block1.append(DenseLayer(channels, growth))
            channels += growth
        self.block1 = nn.Sequential(*block1)
        self.transition = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(),
                                        nn.Conv2d(channels, channels // 2, 1, bias=False),
                                        nn.AvgPool2d(2))
        channels //= 2
        block2 = []
        for _ in range(layers):
            block2.append(DenseLayer(channels, growth))
            channels += growth
        self.block2 = nn.Sequential(*block2)
        self.final = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                   nn.Flatten(), nn.Linear(channels, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits."""
        return self.final(self.block2(self.transition(self.block1(self.stem(x)))))


class SqueezeExcite(nn.Module):
    """GAP -> reduce -> ReLU -> expand -> Sigmoid -> channel Mul (1x1 convs or Linears)."""

    def __init__(self, channels: int, reduction: int = 4, linear: bool = False) -> None:
        super().__init__()
        hidden = channels // reduction
        self.linear = linear
        if linear:
            self.reduce: nn.Module = nn.Linear(channels, hidden)
            self.expand: nn.Module = nn.Linear(hidden, channels)
        else:
            self.reduce = nn.Conv2d(channels, hidden, 1)
            self.expand = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rescale each channel of ``x`` by its gate."""
        if self.linear:
            gate = F.adaptive_avg_pool2d(x, 1).flatten(1)
            gate = torch.sigmoid(self.expand(F.relu(self.reduce(gate))))
            return x * gate.reshape(gate.shape[0], gate.shape[1], 1, 1)
        gate = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.expand(F.relu(self.reduce(gate))))


class SEBlock(nn.Module):
    """Basic residual block with squeeze-excitation before the residual sum."""

    def __init__(self, cin: int, cout: int, stride: int, linear_se: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(cin, cout, 3, stride), conv_bn(cout, cout, 3, act=None))
        self.se = SqueezeExcite(cout, linear=linear_se)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = conv_bn(cin, cout, 1, stride, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual sum of the gated body and the shortcut, then ReLU."""
        return F.relu(self.se(self.body(x)) + self.shortcut(x))


class SENet(nn.Module):
    """Stem plus two SE residual blocks (1x1-conv gate, then Linear gate + projection)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16, 3)
        self.blocks = nn.Sequential(SEBlock(16, 16, 1, linear_se=False),
                                    SEBlock(16, 32, 2, linear_se=True))
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits."""
        return self.fc(F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1).flatten(1))
