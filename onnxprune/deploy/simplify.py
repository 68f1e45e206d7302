"""Output simplification after pruning: constant folding, dead-node and Identity removal.

Two passes: onnx-graphsurgeon (constant folding with Q/DQ excluded, clean-up) plus Identity
removal done here (graph-surgeon keeps Identity nodes); then onnxslim when it is installed
(it also folds BatchNorm into Conv and fuses Gemm patterns). The onnxslim result is kept only
if it keeps every Quantize/DequantizeLinear node and has fewer nodes.

Contract:
    requires: a checked model (any opset).
    guarantees: same graph inputs and outputs (names, types, dims), same opset imports, IR
    version, metadata and functions; Quantize/DequantizeLinear nodes are never folded (folding
    a DequantizeLinear of a weight would turn a quantized model back into a float one); the
    result never has more nodes than the input (if it would, the input is returned unchanged).
    Outputs stay equal up to float rounding of folded constants and of BatchNorm folded into
    Conv (tests check 1e-5). Models above ``proto_limit`` (protobuf's 2 GiB) are folded on their
    skeleton (:mod:`onnxprune.large`: their large tensors are not folded) and onnxslim, which
    needs the whole model in one protobuf message, is skipped (logged).
"""

from __future__ import annotations

import logging
from collections import Counter

import onnx

from onnxprune.evaluate.runtime import import_ort
from onnxprune.large import PROTOBUF_LIMIT, is_large, transform
from onnxprune.load import restore_model_fields

logger = logging.getLogger(__name__)

_NEVER_FOLD = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})


def _count_nodes(model: onnx.ModelProto) -> int:
    return len(model.graph.node)


def _fold_and_clean(model: onnx.ModelProto, proto_limit: int) -> onnx.ModelProto:
    return transform(model, _fold_and_clean_small, proto_limit=proto_limit, what="simplification")


def _fold_and_clean_small(model: onnx.ModelProto) -> onnx.ModelProto:
    import_ort()  # graph-surgeon evaluates constant subgraphs with ONNX Runtime
    import onnx_graphsurgeon as gs

    try:  # graph-surgeon folds Shape chains only where tensor shapes are known
        typed = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as exc:  # onnx raises InferenceError and plain RuntimeErrors
        logger.debug("shape inference failed, folding without shapes: %s", exc)
        typed = model
    graph = gs.import_onnx(typed)
    graph.fold_constants(fold_shapes=True, error_ok=True,
                         should_exclude_node=lambda node: node.op in _NEVER_FOLD)
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    folded = gs.export_onnx(graph, do_type_check=False)
    _restore_declarations(folded.graph, model.graph)
    return restore_model_fields(folded, model)


def _restore_declarations(new: onnx.GraphProto, old: onnx.GraphProto) -> None:
    """Graph inputs/outputs exactly as declared before; value_info only as before, for live tensors."""
    declared = {v.name: v for v in list(old.input) + list(old.output)}
    for value in list(new.input) + list(new.output):
        if value.name in declared:
            value.CopyFrom(declared[value.name])
    live = {name for node in new.node for name in list(node.input) + list(node.output)}
    del new.value_info[:]
    new.value_info.extend(v for v in old.value_info if v.name in live)


def _rename_uses(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Point every reader of ``old`` (subgraphs included) at ``new``."""
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                _rename_uses(sub, old, new)


def remove_identities(model: onnx.ModelProto) -> int:
    """Remove Identity nodes of the main graph in place; returns how many were removed.

    An Identity whose output is a graph output is removed only when its input is produced by
    a node (that node then writes the graph output directly) and is not itself a graph output.
    """
    graph = model.graph
    outputs = {o.name for o in graph.output}
    producers = {out: node for node in graph.node for out in node.output}
    removed = 0
    for node in [n for n in graph.node if n.op_type == "Identity" and not n.domain]:
        src, dst = node.input[0], node.output[0]
        if dst in outputs:
            producer = producers.get(src)
            if producer is None or src in outputs:
                continue  # an input or initializer passed through, or two outputs share a tensor
            _rename_uses(graph, src, dst)
            producer.output[:] = [dst if name == src else name for name in producer.output]
            producers[dst] = producer
        else:
            _rename_uses(graph, dst, src)
        graph.node.remove(node)
        removed += 1
    return removed


def _qdq_count(model: onnx.ModelProto) -> int:
    return sum(1 for n in model.graph.node if n.op_type in _NEVER_FOLD)


def _slim(model: onnx.ModelProto, proto_limit: int) -> onnx.ModelProto:
    """onnxslim's result with ``model``'s declarations, or ``model`` if it is absent or no better."""
    if is_large(model, proto_limit):
        logger.info("onnxslim skipped: the model is above %d bytes and onnxslim needs it in one protobuf "
                    "message; graph-surgeon simplification only", proto_limit)
        return model
    try:
        import onnxslim
    except ImportError:
        logger.debug("onnxslim is not installed; graph-surgeon simplification only")
        return model
    try:
        slim = onnxslim.slim(model)
    except Exception as exc:  # a third-party optimizer: any failure means "keep what we have"
        logger.warning("onnxslim failed (%s); keeping the graph-surgeon result", str(exc).splitlines()[0][:200])
        return model
    if slim is None or _qdq_count(slim) != _qdq_count(model) or _count_nodes(slim) >= _count_nodes(model):
        return model
    _restore_declarations(slim.graph, model.graph)
    return restore_model_fields(slim, model)


def simplify(model: onnx.ModelProto, *, proto_limit: int = PROTOBUF_LIMIT) -> onnx.ModelProto:
    """Fold constants, drop dead nodes and Identity nodes (see the module contract).

    Args:
        model: The model to simplify (not modified).
        proto_limit: Byte size above which the model is simplified on its skeleton.

    Returns:
        A new, simplified model, or an unchanged copy if simplification would add nodes.
    """
    before = _count_nodes(model)
    simplified = _fold_and_clean(model, proto_limit)
    identities = remove_identities(simplified)
    simplified = _fold_and_clean(simplified, proto_limit) if identities else simplified
    simplified = _slim(simplified, proto_limit)
    after = _count_nodes(simplified)
    if after > before:
        logger.warning("simplification would grow the graph from %d to %d nodes; keeping it as it was",
                       before, after)
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        return copy
    removed = Counter(n.op_type for n in model.graph.node) - Counter(n.op_type for n in simplified.graph.node)
    logger.info("simplified %d -> %d nodes (removed %s)", before, after, dict(removed))
    return simplified
