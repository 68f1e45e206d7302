"""Small seeded models for the deploy tests, built inline with torch / onnx.helper."""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from onnxprune.compat import make_model


class TinyNet(nn.Module):
    """Conv-BN-ReLU, Conv-ReLU, global pool, flatten, linear: a pruned copy has a smaller ``width``."""

    def __init__(self, width: int = 12, view_flatten: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, width, 3, padding=1)
        self.fc = nn.Linear(width, 10)
        self.view_flatten = view_flatten

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv1(x)))
        x = torch.relu(self.conv2(x)).mean(dim=(2, 3), keepdim=True)
        x = x.view(x.size(0), -1) if self.view_flatten else torch.flatten(x, 1)
        return self.fc(x)


def export(module: nn.Module, *, names: tuple[str, str] = ("input", "logits"), dynamic: bool = True,
           opset: int = 17, seed: int = 0) -> onnx.ModelProto:
    """Export ``module`` with the legacy exporter (eval mode, seeded weights and BN stats)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in list(module.parameters()) + list(module.buffers()):
            if param.dtype.is_floating_point:
                param.copy_(torch.rand(param.shape, generator=gen) * 0.5 + 0.1)
    module.eval()
    buffer = io.BytesIO()
    axes = {names[0]: {0: "batch"}, names[1]: {0: "batch"}} if dynamic else None
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(1, 3, 16, 16),), buffer, input_names=[names[0]],
                          output_names=[names[1]], dynamic_axes=axes, opset_version=opset, dynamo=False)
    return onnx.load_from_string(buffer.getvalue())


def qdq_model(*, qtype: int = TensorProto.INT8, zero_point: int = 0, quantize_activation: bool = False,
              width: int = 16, opset: int = 21) -> onnx.ModelProto:
    """x[N,8,8,8] -> (Q/DQ) -> Conv with DequantizeLinear(weight in ``qtype``) -> y."""
    rng = np.random.default_rng(0)
    low, high = (-8, 8) if qtype == TensorProto.INT4 else (-127, 128)
    weight = rng.integers(low, high, size=(width, 8, 3, 3))
    inits = [helper.make_tensor("w_q", qtype, weight.shape, weight.flatten().tolist()),
             numpy_helper.from_array(np.array(0.02, np.float32), "w_scale"),
             helper.make_tensor("w_zp", qtype, (), [zero_point]),
             numpy_helper.from_array(np.array(0.05, np.float32), "a_scale"),
             helper.make_tensor("a_zp", qtype, (), [0])]
    nodes = [helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], name="dq_w")]
    data = "x"
    if quantize_activation:
        nodes += [helper.make_node("QuantizeLinear", ["x", "a_scale", "a_zp"], ["x_q"], name="q_x"),
                  helper.make_node("DequantizeLinear", ["x_q", "a_scale", "a_zp"], ["x_dq"], name="dq_x")]
        data = "x_dq"
    nodes.append(helper.make_node("Conv", [data, "w"], ["y"], name="conv", pads=[1, 1, 1, 1]))
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width, 8, 8])], inits)
    model = make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model
