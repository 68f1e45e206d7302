"""Channel selections (rewrite/select.py): exact, and no Gather unless the channels are scattered."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onnxprune.rewrite.select import MAX_RUNS, emit_select, runs

SIZE = 12


def _select(src: list[int], fill: float = 0.0) -> tuple[onnx.ModelProto, np.ndarray, np.ndarray]:
    """A model ``x (2, SIZE, 3, 3) -> select -> y``, a random input and the expected output."""
    x = gs.Variable("x", dtype=np.float32, shape=(2, SIZE, 3, 3))
    y = gs.Variable("y", dtype=np.float32, shape=(2, len(src), 3, 3))
    graph = gs.Graph(inputs=[x], outputs=[y], opset=13)
    emit_select(graph, x, y, axis=1, rank=4, size=SIZE, src=np.array(src), fill=fill, dtype=np.float32,
                prefix="sel")
    model = gs.export_onnx(graph.cleanup().toposort())
    onnx.checker.check_model(model, full_check=True)
    value = np.random.default_rng(0).standard_normal((2, SIZE, 3, 3)).astype(np.float32)
    padded = np.concatenate([value, np.full((2, 1, 3, 3), fill, np.float32)], axis=1)
    expected = padded[:, [s if s >= 0 else SIZE for s in src]]
    return model, value, expected


def _run(model: onnx.ModelProto, value: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": value})[0]


def test_runs_splits_consecutive_channels_and_their_fills() -> None:
    assert runs(np.array([-1, -1, 3, 4, 5, -1, 9, -1])) == (2, [(3, 6, 1), (9, 10, 1)])
    assert runs(np.array([6, 0, 3, 4])) == (0, [(6, 7, 0), (0, 1, 0), (3, 5, 0)])


@pytest.mark.parametrize(("src", "ops"), [
    (list(range(SIZE)), {"Identity"}),
    ([0, 2, 4, 6], {"Slice"}),
    ([-1, -1, *range(SIZE), -1], {"Pad"}),  # option-A shortcut
    ([-1, -1, 1, 2, 3, 6, 7, -1, 10, 11, -1, -1], {"Slice", "Pad", "Concat"}),  # pruned option-A shortcut
    ([6, 0, 3, 7], {"Slice", "Concat"}),
    ([-1, -1], {"Pad", "Gather"}),  # nothing real: a constant
    (list(range(SIZE - 1, -1, -1)) * 2, {"Gather"}),  # 24 runs, all real: one Gather from x
    ([-1] + list(range(SIZE - 1, -1, -1)) * 2, {"Pad", "Gather"}),  # scattered with a fill: Gather from x padded
])
def test_selections_are_exact_with_the_cheapest_ops(src: list[int], ops: set[str]) -> None:
    model, value, expected = _select(src, fill=0.5)
    np.testing.assert_array_equal(_run(model, value), expected)
    assert {n.op_type for n in model.graph.node} == ops


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(-1, SIZE - 1), min_size=1, max_size=20))
def test_any_selection_is_exact(src: list[int]) -> None:
    model, value, expected = _select(src)
    np.testing.assert_array_equal(_run(model, value), expected)
    _, pieces = runs(np.array(src))
    gathers = sum(n.op_type == "Gather" for n in model.graph.node)
    assert gathers == (1 if not pieces or len(pieces) > MAX_RUNS else 0)
