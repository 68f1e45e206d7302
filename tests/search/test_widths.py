"""Width menu (pure parts), the menu in the search space and Algorithm 1, and the whole-model latency fit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.export import export_onnx
from models.resnet_cifar import resnet_cifar
from onnxprune.analyze import analyze
from onnxprune.analyze.importance import weight_importance
from onnxprune.errors import PlanError
from onnxprune.load import load
from onnxprune.pipeline import width_menu
from onnxprune.search.latency import fit_correction
from onnxprune.search.rescale import rescale
from onnxprune.search.space import SearchSpace
from onnxprune.search.widths import (ClassTiming, WidthMenu, candidate_widths, group_classes, pareto_widths,
                                     snap)


@pytest.fixture(scope="module")
def analysis(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - Analysis
    path = tmp_path_factory.mktemp("widths") / "resnet20.onnx"
    export_onnx(resnet_cifar(20, seed=0), (1, 3, 32, 32), path)
    return analyze(load(path))


def test_candidate_widths_are_multiples_from_the_fewest_and_the_size() -> None:
    assert candidate_widths(64, 13, 8) == (16, 24, 32, 40, 48, 56, 64)
    assert candidate_widths(20, 4, 8) == (8, 16, 20)
    assert candidate_widths(16, 16, 8) == (16,)
    with pytest.raises(PlanError):
        candidate_widths(16, 0, 8)


def test_pareto_drops_widths_no_faster_than_a_larger_one() -> None:
    times = {64: 1.00, 56: 0.995, 48: 0.95, 40: 0.96, 32: 0.90, 24: 0.895}
    assert pareto_widths(times, 0.01) == (32, 48, 64)
    assert pareto_widths(times, 0.0) == (24, 32, 48, 56, 64)
    assert pareto_widths({16: 1.0}) == (16,)
    with pytest.raises(PlanError):
        pareto_widths({})


def test_snap_prefers_the_nearest_and_on_ties_the_larger() -> None:
    assert snap(40, (16, 32, 48, 64)) == 48
    assert snap(37, (16, 32, 48, 64)) == 32
    assert snap(70, (16, 32)) == 32


def test_classes_group_equal_groups(analysis) -> None:  # noqa: ANN001
    ids = tuple(g.id for g in analysis.prunable_groups)
    classes = group_classes(analysis, ids)
    assert sorted(g for c in classes for g in c) == sorted(ids)
    sizes = {g.id: g.size for g in analysis.prunable_groups}
    assert all(len({sizes[g] for g in c}) == 1 for c in classes)
    assert max(len(c) for c in classes) >= 2  # the inner groups of a stage share one class
    assert len(classes) < len(ids)


def _menu(analysis, allowed: dict[int, tuple[int, ...]]) -> WidthMenu:  # noqa: ANN001
    classes = tuple(ClassTiming((g.id,), g.size, {w: 1.0 - 0.01 * (g.size - w) for w in allowed.get(g.size, (g.size,))},
                                allowed.get(g.size, (g.size,))) for g in analysis.prunable_groups)
    return WidthMenu("test", 1, "float32", 8, classes)


def test_space_with_menu_keeps_only_menu_widths_and_meets_the_target(analysis) -> None:  # noqa: ANN001
    space = SearchSpace.build(analysis, weight_importance(analysis), round_to=8)
    allowed = {16: (8, 16), 32: (16, 32), 64: (16, 32, 48, 64)}
    menued = space.with_menu(_menu(analysis, allowed))
    rng = np.random.default_rng(0)
    for _ in range(3):
        fitted = rescale(menued, rng.uniform(0, 0.8, len(menued)), 0.5, metric="macs", quiet=True)
        assert all(k in allowed[s] for k, s in zip(fitted.keeps, menued.sizes))
        assert abs(fitted.error) <= 0.05  # coarser widths: within 5 % where 8s land within 1 %
    plain = rescale(space, [0.3] * len(space), 0.5, metric="macs")
    assert any(k not in allowed[s] for k, s in zip(plain.keeps, space.sizes))  # the menu did change widths
    assert menued.steps(0, 8) == (16,) and menued.min_keep(0) == 8


def test_width_menu_json_round_trip_and_unknown_group(analysis) -> None:  # noqa: ANN001
    menu = _menu(analysis, {64: (32, 64)})
    again = WidthMenu.from_json(json.loads(json.dumps(menu.to_json())))
    assert again == menu
    with pytest.raises(PlanError, match="no group 999"):
        menu.widths(999)
    with pytest.raises(PlanError, match="malformed"):
        WidthMenu.from_json({"device": "x"})


def test_measure_menu_drops_slow_widths_and_caches(analysis, tmp_path: Path,  # noqa: ANN001
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake clock: time = conv output channels, except that a 40-channel conv runs as slow as the unpruned model."""
    calls: list[int] = []

    class Row:
        def __init__(self, ratio: float) -> None:
            self.ratio = ratio

    def outs(session) -> list[int]:  # noqa: ANN001
        return [int(t.dims[0]) for t in session.proto.graph.initializer if len(t.dims) == 4]

    def fake_measure(session, baseline, batch, **_):  # noqa: ANN001, ANN202
        calls.append(batch)
        return Row(1.0 if 40 in outs(session) else sum(outs(session)) / sum(outs(baseline)))

    class FakeSession:
        def __init__(self, proto) -> None:  # noqa: ANN001
            self.proto, self.inputs = proto, ()

    class FakeRuntime:
        threads = 1

        def create(self, proto):  # noqa: ANN001, ANN202
            return FakeSession(proto)

    monkeypatch.setattr(width_menu, "measure", fake_measure)
    monkeypatch.setattr(width_menu, "device_label", lambda runtime, batch=1: "fake")
    space = SearchSpace.build(analysis, weight_importance(analysis), round_to=8)
    cache = tmp_path / "m.widths.json"
    menu = width_menu.measure_menu(analysis, space, FakeRuntime(), batch=4, cache=cache)  # type: ignore[arg-type]
    inner = [c for c in menu.classes if c.size == 64 and len(c.groups) > 1][0]
    assert 40 in inner.times and 40 not in inner.menu and 48 in inner.menu and 64 in inner.menu
    assert set(calls) == {4}
    count = len(calls)
    again = width_menu.measure_menu(analysis, space, FakeRuntime(), batch=4, cache=cache)  # type: ignore[arg-type]
    assert again == menu and len(calls) == count  # read from the cache
    width_menu.measure_menu(analysis, space, FakeRuntime(), batch=8, cache=cache)  # type: ignore[arg-type]
    assert len(calls) > count  # another batch is timed again


def test_fit_correction_recovers_scale_and_offset() -> None:
    points = [(t, 1.5 * t + 0.4) for t in (1.0, 0.6, 0.3)]
    corr = fit_correction(points)
    assert corr.scale == pytest.approx(1.5) and corr.offset == pytest.approx(0.4)
    assert corr(2.0) == pytest.approx(3.4)
    single = fit_correction([(2.0, 3.0)])
    assert single.scale == pytest.approx(1.5) and single.offset == 0.0
    negative = fit_correction([(1.0, 1.0), (0.5, 0.2)])  # offset would be -0.6: a ratio instead
    assert negative.offset == 0.0 and negative.scale == pytest.approx(1.2 / 1.5)
    with pytest.raises(PlanError):
        fit_correction([])
