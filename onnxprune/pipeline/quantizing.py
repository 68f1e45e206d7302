"""Pipeline: quantize (load -> bits plan -> calibrate -> simulate or QDQ -> fallback -> save)."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx

from onnxprune.errors import DataError, OutputError, PlanError
from onnxprune.evaluate import DataSpec, Runtime, evaluate, open_data
from onnxprune.evaluate.cost import disk_bytes
from onnxprune.io import save_model
from onnxprune.load import Model, load
from onnxprune.pipeline.pruning import calibration_feeds
from onnxprune.quantize import QuantPlan, bops_report, calibrate, find_layers, simulate, uniform_plan
from onnxprune.quantize.deploy import to_qdq
from onnxprune.quantize.fallback import fall_back, rank_layers
from onnxprune.report import QuantizeReport

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class QuantizeSettings:
    """How to quantize.

    Attributes:
        w_bits: Weight bits of every layer (ignored with ``plan``).
        a_bits: Activation bits of every layer (ignored with ``plan``).
        plan: An explicit bits plan (``--plan bits.json``).
        keep_float: Layers left float: node names, or ``first`` / ``last`` (the first / last quantizable layer).
        method: Calibration method (``minmax``, ``percentile``, ``entropy``).
        simulate: Write the simulated float model (any bits) instead of the deployable QDQ one.
        max_drop: With validation data, fall back to float until top-1 drops at most this fraction.
        calib: Calibration images (``val_split`` = how many).
        val: Labelled validation images (top-1 before/after, and ``max_drop``); None: not scored.
        threads: ORT threads for calibration and scoring.
    """

    calib: DataSpec
    w_bits: int = 8
    a_bits: int = 8
    plan: QuantPlan | None = None
    keep_float: tuple[str, ...] = ()
    method: str = "minmax"
    simulate: bool = False
    max_drop: float | None = None
    val: DataSpec | None = None
    threads: int | None = None


def bits_plan(model: Model, settings: QuantizeSettings) -> QuantPlan:
    """The plan ``settings`` ask for on ``model`` (checked against its layers)."""
    names = [q.node for q in find_layers(model.proto)]
    if not names:
        raise PlanError(f"{model.name}: no Conv/ConvTranspose/Gemm/MatMul with a constant weight to quantize")
    alias = {"first": names[0], "last": names[-1]}
    keep = [alias.get(k, k) for k in settings.keep_float]
    unknown = sorted(set(keep) - set(names))
    if unknown:
        raise PlanError(f"--keep-float names unknown layer(s) {unknown[:3]}; use first, last or node names "
                        "from `onnxprune analyze`")
    if settings.plan is not None:
        settings.plan.check_layers(names)
        return QuantPlan({k: v for k, v in settings.plan.bits.items() if k not in keep})
    return uniform_plan(names, settings.w_bits, settings.a_bits, keep)


def quantized_model(model: Model, plan: QuantPlan, feeds: Mapping[str, np.ndarray], *, method: str,
                    simulated: bool, runtime: Runtime) -> tuple[onnx.ModelProto, dict[str, tuple[int, int]], int]:
    """The simulated or deployable model of ``plan``: (model, bits it stores, opset)."""
    opset = next(o.version for o in model.proto.opset_import if o.domain in ("", "ai.onnx"))
    if simulated:
        layers = {q.node: q for q in find_layers(model.proto)}
        tensors = [layers[n].activation for n, (_, a) in plan.bits.items() if a != 32]
        ranges = calibrate(model.proto, feeds, tensors, method=method, runtime=runtime)
        return simulate(model.proto, plan, ranges), dict(plan.bits), opset
    result = to_qdq(model.proto, plan, feeds, method=method)
    return result.model, dict(result.bits), result.opset


def _scorer(val: DataSpec, runtime: Runtime) -> Callable[[onnx.ModelProto], float]:
    def score(proto: onnx.ModelProto) -> float:
        session = runtime.create(proto)
        result = evaluate(session, open_data(val, session.inputs))
        if result.accuracy is None:
            raise DataError("the validation data has no labels; pass labelled data for --max-drop")
        return result.accuracy.top1 / 100.0
    return score


def _output_error(model: Model, feeds: Mapping[str, np.ndarray], method: str, runtime: Runtime
                  ) -> Callable[[QuantPlan], float]:
    """Mean squared output difference of a one-layer simulated plan to the float model, on ``feeds``."""
    probe = {k: v[:256] for k, v in feeds.items()}
    reference = runtime.create(model.proto).run(probe)[0]
    layers = {q.node: q for q in find_layers(model.proto)}
    ranges = calibrate(model.proto, feeds, [q.activation for q in layers.values()], method=method, runtime=runtime)

    def error(plan: QuantPlan) -> float:
        out = runtime.create(simulate(model.proto, plan, ranges)).run(probe)[0]
        return float(np.mean((out - reference) ** 2))
    return error


def _set_metadata(model: onnx.ModelProto, values: Mapping[str, str]) -> None:
    """Set ``values`` in the metadata, replacing keys already there (a model ``compress`` wrote has them:
    a duplicate key fails the ONNX checker)."""
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in values]
    del model.metadata_props[:]
    for key, value in [*kept, *values.items()]:
        model.metadata_props.add(key=key, value=value)


def quantize_file(path: str | os.PathLike[str], output: str | os.PathLike[str], settings: QuantizeSettings, *,
                  input_shapes: Mapping[str, Sequence[int]] | None = None) -> QuantizeReport:
    """Quantize ``path`` as ``settings`` say and save atomically to ``output`` (the input is never modified)."""
    t0 = time.perf_counter()
    source, target = Path(path).resolve(), Path(output).resolve()
    if source == target:
        raise OutputError(f"-o {output} is the input model; choose another output path (the input is never modified)")
    if settings.max_drop is not None and (settings.val is None or not 0.0 <= settings.max_drop < 1.0):
        raise DataError("--max-drop needs labelled validation data (--data) and a fraction in [0, 1), e.g. 0.002")
    model = load(source, input_shapes=input_shapes)
    plan = bits_plan(model, settings)
    runtime = Runtime("cpu", settings.threads)
    feeds = calibration_feeds(source, settings.calib, threads=settings.threads)
    score = _scorer(settings.val, runtime) if settings.val is not None else None
    before = score(model.proto) if score is not None else None
    built, written, opset = quantized_model(model, plan, feeds, method=settings.method,
                                            simulated=settings.simulate, runtime=runtime)
    after = score(built) if score is not None else None
    fallen: tuple[str, ...] = ()
    if settings.max_drop is not None and before is not None and after is not None and before - after > settings.max_drop:
        order = rank_layers(plan, _output_error(model, feeds, settings.method, runtime))
        cache: dict[tuple, tuple[onnx.ModelProto, dict[str, tuple[int, int]], int]] = {}

        def build_score(candidate: QuantPlan) -> float:
            cache[tuple(sorted(candidate.bits))] = quantized_model(
                model, candidate, feeds, method=settings.method, simulated=settings.simulate, runtime=runtime)
            return score(cache[tuple(sorted(candidate.bits))][0])

        result = fall_back(plan, order, build_score, before, settings.max_drop)
        fallen, after = result.fallen_back, result.accuracy
        built, written, opset = cache.get(tuple(sorted(result.plan.bits)), (model.proto, {}, opset))
    _set_metadata(built, {"onnxprune.command": "quantize", "onnxprune.mode": "simulate" if settings.simulate
                          else "deploy"})
    saved = save_model(built, target)
    report = bops_report(model, QuantPlan(written))
    return QuantizeReport(source=str(source), output=saved, mode="simulate" if settings.simulate else "deploy",
                          plan=dict(plan.bits), written=written, bops=report.as_dict(),
                          bytes_before=disk_bytes(source), bytes_after=disk_bytes(saved), accuracy_before=before,
                          accuracy_after=after, fallen_back=fallen, opset=opset, seconds=time.perf_counter() - t0)
