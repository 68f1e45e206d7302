"""Default-domain opset conversion for ``--opset``, downgrades included.

``onnx.version_converter`` has few downgrade adapters (it cannot take even ``Relu`` from opset
14 to 13), so where it fails on a downgrade, nodes are relabelled instead when each op exists at
the older opset with a signature that fits the node (its attributes, input and output counts;
most version bumps only add element types); the ONNX checker must pass with strict type
checking. Every conversion, the converter's too (it relabels ``Softmax`` 13 -> 11 although the
axis semantics differ), is accepted only when ONNX Runtime gives the same outputs on random
inputs.

Contract:
    requires: a checked model of any size (above ``proto_limit``, protobuf's 2 GiB, the
    converter and the checker run on its skeleton, see :mod:`onnxprune.large`).
    guarantees: the result has the requested default-domain opset, passes the ONNX checker and
    matches the input's outputs within :data:`RTOL` of their scale;
    otherwise :class:`UnsupportedInput` with one line naming the op that blocks the conversion.
    The input is not modified. :class:`OpsetChoice` records which opset a written model got
    (the ``onnxprune.opset`` metadata prop, the reports' ``opset``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import version_converter

from onnxprune.deploy.runner import list_initializers_as_inputs, output_diff
from onnxprune.errors import OnnxPruneError, UnsupportedInput
from onnxprune.evaluate.runtime import first_line
from onnxprune.large import PROTOBUF_LIMIT, check_model, transform
from onnxprune.load import default_opset

logger = logging.getLogger(__name__)

#: Largest output difference, relative to the largest output value, for a relabelled model.
RTOL = 1e-5
_DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class OpsetChoice:
    """Which default-domain opset a written model got, and why.

    Attributes:
        source: The input file's opset.
        written: The opset of the written model.
        forced: ``--opset`` chose ``written``.
        reason: Why the source opset could not be kept (one line), when ``written`` is an upgrade
            nobody asked for.
    """

    source: int
    written: int
    forced: bool = False
    reason: str | None = None

    @property
    def upgraded(self) -> bool:
        """The written opset is newer than the source's without ``--opset`` asking for it."""
        return self.written > self.source and not self.forced

    def notice(self) -> str | None:
        """One line telling the user about an unasked upgrade (``None``: nothing to tell)."""
        if not self.upgraded:
            return None
        why = f" ({self.reason})" if self.reason else ""
        return (f"wrote opset {self.written}: the pruned model cannot go back to the input's opset "
                f"{self.source}{why}; pass --keep-opset to refuse instead, or --opset N")

    def to_json(self) -> dict[str, object]:
        """JSON-ready dict (also stored as the ``onnxprune.opset`` metadata prop)."""
        return {"source": self.source, "written": self.written, "forced": self.forced, "reason": self.reason}

    def metadata(self) -> str:
        """The ``onnxprune.opset`` metadata value: compact JSON of :meth:`to_json`."""
        return json.dumps(self.to_json(), separators=(",", ":"))


def iter_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of ``graph`` and of its subgraphs (If/Loop/Scan bodies), depth first."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from iter_nodes(sub)


def _blocker(node: onnx.NodeProto, current: int, opset: int) -> str | None:
    """Why ``node`` cannot be relabelled from ``current`` to ``opset`` (``None``: it can)."""
    try:
        old = onnx.defs.get_schema(node.op_type, opset, "")
    except onnx.defs.SchemaError:
        return f"{node.op_type} does not exist at opset {opset}"
    new = onnx.defs.get_schema(node.op_type, current, "")
    if old.since_version == new.since_version:
        return None
    unknown = [a.name for a in node.attribute if a.name not in old.attributes]
    if unknown:
        return f"{node.op_type} attribute(s) {unknown} do not exist at opset {opset}"
    inputs = len(node.input)
    while inputs and not node.input[inputs - 1]:
        inputs -= 1  # trailing optional inputs left out
    if not old.min_input <= inputs <= old.max_input or not old.min_output <= len(node.output) <= old.max_output:
        return f"{node.op_type}-{new.since_version} takes other inputs or outputs at opset {opset}"
    return None


def _relabel(model: onnx.ModelProto, opset: int, proto_limit: int) -> onnx.ModelProto:
    current = default_opset(model)
    for node in iter_nodes(model.graph):
        if node.domain in _DEFAULT_DOMAINS:
            reason = _blocker(node, current, opset)
            if reason is not None:
                raise UnsupportedInput(f"cannot convert to opset {opset}: {reason}; choose a newer --opset "
                                       f"(the model has {current})")
    result = onnx.ModelProto()
    result.CopyFrom(model)
    for imp in result.opset_import:
        if imp.domain in _DEFAULT_DOMAINS:
            imp.version = opset
    result.ir_version = onnx.helper.find_min_ir_version_for(list(result.opset_import), ignore_unknown=True)
    list_initializers_as_inputs(result)
    try:
        check_model(result, full_check=True, proto_limit=proto_limit)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise UnsupportedInput(f"cannot convert to opset {opset}: {first_line(exc)}; choose a newer --opset "
                               f"(the model has {current})") from exc
    return result


def convert_opset(model: onnx.ModelProto, opset: int, rng: np.random.Generator, *,
                  proto_limit: int = PROTOBUF_LIMIT) -> onnx.ModelProto:
    """``model`` at default-domain ``opset`` (see the module contract).

    Args:
        model: The model (not modified).
        opset: The wanted default-domain opset.
        rng: Source of the random inputs that check the conversion.
        proto_limit: Byte size above which the model is converted on its skeleton.

    Raises:
        UnsupportedInput: the conversion is impossible or changes the outputs.
    """
    current = default_opset(model)
    if opset == current:
        result = onnx.ModelProto()
        result.CopyFrom(model)
        return result
    try:
        converted = transform(model, lambda m: version_converter.convert_version(m, opset),
                              proto_limit=proto_limit, what="opset conversion")
    except Exception as exc:  # the converter raises bare RuntimeErrors and others
        if opset > current:
            raise UnsupportedInput(f"cannot convert from opset {current} to {opset} ({first_line(exc)}); "
                                   "choose another --opset") from exc
        logger.info("version converter: %s; relabelling nodes instead", first_line(exc))
        converted = _relabel(model, opset, proto_limit)
    _check_outputs(model, converted, opset, rng, proto_limit)
    return converted


def _check_outputs(model: onnx.ModelProto, converted: onnx.ModelProto, opset: int,
                   rng: np.random.Generator, proto_limit: int) -> None:
    """Refuse a conversion that changes the outputs (the converter itself is not always right)."""
    current = default_opset(model)
    try:
        diff, scale = output_diff(model, converted, rng, proto_limit=proto_limit)
    except OnnxPruneError as exc:
        raise UnsupportedInput(f"cannot check the model at opset {opset} in ONNX Runtime ({first_line(exc)}); "
                               f"choose another --opset (the model has {current})") from exc
    if diff > RTOL * max(1.0, scale):
        raise UnsupportedInput(f"at opset {opset} the outputs change by {diff:.3g}; choose another --opset "
                               f"(the model has {current})")
    logger.info("opset %d -> %d: outputs within %.3g", current, opset, diff)
