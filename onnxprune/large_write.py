"""Writing models of any size without an encoded copy in memory (used by :func:`onnxprune.io.save_model`).

Contract:
    requires: a model with all its tensor data loaded.
    guarantees: :func:`write_serialized` writes bytes that parse to a message equal to the model
    (a single file, valid below protobuf's 2 GiB limit); :func:`write_external` writes the
    tensors of at least ``min_bytes`` to one data file at page-aligned offsets and returns the
    model that points at them. Neither holds more than one tensor's data beyond the model.
"""

from __future__ import annotations

import logging
from typing import BinaryIO

import onnx
from google.protobuf.message import Message
from onnx import TensorProto, numpy_helper

from onnxprune.large import DETACH_MIN_BYTES, copy_fields, detach, external_skeleton, stub_tensor, tensor_nbytes

logger = logging.getLogger(__name__)

#: Offsets of tensors in an external data file are multiples of this (page size: ORT can map them).
DATA_ALIGNMENT = 4096


def tensor_bytes(tensor: TensorProto) -> bytes:
    """A tensor's data as ONNX stores it in ``raw_data`` (little-endian), loaded tensors only."""
    if tensor.HasField("raw_data"):
        return tensor.raw_data
    return numpy_helper.from_array(numpy_helper.to_array(tensor)).raw_data


def write_external(model: onnx.ModelProto, data: BinaryIO, location: str,
                   min_bytes: int = DETACH_MIN_BYTES) -> onnx.ModelProto:
    """Stream ``model``'s large tensors into ``data`` and return the model that points at them.

    Args:
        model: A model with all its data loaded (not modified).
        data: A binary file open for writing, at offset 0.
        location: The data file's name as the returned model records it (relative to the model).
        min_bytes: Tensors of at least this size go to ``data``.

    Returns:
        The model to serialize beside ``data`` (below 2 GiB unless its small tensors are not).
    """
    detached = detach(model, min_bytes)
    stubs: dict[str, TensorProto] = {}
    offset = 0
    for name, tensor in detached.weights.items():
        payload = tensor_bytes(tensor)
        pad = -offset % DATA_ALIGNMENT
        data.write(b"\0" * pad)
        offset += pad
        data.write(payload)
        stubs[name] = stub_tensor(name, tensor, location, offset, len(payload))
        offset += len(payload)
    return external_skeleton(detached, stubs)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _key(message: type[Message], field: str) -> bytes:
    """The wire key of a length-delimited ``field`` of ``message``."""
    return _varint(message.DESCRIPTOR.fields_by_name[field].number << 3 | 2)


def _tensor_pieces(tensor: TensorProto, min_bytes: int) -> tuple[int, list[bytes | TensorProto]]:
    """Encoded length of ``tensor`` and its encoding in pieces (large ``raw_data`` left in the tensor)."""
    if not tensor.HasField("raw_data") or tensor_nbytes(tensor) < min_bytes:
        encoded = tensor.SerializeToString()
        return len(encoded), [encoded]
    head = TensorProto()
    copy_fields(tensor, head, frozenset({"raw_data"}))
    prefix = head.SerializeToString() + _key(TensorProto, "raw_data") + _varint(tensor_nbytes(tensor))
    return len(prefix) + tensor_nbytes(tensor), [prefix, tensor]


def write_serialized(model: onnx.ModelProto, handle: BinaryIO, min_bytes: int = DETACH_MIN_BYTES) -> None:
    """Write ``model``'s protobuf encoding to ``handle`` without building it in memory.

    ``SerializeToString`` of a 1 GB model holds ~2.5 GB at its peak; here each large tensor's
    data is written straight from the model (one transient copy of one tensor). The bytes
    parse to a message equal to ``model`` (field order may differ from ``SerializeToString``).
    """
    head, rest = onnx.ModelProto(), onnx.GraphProto()
    copy_fields(model, head, frozenset({"graph"}))
    copy_fields(model.graph, rest, frozenset({"initializer"}))
    inits = [_tensor_pieces(tensor, min_bytes) for tensor in model.graph.initializer]  # in order
    key = _key(onnx.GraphProto, "initializer")
    encoded_rest = rest.SerializeToString()
    graph_len = len(encoded_rest) + sum(len(key) + len(_varint(size)) + size for size, _ in inits)
    handle.write(head.SerializeToString())
    if model.HasField("graph"):
        handle.write(_key(onnx.ModelProto, "graph") + _varint(graph_len) + encoded_rest)
    for size, pieces in inits:
        handle.write(key + _varint(size))
        for piece in pieces:
            handle.write(piece.raw_data if isinstance(piece, TensorProto) else piece)
