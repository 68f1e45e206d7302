"""Fixtures shared by the search tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def tiny_cifar(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], Path]:
    """A maker of small random CIFAR-shaped ``.npz`` files (uint8 NHWC images, int64 labels, seed 0)."""

    def make(count: int) -> Path:
        rng = np.random.default_rng(0)
        path = tmp_path_factory.mktemp("data") / "tiny.npz"
        np.savez(path, images=rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8),
                 labels=rng.integers(0, 10, count, dtype=np.int64))
        return path

    return make
