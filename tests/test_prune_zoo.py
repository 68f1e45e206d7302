"""Structural invariants of pruning on every zoo model, both exporters.

- 50 random plans per model: the result passes the full ONNX checker, runs in ONNX
  Runtime and keeps its input/output names and shapes.
- Zero-channel invariant: channels whose producers are zeroed carry nothing, so pruning
  exactly them leaves the outputs unchanged (residual Add, Concat, channel Pad,
  Flatten->Gemm, depthwise/grouped conv, SE Mul, ...).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from models.zoo import zoo_entries
from onnxprune.analyze import analyze
from onnxprune.load import normalize
from onnxprune.rewrite import prune_model
from pruning_utils import linked_closure, prune_units, random_feeds, random_plan, run, zeroed_model, zoo_model

NAMES = [e.name for e in zoo_entries()]
EXPORTERS = ["torchscript", "dynamo"]
PLANS = 50


def _interface(model: onnx.ModelProto) -> list[tuple[str, list[int | str]]]:
    def dims(vi: onnx.ValueInfoProto) -> list[int | str]:
        return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in vi.type.tensor_type.shape.dim]

    return [(vi.name, dims(vi)) for vi in list(model.graph.input) + list(model.graph.output)]


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", NAMES)
def test_random_plans_give_valid_running_models(name: str, exporter: str) -> None:
    model = normalize(zoo_model(name, exporter))
    analysis = analyze(model)
    rng = np.random.default_rng(1234)
    feeds = random_feeds(model, rng)
    expected_shapes = [o.shape for o in run(model.proto, feeds)]
    pruned_any = 0
    for _ in range(PLANS):
        plan = random_plan(analysis, rng)
        pruned = prune_model(analysis, plan)
        onnx.checker.check_model(pruned, full_check=True)
        assert _interface(pruned) == _interface(zoo_model(name, exporter))
        outputs = run(pruned, feeds)
        assert [o.shape for o in outputs] == expected_shapes
        assert all(np.isfinite(o).all() for o in outputs)
        pruned_any += bool(plan.keep)
    assert pruned_any > PLANS // 2 or not analysis.prunable_groups


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", NAMES)
def test_pruning_zeroed_channels_keeps_outputs(name: str, exporter: str) -> None:
    model = normalize(zoo_model(name, exporter))
    analysis = analyze(model)
    if not analysis.prunable_groups:
        pytest.skip(f"{name} has no prunable group")
    rng = np.random.default_rng(7)
    feeds = random_feeds(model, rng)
    for _ in range(5):
        plan = random_plan(analysis, rng, p_prune=0.9)
        zero = linked_closure(analysis, prune_units(analysis, plan))
        zeroed = normalize(zeroed_model(analysis, zero))
        reference = run(zeroed.proto, feeds)
        outputs = run(prune_model(analyze(zeroed), plan), feeds)
        for ref, out in zip(reference, outputs):
            scale = max(1.0, float(np.abs(ref).max()))
            np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2", "vgg_bn", "resnext", "se_net"])
def test_folded_bn_exports_prune_and_cut_size(name: str) -> None:
    model = normalize(zoo_model(name, "torchscript", fold_bn=True))
    assert not any(n.op_type == "BatchNormalization" for n in model.proto.graph.node)
    analysis = analyze(model)
    plan = random_plan(analysis, np.random.default_rng(0), p_prune=1.0)
    pruned = prune_model(analysis, plan)
    onnx.checker.check_model(pruned, full_check=True)
    assert pruned.ByteSize() < model.proto.ByteSize()
    feeds = random_feeds(model, np.random.default_rng(0))
    assert run(pruned, feeds)[0].shape == run(model.proto, feeds)[0].shape


def _nhwc_model(name: str) -> onnx.ModelProto:
    from pathlib import Path

    from models.tf_nhwc import tf_style_nhwc_model

    if name == "tf_style_nhwc":
        return tf_style_nhwc_model(0)
    return onnx.load(str(Path(__file__).parent / "fixtures" / f"{name}.onnx"))


NHWC = ["tf_style_nhwc", "tf2onnx_resnet", "tf2onnx_mobilenet", "tf2onnx_dense"]


@pytest.mark.parametrize("name", NHWC)
def test_nhwc_graphs_random_plans_and_zero_invariant(name: str) -> None:
    raw = _nhwc_model(name)
    model = normalize(raw)
    analysis = analyze(model)
    assert len(analysis.prunable_groups) >= 2
    rng = np.random.default_rng(99)
    feeds = random_feeds(model, rng)
    shapes = [o.shape for o in run(model.proto, feeds)]
    for _ in range(PLANS):
        pruned = prune_model(analysis, random_plan(analysis, rng))
        onnx.checker.check_model(pruned, full_check=True)
        assert _interface(pruned) == _interface(raw)
        assert [o.shape for o in run(pruned, feeds)] == shapes
    for _ in range(5):
        plan = random_plan(analysis, rng, p_prune=0.9)
        zeroed = normalize(zeroed_model(analysis, linked_closure(analysis, prune_units(analysis, plan))))
        reference = run(zeroed.proto, feeds)
        for ref, out in zip(reference, run(prune_model(analyze(zeroed), plan), feeds)):
            np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(ref).max())))


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_attention_head_dims_and_mlp_hidden_are_prunable(exporter: str) -> None:
    analysis = analyze(normalize(zoo_model("transformer", exporter)))
    prunable = analysis.prunable_groups
    # q/k head dim (coupled through q @ k^T, same index in all 4 heads), v head dim, MLP hidden
    assert sorted((g.size, len(g.producers)) for g in prunable) == [(8, 1), (8, 2), (64, 1)]
    residual = next(g for g in analysis.groups if g.size == 32)
    assert "combines channels with 'input'" in residual.frozen_reason


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_channel_shuffle_and_split_are_prunable(exporter: str) -> None:
    analysis = analyze(normalize(zoo_model("shufflenetv2", exporter)))
    frozen = [g for g in analysis.groups if g.frozen_reason]
    assert len(frozen) == 1 and "graph output" in frozen[0].frozen_reason
    assert len(analysis.prunable_groups) == 9
