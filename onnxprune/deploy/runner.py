"""Run a model once in ONNX Runtime on random inputs: the real check behind deploy's claims.

Sessions come from :class:`onnxprune.evaluate.Runtime` and random inputs from
:func:`onnxprune.evaluate.latency.random_feeds` (the evaluate stage's session and input code);
this module only adapts them to in-memory models and graph declarations.

Contract:
    requires: an ``onnx.ModelProto`` of any size (or, for :func:`run_ort`, its file) whose graph
    inputs have a static rank; onnxruntime (or onnxruntime-gpu) installed.
    guarantees: inputs are drawn from the caller's ``np.random.Generator`` (same generator state,
    same feeds); symbolic dims are set to ``batch`` (first axis) or 1; nothing is written to disk
    except ORT's profile, inside a temporary folder that is removed.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from onnxprune.errors import UnsupportedInput
from onnxprune.evaluate.latency import random_feeds as spec_feeds
from onnxprune.evaluate.runtime import (CPU_EP, CUDA_EP, TENSORRT_EP, Device, ModelSource, Runtime, TensorSpec,
                                        import_ort)
from onnxprune.large import PROTOBUF_LIMIT

logger = logging.getLogger(__name__)

__all__ = ["CPU_EP", "CUDA_EP", "TENSORRT_EP", "ModelSource", "RunResult", "graph_inputs", "import_ort", "input_shape",
           "max_abs_diff", "output_diff", "random_feeds", "run_ort"]

_DEVICES: Mapping[str, Device] = {CPU_EP: "cpu", CUDA_EP: "cuda", TENSORRT_EP: "tensorrt"}


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are not initializers."""
    inits = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def list_initializers_as_inputs(model: onnx.ModelProto) -> None:
    """Below IR version 4 every initializer must also be a graph input: add the missing ones (in place).

    Old exporters wrote models that way (IR 3, opsets up to 8); the load stage drops those inputs
    and raises the IR version to 4, so a model going back to such an IR version needs them again.
    """
    if model.ir_version >= 4:
        return
    listed = {value.name for value in model.graph.input}
    model.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                             for t in model.graph.initializer if t.name not in listed)


def input_shape(value: onnx.ValueInfoProto, batch: int) -> tuple[int, ...]:
    """Concrete shape for ``value``: symbolic first dim -> ``batch``, other symbolic dims -> 1."""
    ttype = value.type.tensor_type
    if not ttype.HasField("shape"):
        raise UnsupportedInput(f"input '{value.name}' has no static rank; re-export the model with "
                               "input shapes (e.g. torch.onnx.export with a sample input)")
    dims = []
    for axis, dim in enumerate(ttype.shape.dim):
        dims.append(dim.dim_value if dim.HasField("dim_value") else batch if axis == 0 else 1)
    return tuple(dims)


def random_feeds(model: onnx.ModelProto, rng: np.random.Generator, *, batch: int = 1,
                 shapes: Mapping[str, Sequence[int]] | None = None) -> dict[str, np.ndarray]:
    """Random inputs for every graph input (floats ~ N(0, 1), integers in [0, 2), False bools)."""
    feeds: dict[str, np.ndarray] = {}
    for value in graph_inputs(model):
        shape = tuple(shapes[value.name]) if shapes and value.name in shapes else input_shape(value, batch)
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type))
        spec = TensorSpec(value.name, shape, dtype)
        feeds.update(spec_feeds([spec], shape[0] if shape else batch, rng))
    return feeds


@dataclass(frozen=True)
class RunResult:
    """One ORT run.

    Attributes:
        outputs: Output arrays in graph output order.
        providers: The providers of the session, in priority order.
        node_providers: Node name -> provider that ran it (only when profiled).
    """

    outputs: tuple[np.ndarray, ...]
    providers: tuple[str, ...]
    node_providers: Mapping[str, str]


def _profile_providers(path: Path) -> dict[str, str]:
    events = json.loads(path.read_text())
    found: dict[str, str] = {}
    for event in events:
        args = event.get("args", {})
        if event.get("cat") == "Node" and "provider" in args:
            found[event["name"].removesuffix("_kernel_time")] = args["provider"]
    return found


def run_ort(model: ModelSource, feeds: Mapping[str, np.ndarray], *, provider: str = CPU_EP,
            profile: bool = False, optimize: bool = True, proto_limit: int = PROTOBUF_LIMIT) -> RunResult:
    """Run ``model`` (in memory, any size, or a file) once with ``provider`` (CPU for nodes it lacks).

    ``optimize=False`` disables ORT's graph optimizations (which would otherwise fuse, e.g.,
    BatchNorm into Conv and hide differences between two graphs being compared). In-memory
    models above ``proto_limit`` reach ORT in parts (:func:`onnxprune.large.ort_session`).

    Raises:
        RuntimeUnavailable: ONNX Runtime or the provider is not installed.
        InvalidModel: ONNX Runtime cannot load the model.
        DataError: ONNX Runtime rejects the inputs or fails while running.
    """
    if provider not in _DEVICES:
        raise UnsupportedInput(f"unknown provider {provider!r}; use one of {', '.join(_DEVICES)}")
    runtime = Runtime(_DEVICES[provider], optimize=optimize, proto_limit=proto_limit)
    with tempfile.TemporaryDirectory(prefix="onnxprune-profile-") as tmp:
        session = runtime.create(model, profile_prefix=str(Path(tmp) / "profile") if profile else None)
        outputs = session.run_raw(feeds)
        node_providers = _profile_providers(Path(session.inner.end_profiling())) if profile else {}
    return RunResult(outputs=tuple(np.asarray(o) for o in outputs),
                     providers=tuple(session.inner.get_providers()), node_providers=node_providers)


def output_diff(a: onnx.ModelProto, b: onnx.ModelProto, rng: np.random.Generator, *, batch: int = 1,
                optimize: bool = False, proto_limit: int = PROTOBUF_LIMIT) -> tuple[float, float]:
    """Largest absolute output difference of two models with the same interface on random inputs,
    and the largest absolute output value of ``a`` (the scale to judge the difference by).

    ORT's graph optimizations are off by default so that each graph is computed as written.
    """
    feeds = random_feeds(a, rng, batch=batch)
    out_a = run_ort(a, feeds, optimize=optimize, proto_limit=proto_limit).outputs
    out_b = run_ort(b, feeds, optimize=optimize, proto_limit=proto_limit).outputs
    if len(out_a) != len(out_b):
        raise UnsupportedInput(f"models have {len(out_a)} and {len(out_b)} outputs; compare models "
                               "with the same interface")
    wide = [(x.astype(np.float64), y.astype(np.float64)) for x, y in zip(out_a, out_b) if x.size]
    diff = max((float(np.max(np.abs(x - y))) for x, y in wide), default=0.0)
    scale = max((float(np.max(np.abs(x))) for x, _ in wide), default=0.0)
    return diff, scale


def max_abs_diff(a: onnx.ModelProto, b: onnx.ModelProto, rng: np.random.Generator, *, batch: int = 1,
                 optimize: bool = False) -> float:
    """Largest absolute output difference of two models with the same interface on random inputs."""
    return output_diff(a, b, rng, batch=batch, optimize=optimize)[0]
