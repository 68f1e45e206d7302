"""Depth pruning: residual branches found per op rule, replaced by constants, exactly where it must be exact.

- Every zoo model, both exporters: replacing any one residual branch by its value on one input
  gives the original outputs on that input (within 1e-5), and the model passes the full checker
  and runs in ONNX Runtime on a batch of 2 (the constant broadcasts over the batch).
- A branch that is not closed (its inner tensor also feeds the rest of the graph) is not a branch.
- ``prune-depth`` end to end on a trained ResNet-20: MACs fall by exactly the dropped branches',
  one line + exit 2 for a model without residual branches.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from models.export import export_onnx
from models.resnet_cifar import resnet_cifar
from models.zoo import zoo_entries
from onnxprune.analyze.blocks import find_branches
from onnxprune.cli import main
from onnxprune.errors import PlanError
from onnxprune.load import normalize
from onnxprune.pipeline.depth import choose
from onnxprune.rewrite.capture import run_batches
from onnxprune.rewrite.depth import drop_branches
from pruning_utils import random_feeds, run, zoo_model

NAMES = [e.name for e in zoo_entries()]
#: Residual branches per zoo model (the torchscript and dynamo exports agree): a projection shortcut
#: (bottleneck_resnet, resnext, se_net) gives two branches on one Add, the main path and the projection.
EXPECTED = {"resnet20": 9, "bottleneck_resnet": 6, "mobilenetv2": 3, "resnext": 5, "se_net": 3, "transformer": 2}


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("name", NAMES)
def test_each_branch_replaced_by_its_value_gives_the_same_outputs(name: str, exporter: str) -> None:
    model = normalize(zoo_model(name, exporter))
    branches = find_branches(model)
    assert len(branches) == EXPECTED.get(name, 0)
    rng = np.random.default_rng(0)
    one = random_feeds(model, rng, batch=1)
    two = random_feeds(model, rng, batch=2)
    reference = run(model.proto, one)
    for branch in branches:
        (_, values), = run_batches(model.proto, one, [branch.output], batch_size=1, threads=1)
        dropped = drop_branches(model.proto, [branch], {branch.output: values[0]})
        onnx.checker.check_model(dropped, full_check=True)
        assert not {n.name for n in dropped.graph.node} & set(branch.nodes)
        for got, want in zip(run(dropped, one), reference):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        assert [o.shape for o in run(dropped, two)] == [o.shape for o in run(model.proto, two)]


def _block(leak: bool) -> onnx.ModelProto:
    """x -> Conv -> Relu (r) -> Conv (y); Add(x, y) -> out; with ``leak`` r is a graph output too."""
    rng = np.random.default_rng(1)
    w1, w2 = (numpy_helper.from_array(rng.normal(size=(4, 4, 3, 3)).astype(np.float32), n) for n in ("w1", "w2"))
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], name="c1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="r1"),
             helper.make_node("Conv", ["r", "w2"], ["y"], name="c2", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["x", "y"], ["out"], name="add")]
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 8, 8])]
    if leak:
        outputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, 4, 8, 8]))
    graph = helper.make_graph(nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              outputs, [w1, w2])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_branch_must_be_closed_and_the_macs_are_exact() -> None:
    (branch,) = find_branches(normalize(_block(leak=False)))
    assert (branch.add, branch.input_index, branch.output, branch.nodes) == ("add", 1, "y", ("c1", "r1", "c2"))
    assert branch.macs == 2 * 4 * 4 * 9 * 8 * 8 and branch.shape == (1, 4, 8, 8)
    assert find_branches(normalize(_block(leak=True))) == ()


def test_choose_takes_the_cheapest_per_mac_and_never_two_of_one_add() -> None:
    (branch,) = find_branches(normalize(_block(leak=False)))
    twin = type(branch)(add="add", input_index=0, output="x2", nodes=("other",), macs=branch.macs, shape=branch.shape)
    assert choose([branch, twin], [0.5, 0.1], 2 * branch.macs, target=0.9, count=None) == [1]
    assert choose([branch, twin], [0.5, 0.1], 2 * branch.macs, target=None, count=1) == [1]
    with pytest.raises(PlanError, match="overlaps"):
        drop_branches(normalize(_block(leak=False)).proto, [branch, branch], {"y": np.zeros((1, 4, 8, 8), np.float32)})


def test_prune_depth_cli_on_resnet20(tmp_path: Path, resnet20_weights: Path, cifar_train: Path) -> None:
    source = tmp_path / "resnet20.onnx"
    export_onnx(resnet_cifar(20, weights=resnet20_weights), (1, 3, 32, 32), source, dynamic_batch=True)
    out, report = tmp_path / "d.onnx", tmp_path / "d.json"
    code = main(["prune-depth", str(source), "-o", str(out), "--blocks", "3", "--calib", str(cifar_train),
                 "--calib-size", "100", "--preprocess", "cifar", "--threads", "1", "--json", str(report)])
    assert code == 0
    data = json.loads(report.read_text())
    dropped = [b for b in data["branches"] if b["dropped"]]
    assert len(data["branches"]) == 9 and len(dropped) == 3
    assert data["before"]["macs"] - data["after"]["macs"] == sum(b["macs"] for b in dropped)
    written = onnx.load(out)
    onnx.checker.check_model(written, full_check=True)
    x = np.load(cifar_train)["images"][:4].astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    assert run(written, {written.graph.input[0].name: x})[0].shape == (4, 10)


def test_prune_depth_without_residual_branches_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                                  ) -> None:
    source = tmp_path / "vgg.onnx"
    onnx.save(zoo_model("vgg_bn", "torchscript"), source)
    data = tmp_path / "calib.npz"
    np.savez(data, images=np.random.default_rng(0).normal(size=(8, 3, 32, 32)).astype(np.float32))
    code = main(["prune-depth", str(source), "-o", str(tmp_path / "o.onnx"), "--target", "0.3", "--calib", str(data)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no residual branch" in err[0]


@pytest.mark.parametrize("fixture", ["tf2onnx_resnet", "tf2onnx_mobilenet"])
def test_keras_nhwc_branches_are_found_and_dropped_exactly(fixture: str) -> None:
    model = normalize(onnx.load(Path(__file__).parent / "fixtures" / f"{fixture}.onnx"))
    branches = find_branches(model)
    assert branches, "the Keras residual Adds are branches too (NHWC: the rule does not depend on the layout)"
    one = random_feeds(model, np.random.default_rng(0), batch=1)
    reference = run(model.proto, one)
    for branch in branches:
        (_, values), = run_batches(model.proto, one, [branch.output], batch_size=1, threads=1)
        dropped = drop_branches(model.proto, [branch], {branch.output: values[0]})
        onnx.checker.check_model(dropped, full_check=True)
        for got, want in zip(run(dropped, one), reference):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
