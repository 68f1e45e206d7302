"""Feature capture with ONNX Runtime: intermediate tensors of a model on calibration data.

Contract:
    requires: a model whose graph inputs are fed by ``feeds`` (input name -> array with the
    calibration samples on axis 0) and names of tensors the model computes.
    guarantees: the model passed in is never modified (tensors are exposed as extra graph
    outputs of a copy); results are computed batch by batch, so memory stays bounded by what
    the caller keeps (per-channel means, or rows at sampled positions).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper

from onnxprune.evaluate.runtime import import_ort
from onnxprune.large import PROTOBUF_LIMIT, ort_session

logger = logging.getLogger(__name__)

Progress = Callable[[int], None]


def tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor the model declares (inputs, outputs, value_info, initializers)."""
    graph = model.graph
    types = {t.name: t.data_type for t in graph.initializer}
    for vi in (*graph.input, *graph.output, *graph.value_info):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    return types


def with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """Return a copy of ``model`` whose graph outputs are ``names`` (nothing else)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    types = tensor_types(model)
    del copy.graph.output[:]
    copy.graph.output.extend(helper.make_tensor_value_info(n, types.get(n, onnx.TensorProto.FLOAT), None)
                             for n in names)
    return copy


def make_session(model: onnx.ModelProto, threads: int, *, proto_limit: int = PROTOBUF_LIMIT) -> Any:
    """An ONNX Runtime CPU session for an in-memory model of any size (see :func:`onnxprune.large.ort_session`)."""
    ort = import_ort()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # no busy-waiting between ops: on a shared (loaded) machine spinning threads burn CPU that
    # the other thread and process need (measured: -37 % CPU, -15 % wall on ResNet-56 at load 8)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort_session(ort, model, options, ["CPUExecutionProvider"], proto_limit=proto_limit)


def run_batches(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], outputs: Sequence[str], *,
                batch_size: int, threads: int, on_batch: Progress | None = None
                ) -> Iterator[tuple[int, list[np.ndarray]]]:
    """Yield ``(first sample index, [output arrays])`` for consecutive batches of ``feeds``.

    Args:
        model: The model (not modified); ``outputs`` become its only graph outputs.
        feeds: Graph input name -> array (samples on axis 0).
        outputs: Tensor names to return.
        batch_size: Samples per run.
        threads: ONNX Runtime intra-op threads.
        on_batch: Called with the number of samples after each batch.
    """
    session = make_session(with_outputs(model, outputs), threads)
    count = len(next(iter(feeds.values())))
    for start in range(0, count, batch_size):
        part = {k: v[start:start + batch_size] for k, v in feeds.items()}
        yield start, session.run(list(outputs), part)
        if on_batch is not None:
            on_batch(len(next(iter(part.values()))))


def channel_means(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], axes: Mapping[str, int], *,
                  batch_size: int = 100, threads: int = 2, on_batch: Progress | None = None
                  ) -> dict[str, np.ndarray]:
    """Mean ``|x|`` of each position of ``axes[t]`` for every tensor ``t`` (over all other axes).

    Args:
        model: The model to run (not modified).
        feeds: Calibration inputs.
        axes: Tensor name -> channel axis.
        batch_size: Samples per run.
        threads: ONNX Runtime threads.
        on_batch: Progress callback.
    """
    names = list(axes)
    sums: dict[str, np.ndarray] = {}
    counts = dict.fromkeys(names, 0)
    for _, values in run_batches(model, feeds, names, batch_size=batch_size, threads=threads, on_batch=on_batch):
        for name, value in zip(names, values):
            moved = np.moveaxis(np.abs(value.astype(np.float64)), axes[name], 0).reshape(value.shape[axes[name]], -1)
            sums[name] = sums.get(name, 0.0) + moved.sum(axis=1)
            counts[name] += moved.shape[1]
    return {n: sums[n] / max(counts[n], 1) for n in names}


@dataclass(frozen=True)
class Samples:
    """Rows of one tensor at sampled positions.

    Attributes:
        image: Sample index of each row.
        where: Position of each row in the flattened non-channel, non-batch dims.
        values: ``(rows, channels)`` values of the tensor there (float32).
    """

    image: np.ndarray
    where: np.ndarray
    values: np.ndarray


def rows_at(value: np.ndarray, channel_axis: int, image: np.ndarray, where: np.ndarray) -> np.ndarray:
    """``(rows, channels)`` of ``value`` (batch first) at ``image`` / flattened position ``where``."""
    moved = np.moveaxis(value, channel_axis, -1)
    flat = moved.reshape(moved.shape[0], -1, moved.shape[-1])
    return flat[image, where]


def sample_positions(shape: Sequence[int], channel_axis: int, per_image: int, start: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``per_image`` positions (without replacement when possible) for each sample of a batch.

    Args:
        shape: The tensor's shape, batch first.
        channel_axis: Its channel axis (excluded from positions).
        per_image: Positions per sample.
        start: Global index of the batch's first sample.
        rng: Source of randomness.

    Returns:
        ``(image, where)``: global sample indices and flattened positions, one per row.
    """
    spatial = int(np.prod([d for i, d in enumerate(shape) if i not in (0, channel_axis % len(shape))]))
    take = min(per_image, spatial)
    batch = int(shape[0])
    if take < spatial:
        where = np.argpartition(rng.random((batch, spatial)), take - 1, axis=1)[:, :take]
    else:
        where = np.tile(np.arange(spatial), (batch, 1))
    image = np.repeat(np.arange(start, start + batch), take)
    return image, where.reshape(-1)
