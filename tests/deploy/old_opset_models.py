"""Seeded models at opsets below 13, built with onnx.helper as old exporters wrote them."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune.compat import make_model


def _weights(rng: np.random.Generator, shapes: dict[str, tuple[int, ...]]) -> list[onnx.TensorProto]:
    return [numpy_helper.from_array((0.3 * rng.standard_normal(shape)).astype(np.float32), name)
            for name, shape in shapes.items()]


def _batchnorm(rng: np.random.Generator, name: str, channels: int) -> list[onnx.TensorProto]:
    """Scale, bias, mean and variance of a BatchNormalization (variance and scale positive)."""
    values = {"scale": rng.uniform(0.5, 1.5, channels), "bias": 0.1 * rng.standard_normal(channels),
              "mean": 0.1 * rng.standard_normal(channels), "var": rng.uniform(0.5, 1.5, channels)}
    return [numpy_helper.from_array(v.astype(np.float32), f"{name}_{k}") for k, v in values.items()]


def mnist_opset8(seed: int = 0, pad: bool = False) -> onnx.ModelProto:
    """MNIST-like Conv-BN-Relu-MaxPool, Conv-Relu-MaxPool, Flatten, Gemm at opset 8 / IR 3.

    As IR 3 requires, every initializer is also listed as a graph input. With ``pad``, the second
    Conv's input is reflect-padded by a ``Pad`` node (pads an attribute up to opset 10, an input from
    11 on), so that model cannot go back to opset 8 once upgraded.
    """
    rng = np.random.default_rng(seed)
    side = 6 if pad else 5  # after the second Conv and MaxPool
    inits = _weights(rng, {"w1": (8, 1, 3, 3), "b1": (8,)}) + _batchnorm(rng, "bn1", 8)
    inits += _weights(rng, {"w2": (16, 8, 3, 3), "b2": (16,), "fc_w": (16 * side * side, 10), "fc_b": (10,)})
    node = helper.make_node
    padded = [node("Pad", ["p1"], ["p1_pad"], mode="reflect", pads=[0, 0, 1, 1, 0, 0, 1, 1])] if pad else []
    nodes = [node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3]),
             node("BatchNormalization", ["c1", "bn1_scale", "bn1_bias", "bn1_mean", "bn1_var"], ["n1"]),
             node("Relu", ["n1"], ["r1"]),
             node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
             *padded,
             node("Conv", ["p1_pad" if pad else "p1", "w2", "b2"], ["c2"], kernel_shape=[3, 3]),
             node("Relu", ["c2"], ["r2"]),
             node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
             node("Flatten", ["p2"], ["flat"], axis=1),
             node("Gemm", ["flat", "fc_w", "fc_b"], ["y"])]
    graph = helper.make_graph(nodes, "mnist", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 28, 28])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits)
    model = make_model(graph, opset_imports=[helper.make_opsetid("", 8)])
    onnx.checker.check_model(model, full_check=True)
    return model


def fire_opset9(seed: int = 0, squeeze: bool = True) -> onnx.ModelProto:
    """tf2onnx-like SqueezeNet fire module at opset 9: NHWC input, Transpose, stem Conv, MaxPool,
    squeeze 1x1, expand 1x1 and 3x3 joined by Concat, a 1x1 classifier Conv, global pool,
    ``Squeeze(axes=[2, 3])`` (``squeeze``; else Flatten) and Softmax; dynamic batch ``N``.

    Squeeze takes its axes as an input from opset 13 on, so that model cannot go back to opset 9.
    """
    rng = np.random.default_rng(seed)
    inits = _weights(rng, {"w0": (16, 3, 3, 3), "b0": (16,), "ws": (8, 16, 1, 1), "bs": (8,),
                           "we1": (16, 8, 1, 1), "be1": (16,), "we3": (16, 8, 3, 3), "be3": (16,),
                           "wc": (10, 32, 1, 1), "bc": (10,)})
    node = helper.make_node
    nodes = [node("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2]),
             node("Conv", ["nchw", "w0", "b0"], ["c0"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             node("Relu", ["c0"], ["r0"]),
             node("MaxPool", ["r0"], ["p0"], kernel_shape=[3, 3], strides=[2, 2]),
             node("Conv", ["p0", "ws", "bs"], ["s"], kernel_shape=[1, 1]), node("Relu", ["s"], ["sr"]),
             node("Conv", ["sr", "we1", "be1"], ["e1"], kernel_shape=[1, 1]), node("Relu", ["e1"], ["e1r"]),
             node("Conv", ["sr", "we3", "be3"], ["e3"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             node("Relu", ["e3"], ["e3r"]),
             node("Concat", ["e1r", "e3r"], ["cat"], axis=1),
             node("Conv", ["cat", "wc", "bc"], ["c10"], kernel_shape=[1, 1]), node("Relu", ["c10"], ["c10r"]),
             node("GlobalAveragePool", ["c10r"], ["gap"]),
             node("Squeeze", ["gap"], ["logits"], axes=[2, 3]) if squeeze
             else node("Flatten", ["gap"], ["logits"], axis=1),
             node("Softmax", ["logits"], ["output"], axis=1)]
    graph = helper.make_graph(nodes, "fire", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                             ["N", 32, 32, 3])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])], inits)
    model = make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    onnx.checker.check_model(model, full_check=True)
    return model
