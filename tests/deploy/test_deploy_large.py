"""Models above protobuf's 2 GiB limit, tested at small size by lowering ``proto_limit``.

Every path that serializes a model (checker, shape inference, version converter, graph-surgeon
folding, ORT sessions, saving) takes ``proto_limit``; a tiny model with a limit of 1 KiB goes
through the same code as a > 2 GiB one, and must give what the in-memory path gives.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from deploy_models import TinyNet, export
from onnxprune import large
from onnxprune.compat import make_model
from onnxprune.deploy import check_target, export_triton, simplify
from onnxprune.deploy.opset import convert_opset
from onnxprune.deploy.runner import random_feeds, run_ort
from onnxprune.deploy.triton import TritonOptions
from onnxprune.evaluate import DataSpec, Runtime
from onnxprune.io import save_model
from onnxprune.large_write import DATA_ALIGNMENT
from onnxprune.load import load, normalize, read
from onnxprune.pipeline import compress_file, prune_file
from onnxprune.pipeline.deploying import DeployOptions
from onnxprune.rewrite.capture import make_session

LIMIT = 1024  # every test model is larger: all of them take the large-model path


@pytest.fixture(scope="module")
def net() -> onnx.ModelProto:
    """TinyNet with a dynamic batch: conv2 (9 KiB) and fc (1.3 KiB) are detached, conv1 (864 B) is not."""
    model = export(TinyNet(32))
    model.metadata_props.add(key="owner", value="tests")
    return model


@pytest.fixture(scope="module")
def net_file(net: onnx.ModelProto, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``net`` saved with external data, as a > 2 GiB model always is."""
    return save_model(net, tmp_path_factory.mktemp("user") / "net.onnx", external_data=True)


def _outputs(model: onnx.ModelProto | Path, batch: int = 3, seed: int = 0) -> np.ndarray:
    proto = model if isinstance(model, onnx.ModelProto) else read(model)
    feeds = random_feeds(proto, np.random.default_rng(seed), batch=batch)
    return run_ort(model if isinstance(model, onnx.ModelProto) else Path(model), feeds).outputs[0]


def test_detach_attach_round_trip(net: onnx.ModelProto) -> None:
    detached = large.detach(net)
    assert set(detached.weights) == {t.name for t in net.graph.initializer if large.tensor_nbytes(t) >= 1024}
    assert len(detached.weights) >= 2 and large.model_bytes(detached.skeleton) < 4096
    declared = {v.name: v.type.tensor_type for v in detached.skeleton.graph.input}
    for name, tensor in detached.weights.items():
        assert [d.dim_value for d in declared[name].shape.dim] == list(tensor.dims)
        assert declared[name].elem_type == tensor.data_type
    onnx.checker.check_model(detached.skeleton)
    back = large.attach(detached.skeleton, detached.weights)
    assert [v.name for v in back.graph.input] == [v.name for v in net.graph.input]
    assert np.array_equal(_outputs(back), _outputs(net))
    assert large.is_large(net, LIMIT) and not large.is_large(net)


def _transposed_weight_model() -> onnx.ModelProto:
    """(x @ Transpose(W)) @ V: constant folding must fold the Transpose of the 8 KiB weight W."""
    rng = np.random.default_rng(3)
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]), helper.make_node("MatMul", ["x", "wt"], ["h"]),
         helper.make_node("MatMul", ["h", "v"], ["y"])],
        "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 256])],
        [numpy_helper.from_array(rng.standard_normal((32, 64)).astype(np.float32), "w"),
         numpy_helper.from_array(rng.standard_normal((32, 256)).astype(np.float32), "v")])
    return make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(("limit", "folded_ops"), [
    (20_000, ["MatMul", "MatMul"]),  # large; W (read by the Transpose) stays in the skeleton
    (LIMIT, ["Transpose", "MatMul", "MatMul"]),  # even W alone is above the limit: left unfolded
    (10**6, ["MatMul", "MatMul"]),  # in memory
], ids=["large", "fold-inputs-above-limit", "in-memory"])
def test_folding_on_the_skeleton_is_exact(limit: int, folded_ops: list[str]) -> None:
    model = _transposed_weight_model()
    kept = large.detach(model, keep_foldable=True)
    assert large.is_large(model, 20_000) and not large.is_large(kept.skeleton, 20_000)
    assert "w" not in large.detach(model, keep_foldable=True).weights and "w" in large.detach(model).weights
    folded = normalize(model, proto_limit=limit).proto
    assert [n.op_type for n in folded.graph.node] == folded_ops
    np.testing.assert_allclose(_outputs(folded), _outputs(model), rtol=1e-6, atol=1e-5)


def test_model_bytes_without_serializing(net: onnx.ModelProto, net_file: Path) -> None:
    size = net.ByteSize()
    assert abs(large.model_bytes(net) - size) < 0.05 * size
    lazy = read(net_file, interface_only=True, proto_limit=LIMIT)  # external data left on disk
    assert lazy.ByteSize() < size / 4 and abs(large.model_bytes(lazy) - size) < 0.05 * size


def test_sessions_above_the_limit_equal_in_memory_ones(net: onnx.ModelProto) -> None:
    feeds = random_feeds(net, np.random.default_rng(1), batch=5)
    small = Runtime("cpu", 1).session(net).run(feeds)[0]
    forced = Runtime("cpu", 1, proto_limit=LIMIT).session(net)
    assert forced.inner.onnxprune_weights, "the tensors reached ORT as arrays"
    assert np.array_equal(forced.run(feeds)[0], small)
    capture = make_session(net, 1, proto_limit=LIMIT)
    assert np.array_equal(capture.run(None, feeds)[0], small)
    assert large.content_hash(net, LIMIT) == large.content_hash(net, LIMIT) != large.content_hash(net)


def test_save_streams_aligned_external_data(net: onnx.ModelProto, tmp_path: Path) -> None:
    path = save_model(net, tmp_path / "m.onnx", proto_limit=LIMIT)
    stub = onnx.load(str(path), load_external_data=False)
    external = [t for t in stub.graph.initializer if t.data_location == TensorProto.EXTERNAL]
    assert len(external) == len(large.detach(net).weights)
    offsets = [int(next(e.value for e in t.external_data if e.key == "offset")) for t in external]
    assert all(o % DATA_ALIGNMENT == 0 for o in offsets)
    onnx.checker.check_model(str(path))
    loaded = read(path)
    before = {t.name: numpy_helper.to_array(t) for t in net.graph.initializer}
    assert all(np.array_equal(numpy_helper.to_array(t), before[t.name]) for t in loaded.graph.initializer)


def test_single_file_save_is_streamed_and_equal(net: onnx.ModelProto, tmp_path: Path) -> None:
    path = save_model(net, tmp_path / "one.onnx")  # below the limit: one file, written tensor by tensor
    assert not (tmp_path / "one.onnx.data").exists()
    assert onnx.load(str(path)) == net and path.stat().st_size == net.ByteSize()


def test_load_normalize_and_simplify_match_the_in_memory_path(net: onnx.ModelProto, net_file: Path) -> None:
    before = net.SerializeToString()
    assert np.array_equal(_outputs(normalize(net, proto_limit=LIMIT).proto), _outputs(net))
    assert net.SerializeToString() == before, "normalize leaves its input alone"
    small, forced = load(net_file), load(net_file, proto_limit=LIMIT)  # load: tensors reused, not copied
    assert forced.proto_limit == LIMIT and dict(forced.shapes) == dict(small.shapes)
    assert dict(forced.dtypes) == dict(small.dtypes)
    assert np.array_equal(_outputs(forced.proto), _outputs(small.proto))
    simple = simplify(forced.proto, proto_limit=LIMIT)
    assert len(simple.graph.node) <= len(forced.proto.graph.node)
    np.testing.assert_allclose(_outputs(simple), _outputs(small.proto), rtol=1e-5, atol=1e-6)
    converted = convert_opset(forced.proto, 16, np.random.default_rng(0), proto_limit=LIMIT)
    assert converted.opset_import[0].version == 16
    assert np.array_equal(_outputs(converted), _outputs(forced.proto))


def test_prune_above_the_limit_equals_in_memory_prune(net_file: Path, tmp_path: Path) -> None:
    in_memory = prune_file(net_file, tmp_path / "small.onnx", ratio=0.5)
    forced = prune_file(net_file, tmp_path / "large.onnx", ratio=0.5, proto_limit=LIMIT)
    assert not (tmp_path / "small.onnx.data").exists() and (tmp_path / "large.onnx.data").is_file()
    assert forced.plan == in_memory.plan and forced.after == in_memory.after
    assert forced.bytes_after > (tmp_path / "large.onnx").stat().st_size  # data file counted
    onnx.checker.check_model(str(tmp_path / "large.onnx"))
    shipped = read(tmp_path / "large.onnx")
    assert {p.key: p.value for p in shipped.metadata_props}["owner"] == "tests"
    for batch in (1, 7):
        expected = _outputs(tmp_path / "small.onnx", batch=batch)
        got = _outputs(tmp_path / "large.onnx", batch=batch)
        assert got.shape == (batch, 10)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_compress_above_the_limit_data_free_and_with_data(net_file: Path, tmp_path: Path) -> None:
    free = compress_file(net_file, tmp_path / "free.onnx", target=0.4, proto_limit=LIMIT,
                         deploy=DeployOptions(triton_repo=tmp_path / "repo", triton=TritonOptions("net", 8)))
    assert free.after.macs < free.before.macs and (tmp_path / "free.onnx.data").is_file()
    assert (free.triton_dir / "1" / "model.onnx" / "model.onnx.data").is_file()
    rng = np.random.default_rng(0)
    npz = tmp_path / "data.npz"
    np.savez(npz, images=rng.random((16, 3, 16, 16), dtype=np.float32), labels=rng.integers(0, 10, 16))
    scored = compress_file(net_file, tmp_path / "scored.onnx", target=0.4, agent="random", episodes=2,
                           data=DataSpec(path=npz), runtime=Runtime("cpu", 1, proto_limit=LIMIT), proto_limit=LIMIT)
    assert scored.accuracy_after is not None and 0.0 <= scored.accuracy_after <= 100.0
    assert _outputs(tmp_path / "scored.onnx").shape == (3, 10)


def test_check_and_triton_above_the_limit(net: onnx.ModelProto, net_file: Path, tmp_path: Path) -> None:
    report = check_target(net, "ort-cpu", np.random.default_rng(0), proto_limit=LIMIT)
    assert report.ran and report.ok
    lazy = read(net_file, interface_only=True, proto_limit=LIMIT)
    assert all(not t.HasField("raw_data") for t in lazy.graph.initializer if t.data_location == TensorProto.EXTERNAL)
    from_file = check_target(lazy, "ort-cpu", np.random.default_rng(0), source=net_file, proto_limit=LIMIT)
    assert from_file.ran and from_file.ok
    result = export_triton(net, tmp_path / "repo", TritonOptions("net", max_batch=8), proto_limit=LIMIT)
    assert result.model_path == result.model_dir / "1" / "model.onnx" / "model.onnx"
    assert np.array_equal(_outputs(result.model_path), _outputs(net))
