"""A hand-built ONNX graph in the style of tf2onnx output (NHWC, BN as Mul+Add, MatMul head).

No TensorFlow is needed: the graph is assembled with ``onnx.helper`` and mimics what
tf2onnx emits for a Keras CNN: an NHWC input transposed to NCHW before the first Conv,
inference BatchNorm folded to per-channel ``Mul`` + ``Add`` with ``(1, C, 1, 1)``
initializers, a residual block, a depthwise conv, a transpose back to NHWC, a
``ReduceMean`` over H and W, and a Dense head written as ``MatMul`` + ``Add``.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune.compat import make_model

logger = logging.getLogger(__name__)

CHANNELS = 16
HIDDEN = 32
CLASSES = 10
INPUT_SHAPE = (1, 16, 16, 3)
OPSET = 13


class _GraphBuilder:
    """Collects nodes and float32 initializers with tf2onnx-like names."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs: object) -> str:
        out = f"{name}:0"
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, scope: str, group: int = 1,
             stride: int = 1) -> str:
        """3x3 'same' Conv with bias, He-normal weights."""
        fan_in = cin // group * 9
        weight = self.rng.normal(0.0, np.sqrt(2.0 / fan_in), (cout, cin // group, 3, 3))
        w = self.const(f"{scope}/kernel", weight)
        b = self.const(f"{scope}/bias", self.rng.normal(0.0, 0.1, cout))
        return self.node("Conv", [x, w, b], f"{scope}/Conv2D", kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1], strides=[stride, stride], group=group,
                         dilations=[1, 1])

    def batchnorm(self, x: str, channels: int, scope: str) -> str:
        """Inference BatchNorm as tf2onnx folds it: ``x * scale + offset``, (1, C, 1, 1)."""
        scale = self.rng.uniform(0.5, 1.5, (1, channels, 1, 1))
        offset = self.rng.normal(0.0, 0.1, (1, channels, 1, 1))
        mul = self.node("Mul", [x, self.const(f"{scope}/mul/y", scale)], f"{scope}/mul")
        return self.node("Add", [mul, self.const(f"{scope}/add/y", offset)], f"{scope}/add")

    def dense(self, x: str, cin: int, cout: int, scope: str) -> str:
        weight = self.rng.normal(0.0, np.sqrt(2.0 / cin), (cin, cout))
        matmul = self.node("MatMul", [x, self.const(f"{scope}/kernel", weight)], f"{scope}/MatMul")
        bias = self.const(f"{scope}/bias", self.rng.normal(0.0, 0.1, cout))
        return self.node("Add", [matmul, bias], f"{scope}/BiasAdd")


def tf_style_nhwc_model(seed: int = 0) -> onnx.ModelProto:
    """Build the tf2onnx-style NHWC model (input ``input`` (1,16,16,3), output ``output`` (1,10)).

    Args:
        seed: Seed of the random weights.

    Returns:
        An opset-13 model that passes ``onnx.checker`` (full check).
    """
    g = _GraphBuilder(np.random.default_rng(seed))
    x = g.node("Transpose", ["input"], "model/conv2d/Conv2D__6", perm=[0, 3, 1, 2])
    x = g.batchnorm(g.conv(x, 3, CHANNELS, "model/conv2d"), CHANNELS,
                    "model/batch_normalization/FusedBatchNormV3")
    x = g.node("Relu", [x], "model/re_lu/Relu")
    skip = x
    y = g.batchnorm(g.conv(x, CHANNELS, CHANNELS, "model/conv2d_1"), CHANNELS,
                    "model/batch_normalization_1/FusedBatchNormV3")
    y = g.node("Relu", [y], "model/re_lu_1/Relu")
    y = g.batchnorm(g.conv(y, CHANNELS, CHANNELS, "model/conv2d_2"), CHANNELS,
                    "model/batch_normalization_2/FusedBatchNormV3")
    x = g.node("Relu", [g.node("Add", [y, skip], "model/add/add")], "model/re_lu_2/Relu")
    x = g.conv(x, CHANNELS, CHANNELS, "model/depthwise_conv2d", group=CHANNELS, stride=2)
    x = g.node("Transpose", [x], "model/depthwise_conv2d/depthwise__20", perm=[0, 2, 3, 1])
    x = g.node("ReduceMean", [x], "model/global_average_pooling2d/Mean", axes=[1, 2], keepdims=0)
    x = g.node("Relu", [g.dense(x, CHANNELS, HIDDEN, "model/dense")], "model/dense/Relu")
    g.dense(x, HIDDEN, CLASSES, "model/dense_1")
    g.nodes[-1].output[0] = "output"  # the head's BiasAdd produces the graph output
    graph = helper.make_graph(
        g.nodes, "tf2onnx",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(INPUT_SHAPE))],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, CLASSES])],
        initializer=g.inits)
    model = make_model(graph, producer_name="tf2onnx", producer_version="1.16.1",
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model
