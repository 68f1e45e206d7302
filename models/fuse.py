"""Fold eval-mode BatchNorm layers away in torch, before export.

A BatchNorm that directly follows a Conv/ConvTranspose/Linear module (whose output feeds
nothing else) is fused into that layer's weights. Any other BatchNorm (after a concat, an
add, a pooling, ...) becomes a :class:`ChannelAffine` (exported as ``Mul`` + ``Add``), so
the exported graph holds no ``BatchNormalization`` node at all.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

logger = logging.getLogger(__name__)

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


class ChannelAffine(nn.Module):
    """``y = x * scale + shift`` along dim 1: an eval BatchNorm with its statistics folded in."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.detach().clone())
        self.register_buffer("shift", shift.detach().clone())

    @classmethod
    def from_batchnorm(cls, bn: _BatchNorm) -> ChannelAffine:
        """Fold ``bn``'s running statistics and affine parameters into one scale/shift pair."""
        mean = bn.running_mean if bn.running_mean is not None else torch.zeros(bn.num_features)
        var = bn.running_var if bn.running_var is not None else torch.ones(bn.num_features)
        scale = torch.rsqrt(var + bn.eps)
        shift = -mean * scale
        if bn.affine:
            scale, shift = scale * bn.weight, shift * bn.weight + bn.bias
        return cls(scale, shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scale and shift each channel (dim 1) of ``x``."""
        shape = [1, -1] + [1] * (x.dim() - 2)
        return x * self.scale.reshape(shape) + self.shift.reshape(shape)


def _fused(layer: nn.Module, bn: _BatchNorm) -> nn.Module | None:
    """Return ``layer`` with ``bn`` folded in, or None if the pair cannot be fused."""
    if isinstance(layer, _CONVS):
        return fuse_conv_bn_eval(layer, bn)
    if isinstance(layer, _TRANSPOSED) and layer.groups == 1:
        return fuse_conv_bn_eval(layer, bn, transpose=True)
    if isinstance(layer, nn.Linear) and isinstance(bn, nn.BatchNorm1d):
        return fuse_linear_bn_eval(layer, bn)
    return None


def _call_counts(graph: fx.Graph) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            counts[str(node.target)] = counts.get(str(node.target), 0) + 1
    return counts


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Return an eval-mode copy of ``module`` without BatchNorm layers (same function).

    Args:
        module: Any ``torch.fx``-traceable module (not modified).

    Returns:
        A copy (a ``torch.fx.GraphModule`` when there was a BatchNorm) that computes the
        same eval-mode function with every BatchNorm fused or turned into a channel affine.
    """
    module = copy.deepcopy(module).eval()
    if not any(isinstance(sub, _BatchNorm) for sub in module.modules()):
        return module
    graph_module = fx.symbolic_trace(module)
    modules = dict(graph_module.named_modules())
    calls = _call_counts(graph_module.graph)
    for node in list(graph_module.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target], _BatchNorm):
            continue
        bn = modules[node.target]
        prev = node.args[0]
        fused = None
        if (isinstance(prev, fx.Node) and prev.op == "call_module" and len(prev.users) == 1
                and calls[str(prev.target)] == 1 and calls[str(node.target)] == 1):
            fused = _fused(modules[prev.target], bn)
        if fused is None:
            graph_module.add_submodule(str(node.target), ChannelAffine.from_batchnorm(bn))
            logger.debug("%s: no preceding layer to fuse into, made a channel affine", node.target)
            continue
        graph_module.add_submodule(str(prev.target), fused)
        node.replace_all_uses_with(prev)
        graph_module.graph.erase_node(node)
    graph_module.graph.lint()
    graph_module.recompile()
    graph_module.delete_all_unused_submodules()
    return graph_module.eval()
