"""Triton Inference Server model repository for an ONNX model (onnxruntime backend).

Layout written (Triton's documented model repository structure)::

    <repo>/<name>/config.pbtxt
    <repo>/<name>/1/model.onnx             (or, above 2 GiB, the directory form:)
    <repo>/<name>/1/model.onnx/model.onnx + model.onnx.data

Contract:
    requires: a model whose graph inputs and outputs have a static rank and Triton-supported
    element types; with ``max_batch > 0``, the first dim of every input and output is dynamic.
    guarantees: ``config.pbtxt`` (ModelConfig text format) names platform ``onnxruntime_onnx``,
    the model's input/output names, Triton dtypes and dims (without the batch dim when
    ``max_batch > 0``, with it otherwise; -1 for dynamic dims). ``<repo>/<name>`` appears
    complete or not at all: it is built in a temporary folder inside ``<repo>`` and renamed
    into place; an existing folder is replaced only with ``force``. The model bytes are
    written unchanged (metadata props included). A model above ``proto_limit`` (protobuf's
    2 GiB) is written in the directory form and its outputs' shapes are inferred on its skeleton.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import onnx
from onnx import TensorProto

from onnxprune.deploy.runner import graph_inputs
from onnxprune.errors import OutputError, UnsupportedInput
from onnxprune.io import save_model, write_bytes_atomic
from onnxprune.large import PROTOBUF_LIMIT, is_large, skeleton

logger = logging.getLogger(__name__)

PLATFORM = "onnxruntime_onnx"
MODEL_FILE = "model.onnx"
VERSION = "1"
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")

#: ONNX element type -> Triton data type (Triton's "Datatypes" table, ONNX Runtime column).
TRITON_DTYPES: dict[int, str] = {
    TensorProto.BOOL: "TYPE_BOOL", TensorProto.UINT8: "TYPE_UINT8", TensorProto.UINT16: "TYPE_UINT16",
    TensorProto.UINT32: "TYPE_UINT32", TensorProto.UINT64: "TYPE_UINT64", TensorProto.INT8: "TYPE_INT8",
    TensorProto.INT16: "TYPE_INT16", TensorProto.INT32: "TYPE_INT32", TensorProto.INT64: "TYPE_INT64",
    TensorProto.FLOAT16: "TYPE_FP16", TensorProto.FLOAT: "TYPE_FP32", TensorProto.DOUBLE: "TYPE_FP64",
    TensorProto.STRING: "TYPE_STRING",
}


@dataclass(frozen=True)
class TritonOptions:
    """What goes into ``config.pbtxt`` besides the tensors.

    Attributes:
        name: Model name (the folder name); letters, digits, ``_ . -``.
        max_batch: Triton's ``max_batch_size``; 0 disables Triton batching.
        instances: Instance count per device (``instance_group``); ``None`` leaves Triton's default.
        kind: ``cpu`` or ``gpu`` instances (``KIND_CPU`` / ``KIND_GPU``); ``None`` with ``instances``
            means ``gpu``.
        dynamic_batching: Add ``dynamic_batching { }`` (needs ``max_batch > 0``).
        external_data: Store weights beside the model (directory form); ``None``: only above 2 GiB.
    """

    name: str
    max_batch: int = 0
    instances: int | None = None
    kind: Literal["cpu", "gpu"] | None = None
    dynamic_batching: bool = False
    external_data: bool | None = None


@dataclass(frozen=True)
class TensorSpec:
    """One config input or output: name, Triton dtype and dims (-1 for dynamic)."""

    name: str
    data_type: str
    dims: tuple[int, ...]


def validate_name(name: str) -> str:
    """Return ``name`` if it is a safe single folder name, else raise :class:`OutputError`."""
    if not name or "/" in name or "\\" in name or os.sep in name or name in (".", "..") or not _NAME_RE.match(name):
        raise OutputError(f"model name {name!r} is not a plain folder name; use letters, digits, "
                          "'_', '.' and '-' only (no path separators), e.g. --name resnet56_pruned")
    return name


def _validate_options(options: TritonOptions) -> None:
    validate_name(options.name)
    if options.max_batch < 0:
        raise UnsupportedInput(f"--max-batch {options.max_batch} is negative; pass 0 (no batching) or more")
    if options.dynamic_batching and options.max_batch == 0:
        raise UnsupportedInput("--dynamic-batching needs --max-batch > 0; Triton batches only models "
                               "with a max_batch_size")
    if options.instances is not None and options.instances < 1:
        raise UnsupportedInput(f"--instances {options.instances} must be at least 1")


def _value_dims(value: onnx.ValueInfoProto, kind: str) -> list[int]:
    ttype = value.type.tensor_type
    if not value.type.HasField("tensor_type"):
        raise UnsupportedInput(f"{kind} '{value.name}' is not a tensor; Triton's ONNX backend needs tensors")
    if not ttype.HasField("shape"):
        raise UnsupportedInput(f"{kind} '{value.name}' has no static rank; re-export the model with "
                               "input shapes so every input and output has a known rank")
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in ttype.shape.dim]


def _spec(value: onnx.ValueInfoProto, kind: str, max_batch: int) -> TensorSpec:
    dims = _value_dims(value, kind)
    dtype = TRITON_DTYPES.get(value.type.tensor_type.elem_type)
    if dtype is None:
        type_name = TensorProto.DataType.Name(value.type.tensor_type.elem_type)
        raise UnsupportedInput(f"{kind} '{value.name}' has type {type_name}, which Triton's ONNX Runtime "
                               "backend does not support; cast it to a supported type (e.g. FLOAT)")
    if max_batch > 0:
        if not dims or dims[0] != -1:
            first = dims[0] if dims else "none (scalar)"
            raise UnsupportedInput(f"{kind} '{value.name}' has a fixed batch dim ({first}); pass --max-batch 0 "
                                   "or re-export the model with a dynamic batch dim")
        dims = dims[1:]
    if not dims:
        raise UnsupportedInput(f"{kind} '{value.name}' has no dims besides the batch; Triton needs rank >= 1 "
                               "per tensor (use --max-batch 0 or reshape the output to [batch, 1])")
    return TensorSpec(value.name, dtype, tuple(dims))


def tensor_specs(model: onnx.ModelProto, max_batch: int, proto_limit: int = PROTOBUF_LIMIT
                 ) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Config inputs and outputs for ``model`` (outputs get inferred shapes where undeclared)."""
    inputs = tuple(_spec(v, "input", max_batch) for v in graph_inputs(model))
    outputs_decl = list(model.graph.output)
    if any(not v.type.tensor_type.HasField("shape") for v in outputs_decl):
        try:
            inferred = onnx.shape_inference.infer_shapes(skeleton(model, proto_limit)).graph.output
            outputs_decl = list(inferred)
        except Exception as exc:  # onnx raises InferenceError and plain RuntimeErrors
            logger.debug("shape inference failed: %s", exc)
    outputs = tuple(_spec(v, "output", max_batch) for v in outputs_decl)
    return inputs, outputs


def _tensor_block(kind: str, specs: tuple[TensorSpec, ...]) -> list[str]:
    lines = [f"{kind} ["]
    for index, spec in enumerate(specs):
        lines += ["  {", f"    name: \"{spec.name}\"", f"    data_type: {spec.data_type}",
                  f"    dims: [ {', '.join(str(d) for d in spec.dims)} ]",
                  "  }" + ("," if index < len(specs) - 1 else "")]
    return lines + ["]"]


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def build_config(model: onnx.ModelProto, options: TritonOptions, proto_limit: int = PROTOBUF_LIMIT) -> str:
    """Return ``config.pbtxt`` text (Triton ModelConfig, protobuf text format) for ``model``."""
    _validate_options(options)
    inputs, outputs = tensor_specs(model, options.max_batch, proto_limit)
    lines = [f"name: \"{_quote(options.name)}\"", f"platform: \"{PLATFORM}\"",
             f"max_batch_size: {options.max_batch}"]
    lines += _tensor_block("input", inputs) + _tensor_block("output", outputs)
    if options.instances is not None or options.kind is not None:
        kind = "KIND_CPU" if options.kind == "cpu" else "KIND_GPU"
        lines += ["instance_group [", "  {", f"    count: {options.instances or 1}", f"    kind: {kind}",
                  "  }", "]"]
    if options.dynamic_batching:
        lines += ["dynamic_batching { }"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class TritonExport:
    """What :func:`export_triton` wrote."""

    model_dir: Path
    config_path: Path
    model_path: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


def _write_tree(model: onnx.ModelProto, options: TritonOptions, config: str, tmp: Path, proto_limit: int) -> Path:
    write_bytes_atomic(tmp / "config.pbtxt", config.encode())
    version_dir = tmp / VERSION
    version_dir.mkdir()
    external = options.external_data if options.external_data is not None else is_large(model, proto_limit)
    if external:  # Triton's directory form: 1/model.onnx/model.onnx + its data file
        (version_dir / MODEL_FILE).mkdir()
        save_model(model, version_dir / MODEL_FILE / MODEL_FILE, external_data=True)
        return Path(VERSION) / MODEL_FILE / MODEL_FILE
    save_model(model, version_dir / MODEL_FILE, external_data=False)
    return Path(VERSION) / MODEL_FILE


def _check_repo(repo: Path, target: Path, force: bool) -> None:
    """Raise :class:`OutputError` if ``<repo>/<name>`` cannot be written (writes nothing)."""
    if repo.exists() and not repo.is_dir():
        raise OutputError(f"{repo} is a file; pass a folder as the model repository")
    if not repo.exists() and not repo.parent.is_dir():
        raise OutputError(f"{repo.parent} does not exist; create it or choose another model repository folder")
    if target.exists() and not target.is_dir():
        raise OutputError(f"{target} exists and is a file; remove it or choose another model name")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise OutputError(f"{target} exists and is not empty; pass --force (compress: --triton-force) "
                          "to replace it, or choose another name")


def check_export(model: onnx.ModelProto, repo: str | os.PathLike[str], options: TritonOptions, *,
                 force: bool = False, proto_limit: int = PROTOBUF_LIMIT) -> None:
    """Everything :func:`export_triton` would refuse, checked without writing anything.

    ``model`` only needs the interface of the model that will be exported (e.g. the original
    of a compression run), so long runs can fail fast before their work.

    Raises:
        OutputError: bad name, existing output without ``force``, missing parent folder.
        UnsupportedInput: the model cannot be described to Triton with these options.
    """
    build_config(model, options, proto_limit)
    repo_dir = Path(repo).resolve()
    _check_repo(repo_dir, repo_dir / options.name, force)


def export_triton(model: onnx.ModelProto, repo: str | os.PathLike[str], options: TritonOptions, *,
                  force: bool = False, proto_limit: int = PROTOBUF_LIMIT) -> TritonExport:
    """Write ``<repo>/<name>/config.pbtxt`` and ``<repo>/<name>/1/model.onnx`` atomically.

    Args:
        model: The model to serve (written unchanged).
        repo: The model repository folder (created if its parent exists).
        options: Name, batching and instance settings.
        force: Replace an existing non-empty ``<repo>/<name>``.
        proto_limit: Byte size above which the model is written with external data.

    Returns:
        The paths written and the tensor specs of the config.

    Raises:
        OutputError: bad name, existing output without ``force``, unwritable repository.
        UnsupportedInput: the model cannot be described to Triton with these options.
    """
    config = build_config(model, options, proto_limit)  # validates everything before touching the disk
    inputs, outputs = tensor_specs(model, options.max_batch, proto_limit)
    repo_dir = Path(repo).resolve()
    target = repo_dir / options.name
    _check_repo(repo_dir, target, force)
    repo_dir.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{options.name}.", suffix=".tmp", dir=repo_dir))
    old: Path | None = None
    try:
        model_rel = _write_tree(model, options, config, tmp, proto_limit)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{options.name}.", suffix=".old", dir=repo_dir))
            os.replace(target, old / "previous")
        try:
            os.replace(tmp, target)
        except OSError:
            if old is not None:
                os.replace(old / "previous", target)
            raise
    except OSError as exc:
        raise OutputError(f"cannot write {target} ({exc.strerror or exc}); check permissions and free space") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    logger.info("wrote Triton model %s", target)
    return TritonExport(model_dir=target, config_path=target / "config.pbtxt", model_path=target / model_rel,
                        inputs=inputs, outputs=outputs)
