"""What a run needs to be reproduced: the Python and package versions it ran with."""

from __future__ import annotations

import logging
import platform
from importlib import metadata

logger = logging.getLogger(__name__)

PACKAGES: tuple[str, ...] = ("onnxprune", "onnx", "onnxruntime", "onnxruntime-gpu", "numpy", "torch",
                             "torch-geometric", "onnxslim", "onnx-graphsurgeon")
"""Distributions whose versions a run records (those installed)."""


def package_versions() -> tuple[tuple[str, str], ...]:
    """``(name, version)`` of Python, the platform and each installed package of :data:`PACKAGES`."""
    rows = [("python", platform.python_version()), ("platform", platform.platform(terse=True))]
    for name in PACKAGES:
        try:
            rows.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            logger.debug("%s is not installed: not recorded", name)
    return tuple(rows)
