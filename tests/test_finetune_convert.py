"""Fine-tune interpreter: every zoo model (both exporters), the tf2onnx fixtures and the NHWC
graph run in torch as in ONNX Runtime, and writing the untouched weights back is lossless."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from models.export import export_onnx
from models.tf_nhwc import tf_style_nhwc_model
from models.zoo import zoo_entries
from onnxprune.errors import UnsupportedInput
from onnxprune.finetune import GraphModule, module_values, run_module, write_back

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _ort(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})


def _check(model: onnx.ModelProto) -> None:
    dims = [d.dim_value or 2 for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(0).standard_normal(dims).astype(np.float32)
    reference = _ort(model, x)
    module = GraphModule(model)
    assert module.param_names, "no trainable initializers found"
    for got, want in zip(run_module(module, [x]), reference, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    written = write_back(model, module_values(module))
    assert [i.name for i in written.graph.initializer] == [i.name for i in model.graph.initializer]
    assert [(n.name, n.op_type, list(n.input)) for n in written.graph.node] == \
        [(n.name, n.op_type, list(n.input)) for n in model.graph.node]
    onnx.checker.check_model(written)
    for got, want in zip(_ort(written, x), reference, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("name", [entry.name for entry in zoo_entries()])
def test_zoo_converts_exactly(name: str, exporter: str) -> None:
    entry = next(e for e in zoo_entries() if e.name == name)
    _check(export_onnx(entry.build(0), entry.input_shape, exporter=exporter))


@pytest.mark.parametrize("name", ["tf2onnx_resnet", "tf2onnx_mobilenet", "tf2onnx_dense"])
def test_tf2onnx_fixtures_convert_exactly(name: str) -> None:
    _check(onnx.load(str(FIXTURES / f"{name}.onnx")))


def test_nhwc_graph_converts_exactly_and_stays_nhwc() -> None:
    model = tf_style_nhwc_model()
    _check(model)
    module = GraphModule(model)
    with torch.no_grad():
        for p in module.params:
            p.mul_(1.5)
    written = write_back(model, module_values(module))
    assert [n.op_type for n in written.graph.node] == [n.op_type for n in model.graph.node]
    kernel = next(i for i in written.graph.initializer if i.name == "model/conv2d/kernel")
    original = next(i for i in model.graph.initializer if i.name == "model/conv2d/kernel")
    np.testing.assert_allclose(onnx.numpy_helper.to_array(kernel), 1.5 * onnx.numpy_helper.to_array(original),
                               rtol=1e-6)


def test_bn_running_stats_stay_fixed() -> None:
    entry = next(e for e in zoo_entries() if e.name == "vgg_bn")
    model = export_onnx(entry.build(0), entry.input_shape)
    module = GraphModule(model)
    bn = next(n for n in model.graph.node if n.op_type == "BatchNormalization")
    assert bn.input[1] in module.param_names and bn.input[2] in module.param_names
    assert bn.input[3] not in module.param_names and bn.input[4] not in module.param_names


def test_unknown_op_is_one_line_error() -> None:
    model = tf_style_nhwc_model()
    model.graph.node[2].op_type = "NoSuchOp"
    with pytest.raises(UnsupportedInput, match="NoSuchOp"):
        GraphModule(model)
