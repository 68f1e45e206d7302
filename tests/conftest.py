"""Shared test fixtures: paths to ../shared (skip with a reason when absent), tmp models."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `models` (the test zoo) is imported from the repo root


def shared_path(*parts: str) -> Path:
    """Return a path under ../shared or skip the test with a clear reason."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the project's ../shared material), absent on this machine")
    return path


@pytest.fixture
def cifar_test() -> Path:
    return shared_path("data", "cifar10", "test.npz")


@pytest.fixture
def cifar_train() -> Path:
    return shared_path("data", "cifar10", "train.npz")


@pytest.fixture
def resnet20_weights() -> Path:
    return shared_path("weights", "resnet20_cifar10.npz")


@pytest.fixture
def resnet56_weights() -> Path:
    return shared_path("weights", "resnet56_cifar10.npz")
