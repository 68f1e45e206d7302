"""tools/bench_gpu.py builds two different pruned models: free channel counts and multiples of 8.

Since compress rounds to multiples of 8 by default, the 'free widths' model must ask for
``--round-to 1``; otherwise the GPU check times the same model twice (seen in GPU check 5).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from tool_loader import load_tool

pytestmark = pytest.mark.slow


def _conv_widths(path: Path) -> list[int]:
    """Output channels of every Conv weight (4-D initializers) of the model at ``path``."""
    return [int(t.dims[0]) for t in onnx.load(str(path)).graph.initializer if len(t.dims) == 4]


def test_build_writes_free_width_and_multiple_of_8_models(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    tool = load_tool("bench_gpu")
    monkeypatch.setattr(tool, "SHARED", tmp_path / "no_shared")  # random weights, data-free compress
    work = tmp_path / "work"
    work.mkdir()
    tool.build(work, 4)
    original, free, eights = (_conv_widths(work / name) for name in tool.MODELS)
    assert len(original) == len(free) == len(eights) == 55  # ResNet-56: stem + 27 blocks x 2 (identity shortcuts)
    assert sum(free) < sum(original) and sum(eights) < sum(original)
    assert any(w % 8 for w in free)  # free widths: the finest counts (16 -> 11/12 at 50 % MACs)
    assert all(w % 8 == 0 for w in eights)
    assert free != eights
    with np.load(work / "test.npz", allow_pickle=False) as npz:
        assert npz["images"].shape == (4, 32, 32, 3) and npz["labels"].shape == (4,)
