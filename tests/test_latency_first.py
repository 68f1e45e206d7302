"""Latency-first compress: the measured-target loop with its refit, int8 after pruning, CLI refusals.

Timing is faked (a deterministic clock: whole-model time = Conv MACs plus a fixed overhead the
per-layer table does not see), so the tests check the logic, never this host's speed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from models.export import export_onnx
from models.resnet_cifar import resnet_cifar
from onnxprune.analyze import cost as analyze_cost
from onnxprune.cli import main
from onnxprune.evaluate import DataSpec, make_preprocess
from onnxprune.evaluate.latency import LatencyRow, Timing
from onnxprune.load import load
from onnxprune.pipeline import compressing, latency_first, latency_fit
from onnxprune.pipeline.latency_first import Int8Settings, compress_latency_first, int8_path
from onnxprune.pipeline.latency_fit import LatencySettings
from onnxprune.pipeline.latency_table import FRACTIONS, grid
from onnxprune.search.latency import LatencyTable, TableEntry, describe

OVERHEAD = 0.5  # fixed ms per run, as a share of the unpruned model's MACs-ms: invisible to the table


@pytest.fixture(scope="module")
def resnet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lf") / "r20.onnx"
    export_onnx(resnet_cifar(20, seed=0), (1, 3, 32, 32), path, dynamic_batch=True)
    return path


def _macs_table(analysis, _runtime=None, *, round_to: int = 1, widths=None, **_: object) -> LatencyTable:  # noqa: ANN001
    """A table whose times are the layers' MACs in millions (bilinear in the widths: exact when interpolated)."""
    entries = {}
    for node in analysis.model.proto.graph.node:
        layer = describe(node, analysis.model.shapes.get)
        if layer is None:
            continue
        extra = widths or {}
        ins = tuple(sorted({*grid(layer.c_in, FRACTIONS, round_to), *extra.get(layer.c_in, ())}))
        outs = tuple(sorted({*grid(layer.c_out, FRACTIONS, round_to), *extra.get(layer.c_out, ())}))
        per = float(np.prod(layer.weight[2:])) * (float(np.prod(layer.spatial)) if layer.spatial else 1.0)
        if layer.op == "Conv" and layer.attrs.get("strides", [1])[0] == 2:
            per /= 4.0
        entries[layer.key] = TableEntry(ins, outs, tuple(tuple(1e-6 * per * ci * co for co in outs) for ci in ins))
    return LatencyTable("fake", entries)


def load_proto(proto: onnx.ModelProto, folder: Path):  # noqa: ANN201 - Model
    path = folder / "probe.onnx"
    onnx.save_model(proto, path)
    return load(path)


def _fake_clock(full_ms: float, folder: Path):  # noqa: ANN202
    calls: list[str] = []

    def fake(runtime, model, baseline, batch, **_):  # noqa: ANN001, ANN202
        model_ms = (analyze_cost.model_cost(load_proto(model, folder) if isinstance(model, onnx.ModelProto)
                                            else load(model)).macs / 1e6) + OVERHEAD * full_ms
        base_ms = full_ms * (1 + OVERHEAD)
        calls.append("probe" if isinstance(model, onnx.ModelProto) else "written")
        timing = [Timing(runs=10, median_ms=ms, p90_ms=ms, mean_ms=ms, min_ms=ms) for ms in (model_ms, base_ms)]
        return LatencyRow(batch=batch, model=timing[0], baseline=timing[1], ratio=model_ms / base_ms)

    return fake, calls


@pytest.fixture
def fake_timing(resnet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    full = analyze_cost.model_cost(load(resnet)).macs / 1e6
    fake, calls = _fake_clock(full, tmp_path)
    monkeypatch.setattr(compressing, "measure_table", _macs_table)
    monkeypatch.setattr(latency_fit, "measure_table", _macs_table)
    monkeypatch.setattr(latency_fit, "time_against", fake)
    monkeypatch.setattr(latency_first, "time_against", fake)
    return calls


def test_a_miss_refits_and_the_second_pass_meets_the_measured_target(resnet: Path, tmp_path: Path,
                                                                     fake_timing: list[str]) -> None:
    """No probes: the first fit is a ratio through the unpruned model, blind to the overhead; pass 2 refits."""
    settings = LatencySettings(probes=(), passes=2, tolerance=0.01)
    report = compress_latency_first(resnet, tmp_path / "out.onnx", target=0.3, metric="latency", latency=settings,
                                    round_to=1)
    passes = report.latency_check["passes"]
    assert len(passes) == 2
    assert passes[0]["measured_removed"] < 0.29 < passes[1]["measured_removed"]  # 20 % measured, then 30 %
    assert passes[0]["predicted_removed"] == pytest.approx(0.3, abs=0.01)
    assert report.latency_check["met"] and report.latency_check["correction"]["offset"] > 0
    assert "does not shrink with the widths" in report.latency_check["why"]
    assert fake_timing == ["probe", "written", "written"]  # the unpruned model alone, then each pass


def test_probes_fit_the_overhead_before_the_search(resnet: Path, tmp_path: Path, fake_timing: list[str]) -> None:
    settings = LatencySettings(passes=2, tolerance=0.01)
    report = compress_latency_first(resnet, tmp_path / "out.onnx", target=0.3, metric="latency", latency=settings,
                                    round_to=1)
    assert len(report.latency_check["passes"]) == 1  # hit on the first pass
    assert report.latency_check["passes"][0]["measured_removed"] == pytest.approx(0.3, abs=0.012)
    corr = report.latency_check["correction"]
    full = report.latency_check["table_ms"][0]
    assert corr["scale"] == pytest.approx(1.0, rel=1e-3) and corr["offset"] == pytest.approx(OVERHEAD * full, rel=1e-2)
    assert fake_timing == ["probe", "probe", "written"]


def test_int8_after_pruning_writes_a_qdq_model(resnet: Path, tmp_path: Path, fake_timing: list[str]) -> None:
    rng = np.random.default_rng(0)
    data = tmp_path / "d.npz"
    np.savez(data, images=rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8), labels=rng.integers(0, 10, 48))
    spec = DataSpec(path=data, preprocess=make_preprocess("cifar"), val_split=32)
    calib = DataSpec(path=data, preprocess=make_preprocess("cifar"), val_split=16, seed=1)
    out = tmp_path / "p.onnx"
    report = compress_latency_first(resnet, out, target=0.3, metric="macs", latency=LatencySettings(),
                                    int8=Int8Settings(calib=calib, val=spec, max_drop=None), data=spec)
    q = report.int8
    written = onnx.load(int8_path(report.output))
    onnx.checker.check_model(written)  # compress wrote onnxprune.* metadata, quantize replaced it: no duplicate keys
    assert q["output"] == str(int8_path(report.output)) and q["int8_layers"] > 10
    assert sum(n.op_type == "QuantizeLinear" for n in written.graph.node) > 10
    assert q["accuracy_int8"] is not None and q["fallen_back"] == []
    assert report.latency_check["passes"][0]["ratio"] < 1.0  # the 30 % MACs cut timed against the input
    assert json.loads(json.dumps(report.to_json()))["int8"]["latency"]["batch"] == 1


@pytest.mark.parametrize("extra, message", [
    (["--max-drop", "0.01"], "--max-drop goes with --quantize-int8"),
    (["--quantize-int8"], "--quantize-int8 needs images"),
    (["--latency-batch", "0"], "--latency-batch 0"),
])
def test_cli_refuses_with_one_line(resnet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   extra: list[str], message: str) -> None:
    code = main(["compress", str(resnet), "-o", str(tmp_path / "o.onnx"), "--target", "0.3", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
