"""Models of any size: the protobuf operations onnxprune needs, also above the 2 GiB limit.

Protobuf cannot serialize a message above 2 GiB, and ``onnx.checker.check_model``,
``onnx.shape_inference.infer_shapes``, ``onnx.version_converter`` and
``onnxruntime.InferenceSession(bytes)`` all serialize the model first. Above ``proto_limit``
(default :data:`PROTOBUF_LIMIT`; tests pass a small one to force this path on small models)
these helpers work on a *skeleton*: a copy of the model without its large tensors (initializers
and ``Constant`` values of at least :data:`DETACH_MIN_BYTES`), which become graph inputs of
the same name, element type and shape. Shape constants (Reshape targets, Pad pads, Split
sizes) stay in the skeleton, so shape inference and Shape-chain folding see them.

Contract:
    requires: an ``onnx.ModelProto`` whose large tensors are initializers or ``Constant`` nodes
    of the main graph (tensors inside subgraphs stay in the skeleton).
    guarantees: below ``proto_limit`` every helper calls ONNX / ONNX Runtime directly, on the
    model as it is (above :data:`SKELETON_MIN_BYTES` they use the skeleton as well, with the
    same results, to save memory; the file format, :func:`is_large`, follows ``proto_limit`` only). Above it the model's tensor data is never
    serialized and never copied more than once at a time: :func:`transform` runs a graph
    transformation on the skeleton and re-attaches the untouched tensors (those the result
    still reads; ``Constant`` nodes come back as initializers); tensors that constant folding
    reads stay in the skeleton when they fit (:func:`detach_for_folding`), so folding is
    exact; :func:`check_model` and :func:`skeleton` check or inspect the skeleton;
    :func:`ort_session` gives ONNX Runtime the tensors as arrays through
    ``SessionOptions.add_external_initializers``; :mod:`onnxprune.large_write` streams them to
    files. No helper modifies its input (:func:`attach_into` consumes one, by contract).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import Message
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import uses_external_data

logger = logging.getLogger(__name__)

#: Protobuf cannot serialize a single message above 2 GiB.
PROTOBUF_LIMIT = 2**31 - 1
#: Tensors of at least this many bytes leave the skeleton (and go to the external data file).
DETACH_MIN_BYTES = 1024
#: Above this size the helpers use the skeleton also below ``proto_limit`` (:func:`split_worthy`): same
#: results, and no serialized copies (normalizing a 1 GB model peaked at ~9 copies in memory, now 2).
SKELETON_MIN_BYTES = 64 << 20
#: The location ONNX Runtime sees for tensors it receives as arrays (never opened).
_IN_MEMORY = "__onnxprune_in_memory__"
_SUB_BYTE = {getattr(TensorProto, name): bits / 8 for name, bits in
             (("INT4", 4), ("UINT4", 4), ("FLOAT4E2M1", 4), ("INT2", 2), ("UINT2", 2)) if hasattr(TensorProto, name)}


def _external_length(tensor: TensorProto) -> int | None:
    entry = next((e.value for e in tensor.external_data if e.key == "length"), None)
    return int(entry) if entry is not None and entry.isdigit() else None


def tensor_nbytes(tensor: TensorProto) -> int:
    """Bytes of a tensor's data, also when it lives in an external file (loaded or not).

    Computed from dims and element type (reading ``raw_data`` would copy it); strings and
    external tensors of unknown type use their actual or recorded length.
    """
    if tensor.data_type == TensorProto.STRING:
        return sum(len(s) for s in tensor.string_data)
    count = int(np.prod(tensor.dims, dtype=np.int64)) if tensor.dims else 1
    if tensor.data_type in _SUB_BYTE:
        return int(np.ceil(count * _SUB_BYTE[tensor.data_type]))
    try:
        return count * helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, ValueError, TypeError):
        length = _external_length(tensor) if uses_external_data(tensor) else None
        return length if length is not None else len(tensor.raw_data)


def _graph_bytes(graph: onnx.GraphProto) -> int:
    """Approximate serialized size of a graph: exact for small parts, data size for tensors."""
    total = sum(tensor_nbytes(t) + len(t.name) + 8 * len(t.dims) + 16 for t in graph.initializer)
    for node in graph.node:
        value = _constant_tensor(node)
        total += tensor_nbytes(value) + 64 if value is not None else node.ByteSize()
    for values in (graph.input, graph.output, graph.value_info):
        total += sum(v.ByteSize() for v in values)
    return total + len(graph.doc_string) + len(graph.name)


def model_bytes(model: onnx.ModelProto) -> int:
    """Size of ``model`` with all its tensor data in one message (external data counted too).

    Tensors count by their data size (dims x element size), never by serializing them:
    protobuf's ``ByteSize`` of a large model costs as much memory as serializing it.
    """
    functions = sum(f.ByteSize() for f in model.functions)
    return _graph_bytes(model.graph) + functions + sum(p.ByteSize() for p in model.metadata_props) + 64


def split_worthy(model: onnx.ModelProto, proto_limit: int = PROTOBUF_LIMIT) -> bool:
    """True when the helpers here work on the skeleton: above ``proto_limit``, or above
    :data:`SKELETON_MIN_BYTES` where serializing the whole model would cost memory for nothing."""
    return model_bytes(model) > min(proto_limit, SKELETON_MIN_BYTES)


def is_large(model: onnx.ModelProto, proto_limit: int = PROTOBUF_LIMIT) -> bool:
    """True when ``model`` with its data would exceed ``proto_limit`` bytes as one message."""
    return model_bytes(model) > proto_limit


def copy_fields(src: Message, dst: Message, skip: frozenset[str]) -> None:
    """Copy every set field of ``src`` to ``dst`` except ``skip`` (messages copied deeply)."""
    for field, value in src.ListFields():
        if field.name in skip:
            continue
        if field.is_repeated:
            getattr(dst, field.name).extend(value)
        elif field.type == field.TYPE_MESSAGE:
            getattr(dst, field.name).CopyFrom(value)
        else:
            setattr(dst, field.name, value)


def _constant_tensor(node: onnx.NodeProto) -> TensorProto | None:
    """The ``value`` tensor of a default-domain Constant node, else None."""
    if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or len(node.attribute) != 1:
        return None
    attr = node.attribute[0]
    return attr.t if attr.name == "value" and attr.HasField("t") else None


@dataclass(frozen=True)
class Detached:
    """A model split into a small skeleton and its large tensors.

    Attributes:
        skeleton: The model without its large tensors; each is a graph input (appended after
            the real inputs) with the tensor's name, element type and dims.
        weights: Name -> the original tensor (a view into the source model, not a copy).
    """

    skeleton: onnx.ModelProto
    weights: Mapping[str, TensorProto]


def _folding_inputs(graph: onnx.GraphProto) -> set[str]:
    """Constants read by nodes whose inputs are all constant: the nodes constant folding computes."""
    constants = {t.name for t in graph.initializer} | {n.output[0] for n in graph.node if _constant_tensor(n)}
    found: set[str] = set()
    for node in graph.node:
        names = [n for n in node.input if n]
        if names and all(n in constants for n in names):
            found.update(names)
    return found


def detach(model: onnx.ModelProto, min_bytes: int = DETACH_MIN_BYTES, *, keep_foldable: bool = False) -> Detached:
    """Split ``model`` into a skeleton and its tensors of at least ``min_bytes`` (see :class:`Detached`).

    With ``keep_foldable``, tensors read by a node whose inputs are all constant (a Transpose or
    DequantizeLinear of a weight) stay in the skeleton, so constant folding on the skeleton
    folds exactly what it folds on the whole model.
    """
    keep = _folding_inputs(model.graph) if keep_foldable else set()
    skeleton = onnx.ModelProto()
    copy_fields(model, skeleton, frozenset({"graph"}))
    graph = skeleton.graph
    copy_fields(model.graph, graph, frozenset({"node", "initializer"}))
    weights: dict[str, TensorProto] = {}
    for node in model.graph.node:
        value = _constant_tensor(node)
        if value is not None and tensor_nbytes(value) >= min_bytes and node.output[0] not in keep:
            weights[node.output[0]] = value
        else:
            graph.node.add().CopyFrom(node)
    for tensor in model.graph.initializer:
        if tensor_nbytes(tensor) >= min_bytes and tensor.name not in keep:
            weights[tensor.name] = tensor
        else:
            graph.initializer.add().CopyFrom(tensor)
    declared = {v.name for v in graph.input}
    graph.input.extend(helper.make_tensor_value_info(name, tensor.data_type, list(tensor.dims))
                       for name, tensor in weights.items() if name not in declared)
    return Detached(skeleton=skeleton, weights=weights)


def _read_names(graph: onnx.GraphProto) -> Iterator[str]:
    """Every tensor name read by a node of ``graph`` or its subgraphs, and its outputs."""
    for node in graph.node:
        yield from node.input
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _read_names(sub)
    yield from (o.name for o in graph.output)


def _wanted(graph: onnx.GraphProto, weights: Mapping[str, TensorProto]) -> list[str]:
    """Weights a (transformed) skeleton graph still reads and neither computes nor holds."""
    produced = {o for n in graph.node for o in n.output} | {t.name for t in graph.initializer}
    read = set(_read_names(graph))
    return [name for name in weights if name in read and name not in produced]


def _drop_weight_inputs(graph: onnx.GraphProto, weights: Mapping[str, TensorProto]) -> None:
    kept = [v for v in graph.input if v.name not in weights]
    if len(kept) != len(graph.input):
        del graph.input[:]
        graph.input.extend(kept)


def attach(skeleton: onnx.ModelProto, weights: Mapping[str, TensorProto]) -> onnx.ModelProto:
    """The full model of a (transformed) skeleton: its weight inputs become initializers again.

    Weights the skeleton no longer reads are dropped; a weight name the skeleton now computes
    or holds as an initializer stays as it is. The tensors are copied (see :func:`attach_into`).
    """
    full = onnx.ModelProto()
    full.CopyFrom(skeleton)
    graph = full.graph
    _drop_weight_inputs(graph, weights)
    for name in _wanted(graph, weights):
        copy = graph.initializer.add()
        copy.CopyFrom(weights[name])  # 5x faster than append(), which re-encodes the message
        copy.name = name
    if weights and full.ir_version < 4:
        full.ir_version = 4  # initializers that are not graph inputs need IR >= 4
    return full


def attach_into(skeleton: onnx.ModelProto, donor: onnx.ModelProto, weights: Mapping[str, TensorProto]
                ) -> onnx.ModelProto:
    """:func:`attach` built inside ``donor``, the model ``weights`` were detached from: its
    initializers stay where they are (no copy of the data). ``donor`` is consumed: the caller
    must own it and not use it otherwise. Returns ``donor``."""
    wanted = set(_wanted(skeleton.graph, weights))
    graph = donor.graph
    from_nodes = {name: TensorProto() for name in wanted if name not in {t.name for t in graph.initializer}}
    for name, copy in from_nodes.items():  # weights that were Constant nodes: copied before the nodes go
        copy.CopyFrom(weights[name])
        copy.name = name
    for index in reversed(range(len(graph.initializer))):
        if graph.initializer[index].name not in wanted:
            del graph.initializer[index]
    for field in donor.DESCRIPTOR.fields:
        if field.name != "graph":
            donor.ClearField(field.name)
    copy_fields(skeleton, donor, frozenset({"graph"}))
    for field in graph.DESCRIPTOR.fields:
        if field.name != "initializer":
            graph.ClearField(field.name)
    copy_fields(skeleton.graph, graph, frozenset())
    for tensor in from_nodes.values():
        graph.initializer.add().CopyFrom(tensor)
    _drop_weight_inputs(graph, weights)
    if weights and donor.ir_version < 4:
        donor.ir_version = 4
    return donor


def detach_for_folding(model: onnx.ModelProto, proto_limit: int = PROTOBUF_LIMIT) -> Detached:
    """A skeleton on which graph-surgeon folding gives what it gives on ``model``, when it fits.

    Tensors read by all-constant nodes stay in it (:func:`detach` with ``keep_foldable``) unless
    that skeleton is itself above ``proto_limit``: then every large tensor is detached and the
    constants computed from them are not folded (logged).
    """
    detached = detach(model, keep_foldable=True)
    if not is_large(detached.skeleton, proto_limit):
        return detached
    logger.warning("the tensors that constant folding reads exceed %d bytes: folding without them "
                   "(e.g. a Transpose of a weight stays in the graph)", proto_limit)
    return detach(model)


def skeleton(model: onnx.ModelProto, proto_limit: int = PROTOBUF_LIMIT) -> onnx.ModelProto:
    """``model`` itself when small, else its skeleton: for read-only inspection (types, shapes, ops)."""
    return detach(model).skeleton if split_worthy(model, proto_limit) else model


def transform(model: onnx.ModelProto, fn: Callable[[onnx.ModelProto], onnx.ModelProto], *,
              proto_limit: int = PROTOBUF_LIMIT, what: str = "transform") -> onnx.ModelProto:
    """``fn(model)``; above ``proto_limit`` (or :data:`SKELETON_MIN_BYTES`, to save memory) ``fn``
    runs on the skeleton of :func:`detach_for_folding` and the tensors are re-attached.

    ``fn`` must not modify its argument's tensors in place; it may add, remove or rename nodes.
    """
    if not split_worthy(model, proto_limit):
        return fn(model)
    detached = detach_for_folding(model, proto_limit)
    logger.debug("%s on the skeleton of a large model (%d tensors detached)", what, len(detached.weights))
    return attach(fn(detached.skeleton), detached.weights)


def check_model(model: onnx.ModelProto, *, full_check: bool = False, proto_limit: int = PROTOBUF_LIMIT) -> None:
    """``onnx.checker.check_model`` for a model of any size (large: on its skeleton).

    Raises:
        onnx.checker.ValidationError: as the checker does.
    """
    onnx.checker.check_model(skeleton(model, proto_limit), full_check=full_check)


def infer_shapes(model: onnx.ModelProto, *, data_prop: bool = False,
                 proto_limit: int = PROTOBUF_LIMIT) -> onnx.ModelProto:
    """``onnx.shape_inference.infer_shapes`` for a model of any size (a new model)."""
    return transform(model, lambda m: onnx.shape_inference.infer_shapes(m, data_prop=data_prop),
                     proto_limit=proto_limit, what="shape inference")


def stub_tensor(name: str, tensor: TensorProto, location: str, offset: int, length: int) -> TensorProto:
    """A data-less tensor pointing at ``length`` bytes at ``offset`` of ``location``."""
    stub = TensorProto(name=name, data_type=tensor.data_type, dims=tensor.dims, doc_string=tensor.doc_string)
    stub.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        stub.external_data.add(key=key, value=value)
    return stub


def external_skeleton(detached: Detached, stubs: Mapping[str, TensorProto]) -> onnx.ModelProto:
    """The skeleton with its weight inputs replaced by the ``stubs`` initializers."""
    model = onnx.ModelProto()
    model.CopyFrom(detached.skeleton)
    graph = model.graph
    kept = [v for v in graph.input if v.name not in detached.weights]
    del graph.input[:]
    graph.input.extend(kept)
    graph.initializer.extend(stubs.values())
    if model.ir_version < 4:
        model.ir_version = 4
    return model


def _weight_arrays(detached: Detached) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for name, tensor in detached.weights.items():
        if uses_external_data(tensor) and not tensor.HasField("raw_data"):
            raise ValueError(f"tensor '{name}' has external data that is not loaded; load the model's data first")
        arrays[name] = np.ascontiguousarray(numpy_helper.to_array(tensor))
    return arrays


def ort_session(ort: Any, model: onnx.ModelProto, options: Any, providers: list[Any], *,
                proto_limit: int = PROTOBUF_LIMIT) -> Any:
    """``ort.InferenceSession`` for an in-memory model of any size.

    Above ``proto_limit`` ONNX Runtime gets the skeleton with data-less initializers and the
    tensors as arrays (``SessionOptions.add_external_initializers``, no file is written); the
    arrays are kept alive on the returned session (attribute ``onnxprune_weights``).

    Args:
        ort: The ``onnxruntime`` module.
        model: The model (not modified).
        options: ``ort.SessionOptions`` (large models: the tensors are added to it).
        providers: Execution providers in priority order (names, or ``(name, options)`` pairs).
        proto_limit: Byte size above which the model is passed in parts.
    """
    if not split_worthy(model, proto_limit):
        return ort.InferenceSession(model.SerializeToString(), options, providers=providers)
    detached = detach(model)
    arrays = _weight_arrays(detached)
    stubs = {name: stub_tensor(name, detached.weights[name], _IN_MEMORY, 0, a.nbytes) for name, a in arrays.items()}
    names = list(arrays)
    options.add_external_initializers(names, [ort.OrtValue.ortvalue_from_numpy(arrays[n]) for n in names])
    session = ort.InferenceSession(external_skeleton(detached, stubs).SerializeToString(), options,
                                   providers=providers)
    session.onnxprune_weights = arrays  # ORT reads these buffers for the session's whole life
    logger.debug("ORT session for a large model: %d tensors passed as arrays", len(arrays))
    return session


def content_hash(model: onnx.ModelProto, proto_limit: int = PROTOBUF_LIMIT) -> str:
    """SHA-256 of a model's content, also above the 2 GiB limit (skeleton, then each tensor)."""
    if not split_worthy(model, proto_limit):
        return hashlib.sha256(model.SerializeToString()).hexdigest()
    detached = detach(model)
    digest = hashlib.sha256(detached.skeleton.SerializeToString())
    for name, tensor in detached.weights.items():
        digest.update(name.encode())
        digest.update(tensor.SerializeToString())
    return digest.hexdigest()

