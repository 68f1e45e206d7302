"""Cost figures of a model file that need no inference: bytes on disk, plus the analyzed counts.

MACs, params and BOPs are computed by ``onnxprune.analyze.cost`` and joined here by
``onnxprune.pipeline.model_cost``; this module only owns the report type and the on-disk size.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import onnx

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CostReport:
    """What a model costs to store and run (batch 1).

    Attributes:
        bytes_on_disk: Size of the ``.onnx`` file plus its external data files.
        macs: Multiply-accumulates at batch 1 (``None`` when not analyzed).
        params: Parameter count (``None`` when not analyzed).
        bops: Bit operations, MACs x weight bits x activation bits per layer (``None`` when not analyzed).
    """

    bytes_on_disk: int
    macs: int | None = None
    params: int | None = None
    bops: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)


def disk_bytes(path: str | os.PathLike[str]) -> int:
    """Return the size of an ONNX file plus every external data file it references."""
    file = Path(path)
    total = file.stat().st_size
    model = onnx.load_model(str(file), load_external_data=False)
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    locations = {entry.value for tensor in _get_all_tensors(model) if uses_external_data(tensor)
                 for entry in tensor.external_data if entry.key == "location"}
    for location in sorted(locations):
        data = file.parent / location
        if data.is_file():
            total += data.stat().st_size
    return total
