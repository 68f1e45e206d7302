"""ONNX Runtime sessions: provider choice, thread count, batching, and the per-run record.

Contract:
    requires: a model as a path, serialized bytes or an ``onnx.ModelProto`` of any size (above
    the 2 GiB protobuf limit its tensors reach ORT as arrays, see :func:`onnxprune.large.ort_session`);
    onnxruntime (or onnxruntime-gpu) installed.
    guarantees: ``Runtime.session`` returns the same :class:`Session` for the same model
    content, so a model is compiled once per ``Runtime``; ``Session.run`` accepts any batch
    size, also when the model's batch dim is fixed (it is fed in chunks of that size and the
    last chunk is padded, then trimmed); :class:`RunInfo` states the provider that actually
    ran, the ORT version, the CPU model and the thread count.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx

from onnxprune.errors import DataError, InvalidModel, RuntimeUnavailable
from onnxprune.large import PROTOBUF_LIMIT, content_hash, ort_session

logger = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda", "tensorrt"]
ConvSearch = Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"]
CONV_SEARCHES: tuple[str, ...] = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")
ModelSource = str | os.PathLike[str] | bytes | onnx.ModelProto

CPU_EP = "CPUExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
TENSORRT_EP = "TensorrtExecutionProvider"

#: ORT type strings -> numpy dtypes (the common tensor types).
_ORT_DTYPES: Mapping[str, np.dtype[Any]] = {
    "tensor(float)": np.dtype(np.float32), "tensor(float16)": np.dtype(np.float16),
    "tensor(double)": np.dtype(np.float64), "tensor(int8)": np.dtype(np.int8),
    "tensor(uint8)": np.dtype(np.uint8), "tensor(int16)": np.dtype(np.int16),
    "tensor(uint16)": np.dtype(np.uint16), "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64), "tensor(bool)": np.dtype(np.bool_),
}


def import_ort() -> Any:
    """Import onnxruntime or raise :class:`RuntimeUnavailable` with the install command."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise RuntimeUnavailable("ONNX Runtime is not installed; run: pip install 'onnxprune[cpu]' "
                                 "(or 'onnxprune[gpu]' for CUDA)") from exc
    return onnxruntime


def preload_cuda_libraries(ort: Any) -> None:
    """Load the CUDA and cuDNN libraries that pip installed beside onnxruntime-gpu.

    onnxruntime-gpu's CUDA provider library has no run path to the ``nvidia-*`` wheels
    (``pip install 'onnxruntime-gpu[cuda,cudnn]'``): without this (or ``import torch`` first, or the
    libraries on ``LD_LIBRARY_PATH``) ORT cannot start the CUDA EP and silently runs on the CPU.
    ``onnxruntime.preload_dlls`` (ORT >= 1.21) loads them by path; what it prints goes to the
    debug log. Loading a library twice is harmless, so this may be called for every runtime.
    """
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            preload()
    except Exception as exc:  # a bad nvidia install must not stop a run that can still fall back
        logger.debug("onnxruntime.preload_dlls failed: %s", first_line(exc))
    if printed.getvalue().strip():
        logger.debug("onnxruntime.preload_dlls: %s", printed.getvalue().strip())


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` of an exception, for one-line errors."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def cpu_model() -> str:
    """Return the CPU model name (``/proc/cpuinfo`` on Linux, else ``platform.processor``)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def available_cpus() -> int:
    """Return the number of CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def timing_threads(requested: int | None, cpus: int | None = None) -> int:
    """Intra-op threads for a latency measurement: ``requested``, else every CPU but one (at least 1).

    Timed threads that occupy every CPU compete with the OS (and anything else) for each of
    them, so latency stops repeating. On a 2-vCPU VM (``tools/bench_eval.py --skip-throughput
    --images 100``: 3 separate ``bench`` processes timing ResNet-56 and its 50 %-pruned version)
    2 threads gave medians 7-16 % apart and 1 of 6 rows stable; 1 thread gave every median and
    ratio within 5 % (ratios 0.3 % and 2.3 % apart) and 6 of 6 rows stable. Accuracy scoring and
    throughput keep every CPU (:class:`Runtime`'s default); only timings use this rule.

    Args:
        requested: The user's ``--threads`` (``None``: not given). Returned as is when given.
        cpus: CPUs this process may use (``None``: :func:`available_cpus`, which honours affinity).
    """
    if requested is not None:
        return requested
    return max(1, (available_cpus() if cpus is None else cpus) - 1)


def threads_note(requested: int | None, used: int, cpus: int | None = None) -> str | None:
    """A caption line when :func:`timing_threads` left CPUs free; ``None`` when the user chose the count.

    Args:
        requested: The user's ``--threads`` (``None``: not given).
        used: The threads the measurement used.
        cpus: CPUs this process may use (``None``: :func:`available_cpus`).
    """
    cpus = available_cpus() if cpus is None else cpus
    if requested is not None or used >= cpus:
        return None
    free = cpus - used
    left = "one left" if free == 1 else f"{free} left"
    return (f"{used} of {cpus} CPUs: {left} to the OS for repeatable timings; "
            f"--threads {cpus} to use all")


@dataclass(frozen=True)
class RunInfo:
    """Where a measurement ran: stated next to every accuracy and latency figure.

    Attributes:
        provider: The execution provider that ran the model (e.g. ``CPUExecutionProvider``).
        ort_version: ``onnxruntime.__version__``.
        cpu: The host CPU model.
        threads: Intra-op threads of the session.
        device: The requested device (``auto``, ``cpu`` or ``cuda``).
    """

    provider: str
    ort_version: str
    cpu: str
    threads: int
    device: str


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output as ONNX Runtime sees it.

    Attributes:
        name: Tensor name.
        shape: Dims; an ``int`` for static dims, ``None`` for symbolic ones.
        dtype: numpy dtype (``object`` for types this table does not know).
    """

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype[Any]


def _spec(arg: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) and d > 0 else None for d in (arg.shape or ()))
    return TensorSpec(arg.name, shape, _ORT_DTYPES.get(arg.type, np.dtype(object)))


class Session:
    """One compiled model. Create it through :meth:`Runtime.session`."""

    def __init__(self, inner: Any, info: RunInfo, label: str) -> None:
        """Wrap an ``onnxruntime.InferenceSession``.

        Args:
            inner: The ORT session.
            info: Its run record.
            label: A short name for messages (file name or ``<in-memory model>``).
        """
        self.inner = inner
        self.info = info
        self.label = label
        self.inputs: tuple[TensorSpec, ...] = tuple(_spec(a) for a in inner.get_inputs())
        self.outputs: tuple[TensorSpec, ...] = tuple(_spec(a) for a in inner.get_outputs())
        first = self.inputs[0].shape if self.inputs else ()
        #: The static batch size of the model, or ``None`` when its batch dim is symbolic.
        self.fixed_batch: int | None = first[0] if first and first[0] is not None else None
        self._output_names = [o.name for o in self.outputs]

    def run_raw(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run once on ``feeds`` exactly as given (no chunking); ORT errors become DataError."""
        try:
            return self.inner.run(self._output_names, dict(feeds))
        except Exception as exc:  # ORT raises its own Fail/InvalidArgument types
            raise DataError(f"{self.label}: ONNX Runtime rejected the inputs ({first_line(exc)}); "
                            "check the data's shape and dtype against the model") from exc

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run on a batch of any size; models with a fixed batch are fed in chunks.

        Args:
            feeds: Input name -> array whose first axis is the batch.

        Returns:
            The model outputs in graph order, each with the batch of ``feeds``.
        """
        step = self.fixed_batch
        count = len(next(iter(feeds.values()))) if feeds else 0
        if step is None or count == step:
            return self.run_raw(feeds)
        chunks: list[list[np.ndarray]] = []
        for start in range(0, count, step):
            part = {k: v[start:start + step] for k, v in feeds.items()}
            short = step - len(next(iter(part.values())))
            if short:
                part = {k: np.concatenate([v, np.repeat(v[-1:], short, axis=0)]) for k, v in part.items()}
            outs = self.run_raw(part)
            chunks.append([o[:step - short] for o in outs] if short else outs)
        return [np.concatenate([c[i] for c in chunks]) for i in range(len(self.outputs))]


def _providers(ort: Any, device: Device) -> list[str]:
    available = ort.get_available_providers()
    if device == "cpu":
        return [CPU_EP]
    if device == "cuda":
        if CUDA_EP not in available:
            raise RuntimeUnavailable("--device cuda needs onnxruntime-gpu with CUDA; install "
                                     "'onnxprune[gpu]' or use --device cpu")
        return [CUDA_EP, CPU_EP]
    if device == "tensorrt":
        if TENSORRT_EP not in available:
            raise RuntimeUnavailable("the TensorRT EP is not available in this ONNX Runtime; install "
                                     "onnxruntime-gpu with TensorRT or use --device cuda")
        return [TENSORRT_EP] + ([CUDA_EP] if CUDA_EP in available else []) + [CPU_EP]
    if device != "auto":
        raise RuntimeUnavailable(f"unknown device '{device}'; use auto, cpu or cuda")
    return [CUDA_EP, CPU_EP] if CUDA_EP in available else [CPU_EP]


def _model_key(model: ModelSource, proto_limit: int = PROTOBUF_LIMIT) -> tuple[str, Any]:
    """A cache key that changes when the model's content changes."""
    if isinstance(model, onnx.ModelProto):
        return "sha256", content_hash(model, proto_limit)
    if isinstance(model, bytes):
        return "sha256", hashlib.sha256(model).hexdigest()
    path = Path(model).resolve()
    if not path.is_file():
        raise InvalidModel(f"{model}: no such file; check the model path")
    stat = path.stat()
    return "file", (str(path), stat.st_size, stat.st_mtime_ns)


class Runtime:
    """Creates and reuses ONNX Runtime sessions for one device and thread setting.

    One ``Runtime`` holds one session per distinct model; pass it to every scoring or timing
    call that should share compiled sessions.
    """

    def __init__(self, device: Device = "auto", threads: int | None = None, *, optimize: bool = True,
                 spin: bool = True, proto_limit: int = PROTOBUF_LIMIT, conv_search: ConvSearch = "EXHAUSTIVE") -> None:
        """Resolve providers and threads.

        Args:
            device: ``auto`` (CUDA when onnxruntime-gpu and a GPU are present, else CPU),
                ``cpu``, ``cuda`` or ``tensorrt`` (TensorRT EP, then CUDA, then CPU).
            threads: Intra-op thread count; ``None`` uses every CPU available to the process
                (latency measurements pass :func:`timing_threads` instead, which leaves one free).
            optimize: ``False`` disables ORT's graph optimizations, so that each graph runs as
                written (e.g. to compare two graphs without ORT fusing BatchNorm into Conv).
            spin: Let idle intra-op threads busy-wait (ORT's default). ``False`` makes them
                sleep: slower at small batches, but latency repeats far better on shared or
                virtual CPUs (ResNet-56, 2-vCPU VM: batch-64 medians of 3 bench runs within 1.6 %
                instead of 10 %; batch 1 still varied 8 %).
            proto_limit: In-memory models above this many bytes reach ORT in parts (protobuf's
                2 GiB limit unless lowered, e.g. by tests).
            conv_search: The CUDA EP's cuDNN convolution algorithm search (``cudnn_conv_algo_search``).
                ``EXHAUSTIVE`` (ORT's default) benchmarks every algorithm on a session's first run:
                the fastest kernels, for timing and long scoring. ``HEURISTIC`` suits many short-lived
                sessions (one per search candidate): on an H200, ResNet-56's first run of 500 images
                took 0.12-0.15 s instead of 0.56-1.20 s, and 2,000 images after it the same
                0.025-0.036 s. Ignored without CUDA.

        Raises:
            RuntimeUnavailable: no onnxruntime, or CUDA requested but not installed.
            DataError: a thread count below 1.
        """
        if threads is not None and threads < 1:
            raise DataError(f"--threads {threads}: give a thread count of 1 or more")
        if conv_search not in CONV_SEARCHES:
            raise DataError(f"conv_search {conv_search!r}: use one of {', '.join(CONV_SEARCHES)}")
        self.conv_search = conv_search
        self.ort = import_ort()
        self.device = device
        self.providers = _providers(self.ort, device)
        if CUDA_EP in self.providers:
            preload_cuda_libraries(self.ort)
        self.threads = threads if threads is not None else available_cpus()
        self.optimize = optimize
        self.spin = spin
        self.proto_limit = proto_limit
        self._sessions: dict[tuple[str, Any], Session] = {}
        self._fallback_logged = False

    def options(self, *, profile_prefix: str | None = None) -> Any:
        """Return ``SessionOptions`` with this runtime's threads (and profiling if asked)."""
        opts = self.ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        if not self.spin:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if not self.optimize:
            opts.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if profile_prefix is not None:
            opts.enable_profiling = True
            opts.profile_file_prefix = profile_prefix
        return opts

    def _configured(self) -> list[Any]:
        """The providers with their options, as ``InferenceSession(providers=...)`` takes them."""
        return [(p, {"cudnn_conv_algo_search": self.conv_search}) if p == CUDA_EP else p for p in self.providers]

    def create(self, model: ModelSource, *, profile_prefix: str | None = None) -> Session:
        """Create a new, uncached session (use :meth:`session` unless you need a fresh one)."""
        label = Path(model).name if isinstance(model, (str, os.PathLike)) else "<in-memory model>"
        options = self.options(profile_prefix=profile_prefix)
        try:
            if isinstance(model, onnx.ModelProto):
                inner = ort_session(self.ort, model, options, self._configured(), proto_limit=self.proto_limit)
            else:
                source = model if isinstance(model, bytes) else str(Path(model))
                inner = self.ort.InferenceSession(source, options, providers=self._configured())
        except Exception as exc:  # ORT raises Fail/InvalidGraph/NoSuchFile types
            raise InvalidModel(f"{label}: ONNX Runtime cannot load the model ({first_line(exc)}); "
                               "check that it is a valid ONNX file") from exc
        used = inner.get_providers()
        wanted = {"cuda": CUDA_EP, "tensorrt": TENSORRT_EP}.get(self.device)
        if wanted is not None and wanted not in used:
            raise RuntimeUnavailable(f"--device {self.device}: ONNX Runtime could not start {wanted} (no GPU "
                                     "or driver?); use --device cpu")
        if self.device == "auto" and CUDA_EP in self.providers and CUDA_EP not in used and not self._fallback_logged:
            self._fallback_logged = True
            logger.warning("ONNX Runtime could not start the CUDA EP (no GPU, driver or CUDA libraries?): running "
                           "on %s; --device cpu silences this", used[0])
        info = RunInfo(provider=used[0], ort_version=self.ort.__version__, cpu=cpu_model(),
                       threads=self.threads, device=self.device)
        logger.info("session for %s on %s with %d threads", label, info.provider, self.threads)
        return Session(inner, info, label)

    def session(self, model: ModelSource) -> Session:
        """Return the session for ``model``, creating it on first use."""
        key = _model_key(model, self.proto_limit)
        if key not in self._sessions:
            self._sessions[key] = self.create(model)
        return self._sessions[key]
