"""Interface preservation: the compressed model presents exactly the original's interface.

Contract:
    requires: ``original`` and ``compressed`` have the same number of graph inputs and outputs,
    with the same ranks; static dims agree wherever both are static (the pruning core never
    changes the interface, this is the final guard).
    guarantees: the returned model has the original's graph input/output names and order,
    element types (a ``Cast`` is inserted where the compressed graph works in another type),
    symbolic and static dims (a dynamic batch stays dynamic), graph name, model version and
    metadata props plus onnxprune's own ``onnxprune.*`` props. The opset changes only when
    ``opset`` asks for it (``onnx.version_converter``); the IR version is the original's unless
    the opset needs a newer one. Stale intermediate shape info (``value_info``) is dropped.
    The result passes ``onnx.checker``. Neither input is modified. Models above ``proto_limit``
    (protobuf's 2 GiB) are converted and checked on their skeleton (:mod:`onnxprune.large`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import onnx
from onnx import helper, version_converter

from onnxprune import __version__
from onnxprune.deploy.runner import graph_inputs, list_initializers_as_inputs
from onnxprune.errors import InvalidModel, UnsupportedInput
from onnxprune.large import PROTOBUF_LIMIT, check_model, transform
from onnxprune.load import default_opset

logger = logging.getLogger(__name__)

#: Prefix of the metadata keys onnxprune writes.
METADATA_PREFIX = "onnxprune."


def _dims(vi: onnx.ValueInfoProto) -> list[str] | None:
    """Dims as strings (``'32'``, ``'batch'``, ``'?'``); ``None`` when the rank is unknown."""
    ttype = vi.type.tensor_type
    if not ttype.HasField("shape"):
        return None
    return [str(d.dim_value) if d.HasField("dim_value") else d.dim_param or "?" for d in ttype.shape.dim]


def _describe(vi: onnx.ValueInfoProto) -> str:
    dtype = helper.tensor_dtype_to_string(vi.type.tensor_type.elem_type) if vi.type.tensor_type.elem_type else "?"
    dims = _dims(vi)
    return f"{dtype.replace('TensorProto.', '')}[{', '.join(dims) if dims is not None else '*'}]"


def _compare_values(kind: str, old: Sequence[onnx.ValueInfoProto], new: Sequence[onnx.ValueInfoProto]) -> list[str]:
    problems: list[str] = []
    old_names, new_names = [v.name for v in old], [v.name for v in new]
    if old_names != new_names:
        problems.append(f"{kind} names {old_names} != {new_names}")
    for vo, vn in zip(old, new):
        if vo.type.tensor_type.elem_type != vn.type.tensor_type.elem_type or _dims(vo) != _dims(vn):
            problems.append(f"{kind} '{vo.name}': {_describe(vo)} != {_describe(vn)} ('{vn.name}')")
    return problems


def interface_mismatches(original: onnx.ModelProto, compressed: onnx.ModelProto) -> list[str]:
    """Names, dtypes, dims and metadata of ``original`` that ``compressed`` does not keep."""
    problems = _compare_values("input", graph_inputs(original), graph_inputs(compressed))
    problems += _compare_values("output", list(original.graph.output), list(compressed.graph.output))
    new_props = {p.key: p.value for p in compressed.metadata_props}
    for prop in original.metadata_props:
        if prop.key.startswith(METADATA_PREFIX):
            continue  # onnxprune's own props describe the latest compression, they may change
        if new_props.get(prop.key) != prop.value:
            problems.append(f"metadata '{prop.key}' = {prop.value!r} is {new_props.get(prop.key)!r}")
    return problems


def check_interface(original: onnx.ModelProto, compressed: onnx.ModelProto) -> list[str]:
    """List every way ``compressed`` differs from ``original``'s interface (empty: identical).

    Compares graph input and output names (in order), element types and dims (static values
    and symbolic names), metadata props, the default-domain opset and the IR version.
    """
    problems = interface_mismatches(original, compressed)
    if default_opset(original) != default_opset(compressed):
        problems.append(f"opset {default_opset(original)} != {default_opset(compressed)}")
    if original.ir_version != compressed.ir_version:
        problems.append(f"IR version {original.ir_version} != {compressed.ir_version}")
    return problems


def _rename_in_graph(graph: onnx.GraphProto, renames: Mapping[str, str]) -> None:
    """Rename tensors everywhere in ``graph`` and its subgraphs (outer names seen inside)."""
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                _rename_in_graph(sub, renames)
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        value.name = renames.get(value.name, value.name)
    for init in graph.initializer:
        init.name = renames.get(init.name, init.name)


def _all_names(graph: onnx.GraphProto) -> set[str]:
    names = {v.name for v in list(graph.input) + list(graph.output) + list(graph.initializer)}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
    return names


def _match_names(kind: str, old: Sequence[onnx.ValueInfoProto], new: Sequence[onnx.ValueInfoProto],
                 graph: onnx.GraphProto) -> None:
    """Rename ``new`` positionally to ``old``'s names when they differ (same count required)."""
    if len(old) != len(new):
        raise UnsupportedInput(f"the compressed model has {len(new)} graph {kind}s, the original "
                               f"{len(old)}; compress from the original model again")
    old_names, new_names = [v.name for v in old], [v.name for v in new]
    if set(old_names) == set(new_names):
        return
    renames = {n: o for o, n in zip(old_names, new_names) if o != n}
    clashes = (_all_names(graph) - set(renames)) & set(renames.values())
    if clashes:
        raise UnsupportedInput(f"cannot restore {kind} names {sorted(clashes)}: the compressed graph "
                               "uses them for other tensors; compress from the original model again")
    logger.info("renaming compressed %ss %s", kind, renames)
    _rename_in_graph(graph, renames)


def _merge_type(kind: str, old: onnx.ValueInfoProto, new: onnx.ValueInfoProto) -> None:
    """Check that ``old``'s dims fit ``new``'s, then give ``new`` exactly ``old``'s shape."""
    old_dims, new_dims = _dims(old), _dims(new)
    if old_dims is not None and new_dims is not None:
        if len(old_dims) != len(new_dims):
            raise UnsupportedInput(f"{kind} '{old.name}' has rank {len(new_dims)} in the compressed model, "
                                   f"{len(old_dims)} in the original; the interface must not change")
        for axis, (a, b) in enumerate(zip(old_dims, new_dims)):
            if a.isdigit() and b.isdigit() and a != b:
                raise UnsupportedInput(f"{kind} '{old.name}' dim {axis} is {b} in the compressed model, {a} "
                                       "in the original; exclude that layer from pruning")
    shape_field = new.type.tensor_type
    shape_field.ClearField("shape")
    if old.type.tensor_type.HasField("shape"):
        shape_field.shape.CopyFrom(old.type.tensor_type.shape)
    new.doc_string = old.doc_string


def _cast_inputs(graph: onnx.GraphProto, old: Sequence[onnx.ValueInfoProto],
                 new: Iterable[onnx.ValueInfoProto]) -> None:
    """Where the compressed graph reads an input in another type, cast from the original type."""
    old_types = {v.name: v.type.tensor_type.elem_type for v in old}
    for value in new:
        want, have = old_types[value.name], value.type.tensor_type.elem_type
        if want == have or not want:
            continue
        inner = f"{value.name}__onnxprune_cast"
        _rename_in_graph(graph, {value.name: inner})
        graph.node.insert(0, helper.make_node("Cast", [value.name], [inner], to=have, name=inner))
        value.type.tensor_type.elem_type = want


def _cast_output(graph: onnx.GraphProto, old_out: Sequence[onnx.ValueInfoProto], value: onnx.ValueInfoProto) -> None:
    """Where the compressed graph produces an output in another type, cast to the original type."""
    want = next(v.type.tensor_type.elem_type for v in old_out if v.name == value.name)
    have = value.type.tensor_type.elem_type
    if not want or want == have:
        return
    inner = f"{value.name}__onnxprune_cast"
    _rename_in_graph(graph, {value.name: inner})
    graph.node.append(helper.make_node("Cast", [inner], [value.name], to=want, name=inner))
    value.type.tensor_type.elem_type = want


def _restore_io(original: onnx.ModelProto, model: onnx.ModelProto) -> None:
    graph = model.graph
    old_in, old_out = graph_inputs(original), list(original.graph.output)
    _match_names("input", old_in, graph_inputs(model), graph)
    _match_names("output", old_out, list(graph.output), graph)
    # reorder to the original order (names now match as sets)
    by_name = {v.name: v for v in graph.input}
    inits = [v for v in graph.input if v.name not in {o.name for o in old_in}]
    ordered_in = [onnx.ValueInfoProto.FromString(by_name[o.name].SerializeToString()) for o in old_in]
    out_by_name = {v.name: v for v in graph.output}
    ordered_out = [onnx.ValueInfoProto.FromString(out_by_name[o.name].SerializeToString()) for o in old_out]
    _cast_inputs(graph, old_in, ordered_in)
    for value in ordered_out:
        _cast_output(graph, old_out, value)
    for old, new in zip(old_in, ordered_in):
        _merge_type("input", old, new)
    for old, new in zip(old_out, ordered_out):
        _merge_type("output", old, new)
    del graph.input[:]
    graph.input.extend(ordered_in + inits)
    del graph.output[:]
    graph.output.extend(ordered_out)


def _set_versions(original: onnx.ModelProto, model: onnx.ModelProto, opset: int | None,
                  proto_limit: int) -> onnx.ModelProto:
    if opset is not None and opset != default_opset(model):
        try:
            model = transform(model, lambda m: version_converter.convert_version(m, opset),
                              proto_limit=proto_limit, what="opset conversion")
        except Exception as exc:  # the converter raises bare RuntimeErrors and others
            raise UnsupportedInput(f"cannot convert the compressed model to opset {opset} "
                                   f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                                   f"choose another --opset (now {default_opset(model)})") from exc
        logger.info("converted the compressed model to opset %d", opset)
    elif default_opset(model) != default_opset(original):
        logger.info("keeping opset %d (original: %d); pass --opset to convert",
                    default_opset(model), default_opset(original))
    needed = helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    model.ir_version = needed if opset is not None else max(needed, original.ir_version)
    list_initializers_as_inputs(model)
    return model


def _merge_metadata(original: onnx.ModelProto, model: onnx.ModelProto,
                    extra: Mapping[str, str] | None) -> None:
    # onnxprune.* props of an earlier run describe that run, not this one: never carried over
    props: dict[str, str] = {p.key: p.value for p in list(model.metadata_props) + list(original.metadata_props)
                             if not p.key.startswith(METADATA_PREFIX)}
    ours = {"version": __version__, **{k.removeprefix(METADATA_PREFIX): str(v) for k, v in (extra or {}).items()}}
    props.update({METADATA_PREFIX + k: v for k, v in ours.items()})
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)


def restore_interface(original: onnx.ModelProto, compressed: onnx.ModelProto, *, opset: int | None = None,
                      extra_metadata: Mapping[str, str] | None = None,
                      proto_limit: int = PROTOBUF_LIMIT) -> onnx.ModelProto:
    """Give ``compressed`` the interface of ``original`` (see the module contract).

    Args:
        original: The user's model, as read from their file (not normalized).
        compressed: The pruned / quantized model.
        opset: Convert to this default-domain opset with ``onnx.version_converter``; ``None``
            keeps the compressed model's opset.
        extra_metadata: onnxprune's own props (e.g. ``plan``, ``target``, ``accuracy``); keys
            are stored with the ``onnxprune.`` prefix, ``onnxprune.version`` is always set.
        proto_limit: Byte size above which the model is converted and checked on its skeleton.

    Returns:
        A new model; the inputs are not modified.

    Raises:
        UnsupportedInput: the interfaces cannot be reconciled, or the opset conversion fails.
        InvalidModel: the result fails the ONNX checker.
    """
    model = onnx.ModelProto()
    model.CopyFrom(compressed)
    del model.graph.value_info[:]  # intermediate shapes are stale after pruning
    _restore_io(original, model)
    model = _set_versions(original, model, opset, proto_limit)
    model.graph.name = original.graph.name or model.graph.name
    model.model_version, model.domain = original.model_version, original.domain
    model.doc_string = original.doc_string
    model.producer_name, model.producer_version = "onnxprune", __version__
    _merge_metadata(original, model, extra_metadata)
    try:
        check_model(model, proto_limit=proto_limit)
    except onnx.checker.ValidationError as exc:
        raise InvalidModel(f"the compressed model fails the ONNX checker after restoring its interface "
                           f"({str(exc).strip().splitlines()[0]}); report this with the model") from exc
    left = interface_mismatches(original, model)
    if left:
        raise InvalidModel(f"interface still differs after restoring it: {left[0]}; report this with the model")
    return model
