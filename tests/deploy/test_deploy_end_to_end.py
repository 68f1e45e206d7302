"""Pruned by the core, interface restored, simplified, exported to Triton: runs at batch 1, 7, 64."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from deploy_models import TinyNet, export
from onnxprune.analyze import analyze
from onnxprune.deploy import check_interface, check_target, export_triton, restore_interface, simplify
from onnxprune.deploy.runner import random_feeds, run_ort
from onnxprune.deploy.triton import TritonOptions
from onnxprune.io import save_model
from onnxprune.load import load, read
from onnxprune.plan import Plan
from onnxprune.rewrite.prune import prune_model

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                       reason="needs tritonclient[grpc] (the dev extra)")
text_format = pytest.importorskip("google.protobuf.text_format")


def test_pruned_model_keeps_interface_and_serves_dynamic_batches(tmp_path: Path) -> None:
    source = save_model(export(TinyNet(16), opset=13), tmp_path / "user.onnx")
    user = read(source)
    user.metadata_props.add(key="owner", value="team-a")
    analysis = analyze(load(source))
    prunable = analysis.prunable_groups
    assert prunable, "the tiny net has prunable channel groups"
    plan = Plan(keep={g.id: tuple(range(0, g.size, 2)) for g in prunable})
    pruned = prune_model(analysis, plan)
    final = simplify(restore_interface(user, pruned, extra_metadata={"plan": "half", "accuracy": "n/a"}))
    assert check_interface(user, final) == []
    assert sum(t.dims[0] for t in pruned.graph.initializer if len(t.dims) == 4) < \
        sum(t.dims[0] for t in user.graph.initializer if len(t.dims) == 4)

    result = export_triton(final, tmp_path / "repo", TritonOptions(name="tiny_pruned", max_batch=64,
                                                                 dynamic_batching=True))
    config = text_format.Parse(result.config_path.read_text(), model_config_pb2.ModelConfig())
    shipped = onnx.load(str(result.model_path))
    assert list(config.input[0].dims) == [d.dim_value for d in shipped.graph.input[0].type.tensor_type.shape.dim[1:]]
    props = {p.key: p.value for p in shipped.metadata_props}
    assert props["owner"] == "team-a" and props["onnxprune.plan"] == "half"
    rng = np.random.default_rng(0)
    for batch in (1, 7, 64):
        (out,) = run_ort(shipped, random_feeds(shipped, rng, batch=batch)).outputs
        assert out.shape == (batch, 10) and np.isfinite(out).all()
    assert check_target(shipped, "ort-cpu", rng).ok
