"""Atomic output writing: a reader never sees a half-written file.

Contract: every file onnxprune writes goes through these helpers, which write to
a temporary file in the destination folder and ``os.replace`` it into place.
The input model is never opened for writing.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import onnx

from onnxprune.errors import OutputError
from onnxprune.large import PROTOBUF_LIMIT, is_large
from onnxprune.large_write import write_external, write_serialized

__all__ = ["PROTOBUF_LIMIT", "save_model", "write_bytes_atomic", "write_json_atomic"]

logger = logging.getLogger(__name__)



def _tmp_path(path: Path) -> Path:
    parent = path.parent
    if not parent.exists():
        raise OutputError(f"output folder {parent} does not exist: create it or choose another -o path")
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    os.close(fd)
    return Path(name)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the resolved path."""
    target = Path(path).resolve()
    tmp = _tmp_path(target)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> Path:
    """Serialize ``obj`` as indented JSON and write it atomically."""
    return write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def save_model(model: onnx.ModelProto, path: str | os.PathLike[str], *, external_data: bool | None = None,
               proto_limit: int = PROTOBUF_LIMIT) -> Path:
    """Save an ONNX model atomically.

    Args:
        model: The model to save (not modified), with all its data loaded.
        path: Destination ``.onnx`` path.
        external_data: Store tensors of 1 KiB or more in ``<name>.data`` beside the model.
            ``None`` chooses external data only when the model would exceed ``proto_limit``.
        proto_limit: Byte size above which ``external_data=None`` means external data
            (default: protobuf's 2 GiB limit).

    Returns:
        The resolved destination path.
    """
    target = Path(path).resolve()
    if external_data is None:
        external_data = is_large(model, proto_limit)
    if not external_data:  # streamed: no in-memory copy of the encoded model
        tmp = _tmp_path(target)
        try:
            with open(tmp, "wb") as handle:
                write_serialized(model, handle)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return target
    # External data: write both files under temporary names (tensors streamed one at a time, no
    # copy of the model), then move the data file first so the model never points at a missing file.
    data_name = target.name + ".data"
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        with open(tmp_dir / data_name, "wb") as data:
            stripped = write_external(model, data, data_name)
        (tmp_dir / target.name).write_bytes(stripped.SerializeToString())
        os.replace(tmp_dir / data_name, target.parent / data_name)
        os.replace(tmp_dir / target.name, target)
    finally:
        for leftover in tmp_dir.iterdir():
            leftover.unlink()
        tmp_dir.rmdir()
    logger.info("saved %s with external data %s", target, data_name)
    return target
