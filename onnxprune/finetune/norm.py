"""Training-time batch normalization of folded convolutions, folded back into their weights.

Exported CNNs usually carry BatchNormalization folded into the Conv before it; without the
normalization, plain SGD on such a graph diverges at any useful learning rate (measured on the
folded CIFAR ResNet-56: the loss explodes within three steps at lr 1e-3). So, while training
only, every eligible Conv gets a per-channel normalization of its output::

    train:  y_hat = gamma * (y - mean_B) / sqrt(var_B + eps) + beta       (batch statistics)
    eval:   y_hat = gamma * (y - mean_R) / sqrt(var_R + eps) + beta       (running statistics)

initialized to the identity on the data (the weight of each channel first divided by ``c`` to the
norm of He initialization, ``mean_R``, ``var_R`` measured on calibration inputs,
``gamma = c * sqrt(var_R + eps)``, ``beta = c * mean_R``), and folded back for every written model::

    W' = W * k,  b' = (b - mean_R) * k + beta,  k = gamma / sqrt(var_R + eps)   (per output channel)

so the written file keeps its nodes and initializer names and shapes, with new numbers.

Contract:
    requires: a :class:`~onnxprune.finetune.GraphModule`; eligible Convs have a trainable weight
    and a trainable bias used by no other node.
    guarantees: :class:`ConvNorms` holds the per-Conv parameters and running statistics;
    :meth:`ConvNorms.hooks` gives the GraphModule output hooks; :meth:`ConvNorms.folded`
    returns the initializer values of the module in eval mode (equal outputs within float error).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from onnxprune.finetune.interpreter import GraphModule, OutputHook
from onnxprune.finetune.opnode import OpNode
from onnxprune.finetune.qat import fake_quant_weight
from onnxprune.quantize import FLOAT

logger = logging.getLogger(__name__)

EPS = 1e-5
MOMENTUM = 0.1


def eligible_convs(model: onnx.ModelProto, trainable: set[str]) -> dict[str, tuple[str, str]]:
    """Conv node name -> (weight, bias) initializer names, for Convs whose weight and bias are theirs alone."""
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    out = {}
    for node in model.graph.node:
        if node.op_type == "Conv" and len(node.input) > 2 and all(
                n in trainable and uses[n] == 1 for n in node.input[1:3]):
            out[node.name] = (node.input[1], node.input[2])
    return out


class ConvNorms(nn.Module):
    """Per-Conv training-time normalization (see the module contract).

    Args:
        convs: Conv node name -> (weight, bias) initializer names.
        channels: Conv node name -> output channels.
    """

    def __init__(self, convs: Mapping[str, tuple[str, str]], channels: Mapping[str, int],
                 weight_bits: Mapping[str, int] | None = None) -> None:
        super().__init__()
        self.convs = dict(convs)
        self.weight_bits = {n: b for n, b in (weight_bits or {}).items() if n in self.convs and b != FLOAT}
        self.keys = {name: f"n{i}" for i, name in enumerate(self.convs)}
        self._names = {key: name for name, key in self.keys.items()}
        self.gamma = nn.ParameterDict({k: nn.Parameter(torch.ones(channels[n])) for n, k in self.keys.items()})
        self.beta = nn.ParameterDict({k: nn.Parameter(torch.zeros(channels[n])) for n, k in self.keys.items()})
        for name, key in self.keys.items():
            self.register_buffer(f"mean_{key}", torch.zeros(channels[name]))
            self.register_buffer(f"var_{key}", torch.ones(channels[name]))
        self.measuring = False
        self._sums: dict[str, list[Tensor]] = {}
        self._undo: dict[str, Tensor] = {}  # weight -> factor that restores the unscaled output while measuring

    def _k(self, key: str) -> Tensor:
        return self.gamma[key] / torch.sqrt(getattr(self, f"var_{key}") + EPS)

    def input_hooks(self) -> dict[str, Callable[[OpNode, list[Tensor | None]], list[Tensor | None]]]:
        """QAT: input hooks putting each quantized Conv's folded weight on its grid (see ``weight_bits``)."""
        def make(name: str, key: str, bits: int) -> Callable[[OpNode, list[Tensor | None]], list[Tensor | None]]:
            def hook(_node: OpNode, args: list[Tensor | None]) -> list[Tensor | None]:
                if self.measuring:
                    return args
                out, k = list(args), self._k(key)
                out[1] = fake_quant_weight(args[1] * k.view(-1, *([1] * (args[1].dim() - 1))), bits, 0)
                out[2] = args[2] * k
                return out
            return hook
        return {name: make(name, self.keys[name], bits) for name, bits in self.weight_bits.items()}

    def _hook(self, key: str) -> OutputHook:
        folded_input = self._names[key] in self.weight_bits

        def hook(_node: OpNode, outputs: tuple[Tensor | None, ...]) -> tuple[Tensor | None, ...]:
            y = outputs[0]
            dims = [0, *range(2, y.dim())]
            if folded_input and not self.measuring:
                y = y / self._k(key).view(1, -1, *([1] * (y.dim() - 2)))
            if self.measuring:
                with torch.no_grad():
                    part = self._sums.setdefault(key, [torch.zeros(y.shape[1], dtype=torch.float64, device=y.device)] * 3)
                    count = y.numel() / y.shape[1]
                    self._sums[key] = [part[0] + count, part[1] + y.double().sum(dims),
                                       part[2] + (y.double() ** 2).sum(dims)]
                undo = self._undo[self.convs[self._names[key]][0]]
                return (y * undo.view(1, -1, *([1] * (y.dim() - 2))), *outputs[1:])
            shape = [1, -1, *([1] * (y.dim() - 2))]
            mean_r, var_r = getattr(self, f"mean_{key}"), getattr(self, f"var_{key}")
            if self.training:
                mean, var = y.mean(dims), y.var(dims, unbiased=False)
                with torch.no_grad():
                    n = y.numel() / y.shape[1]
                    mean_r.mul_(1 - MOMENTUM).add_(MOMENTUM * mean.detach())
                    var_r.mul_(1 - MOMENTUM).add_(MOMENTUM * var.detach() * n / max(n - 1, 1))
            else:
                mean, var = mean_r, var_r
            scale = self.gamma[key] / torch.sqrt(var + EPS)
            return ((y - mean.view(shape)) * scale.view(shape) + self.beta[key].view(shape), *outputs[1:])
        return hook

    def hooks(self) -> dict[str, OutputHook]:
        """GraphModule output hooks, one per normalized Conv."""
        return {name: self._hook(key) for name, key in self.keys.items()}

    def initialize(self, module: GraphModule, inputs: np.ndarray, batch: int = 256) -> None:
        """Rescale each Conv's weight, measure its outputs on ``inputs`` and set the identity (gamma, beta).

        Under the normalization a Conv is invariant to the scale of its weight, and its effective
        learning rate falls with the square of the weight's norm; folded weights carry the old
        BatchNorm gains, so each output channel (and its bias) is first divided to the norm of He
        initialization, ``sqrt(2)`` (the measured statistics absorb the factor; folding restores it).
        """
        with torch.no_grad():
            for weight, bias in self.convs.values():
                w, b = module.parameter(weight), module.parameter(bias)
                norm = w.reshape(w.shape[0], -1).norm(dim=1).clamp(min=1e-12) / np.sqrt(2.0)
                w.div_(norm.view(-1, *([1] * (w.dim() - 1))))
                b.div_(norm)
                self._undo[weight] = norm.clone()
        self.measuring, self._sums = True, {}
        key0 = next(iter(self.keys.values()))
        try:
            with torch.no_grad():
                for start in range(0, inputs.shape[0], batch):
                    module(torch.from_numpy(inputs[start:start + batch]).to(self.gamma[key0].device))
        finally:
            self.measuring = False
        with torch.no_grad():
            for key in self.keys.values():
                count, total, squares = self._sums[key]
                mean = total / count
                var = (squares / count - mean ** 2).clamp(min=0.0)
                getattr(self, f"mean_{key}").copy_(mean.float())
                getattr(self, f"var_{key}").copy_(var.float())
                undo = self._undo[self.convs[self._names[key]][0]].double()
                self.gamma[key].copy_((torch.sqrt(var + EPS) * undo).float())
                self.beta[key].copy_((mean * undo).float())
        self._sums, self._undo = {}, {}

    def folded(self, module: GraphModule) -> dict[str, np.ndarray]:
        """Every trainable initializer's value with the normalization folded into its Conv."""
        values = {name: p.detach().cpu().numpy().copy() for name, p in module.named_initializers().items()}
        with torch.no_grad():
            for name, key in self.keys.items():
                weight, bias = self.convs[name]
                mean = getattr(self, f"mean_{key}").detach().cpu().double()
                k = (self.gamma[key].detach().cpu().double()
                     / torch.sqrt(getattr(self, f"var_{key}").detach().cpu().double() + EPS)).numpy()
                w = values[weight].astype(np.float64)
                values[weight] = (w * k.reshape(-1, *([1] * (w.ndim - 1)))).astype(values[weight].dtype)
                b = (values[bias].astype(np.float64) - mean.numpy()) * k + self.beta[key].detach().cpu().double().numpy()
                values[bias] = b.astype(values[bias].dtype)
        return values
