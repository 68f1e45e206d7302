"""Build the tf2onnx test fixtures (three small Keras models with random weights).

TensorFlow is not a project dependency; run this script in its own virtual environment::

    python3.11 -m venv /tmp/tfenv
    /tmp/tfenv/bin/pip install tensorflow-cpu tf2onnx   # measured with TF 2.21, tf2onnx 1.17
    /tmp/tfenv/bin/python tools/make_tf2onnx_fixtures.py --out tests/fixtures --seed 0

It writes, for each of ``resnet`` (Conv-BN-ReLU, Add shortcuts, a strided 1x1 projection),
``mobilenet`` (inverted residuals with DepthwiseConv2D and ReLU6) and ``dense`` (a Dense MLP):

* ``tf2onnx_<name>.onnx``: the model converted by tf2onnx (opset 13), graph input renamed
  to ``input`` and output to ``output``;
* ``tf2onnx_<name>.npz``: ``input`` (a seeded random batch of one) and ``output`` (what
  Keras computes for it, inference mode), so tests can check the ONNX file numerically.

All BatchNorm layers get random gamma/beta/moving statistics so that they matter, and Dense
layers a random bias.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402
from tensorflow import keras  # noqa: E402
from tensorflow.keras import layers  # noqa: E402

logger = logging.getLogger(__name__)

OPSET = 13


def _conv_bn(x: tf.Tensor, filters: int, kernel: int, stride: int = 1,
             act: str | None = "relu") -> tf.Tensor:
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    if act == "relu6":
        return layers.ReLU(max_value=6.0)(x)
    return layers.ReLU()(x) if act == "relu" else x


def build_resnet() -> keras.Model:
    """Stem, an identity residual block and a strided block with a 1x1 conv+BN projection."""
    inputs = keras.Input((32, 32, 3), batch_size=1, name="input")
    x = _conv_bn(inputs, 16, 3)
    y = _conv_bn(_conv_bn(x, 16, 3), 16, 3, act=None)
    x = layers.ReLU()(layers.Add()([x, y]))
    y = _conv_bn(_conv_bn(x, 32, 3, stride=2), 32, 3, act=None)
    x = layers.ReLU()(layers.Add()([_conv_bn(x, 32, 1, stride=2, act=None), y]))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(10)(x), name="resnet")


def _inverted_residual(x: tf.Tensor, cin: int, cout: int, stride: int, expand: int) -> tf.Tensor:
    y = _conv_bn(x, cin * expand, 1, act="relu6")
    y = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(y)
    y = layers.ReLU(max_value=6.0)(layers.BatchNormalization()(y))
    y = _conv_bn(y, cout, 1, act=None)
    return layers.Add()([x, y]) if stride == 1 and cin == cout else y


def build_mobilenet() -> keras.Model:
    """Stem and three inverted residual blocks (two with skips), GAP and a Dense head."""
    inputs = keras.Input((32, 32, 3), batch_size=1, name="input")
    x = _conv_bn(inputs, 16, 3, stride=2, act="relu6")
    x = _inverted_residual(x, 16, 16, 1, 4)
    x = _inverted_residual(x, 16, 24, 2, 4)
    x = _inverted_residual(x, 24, 24, 1, 4)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(10)(x), name="mobilenet")


def build_dense() -> keras.Model:
    """Dense(64, relu) -> Dense(64, relu) -> Dense(10) on a flat 32-feature input."""
    inputs = keras.Input((32,), batch_size=1, name="input")
    x = layers.Dense(64, activation="relu")(inputs)
    x = layers.Dense(64, activation="relu")(x)
    return keras.Model(inputs, layers.Dense(10)(x), name="dense")


BUILDERS: tuple[tuple[str, Callable[[], keras.Model]], ...] = (
    ("resnet", build_resnet), ("mobilenet", build_mobilenet), ("dense", build_dense))


def randomize_statistics(model: keras.Model, rng: np.random.Generator) -> None:
    """Give every BatchNormalization random gamma/beta/moving statistics, every Dense a bias.

    (Keras initialises biases to zero, and tf2onnx drops an all-zero bias ``Add``.)
    """
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            channels = layer.get_weights()[0].shape
            layer.set_weights([rng.uniform(0.5, 1.5, channels), rng.normal(0.0, 0.1, channels),
                               rng.normal(0.0, 0.2, channels), rng.uniform(0.5, 2.0, channels)])
        elif isinstance(layer, layers.Dense):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0.0, 0.1, bias.shape)])


def rename_io(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rename the single graph input to ``input`` and the single output to ``output``."""
    renames = {model.graph.input[0].name: "input", model.graph.output[0].name: "output"}
    for value in list(model.graph.input) + list(model.graph.output):
        value.name = renames.get(value.name, value.name)
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = renames.get(name, name)
        for i, name in enumerate(node.output):
            node.output[i] = renames.get(name, name)
    return model


def convert(model: keras.Model) -> onnx.ModelProto:
    """Convert ``model`` (inference mode) with tf2onnx, batch fixed to 1."""
    spec = tf.TensorSpec(model.inputs[0].shape, tf.float32, name="input")
    function = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    proto, _ = tf2onnx.convert.from_function(function, input_signature=[spec], opset=OPSET)
    proto = rename_io(proto)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def main() -> int:
    """Build, convert and save the three fixtures; print their sizes and op types."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for index, (name, builder) in enumerate(BUILDERS):
        keras.utils.set_random_seed(args.seed + index)
        rng = np.random.default_rng(args.seed + index)
        model = builder()
        randomize_statistics(model, rng)
        sample = rng.standard_normal((1, *model.inputs[0].shape[1:])).astype(np.float32)
        expected = model(sample, training=False).numpy()
        proto = convert(model)
        onnx_path = args.out / f"tf2onnx_{name}.onnx"
        onnx_path.write_bytes(proto.SerializeToString())
        np.savez(args.out / f"tf2onnx_{name}.npz", input=sample, output=expected)
        ops = sorted({node.op_type for node in proto.graph.node})
        size = onnx_path.stat().st_size
        print(f"{onnx_path}: {size} bytes, {len(proto.graph.node)} nodes, {ops}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
