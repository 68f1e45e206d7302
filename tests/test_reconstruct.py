"""Criteria rankings, feature capture and least-squares reconstruction on hand-built models."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune.analyze import analyze
from onnxprune.analyze.importance import activation_importance, bn_importance, consumer_inputs, weight_importance
from onnxprune.compat import make_model
from onnxprune.load import normalize
from onnxprune.plan import Plan
from onnxprune.rewrite import prune_model
from onnxprune.rewrite.capture import channel_means
from onnxprune.rewrite.prune import tensor_masks, unit_mask
from onnxprune.rewrite.reconstruct import ReconstructOptions, repair
from pruning_utils import run


def _model(nodes: list[onnx.NodeProto], inits: dict[str, np.ndarray], in_shape: list[int],
           out_shape: list[int]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *in_shape[1:]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", *out_shape])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    model = make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _conv_chain(rng: np.random.Generator, *, combos: bool) -> onnx.ModelProto:
    """x(4ch) -> Conv A (6 out) -> Conv B (5 out) -> y; A's channels 4, 5 are combos of 0..3."""
    wa, ba = rng.standard_normal((6, 4, 3, 3)), rng.standard_normal(6)
    if combos:
        mix = rng.standard_normal((2, 4))
        wa[4:] = np.tensordot(mix, wa[:4], axes=1)
        ba[4:] = mix @ ba[:4]
    nodes = [helper.make_node("Conv", ["x", "wa", "ba"], ["h"], name="A", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["h", "wb", "bb"], ["y"], name="B", pads=[1, 1, 1, 1])]
    return _model(nodes, {"wa": wa, "ba": ba, "wb": rng.standard_normal((5, 6, 3, 3)),
                          "bb": rng.standard_normal(5)}, [1, 4, 8, 8], [5, 8, 8])


def _gemm_chain(rng: np.random.Generator) -> onnx.ModelProto:
    wa, ba = rng.standard_normal((8, 6)), rng.standard_normal(8)
    mix = rng.standard_normal((3, 5))
    wa[5:] = mix @ wa[:5]
    ba[5:] = mix @ ba[:5]
    nodes = [helper.make_node("Gemm", ["x", "wa", "ba"], ["h"], name="A", transB=1),
             helper.make_node("Gemm", ["h", "wb", "bb"], ["y"], name="B", alpha=0.5, beta=2.0)]
    return _model(nodes, {"wa": wa, "ba": ba, "wb": rng.standard_normal((8, 3)), "bb": rng.standard_normal(3)},
                  [1, 6], [3])


def _prune_group(proto: onnx.ModelProto, keep: tuple[int, ...]):
    model = normalize(proto)
    analysis = analyze(model)
    group = next(g for g in analysis.prunable_groups if "A" in g.producers)
    plan = Plan(keep={group.id: keep})
    masks = tensor_masks(analysis, unit_mask(analysis, plan))
    return model.proto, prune_model(analysis, plan), list(group.consumers), masks


def test_reconstruct_recovers_linear_combinations_conv() -> None:
    rng = np.random.default_rng(0)
    original, pruned, consumers, masks = _prune_group(_conv_chain(rng, combos=True), (0, 1, 2, 3))
    feeds = {"x": rng.standard_normal((30, 4, 8, 8)).astype(np.float32)}
    test = {"x": rng.standard_normal((5, 4, 8, 8)).astype(np.float32)}
    want = run(original, test)[0]
    assert np.abs(run(pruned, test)[0] - want).max() > 0.1  # pruning alone changes the output
    fixed, report = repair(original, pruned, consumers, masks, feeds, np.random.default_rng(1),
                           options=ReconstructOptions(ridge=1e-10))
    assert [f.method for f in report.layers] == ["lstsq"]
    np.testing.assert_allclose(run(fixed, test)[0], want, atol=1e-4)


def test_reconstruct_recovers_linear_combinations_gemm() -> None:
    rng = np.random.default_rng(2)
    original, pruned, consumers, masks = _prune_group(_gemm_chain(rng), (0, 1, 2, 3, 4))
    feeds = {"x": rng.standard_normal((64, 6)).astype(np.float32)}
    test = {"x": rng.standard_normal((7, 6)).astype(np.float32)}
    fixed, _ = repair(original, pruned, consumers, masks, feeds, np.random.default_rng(3),
                      options=ReconstructOptions(ridge=1e-10))
    np.testing.assert_allclose(run(fixed, test)[0], run(original, test)[0], atol=1e-4)


def test_reconstruct_all_kept_is_noop() -> None:
    rng = np.random.default_rng(4)
    proto = normalize(_conv_chain(rng, combos=False)).proto
    feeds = {"x": rng.standard_normal((20, 4, 8, 8)).astype(np.float32)}
    fixed, report = repair(proto, proto, ["A", "B"], {}, feeds, np.random.default_rng(5))
    test = {"x": rng.standard_normal((3, 4, 8, 8)).astype(np.float32)}
    np.testing.assert_allclose(run(fixed, test)[0], run(proto, test)[0], atol=1e-5)
    assert len(report.layers) == 2


def test_bias_correction_folds_mean_of_removed_channels() -> None:
    rng = np.random.default_rng(6)
    # A's channel 5 is constant (zero weights, bias 3): removing it loses exactly 3 * sum(W_B[:, 5]),
    # except at the zero-padded border, so compare the interior.
    proto = _conv_chain(rng, combos=False)
    wa = numpy_helper.to_array(proto.graph.initializer[0]).copy()
    ba = numpy_helper.to_array(proto.graph.initializer[1]).copy()
    wa[5], ba[5] = 0.0, 3.0
    proto.graph.initializer[0].CopyFrom(numpy_helper.from_array(wa, "wa"))
    proto.graph.initializer[1].CopyFrom(numpy_helper.from_array(ba, "ba"))
    original, pruned, consumers, masks = _prune_group(proto, (0, 1, 2, 3, 4))
    feeds = {"x": rng.standard_normal((10, 4, 8, 8)).astype(np.float32)}
    fixed, report = repair(original, pruned, consumers, masks, feeds, rng, mode="bias")
    assert [f.method for f in report.layers] == ["bias"]
    test = {"x": rng.standard_normal((2, 4, 8, 8)).astype(np.float32)}
    want, got, raw = run(original, test)[0], run(fixed, test)[0], run(pruned, test)[0]
    np.testing.assert_allclose(got[:, :, 1:-1, 1:-1], want[:, :, 1:-1, 1:-1], atol=1e-4)
    assert np.abs(raw - want).max() > 1.0


def _criteria_model(weights: np.ndarray, gamma: np.ndarray) -> onnx.ModelProto:
    n = weights.shape[0]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="A"),
             helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["n"], name="bn"),
             helper.make_node("Relu", ["n"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2"], ["y"], name="B")]
    inits = {"w": weights, "g": gamma, "b": np.zeros(n), "m": np.zeros(n), "v": np.ones(n),
             "w2": np.ones((2, n, 1, 1))}
    return _model(nodes, inits, [1, weights.shape[1], 4, 4], [2, 4, 4])


def test_fpgm_drops_filter_nearest_median_and_bn_smallest_gamma() -> None:
    rng = np.random.default_rng(7)
    far = rng.standard_normal((3, 2, 1, 1)) * 5
    median = far.mean(axis=0, keepdims=True) + 0.01
    weights = np.concatenate([far[:1], median, far[1:]])  # filter 1 sits at the centre
    gamma = np.array([1.0, 2.0, 0.05, 0.5])
    analysis = analyze(normalize(_criteria_model(weights, gamma)))
    gid = next(g.id for g in analysis.prunable_groups if "A" in g.producers)
    fpgm = weight_importance(analysis, "fpgm")[gid]
    assert int(np.argmin(fpgm)) == 1
    assert int(np.argmin(bn_importance(analysis)[gid])) == 2
    np.testing.assert_allclose(bn_importance(analysis)[gid], np.abs(gamma))


def test_activation_criterion_ranks_by_mean_abs_activation() -> None:
    rng = np.random.default_rng(8)
    weights = rng.standard_normal((4, 2, 1, 1))
    weights[3] *= 0.01  # channel 3 barely activates
    analysis = analyze(normalize(_criteria_model(weights, np.ones(4))))
    tensors = consumer_inputs(analysis)
    feeds = {"x": rng.standard_normal((16, 2, 4, 4)).astype(np.float32)}
    means = channel_means(analysis.model.proto, feeds, {t: analysis.labels[t].axis for t in tensors})
    gid = next(g.id for g in analysis.prunable_groups if "A" in g.producers)
    scores = activation_importance(analysis, means)[gid]
    assert tensors == ("r",)
    assert int(np.argmin(scores)) == 3
    relu = np.maximum(np.einsum("oi,nihw->nohw", weights[:, :, 0, 0], feeds["x"]), 0)
    np.testing.assert_allclose(scores, relu.mean(axis=(0, 2, 3)), rtol=1e-4)


def _reshape_chain(rng: np.random.Generator) -> onnx.ModelProto:
    """Like _conv_chain (combos), then a Shape -> Slice -> Concat -> Reshape flatten and a Gemm head.

    The Shape output is held across B, so the model cannot be run segment by segment.
    """
    base = _conv_chain(rng, combos=True)
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("Slice", ["s", "zero", "one"], ["n"], name="slice"),
             helper.make_node("Concat", ["n", "minus1"], ["target"], name="concat", axis=0),
             *base.graph.node]
    nodes[-1].output[0] = "yb"
    nodes += [helper.make_node("Reshape", ["yb", "target"], ["flat"], name="flatten"),
              helper.make_node("Gemm", ["flat", "wc"], ["y"], name="C")]
    inits = {t.name: numpy_helper.to_array(t) for t in base.graph.initializer}
    model = _model(nodes, {**inits, "wc": rng.standard_normal((5 * 8 * 8, 3))}, [1, 4, 8, 8], [3])
    model.graph.initializer.extend([numpy_helper.from_array(np.array([0], np.int64), "zero"),
                                    numpy_helper.from_array(np.array([1], np.int64), "one"),
                                    numpy_helper.from_array(np.array([-1], np.int64), "minus1")])
    return model


def test_reconstruct_falls_back_to_one_pass_when_stepping_fails(caplog) -> None:
    rng = np.random.default_rng(9)
    original, pruned, consumers, masks = _prune_group(_reshape_chain(rng), (0, 1, 2, 3))
    feeds = {"x": rng.standard_normal((30, 4, 8, 8)).astype(np.float32)}
    test = {"x": rng.standard_normal((5, 4, 8, 8)).astype(np.float32)}
    want = run(original, test)[0]
    assert np.abs(run(pruned, test)[0] - want).max() > 0.1
    with caplog.at_level("WARNING", logger="onnxprune.rewrite.reconstruct"):
        fixed, report = repair(original, pruned, consumers, masks, feeds, np.random.default_rng(1),
                               options=ReconstructOptions(ridge=1e-10))
    assert "segment by segment" in caplog.text
    assert [f.method for f in report.layers] == ["lstsq"]
    np.testing.assert_allclose(run(fixed, test)[0], want, rtol=1e-4, atol=1e-3)


def _shared_weight_model(rng: np.random.Generator) -> onnx.ModelProto:
    """A (combos) -> h; B = Conv(h, w, b); C = Conv(Relu(h) + 1, w, b) with the same ``w`` and ``b``; y = B + C.

    The pruner gives each node its own sliced weight, but the (unsliced) bias stays shared.
    """
    base = _conv_chain(rng, combos=True)
    inits = {t.name: numpy_helper.to_array(t) for t in base.graph.initializer}
    nodes = [base.graph.node[0],
             helper.make_node("Conv", ["h", "wb", "bb"], ["yb"], name="B", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Add", ["r", "one"], ["r1"], name="plus"),
             helper.make_node("Conv", ["r1", "wb", "bb"], ["yc"], name="C", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["yb", "yc"], ["y"], name="sum")]
    return _model(nodes, {**inits, "one": np.ones(1)}, [1, 4, 8, 8], [5, 8, 8])


def test_shared_initializer_gets_one_copy_per_refitted_node() -> None:
    rng = np.random.default_rng(10)
    original, pruned, consumers, masks = _prune_group(_shared_weight_model(rng), (0, 1, 2, 3))
    assert sorted(consumers) == ["B", "C"]
    feeds = {"x": rng.standard_normal((40, 4, 8, 8)).astype(np.float32)}
    fixed, report = repair(original, pruned, consumers, masks, feeds, np.random.default_rng(2),
                           options=ReconstructOptions(ridge=1e-8))
    nodes = {n.name: n for n in fixed.graph.node}
    assert nodes["B"].input[2] != nodes["C"].input[2]
    assert {f.method for f in report.layers} == {"lstsq"}
    assert all(f.error_after < f.error_before for f in report.layers)
    # B's input channels 4, 5 are exact combinations of 0..3: its own output is recovered exactly
    probe = {"x": rng.standard_normal((4, 4, 8, 8)).astype(np.float32)}
    from onnxprune.rewrite.capture import with_outputs
    np.testing.assert_allclose(run(with_outputs(fixed, ["yb"]), probe)[0],
                               run(with_outputs(original, ["yb"]), probe)[0], atol=1e-3)
    test = {"x": rng.standard_normal((5, 4, 8, 8)).astype(np.float32)}
    want = run(original, test)[0]
    assert np.abs(run(fixed, test)[0] - want).mean() < np.abs(run(pruned, test)[0] - want).mean()


def test_reconstruct_tf_style_nhwc_model_with_depthwise_and_matmul_head() -> None:
    from models.tf_nhwc import tf_style_nhwc_model
    from onnxprune.plan import ratio_plan

    rng = np.random.default_rng(11)
    model = normalize(tf_style_nhwc_model(seed=3))
    analysis = analyze(model)
    plan = ratio_plan(weight_importance(analysis, "l1"), [g.prunable for g in analysis.groups], 0.5)
    pruned = prune_model(analysis, plan)
    masks = tensor_masks(analysis, unit_mask(analysis, plan))
    consumers = sorted({c for gid in plan.keep for c in analysis.groups[gid].consumers})
    feeds = {"input": rng.standard_normal((48, 16, 16, 3)).astype(np.float32)}  # the input's batch is fixed to 1
    fixed, report = repair(model.proto, pruned, consumers, masks, feeds, np.random.default_rng(12),
                           options=ReconstructOptions(batch_size=1))
    methods = {f.node: f.method for f in report.layers}
    assert methods["model/depthwise_conv2d/Conv2D"] == "lstsq" and methods["model/dense_1/MatMul"] == "lstsq"
    test = [rng.standard_normal((1, 16, 16, 3)).astype(np.float32) for _ in range(8)]
    want = np.concatenate([run(model.proto, {"input": x})[0] for x in test])
    err_pruned = np.square(np.concatenate([run(pruned, {"input": x})[0] for x in test]) - want).mean()
    err_fixed = np.square(np.concatenate([run(fixed, {"input": x})[0] for x in test]) - want).mean()
    assert err_fixed < 0.5 * err_pruned
