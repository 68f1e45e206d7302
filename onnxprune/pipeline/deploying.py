"""The deploy step of ``prune`` and ``compress``: simplify, restore the interface, tag, export.

Contract:
    requires: ``original`` is the user's model as read from their file (:func:`onnxprune.load.read`),
    ``pruned`` the rewrite stage's output for it.
    guarantees: :func:`check_deploy` writes nothing and refuses every bad ``--opset`` /
    ``--triton-*`` setting before the (long) pruning work starts. :func:`finish` returns a model
    with the original's input/output names, dtypes and symbolic dims, its metadata props plus
    ``onnxprune.*`` props (``onnxprune.opset``: the input's and the written opset), the original's
    opset unless ``DeployOptions.opset`` asks for another or the pruned model cannot go back to it
    (then the upgraded opset with a notice, or with ``keep_opset`` a refusal before any work),
    and no more nodes than ``pruned``; a simplification whose outputs
    differ from ``pruned``'s on random inputs is discarded. :func:`export_repo` writes the Triton
    entry complete or not at all (see :mod:`onnxprune.deploy.triton`). Every step takes models of
    any size: above ``proto_limit`` (protobuf's 2 GiB) they work on the skeleton or pass the
    tensors to ORT as arrays (:mod:`onnxprune.large`); ``original`` may then keep its external
    data unloaded (``read(..., interface_only=True)``), its interface is all that is used.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from onnxprune.deploy.interface import restore_interface
from onnxprune.deploy.opset import OpsetChoice, convert_opset
from onnxprune.deploy.runner import output_diff
from onnxprune.deploy.simplify import simplify
from onnxprune.deploy.triton import TritonOptions, check_export, export_triton
from onnxprune.errors import OnnxPruneError, UnsupportedInput
from onnxprune.large import PROTOBUF_LIMIT, is_large, transform
from onnxprune.load import MIN_OPSET, default_opset, upgraded
from onnxprune.plan import Plan

logger = logging.getLogger(__name__)

#: Simplified outputs may differ from the pruned ones by float rounding (BatchNorm folded into
#: Conv, folded constants): this much relative to the output scale, else the result is discarded.
SIMPLIFY_RTOL = 1e-4


@dataclass(frozen=True)
class DeployOptions:
    """What ``prune`` / ``compress`` do to the final model before and after saving it.

    Attributes:
        opset: Convert the result to this default-domain opset; ``None``: the original's where the
            result can go back to it (an opset below 13 is upgraded on load), else the upgraded one.
        keep_opset: Refuse (one line) instead of writing an upgraded opset.
        simplify: Fold constants and remove dead and Identity nodes (graph-surgeon, onnxslim).
        triton_repo: Also write ``<triton_repo>/<triton.name>/`` (Triton model repository).
        triton: Name and batching of the Triton entry (needed with ``triton_repo``).
        force: Replace an existing non-empty ``<triton_repo>/<name>``.
    """

    opset: int | None = None
    keep_opset: bool = False
    simplify: bool = True
    triton_repo: Path | None = None
    triton: TritonOptions | None = None
    force: bool = False


def _to_opset(original: onnx.ModelProto, model: onnx.ModelProto, options: DeployOptions,
              rng: np.random.Generator, proto_limit: int = PROTOBUF_LIMIT
              ) -> tuple[onnx.ModelProto, int | None, OpsetChoice]:
    """``model`` at the opset to write, the opset to pass on (``None``: kept) and why it is that one.

    ``--opset`` forces its version; else ``original``'s opset where ``model`` (upgraded by the load
    stage) converts back to it with the same outputs, else ``model``'s own (upgraded) opset with
    a logged notice, or with ``keep_opset`` a one-line refusal.
    """
    source, current = default_opset(original), default_opset(model)
    if options.opset is not None:
        converted = model if options.opset == current else convert_opset(model, options.opset, rng,
                                                                         proto_limit=proto_limit)
        return converted, options.opset, OpsetChoice(source, options.opset, forced=True)
    if current == source:
        return model, None, OpsetChoice(source, source)
    try:
        return convert_opset(model, source, rng, proto_limit=proto_limit), source, OpsetChoice(source, source)
    except UnsupportedInput as exc:
        reason = str(exc).rsplit("; ", 1)[0].removeprefix(f"cannot convert to opset {source}: ")
        if options.keep_opset:
            raise UnsupportedInput(f"the pruned model (opset {current}) cannot go back to the input's opset "
                                   f"{source} ({reason}); drop --keep-opset to write opset {current}") from exc
        choice = OpsetChoice(source, current, reason=reason)
        logger.info("%s", choice.notice())
        return model, None, choice


def check_deploy(original: onnx.ModelProto, options: DeployOptions, rng: np.random.Generator, *,
                 proto_limit: int = PROTOBUF_LIMIT) -> None:
    """Refuse bad deploy settings before any work (writes nothing).

    The opset conversion (``--opset``, or with ``keep_opset`` back to an opset below 13 that the
    load stage upgrades) is tried on the (simplified) original: pruning keeps its op types. Not on an
    original above ``proto_limit`` (its data may be unloaded): there the final conversion decides.

    Raises:
        UnsupportedInput: an ``opset`` out of range or impossible for this model, or given with
            ``keep_opset``; with ``keep_opset``, no way back to the original's opset; a model that
            Triton cannot serve with these options.
        OutputError: a bad Triton name or an existing entry without ``force``.
    """
    model = original
    if options.keep_opset and options.opset is not None:
        raise UnsupportedInput(f"--keep-opset and --opset {options.opset} contradict each other; pass only one")
    if options.opset is not None:
        newest = onnx.defs.onnx_opset_version()
        if not 7 <= options.opset <= newest:
            raise UnsupportedInput(f"--opset {options.opset} is outside 7..{newest} (this onnx); "
                                   f"choose an opset in that range or leave it out")
    if (options.opset is not None or options.keep_opset) and default_opset(original) < MIN_OPSET:
        try:  # the load stage upgrades it: the output is converted from there
            model = transform(original, upgraded, proto_limit=proto_limit)
        except OnnxPruneError:  # the load stage reports it
            model = original
    target = options.opset if options.opset is not None else default_opset(original)
    if target != default_opset(model) and not is_large(model, proto_limit):
        # the output is converted after simplification (e.g. BatchNorm folded away): try that
        _to_opset(original, simplify(model) if options.simplify else model, options, rng, proto_limit)
    if options.triton_repo is not None:
        if options.triton is None:
            raise UnsupportedInput("a Triton repository needs a model name; pass --triton-name")
        check_export(original, options.triton_repo, options.triton, force=options.force, proto_limit=proto_limit)


def _simplified(pruned: onnx.ModelProto, rng: np.random.Generator, proto_limit: int) -> onnx.ModelProto:
    """``simplify(pruned)`` when it has no more nodes and the same outputs, else ``pruned``."""
    simple = simplify(pruned, proto_limit=proto_limit)
    if len(simple.graph.node) > len(pruned.graph.node):
        logger.warning("simplification grew the graph; keeping the pruned model as it is")
        return pruned
    try:
        diff, scale = output_diff(pruned, simple, rng, proto_limit=proto_limit)
    except OnnxPruneError as exc:
        logger.warning("cannot compare the simplified model (%s); keeping the pruned model", exc)
        return pruned
    if diff > SIMPLIFY_RTOL * max(1.0, scale):
        logger.warning("simplified outputs differ by %.3g; keeping the pruned model as it is", diff)
        return pruned
    logger.info("simplified %d -> %d nodes (outputs within %.3g)", len(pruned.graph.node),
                len(simple.graph.node), diff)
    return simple


def run_metadata(command: str, plan: Plan, **fields: object) -> dict[str, str]:
    """``onnxprune.*`` props of one run: the command, the plan (JSON) and ``fields`` that are set."""
    props = {"command": command, "plan": json.dumps(plan.to_json(), separators=(",", ":"))}
    props.update({key: str(value) for key, value in fields.items() if value is not None})
    return props


def finish(original: onnx.ModelProto, pruned: onnx.ModelProto, options: DeployOptions,
           metadata: Mapping[str, str], rng: np.random.Generator, *,
           proto_limit: int = PROTOBUF_LIMIT) -> tuple[onnx.ModelProto, OpsetChoice]:
    """The model to save (simplified, with the original's interface and ``metadata``) and its opset.

    The opset is recorded as the ``onnxprune.opset`` metadata prop (:meth:`OpsetChoice.metadata`).

    Args:
        original: The user's model as read from their file.
        pruned: The rewrite stage's output (normalized, opset >= 13).
        options: ``opset`` and ``simplify`` are used here.
        metadata: ``onnxprune.*`` props (keys without the prefix).
        rng: Source of the random inputs that compare the simplified and pruned outputs.
        proto_limit: Byte size above which models are handled in parts (:mod:`onnxprune.large`).

    Raises:
        UnsupportedInput: the interface cannot be restored or the opset conversion fails.
        InvalidModel: the result fails the ONNX checker.
    """
    model = _simplified(pruned, rng, proto_limit) if options.simplify else pruned
    model, opset, choice = _to_opset(original, model, options, rng, proto_limit)
    final = restore_interface(original, model, opset=opset, extra_metadata={**metadata, "opset": choice.metadata()},
                              proto_limit=proto_limit)
    return final, choice


def export_repo(model: onnx.ModelProto, options: DeployOptions, *, proto_limit: int = PROTOBUF_LIMIT) -> Path | None:
    """Write the Triton entry for ``model`` when ``options.triton_repo`` is set; its folder."""
    if options.triton_repo is None or options.triton is None:
        return None
    return export_triton(model, options.triton_repo, options.triton, force=options.force,
                         proto_limit=proto_limit).model_dir
