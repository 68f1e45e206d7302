"""Tiny ONNX classifiers and data for the evaluate tests (built with onnx.helper, no torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune.compat import make_model

CLASSES = 10
CHANNELS = 3
SIZE = 8


def tiny_classifier(path: Path, *, batch: int | str = "batch", seed: int = 0, classes: int = CLASSES) -> Path:
    """Conv(3->6, 3x3) -> Relu -> GlobalAveragePool -> Flatten -> Gemm(6->classes), seeded weights.

    Args:
        path: Where to save the model.
        batch: A symbolic batch name or a fixed batch size.
        seed: Seed of the weights.
        classes: Output classes.

    Returns:
        ``path``.
    """
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((6, CHANNELS, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.standard_normal((classes, 6)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.standard_normal(classes).astype(np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w2", "b2"], ["output"], name="fc", transB=1),
    ]
    return _save(path, nodes, inits, "tiny", batch, classes)


def two_conv_classifier(path: Path, *, seed: int = 0, classes: int = CLASSES) -> Path:
    """Conv(3->8) -> Relu -> Conv(8->8) -> Relu -> GlobalAveragePool -> Flatten -> Gemm: two prunable groups."""
    rng = np.random.default_rng(seed)
    weights = {"w1": (8, CHANNELS, 3, 3), "b1": (8,), "w2": (8, 8, 3, 3), "b2": (8,), "w3": (classes, 8), "b3": (classes,)}
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
             for name, shape in weights.items()]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["output"], name="fc", transB=1),
    ]
    return _save(path, nodes, inits, "two_conv", "batch", classes)


def _save(path: Path, nodes: list, inits: list, name: str, batch: int | str, classes: int) -> Path:
    """Check and save a classifier graph with input ``[batch, 3, 8, 8]`` and output ``[batch, classes]``."""
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, CHANNELS, SIZE, SIZE])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, classes])], inits)
    model = make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path))
    return path


def raw_images(count: int, seed: int = 0) -> np.ndarray:
    """Random uint8 NHWC images of the tiny model's size."""
    return np.random.default_rng(seed).integers(0, 256, size=(count, SIZE, SIZE, CHANNELS), dtype=np.uint8)


def cifar_preprocessed(images: np.ndarray) -> np.ndarray:
    """The cifar preset written out independently: float32 /255, ImageNet mean/std, NCHW."""
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    x = (images.astype(np.float32) / np.float32(255.0) - mean) / std
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def bare_logits(model: Path, inputs: np.ndarray) -> np.ndarray:
    """Logits from a plain ONNX Runtime session, one sample at a time (the reference)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    fixed = session.get_inputs()[0].shape[0]
    step = fixed if isinstance(fixed, int) else 1
    return np.concatenate([session.run(None, {"input": inputs[i:i + step]})[0]
                           for i in range(0, len(inputs), step)])
