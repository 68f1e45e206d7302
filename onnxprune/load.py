"""Load stage: path -> :class:`Model`.

Contract:
    requires: a path to an ONNX file (external data, if any, inside the model's folder).
    guarantees: the returned ``Model.proto`` passes ``onnx.checker``, uses the default-domain
    opset >= 13, has constant (shape) subgraphs folded so that channel-relevant constants
    (Reshape targets, Pad pads, Split sizes, Slice bounds) are initializers, and keeps the
    original graph inputs/outputs (symbolic dims stay symbolic). ``Model.shapes`` holds the
    inferred shape of every tensor, with symbolic dims fixed to the user's ``input_shapes``
    or, for a symbolic batch, to 1 (costs are stated at batch 1).
    The input file is never opened for writing. Models above ``proto_limit`` (protobuf's 2 GiB),
    and to save memory models above :data:`onnxprune.large.SKELETON_MIN_BYTES`, are checked,
    upgraded, folded and shape-inferred on their skeleton (:mod:`onnxprune.large`), with the
    same result (only when the tensors that folding reads exceed ``proto_limit`` are they
    left unfolded, logged).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import version_converter

from onnxprune.errors import InvalidModel, RuntimeUnavailable, UnsupportedInput
from onnxprune.large import (PROTOBUF_LIMIT, attach, attach_into, check_model, detach_for_folding, is_large,
                             model_bytes, split_worthy, transform)

logger = logging.getLogger(__name__)

MIN_OPSET = 13
Shape = tuple[int | None, ...]


@dataclass(frozen=True)
class Model:
    """A loaded, normalized model. Treat ``proto`` as read-only; stages copy before editing.

    Attributes:
        proto: The normalized model (checked, opset >= 13, constants folded, original interface).
        shapes: Tensor name -> static shape (``None`` for a dim that stayed unknown), batch 1.
        dtypes: Tensor name -> ONNX element type.
        source: Where it was read from, if from a file.
        original_opset: Default-domain opset of the file before any upgrade.
        notes: Remarks of the load stage.
        proto_limit: Byte size above which later stages treat the model as large
            (:mod:`onnxprune.large`); protobuf's 2 GiB unless a caller lowers it.
    """

    proto: onnx.ModelProto
    shapes: Mapping[str, Shape]
    dtypes: Mapping[str, int]
    source: Path | None = None
    original_opset: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)
    proto_limit: int = PROTOBUF_LIMIT


def default_opset(model: onnx.ModelProto) -> int:
    """Return the default-domain opset version of ``model`` (0 if absent)."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 0


def _read_proto(path: Path) -> onnx.ModelProto:
    if not path.exists():
        raise InvalidModel(f"{path}: no such file; check the model path")
    if not path.is_file():
        raise InvalidModel(f"{path}: is not a file; pass the path of an .onnx model")
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError, OSError) as exc:
        raise InvalidModel(f"{path}: not a readable ONNX model ({type(exc).__name__}); "
                           "re-export it or check that the file is complete") from exc
    if not model.HasField("graph") or len(model.graph.node) == 0:
        raise InvalidModel(f"{path}: not an ONNX model (no graph nodes); re-export it or check the file")
    return model


def _external_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    return [t for t in _get_all_tensors(model) if uses_external_data(t)]


def _validate_external(model: onnx.ModelProto, path: Path) -> list[onnx.TensorProto]:
    """Check that every external data file lies inside the model's folder and exists."""
    tensors = _external_tensors(model)
    base = path.parent.resolve()
    for tensor in tensors:
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (base / location).resolve()
        if os.path.isabs(location) or base not in target.parents:
            raise InvalidModel(f"{path.name}: external data '{location}' of tensor '{tensor.name}' points "
                               "outside the model's folder; move the data file next to the model")
        if not target.is_file():
            raise InvalidModel(f"{path.name}: external data file '{location}' of tensor '{tensor.name}' "
                               "is missing; copy it next to the model")
    return tensors


def _load_external(model: onnx.ModelProto, path: Path) -> None:
    """Resolve external data strictly inside the model's folder, then load it."""
    if not _validate_external(model, path):
        return
    base = path.parent.resolve()
    try:
        onnx.load_external_data_for_model(model, str(base))
    except (OSError, ValueError) as exc:
        raise InvalidModel(f"{path.name}: cannot read external data ({exc}); check the data files") from exc


def _check(model: onnx.ModelProto | Path, name: str, proto_limit: int = PROTOBUF_LIMIT) -> None:
    """The ONNX checker on an in-memory model (any size) or on a file (its data is not loaded)."""
    try:
        if isinstance(model, Path):
            onnx.checker.check_model(str(model))
        else:
            check_model(model, proto_limit=proto_limit)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidModel(f"{name}: fails the ONNX checker ({first}); re-export the model") from exc


def _upgrade(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    opset = default_opset(model)
    if opset >= MIN_OPSET:
        return model
    try:
        upgraded = version_converter.convert_version(model, MIN_OPSET)
    except Exception as exc:  # the converter raises bare RuntimeErrors and others
        raise UnsupportedInput(f"{name}: cannot upgrade opset {opset} to {MIN_OPSET} ({exc}); "
                               "re-export with opset >= 13") from exc
    logger.info("upgraded %s from opset %d to %d", name, opset, MIN_OPSET)
    return upgraded


def upgraded(model: onnx.ModelProto, name: str = "the model") -> onnx.ModelProto:
    """A copy of ``model`` upgraded as the load stage does it: initializers that are graph inputs
    (IR < 4) become plain constants, and an opset below :data:`MIN_OPSET` is converted to it.

    Raises:
        UnsupportedInput: the opset conversion is impossible.
    """
    work = onnx.ModelProto()
    work.CopyFrom(model)
    _drop_initializer_inputs(work)
    return _upgrade(work, name)


def _drop_initializer_inputs(model: onnx.ModelProto) -> None:
    """IR < 4 models list initializers as graph inputs; treat them as constants."""
    inits = {t.name for t in model.graph.initializer}
    keep = [i for i in model.graph.input if i.name not in inits]
    if len(keep) != len(model.graph.input):
        del model.graph.input[:]
        model.graph.input.extend(keep)
        model.ir_version = max(model.ir_version, 4)  # IR >= 4 allows initializers that are not inputs


def fold_constants(model: onnx.ModelProto, *, proto_limit: int = PROTOBUF_LIMIT) -> onnx.ModelProto:
    """Fold constant subgraphs (including static Shape chains) with onnx-graphsurgeon.

    Keeps opset imports, IR version, metadata and the graph interface of ``model``. Above
    ``proto_limit`` folding runs on the skeleton (the large tensors are not folded).
    """
    return transform(model, _fold, proto_limit=proto_limit, what="constant folding")


def _fold(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        import onnxruntime  # noqa: F401  (graphsurgeon evaluates constants with it)
    except ImportError as exc:
        raise RuntimeUnavailable("ONNX Runtime is not installed; run: pip install 'onnxprune[cpu]' "
                                 "(or [gpu])") from exc
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(model)
    graph.fold_constants(fold_shapes=True, error_ok=True)
    graph.cleanup(remove_unused_graph_inputs=False)
    folded = gs.export_onnx(graph, do_type_check=False)
    return restore_model_fields(folded, model)


def restore_io(new: onnx.ModelProto, old: onnx.ModelProto) -> None:
    """Give ``new``'s graph inputs/outputs the declarations (dtypes, symbolic dims) of ``old``'s."""
    for mine, theirs in ((new.graph.input, old.graph.input), (new.graph.output, old.graph.output)):
        declared = {vi.name: vi for vi in theirs}
        for vi in mine:
            if vi.name in declared:
                vi.CopyFrom(declared[vi.name])


def restore_model_fields(new: onnx.ModelProto, old: onnx.ModelProto) -> onnx.ModelProto:
    """Copy IR version, opset imports, producer, metadata and the graph's input/output
    declarations (names, dtypes, symbolic dims) from ``old`` onto ``new``."""
    restore_io(new, old)
    new.ir_version = old.ir_version
    del new.opset_import[:]
    new.opset_import.extend(old.opset_import)
    new.producer_name, new.producer_version = old.producer_name, old.producer_version
    new.domain, new.model_version, new.doc_string = old.domain, old.model_version, old.doc_string
    del new.metadata_props[:]
    new.metadata_props.extend(old.metadata_props)
    del new.functions[:]
    new.functions.extend(old.functions)
    return new


def _with_inferred_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with value_info filled by ONNX shape inference (symbolic dims stay symbolic)."""
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as exc:  # inference is best effort here; infer_shapes below reports failures
        logger.debug("shape inference before folding failed: %s", exc)
        return model


def _name_nodes(graph: onnx.GraphProto) -> None:
    """Give every node a unique name (later stages address nodes by name)."""
    seen: set[str] = set()
    for index, node in enumerate(graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{index}"
            while node.name in seen:
                node.name += "_"
        seen.add(node.name)


def _fixed_copy(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]],
                weights: frozenset[str] = frozenset()) -> onnx.ModelProto:
    """Copy of ``model`` whose graph inputs have static dims (user shapes; symbolic batch -> 1).

    ``weights`` are graph inputs of a skeleton that stand for detached tensors (not user inputs).
    """
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    names = {i.name for i in fixed.graph.input} - weights
    unknown = set(input_shapes) - names
    if unknown:
        raise UnsupportedInput(f"--input-shape names unknown input(s) {sorted(unknown)}; "
                               f"the model's inputs are {sorted(names)}")
    for inp in fixed.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if inp.name in input_shapes:
            wanted = list(input_shapes[inp.name])
            if len(wanted) != len(dims):
                raise UnsupportedInput(f"--input-shape for '{inp.name}' has rank {len(wanted)}, the model's "
                                       f"input has rank {len(dims)}; give one size per dim")
            for dim, size in zip(dims, wanted):
                dim.Clear()
                dim.dim_value = int(size)
        elif len(dims) > 0 and not dims[0].HasField("dim_value"):
            dims[0].Clear()
            dims[0].dim_value = 1
    del fixed.graph.value_info[:]
    return fixed


def infer_shapes(model: onnx.ModelProto) -> tuple[dict[str, Shape], dict[str, int]]:
    """Infer every tensor's static shape and dtype; unknown dims are ``None``."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as exc:  # onnx raises InferenceError and plain RuntimeErrors
        raise InvalidModel(f"shape inference failed ({str(exc).splitlines()[0]}); "
                           "re-export the model or pass --input-shape") from exc
    shapes: dict[str, Shape] = {}
    dtypes: dict[str, int] = {}
    graph = inferred.graph
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        ttype = vi.type.tensor_type
        dtypes[vi.name] = ttype.elem_type
        if ttype.HasField("shape"):
            shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in ttype.shape.dim)
    for init in graph.initializer:
        shapes[init.name] = tuple(init.dims)
        dtypes[init.name] = init.data_type
    return shapes, dtypes


def normalize(model: onnx.ModelProto, *, name: str = "model",
              input_shapes: Mapping[str, Sequence[int]] | None = None, source: Path | None = None,
              proto_limit: int = PROTOBUF_LIMIT) -> Model:
    """Check, upgrade, fold and shape-infer an in-memory model (see the module contract).

    Above ``proto_limit`` all of it runs on the skeleton and the large tensors are attached
    to the result once, at the end.
    """
    return _normalize(model, name=name, input_shapes=input_shapes, source=source, proto_limit=proto_limit,
                      owned=False)


def _normalize(model: onnx.ModelProto, *, name: str, input_shapes: Mapping[str, Sequence[int]] | None,
               source: Path | None, proto_limit: int, owned: bool) -> Model:
    """:func:`normalize`; with ``owned``, a large ``model`` becomes the result (its tensors are not copied)."""
    size = model_bytes(model)
    detached = detach_for_folding(model, proto_limit) if split_worthy(model, proto_limit) else None
    if detached is not None:
        logger.info("%s has %d bytes: normalizing its skeleton (%d large tensors detached)",
                    name, size, len(detached.weights))
        work = detached.skeleton
    else:
        work = onnx.ModelProto()
        work.CopyFrom(model)
    original_opset = default_opset(work)
    _check(work, name)
    _drop_initializer_inputs(work)
    work = _upgrade(work, name)
    for _ in range(2):  # shapes let Shape/Gather chains fold; folding lets inference see more
        work = fold_constants(_with_inferred_shapes(work))
    _name_nodes(work.graph)
    del work.graph.value_info[:]
    restore_io(work, model)
    shapes, dtypes = infer_shapes(_fixed_copy(work, input_shapes or {},
                                              frozenset(detached.weights) if detached else frozenset()))
    if detached is not None:
        work = attach_into(work, model, detached.weights) if owned else attach(work, detached.weights)
    return Model(proto=work, shapes=shapes, dtypes=dtypes, source=source, original_opset=original_opset,
                 proto_limit=proto_limit)


def read(path: str | os.PathLike[str], *, interface_only: bool = False,
         proto_limit: int = PROTOBUF_LIMIT) -> onnx.ModelProto:
    """Read and check an ONNX file as it is (no upgrade, no folding): for shipping it unchanged.

    Args:
        path: The ``.onnx`` file. External data must lie inside its folder.
        interface_only: For callers that need only the interface, metadata and versions: a
            model above ``proto_limit`` keeps its external data unloaded (checked from the file).
        proto_limit: Byte size above which a model counts as large.

    Raises:
        InvalidModel: unreadable, truncated, invalid, or with bad external data.
    """
    file = Path(path)
    proto = _read_proto(file)
    if interface_only and is_large(proto, proto_limit):
        _validate_external(proto, file)
        _check(file, file.name)
        return proto
    _load_external(proto, file)
    _check(proto, file.name, proto_limit)
    return proto


def load(path: str | os.PathLike[str], *, input_shapes: Mapping[str, Sequence[int]] | None = None,
         proto_limit: int = PROTOBUF_LIMIT) -> Model:
    """Read and normalize an ONNX file.

    Args:
        path: The ``.onnx`` file. External data must lie inside its folder.
        input_shapes: Optional static shapes for inputs whose dims are symbolic, e.g.
            ``{"input": (1, 3, 224, 224)}``; used for shape inference and costs only (the
            model keeps its symbolic interface).
        proto_limit: Byte size above which the model is handled as large (:mod:`onnxprune.large`).

    Returns:
        The normalized :class:`Model`.

    Raises:
        InvalidModel: unreadable, truncated, invalid, or with bad external data.
        UnsupportedInput: opset upgrade impossible or bad ``input_shapes``.
    """
    file = Path(path)
    proto = _read_proto(file)
    _load_external(proto, file)
    return _normalize(proto, name=file.name, input_shapes=input_shapes, source=file.resolve(),
                      proto_limit=proto_limit, owned=True)  # the file's proto: its tensors are reused
