"""The test model zoo: exports are valid, numerically faithful, and keep/fold BatchNorm."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx.reference import ReferenceEvaluator
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from models.counts import torch_macs, torch_params
from models.export import export_onnx
from models.resnet_cifar import resnet_cifar
from models.tf_nhwc import tf_style_nhwc_model
from models.zoo import ZooEntry, zoo_entries

FIXTURES = Path(__file__).parent / "fixtures"
EXPECTED_NAMES = ("resnet20", "bottleneck_resnet", "vgg_bn", "mobilenetv2", "densenet", "se_net",
                  "shufflenetv2", "resnext", "mlp", "transformer", "convtranspose_net",
                  "resize_net", "instancenorm_net")
EXPORTERS = ("torchscript", "dynamo")


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny models: one intra-op thread avoids OpenMP spin-waiting on the shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _bn_count(module: nn.Module) -> int:
    return sum(isinstance(sub, _BatchNorm) for sub in module.modules())


def _entry(name: str) -> ZooEntry:
    return next(entry for entry in zoo_entries() if entry.name == name)


def _cases() -> list[tuple[str, str, bool]]:
    cases = []
    for entry in zoo_entries():
        folds = (False, True) if _bn_count(entry.build(0)) else (False,)
        cases += [(entry.name, exporter, fold) for exporter in EXPORTERS for fold in folds]
    return cases


def _run_ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return session.run(["output"], {"input": x})[0]


def _torch_out(module: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def _sample(shape: tuple[int, ...], seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_zoo_names_and_shapes() -> None:
    entries = zoo_entries()
    assert tuple(entry.name for entry in entries) == EXPECTED_NAMES
    shapes = {entry.name: entry.input_shape for entry in entries}
    assert shapes["mlp"] == (1, 32) and shapes["transformer"] == (1, 8, 32)
    assert all(shape == (1, 3, 32, 32) for name, shape in shapes.items()
               if name not in ("mlp", "transformer"))


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_build_is_seeded_eval_and_randomizes_bn(name: str) -> None:
    entry = _entry(name)
    first, again, other = entry.build(0), entry.build(0), entry.build(1)
    assert not first.training
    state, state_again, state_other = first.state_dict(), again.state_dict(), other.state_dict()
    assert all(torch.equal(state[key], state_again[key]) for key in state)
    assert any(not torch.equal(state[key], state_other[key]) for key in state
               if state[key].is_floating_point())
    for sub in first.modules():
        if isinstance(sub, _BatchNorm):
            assert not torch.allclose(sub.running_var, torch.ones_like(sub.running_var))
            assert not torch.allclose(sub.running_mean, torch.zeros_like(sub.running_mean))
            assert not torch.allclose(sub.weight, torch.ones_like(sub.weight))


@pytest.mark.parametrize(("name", "exporter", "fold_bn"), _cases())
def test_export_matches_torch(name: str, exporter: str, fold_bn: bool) -> None:
    entry = _entry(name)
    module = entry.build(0)
    model = export_onnx(module, entry.input_shape, exporter=exporter, fold_bn=fold_bn)
    onnx.checker.check_model(model, full_check=True)
    assert [v.name for v in model.graph.input] == ["input"]
    assert [v.name for v in model.graph.output] == ["output"]
    x = _sample(entry.input_shape)
    np.testing.assert_allclose(_run_ort(model, x), _torch_out(module, x), rtol=1e-4, atol=1e-4)
    n_bn = sum(node.op_type == "BatchNormalization" for node in model.graph.node)
    assert n_bn == (0 if fold_bn else _bn_count(module))
    assert not module.training  # export works on a copy


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", ["shufflenetv2", "transformer"])
def test_dynamic_batch(name: str, exporter: str) -> None:
    entry = _entry(name)
    module = entry.build(2)
    model = export_onnx(module, entry.input_shape, exporter=exporter, dynamic_batch=True)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    x = _sample((3, *entry.input_shape[1:]))
    np.testing.assert_allclose(_run_ort(model, x), _torch_out(module, x), rtol=1e-4, atol=1e-4)


def test_export_saves_file_and_opsets(tmp_path: Path) -> None:
    entry = _entry("mlp")
    path = tmp_path / "mlp.onnx"
    model = export_onnx(entry.build(0), entry.input_shape, path, opset=17)
    assert onnx.load(str(path)) == model
    assert {op.version for op in model.opset_import if op.domain in ("", "ai.onnx")} == {17}
    dynamo = export_onnx(entry.build(0), entry.input_shape, exporter="dynamo", opset=17)
    assert {op.version for op in dynamo.opset_import if op.domain in ("", "ai.onnx")} == {18}
    with pytest.raises(ValueError, match="unknown exporter"):
        export_onnx(entry.build(0), entry.input_shape, exporter="tflite")  # type: ignore[arg-type]


def _resnet_cifar_macs(n: int) -> int:
    """Hand count: 3x3 convs per stage (first conv of stages 2/3 at half resolution) + linear."""
    stem = 32 * 32 * 16 * 3 * 9
    stage1 = 2 * n * (32 * 32 * 16 * 16 * 9)
    stage2 = 16 * 16 * 32 * 16 * 9 + (2 * n - 1) * (16 * 16 * 32 * 32 * 9)
    stage3 = 8 * 8 * 64 * 32 * 9 + (2 * n - 1) * (8 * 8 * 64 * 64 * 9)
    return stem + stage1 + stage2 + stage3 + 64 * 10


def _resnet_cifar_params(n: int) -> int:
    convs = 16 * 3 * 9 + 2 * n * 16 * 16 * 9 + (32 * 16 * 9 + (2 * n - 1) * 32 * 32 * 9) + (
        64 * 32 * 9 + (2 * n - 1) * 64 * 64 * 9)
    bn = 2 * (16 + 2 * n * (16 + 32 + 64))
    return convs + bn + 64 * 10 + 10


def test_resnet20_counts() -> None:
    module = resnet_cifar(20)
    assert _resnet_cifar_macs(3) == 40_551_040
    assert _resnet_cifar_params(3) == 269_722
    assert torch_macs(module, (1, 3, 32, 32)) == 40_551_040
    assert torch_params(module) == 269_722
    assert torch_params(resnet_cifar(56)) == _resnet_cifar_params(9) == 853_018


def test_resnet_cifar_rejects_bad_depth() -> None:
    with pytest.raises(ValueError, match="6n\\+2"):
        resnet_cifar(21)


def test_resnet20_loads_shared_weights_strictly(resnet20_weights: Path) -> None:
    module = resnet_cifar(20, weights=resnet20_weights)
    with np.load(resnet20_weights, allow_pickle=False) as data:
        np.testing.assert_array_equal(module.linear.weight.detach().numpy(), data["linear.weight"])
        np.testing.assert_array_equal(module.layer3[2].bn2.running_var.numpy(),
                                      data["layer3.2.bn2.running_var"])
    assert not module.training


def test_tf_style_nhwc_model() -> None:
    model = tf_style_nhwc_model(seed=0)
    onnx.checker.check_model(model, full_check=True)
    ops = [node.op_type for node in model.graph.node]
    assert ops[0] == "Transpose" and ops.count("Transpose") == 2 and ops.count("Conv") == 4
    assert ops[-5:] == ["MatMul", "Add", "Relu", "MatMul", "Add"]
    bn_consts = [init for init in model.graph.initializer if init.name.endswith(("mul/y", "add/y"))]
    assert len(bn_consts) == 6 and all(tuple(c.dims) == (1, 16, 1, 1) for c in bn_consts)
    x = _sample((1, 16, 16, 3))
    out = _run_ort(model, x)
    assert out.shape == (1, 10)
    reference = ReferenceEvaluator(model).run(None, {"input": x})[0]
    np.testing.assert_allclose(out, reference, rtol=1e-4, atol=1e-4)
    assert tf_style_nhwc_model(seed=0) == model and tf_style_nhwc_model(seed=1) != model


@pytest.mark.parametrize("name", ["resnet", "mobilenet", "dense"])
def test_tf2onnx_fixture_matches_keras(name: str) -> None:
    model = onnx.load(str(FIXTURES / f"tf2onnx_{name}.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert model.producer_name == "tf2onnx"
    with np.load(FIXTURES / f"tf2onnx_{name}.npz", allow_pickle=False) as data:
        x, expected = data["input"], data["output"]
    np.testing.assert_allclose(_run_ort(model, x), expected, rtol=1e-4, atol=1e-4)
