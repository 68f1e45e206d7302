"""Fixtures for the deploy tests (models come from ``deploy_models``)."""

from __future__ import annotations

import onnx
import pytest

from deploy_models import TinyNet, export


@pytest.fixture(scope="session")
def original() -> onnx.ModelProto:
    """The user's model: dynamic batch, metadata props, opset 17."""
    model = export(TinyNet(12))
    for key, value in (("author", "tests"), ("labels", "cifar10")):
        model.metadata_props.add(key=key, value=value)
    model.model_version = 3
    return model


@pytest.fixture(scope="session")
def compressed() -> onnx.ModelProto:
    """A 'pruned' model that lost the interface: width 6, static batch 1, renamed I/O, opset 18."""
    return export(TinyNet(6), names=("x", "y"), dynamic=False, opset=18, seed=1)
