"""Fixtures for the quantize tests: zoo models exported once per session, seeded inputs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from models.export import export_onnx
from models.zoo import zoo_entries
from onnxprune.load import Model, load



@pytest.fixture(scope="session")
def zoo_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Path, Model]]:
    """``name -> (path, loaded model)`` of a zoo model (dynamic batch, seed 0), cached."""
    cache: dict[str, tuple[Path, Model]] = {}

    def get(name: str) -> tuple[Path, Model]:
        if name not in cache:
            entry = next(e for e in zoo_entries() if e.name == name)
            path = tmp_path_factory.mktemp(name) / f"{name}.onnx"
            export_onnx(entry.build(0), entry.input_shape, path, dynamic_batch=True)
            cache[name] = (path, load(path))
        return cache[name]

    return get
