"""Latency metric: measured per-layer table, its interpolation, and Algorithm 1 on predicted latency."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from models.export import export_onnx
from models.resnet_cifar import resnet_cifar
from onnxprune.analyze import analyze
from onnxprune.analyze.importance import weight_importance
from onnxprune import pipeline
from onnxprune.errors import PlanError
from onnxprune.evaluate import DataSpec, Runtime, make_preprocess
from onnxprune.load import load
from onnxprune.pipeline import compressing
from onnxprune.pipeline.latency_table import FRACTIONS, grid, measure_table, single_node
from onnxprune.search.env import CompressionEnv
from onnxprune.search.latency import LatencyModel, LatencyTable, TableEntry, describe
from onnxprune.search.rescale import rescale
from onnxprune.search.reward import r_latency
from onnxprune.search.space import SearchSpace


@pytest.fixture(scope="module")
def analysis(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - Analysis
    path = tmp_path_factory.mktemp("lat") / "resnet20.onnx"
    export_onnx(resnet_cifar(20, seed=0), (1, 3, 32, 32), path)
    return analyze(load(path))


def _synthetic_table(analysis) -> LatencyTable:  # noqa: ANN001
    """Time = MACs at the width pair, plus a 30 % penalty on odd output widths (a 'slow' width)."""
    entries = {}
    for node in analysis.model.proto.graph.node:
        layer = describe(node, analysis.model.shapes.get)
        if layer is None:
            continue
        ins, outs = grid(layer.c_in, FRACTIONS, 1), grid(layer.c_out, FRACTIONS, 1)
        hw = float(np.prod(layer.spatial)) if layer.spatial else 1.0
        entries[layer.key] = TableEntry(ins, outs, tuple(tuple(1e-6 * ci * co * hw * (1.3 if co % 2 else 1.0)
                                                               for co in outs) for ci in ins))
    return LatencyTable("synthetic", entries)


def test_grid_widths() -> None:
    assert grid(16, FRACTIONS, 1) == (3, 6, 10, 13, 16)
    assert grid(16, FRACTIONS, 4) == (4, 8, 12, 16)
    assert grid(3, FRACTIONS, 8) == (1, 2, 3)


def test_entry_interpolates_bilinearly_and_clamps() -> None:
    entry = TableEntry((10, 20), (1, 3), ((1.0, 3.0), (5.0, 7.0)))
    assert entry.at(15, 2) == pytest.approx(4.0)
    assert entry.at(10, 3) == pytest.approx(3.0)
    assert entry.at(0, 0) == pytest.approx(1.0) and entry.at(30, 5) == pytest.approx(7.0)
    tied = TableEntry((0,), (4, 8), ((2.0, 6.0),))
    assert tied.at(123, 6) == pytest.approx(4.0)
    assert TableEntry.from_json(json.loads(json.dumps(entry.to_json()))) == entry


def test_single_node_models_have_the_pruned_widths(analysis) -> None:  # noqa: ANN001
    node = next(n for n in analysis.model.proto.graph.node if n.op_type == "Conv" and describe(
        n, analysis.model.shapes.get).c_in == 16)
    layer = describe(node, analysis.model.shapes.get)
    model = single_node(layer, 6, 10, np.random.default_rng(0))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out = session.run(None, {"x": np.zeros((1, 6, *layer.spatial), np.float32)})[0]
    assert out.shape[:2] == (1, 10) and out.shape[2:] == tuple(analysis.model.shapes[node.output[0]][2:])


def test_measured_table_is_cached_and_predicts_the_sum(analysis, tmp_path: Path) -> None:  # noqa: ANN001
    cache = tmp_path / "m.latency.json"
    runtime = Runtime(device="cpu", threads=1)
    table = measure_table(analysis, runtime, cache=cache, fractions=(0.5, 1.0), repeats=3)
    assert len(table.entries) == 7  # ResNet-20: stem, 3 x (plain, strided) 3x3 convs minus one, the Gemm
    assert all(v > 0 for e in table.entries.values() for row in e.ms for v in row)
    stamp = cache.stat().st_mtime_ns
    again = measure_table(analysis, runtime, cache=cache, fractions=(0.5, 1.0), repeats=3)
    assert again == table and cache.stat().st_mtime_ns == stamp  # nothing measured twice
    eights = measure_table(analysis, runtime, cache=cache, fractions=(0.5, 1.0), repeats=3, round_to=8)
    changed = [k for k in table.entries if eights.entries[k] != table.entries[k]]
    assert len(changed) == 1 and eights.entries[changed[0]].widths_out == (8, 10)  # only the Gemm's (5, 10) moved
    assert cache.stat().st_mtime_ns != stamp  # the other grid was timed and cached, not the old one reused
    model = LatencyModel(analysis, table)
    full = sum(table.entries[layer.key].at(layer.c_in, layer.c_out) for _, layer in model.nodes)
    assert model.predict(analysis.model.shapes.get) == pytest.approx(full)
    assert len(model.nodes) == 20


@pytest.mark.parametrize("target", [0.3, 0.5])
def test_rescale_hits_a_latency_target(analysis, target: float) -> None:  # noqa: ANN001
    space = SearchSpace.build(analysis, weight_importance(analysis),
                              latency=LatencyModel(analysis, _synthetic_table(analysis)))
    base = space.measure(space.sizes, "latency")
    for seed in range(4):
        fitted = rescale(space, np.random.default_rng(seed).uniform(0.0, 0.8, len(space)), target, metric="latency")
        assert fitted.value == pytest.approx(space.measure(fitted.keeps, "latency"))
        assert abs(fitted.value / ((1 - target) * base) - 1) <= 0.01
    uniform = space.keeps([0.5] * len(space))
    assert space.measure(uniform, "latency") < base
    assert space.measure(uniform, "macs") < space.measure(space.sizes, "macs")


def test_compress_to_a_latency_target(analysis, tmp_path: Path) -> None:  # noqa: ANN001
    rng = np.random.default_rng(0)
    npz = tmp_path / "tiny.npz"
    np.savez(npz, images=rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8), labels=rng.integers(0, 10, 16))
    source = tmp_path / "r20.onnx"
    export_onnx(resnet_cifar(20, seed=0), (1, 3, 32, 32), source)
    report = pipeline.compress_file(source, tmp_path / "out.onnx", target=0.4, metric="latency", agent="random",
                                    episodes=2, seed=0, data=DataSpec(path=npz, preprocess=make_preprocess("cifar")),
                                    runtime=Runtime(device="cpu", threads=1), latency_threads=1)
    assert report.latency_ms is not None
    assert abs(report.latency_ms[1] / (0.6 * report.latency_ms[0]) - 1) <= 0.01  # within 1 % of the goal
    assert report.after.macs < report.before.macs
    assert (tmp_path / "out.onnx.latency.json").exists()
    session = ort.InferenceSession(str(report.output), providers=["CPUExecutionProvider"])
    assert session.run(None, {session.get_inputs()[0].name: np.zeros((1, 3, 32, 32), np.float32)})[0].shape == (1, 10)


def _offset_table(analysis, round_to: int, offset: float) -> LatencyTable:  # noqa: ANN001
    """Time = ``offset`` ms per layer + MACs at the width pair, on the ``round_to`` width grid."""
    entries = {}
    for node in analysis.model.proto.graph.node:
        layer = describe(node, analysis.model.shapes.get)
        if layer is None:
            continue
        ins, outs = grid(layer.c_in, FRACTIONS, round_to), grid(layer.c_out, FRACTIONS, round_to)
        hw = float(np.prod(layer.spatial)) if layer.spatial else 1.0
        entries[layer.key] = TableEntry(ins, outs, tuple(tuple(offset + 1e-6 * ci * co * hw for co in outs)
                                                         for ci in ins))
    return LatencyTable("synthetic", entries)


def test_latency_target_out_of_reach_of_8s_uses_free_widths(analysis, tmp_path: Path,  # noqa: ANN001
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """A table whose per-layer overhead caps what 8s can remove (as 15 threads did on a 16-core GPU machine)."""
    offset, importance = 0.2, weight_importance(analysis)

    def removable(round_to: int) -> float:
        space = SearchSpace.build(analysis, importance, round_to=round_to,
                                  latency=LatencyModel(analysis, _offset_table(analysis, round_to, offset)))
        return 1 - space.measure(space.keeps([space.max_ratio] * len(space)), "latency") / space.measure(
            space.sizes, "latency")

    eights, free = removable(8), removable(1)
    assert free - eights > 0.03  # 0.496 / 0.539
    target = (eights + free) / 2
    timed: list[int] = []

    def fake_table(analysis, runtime, *, round_to: int, cache: Path, **_: object) -> LatencyTable:  # noqa: ANN001
        timed.append(round_to)
        return _offset_table(analysis, round_to, offset)

    monkeypatch.setattr(compressing, "measure_table", fake_table)
    source = tmp_path / "r20.onnx"
    export_onnx(resnet_cifar(20, seed=0), (1, 3, 32, 32), source)
    with caplog.at_level(logging.WARNING, logger="onnxprune.pipeline.compressing"):
        report = pipeline.compress_file(source, tmp_path / "out.onnx", target=target, metric="latency")
    assert timed == [8, 1]  # MACs allowed 8s; the table did not, so it was timed again on the free grid
    assert report.round_to == 1 and "using free channel counts (--round-to 1)" in caplog.text
    assert report.latency_ms is not None
    assert abs(report.latency_ms[1] / ((1 - target) * report.latency_ms[0]) - 1) <= 0.01
    with pytest.raises(PlanError, match="cannot be reached"):  # the user's --round-to 8 stands: refused
        pipeline.compress_file(source, tmp_path / "forced.onnx", target=target, metric="latency", round_to=8)
    assert timed == [8, 1, 8]


def test_latency_aware_reward(analysis) -> None:  # noqa: ANN001
    assert r_latency(0.25, 10, 10, 2.0) == pytest.approx(-0.25 * math.log(2000.0))
    with pytest.raises(PlanError, match="latency table"):
        r_latency(0.25, 10, 10, None)
    space = SearchSpace.build(analysis, weight_importance(analysis),
                              latency=LatencyModel(analysis, _synthetic_table(analysis)))
    env = CompressionEnv(space, target=0.5, metric="macs", apply=lambda plan: plan, score=lambda _: 0.75,
                         reward=r_latency)
    rng = np.random.default_rng(0)
    episodes = [env.evaluate(rng.uniform(0.0, 0.8, len(space))) for _ in range(3)]
    for e in episodes:  # same MACs target, the reward ranks by table latency
        assert e.latency == pytest.approx(space.measure(e.keeps, "latency"))
        assert e.reward == pytest.approx(-0.25 * math.log(1000.0 * e.latency))
    assert len({round(e.latency, 9) for e in episodes}) == 3
    assert type(episodes[0]).from_json(episodes[0].to_json()).latency == episodes[0].latency
