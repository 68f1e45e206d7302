"""Run a model once in ONNX Runtime on random inputs: the real check behind deploy's claims.

Contract:
    requires: an ``onnx.ModelProto`` below the 2 GiB protobuf limit whose graph inputs have a
    static rank; onnxruntime (or onnxruntime-gpu) installed.
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
from typing import Any

import numpy as np
import onnx
from onnx import helper

from onnxprune.errors import RuntimeUnavailable, UnsupportedInput

logger = logging.getLogger(__name__)

CPU_EP = "CPUExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
TENSORRT_EP = "TensorrtExecutionProvider"


def import_ort() -> Any:
    """Import onnxruntime or raise :class:`RuntimeUnavailable` with the install command."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise RuntimeUnavailable("ONNX Runtime is not installed; run: pip install 'onnxprune[cpu]' "
                                 "(or 'onnxprune[gpu]' for CUDA)") from exc
    return onnxruntime


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are not initializers."""
    inits = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


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
    """Random inputs for every graph input (floats ~ N(0, 1), integers in [0, 2), bools)."""
    feeds: dict[str, np.ndarray] = {}
    for value in graph_inputs(model):
        shape = tuple(shapes[value.name]) if shapes and value.name in shapes else input_shape(value, batch)
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type))
        if dtype.kind == "f":
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[value.name] = rng.random(shape) < 0.5
        elif dtype.kind in "iu":
            feeds[value.name] = rng.integers(0, 2, size=shape).astype(dtype)
        else:
            raise UnsupportedInput(f"input '{value.name}' has type {dtype}, which random test inputs "
                                   "cannot fill; check the model with numeric inputs only")
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


def _profile_providers(path: str) -> dict[str, str]:
    events = json.loads(Path(path).read_text())
    found: dict[str, str] = {}
    for event in events:
        args = event.get("args", {})
        if event.get("cat") == "Node" and "provider" in args:
            found[event["name"].removesuffix("_kernel_time")] = args["provider"]
    return found


def run_ort(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], *, provider: str = CPU_EP,
            profile: bool = False, optimize: bool = True) -> RunResult:
    """Run ``model`` once with ``provider`` (falling back to CPU for nodes it lacks).

    ``optimize=False`` disables ORT's graph optimizations (which would otherwise fuse, e.g.,
    BatchNorm into Conv and hide differences between two graphs being compared).

    Raises:
        RuntimeUnavailable: ONNX Runtime or the provider is not installed.
        onnxruntime's own exceptions when the session cannot be built or run (callers report them).
    """
    ort = import_ort()
    if provider not in ort.get_available_providers():
        raise RuntimeUnavailable(f"{provider} is not available in this ONNX Runtime; install "
                                 "'onnxprune[gpu]' on a machine with CUDA")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    with tempfile.TemporaryDirectory(prefix="onnxprune-profile-") as tmp:
        if profile:
            options.enable_profiling = True
            options.profile_file_prefix = str(Path(tmp) / "profile")
        providers = [provider] if provider == CPU_EP else [provider, CPU_EP]
        session = ort.InferenceSession(model.SerializeToString(), options, providers=providers)
        outputs = session.run(None, dict(feeds))
        node_providers = _profile_providers(session.end_profiling()) if profile else {}
    return RunResult(outputs=tuple(np.asarray(o) for o in outputs),
                     providers=tuple(session.get_providers()), node_providers=node_providers)


def max_abs_diff(a: onnx.ModelProto, b: onnx.ModelProto, rng: np.random.Generator, *, batch: int = 1,
                 optimize: bool = False) -> float:
    """Largest absolute output difference of two models with the same interface on random inputs.

    ORT's graph optimizations are off by default so that each graph is computed as written.
    """
    feeds = random_feeds(a, rng, batch=batch)
    out_a = run_ort(a, feeds, optimize=optimize).outputs
    out_b = run_ort(b, feeds, optimize=optimize).outputs
    if len(out_a) != len(out_b):
        raise UnsupportedInput(f"models have {len(out_a)} and {len(out_b)} outputs; compare models "
                               "with the same interface")
    diffs = [float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))) if x.size else 0.0
             for x, y in zip(out_a, out_b)]
    return max(diffs, default=0.0)
