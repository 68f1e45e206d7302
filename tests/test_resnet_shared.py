"""ResNet-56 / ResNet-20 from the papers' weights (../shared): group structure, exact costs,
and ``prune --ratio 0`` identity. Skipped with a reason when ../shared is absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from models.counts import torch_macs, torch_params
from models.export import export_onnx
from models.resnet_cifar import resnet_cifar
from onnxprune.analyze import analyze
from onnxprune.analyze.cost import model_cost
from onnxprune.cli import main
from onnxprune.load import load
from pruning_utils import run


@pytest.fixture(scope="module")
def resnet56(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    weights = Path(__file__).resolve().parents[2] / "shared" / "weights" / "resnet56_cifar10.npz"
    if not weights.exists():
        pytest.skip(f"needs {weights} (the project's ../shared material), absent on this machine")
    module = resnet_cifar(56, weights=weights)
    path = tmp_path_factory.mktemp("r56") / "resnet56.onnx"
    export_onnx(module, (1, 3, 32, 32), path, exporter="torchscript", dynamic_batch=True)
    return path, module


def test_resnet56_groups(resnet56: tuple[Path, object]) -> None:
    analysis = analyze(load(resnet56[0]))
    prunable = analysis.prunable_groups
    residual = [g for g in prunable if len(g.producers) > 1]
    inner = [g for g in prunable if len(g.producers) == 1]
    assert len(inner) == 27 and all(len(g.consumers) == 1 for g in inner)
    assert [g.size for g in residual] == [16, 32, 64]
    # stem + 9 conv2 (stage 1); pad + 9 conv2 (stages 2 and 3)
    assert [len(g.producers) for g in residual] == [10, 10, 10]
    assert sum(any(p.endswith("Pad") or "Pad" in p for p in g.producers) for g in residual) == 2
    # linked through the option-A pads: stage 2 units 8..23 read stage 1, stage 3 units 16..47 read stage 2
    links = {(k.out_group, k.in_group) for k in analysis.links}
    assert links == {(residual[1].id, residual[0].id), (residual[2].id, residual[1].id)}
    assert sorted(k.out_unit for k in analysis.links if k.out_group == residual[1].id) == list(range(8, 24))
    frozen = [g for g in analysis.groups if g.frozen_reason]
    assert len(frozen) == 1 and "graph output" in frozen[0].frozen_reason


def test_resnet56_costs_match_torch(resnet56: tuple[Path, object]) -> None:
    path, module = resnet56
    cost = model_cost(load(path))
    assert cost.macs == torch_macs(module, (1, 3, 32, 32))
    assert cost.params == torch_params(module)


def test_prune_ratio_zero_is_identity(resnet56: tuple[Path, object], tmp_path: Path) -> None:
    path, _ = resnet56
    out = tmp_path / "same.onnx"
    assert main(["prune", str(path), "--ratio", "0", "-o", str(out)]) == 0
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    original, pruned = onnx.load(str(path)), onnx.load(str(out))
    np.testing.assert_array_equal(run(pruned, {"input": x})[0], run(original, {"input": x})[0])


def test_prune_half_resnet56_cuts_macs_and_size(resnet56: tuple[Path, object], tmp_path: Path) -> None:
    path, _ = resnet56
    out, report = tmp_path / "half.onnx", tmp_path / "report.json"
    assert main(["prune", str(path), "--ratio", "0.5", "--round-to", "8", "-o", str(out), "--json", str(report)]) == 0
    import json

    data = json.loads(report.read_text())
    assert data["after"]["macs"] < 0.3 * data["before"]["macs"]
    assert out.stat().st_size < 0.35 * path.stat().st_size
    assert data["after"]["macs"] == model_cost(load(out)).macs
    pruned = onnx.load(str(out))
    onnx.checker.check_model(pruned, full_check=True)
    widths = {tuple(init.dims)[0] for init in pruned.graph.initializer if len(init.dims) == 4}
    assert widths <= {8, 16, 24, 32}
