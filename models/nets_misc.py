"""More zoo architectures: ShuffleNetV2, MLP, transformer block and small dense-output nets."""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from models.nets import conv_bn

logger = logging.getLogger(__name__)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet channel shuffle: view (N, g, C/g, H, W) -> transpose(1, 2) -> view back."""
    channels = x.shape[1]
    x = x.view(x.shape[0], groups, channels // groups, x.shape[2], x.shape[3])
    return x.transpose(1, 2).contiguous().view(x.shape[0], channels, x.shape[3], x.shape[4])


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit: stride 1 splits channels in two, stride 2 uses two branches."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        branch = cout // 2
        right_in = cin if stride == 2 else cin // 2
        if stride == 2:
            self.left: nn.Module = nn.Sequential(conv_bn(cin, cin, 3, 2, groups=cin, act=None),
                                                 conv_bn(cin, branch, 1))
        else:
            self.left = nn.Identity()
        self.right = nn.Sequential(conv_bn(right_in, branch, 1),
                                   conv_bn(branch, branch, 3, stride, groups=branch, act=None),
                                   conv_bn(branch, branch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Split (or duplicate), transform, concatenate, shuffle."""
        if self.stride == 1:
            left, right = torch.chunk(x, 2, dim=1)
        else:
            left, right = x, x
        return channel_shuffle(torch.cat([self.left(left), self.right(right)], dim=1), 2)


class ShuffleNetV2(nn.Module):
    """Stem, a stride-2 unit and two split units, another stride-2 unit and a split unit."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn(3, 24, 3)
        self.stage1 = nn.Sequential(ShuffleUnit(24, 48, 2), ShuffleUnit(48, 48, 1),
                                    ShuffleUnit(48, 48, 1))
        self.stage2 = nn.Sequential(ShuffleUnit(48, 96, 2), ShuffleUnit(96, 96, 1))
        self.head = conv_bn(96, 128, 1)
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits."""
        out = self.head(self.stage2(self.stage1(self.stem(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


class MLP(nn.Module):
    """Linear-ReLU-Linear-ReLU-Linear on a flat input."""

    def __init__(self, features: int = 32, hidden: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                 nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits."""
        return self.net(x)


class SelfAttention(nn.Module):
    """Multi-head self-attention written out: Linear q/k/v, reshape/transpose, matmul, softmax."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], x.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend over the sequence (dim 1) of ``x`` (batch, tokens, dim)."""
        q, k, v = self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))
        scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))
        context = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2)
        return self.out(context.reshape(x.shape[0], x.shape[1], self.heads * self.head_dim))


class TransformerBlock(nn.Module):
    """One pre-LN encoder block (attention + GELU MLP), mean-pooled into a linear head."""

    def __init__(self, dim: int = 32, heads: int = 4, hidden: int = 64,
                 num_classes: int = 10) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (batch, tokens, dim) to class logits (batch, classes)."""
        x = x + self.attn(self.ln1(x))
        x = x + self.mlp(self.ln2(x))
        return self.head(self.ln_f(x).mean(dim=1))


class ConvTransposeNet(nn.Module):
    """Tiny encoder-decoder: Conv s2 -> Conv s2 -> ConvTranspose x2 -> BN -> ReLU -> Conv map."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.encoder = nn.Sequential(conv_bn(3, 16, 3, 2), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU())
        self.decoder = nn.Sequential(nn.ConvTranspose2d(32, 16, 4, 2, 1, bias=False),
                                     nn.BatchNorm2d(16), nn.ReLU())
        self.classifier = nn.Conv2d(16, num_classes, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return a (batch, classes, H/2, W/2) logit map."""
        return self.classifier(self.decoder(self.encoder(x)))


class ResizeNet(nn.Module):
    """Conv s2 -> Conv s2 -> nearest Upsample x2 -> Conv logit map."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.encoder = nn.Sequential(conv_bn(3, 16, 3, 2), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU())
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.classifier = nn.Conv2d(32, num_classes, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return a (batch, classes, H/2, W/2) logit map."""
        return self.classifier(self.up(self.encoder(x)))


class InstanceNormNet(nn.Module):
    """Conv -> InstanceNorm2d(affine) -> ReLU -> Conv s2 logit map."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1)
        self.norm = nn.InstanceNorm2d(16, affine=True)
        self.conv2 = nn.Conv2d(16, num_classes, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return a (batch, classes, H/2, W/2) logit map."""
        return self.conv2(F.relu(self.norm(self.conv1(x))))
