"""The joint search inside ``compress --quantize``: bit space, simulated candidates, the int8 hook.

Every candidate is built as in a pruning-only search (rewrite, then the per-candidate repair
when asked) and *then* simulated at its plan's bits: activation ranges are calibrated on the
pruned float model with :data:`QUANT_CALIB_IMAGES` calibration images (``--calib`` when a repair
is asked, else a seeded subset of ``--data``) and :func:`onnxprune.quantize.simulate` puts the
weights on their grids and fake-quantizes the layers' inputs. The written model is the
simulated best one, exactly as scored (not simplified: folding BatchNorm into the grid-valued
weights would move them off their grid); :func:`deployable_hook` receives the pruned float model and the plan
(the place where a deployable int8 model is to be written next to it).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxprune.analyze.cost import model_cost, weight_bytes
from onnxprune.analyze.types import Analysis
from onnxprune.errors import OnnxPruneError, PlanError
from onnxprune.evaluate import DataSpec, Runtime
from onnxprune.load import Model
from onnxprune.pipeline.pruning import RepairSettings, calibration_feeds
from onnxprune.plan import ROUND_TO, Plan
from onnxprune.quantize import QuantPlan, bops_report, calibrate, find_layers, simulate
from onnxprune.quantize.deploy import to_qdq
from onnxprune.quantize.plan import A_BITS, W_BITS
from onnxprune.io import save_model
from onnxprune.search.bits import BitSpace, JointMeter
from onnxprune.search.rescale import joint_floor, rescale_joint
from onnxprune.search.space import SearchSpace

logger = logging.getLogger(__name__)

#: Calibration images of every candidate's activation ranges (one ORT pass each).
QUANT_CALIB_IMAGES = 64
_ROUND_PROBES = 4

Quantizer = Callable[[Plan, onnx.ModelProto], onnx.ModelProto]


@dataclasses.dataclass(frozen=True)
class JointSettings:
    """The joint search's options.

    Attributes:
        w_bits: Allowed weight bits (``--w-bits``).
        a_bits: Allowed activation bits (``--a-bits``).
        keep_float: Layers kept float (``first``, ``last`` or node names; default none, as the paper).
        calib_images: Calibration images of the activation ranges.
        method: Calibration method (``minmax``, ``percentile``, ``entropy``).
    """

    w_bits: tuple[int, ...] = W_BITS
    a_bits: tuple[int, ...] = A_BITS
    keep_float: tuple[str, ...] = ()
    calib_images: int = QUANT_CALIB_IMAGES
    method: str = "minmax"


def bit_space(space: SearchSpace, metric: str, settings: JointSettings, target: float) -> BitSpace:
    """The bit space of ``space``; refuses a target that the lowest bits at max-ratio pruning miss.

    Raises:
        PlanError: bits outside the allowed sets, unknown ``keep_float`` layers, or an unreachable target.
    """
    bits = BitSpace.build(space, metric, w_set=settings.w_bits, a_set=settings.a_bits,
                          keep_float=settings.keep_float)
    meter = JointMeter(bits)
    base = meter.float_value()
    if not 0.0 < target < 1.0 or joint_floor(bits, meter) > (1.0 - target) * base * 1.01:
        raise PlanError(f"--target {target} of {metric} cannot be met with --quantize: at most "
                        f"{1 - joint_floor(bits, meter) / base:.2%} can be removed (--max-ratio {space.max_ratio}, "
                        f"{bits.w_set[0]}-bit weights, {bits.a_set[0]}-bit activations); lower --target")
    return bits


def joint_round_to(analysis: Analysis, importance: Sequence[np.ndarray], requested: int | None, *, target: float,
                   metric: str, max_ratio: float, settings: JointSettings) -> int:
    """``requested``, or :data:`ROUND_TO` where fixed probes meet the joint target within 1 %, else 1."""
    if requested is not None:
        return requested
    space = SearchSpace.build(analysis, importance, max_ratio=max_ratio, round_to=ROUND_TO)
    try:
        bits = bit_space(space, metric, settings, target)
    except PlanError:
        return 1
    meter, rng = JointMeter(bits), np.random.default_rng(0)  # fixed probes, independent of the run's seed
    probes = [np.column_stack([np.full(len(space), min(target, max_ratio)), np.ones(len(space)),
                               np.full(len(space), 0.6)])]
    probes += [np.column_stack([rng.uniform(0, max_ratio, len(space)), rng.uniform(0, 1, (len(space), 2))])
               for _ in range(_ROUND_PROBES)]
    fits = [rescale_joint(bits, meter, p, target) for p in probes]
    if all(abs(f.value - f.goal) <= 0.01 * f.goal for f in fits):
        return ROUND_TO
    logger.warning("--target %s of %s cannot be met within 1 %% with channel counts that are multiples of %d: "
                   "using free channel counts (--round-to 1)", target, metric, ROUND_TO)
    return 1


def calibration_spec(repair: RepairSettings | None, data: DataSpec, images: int) -> DataSpec:
    """Where activation ranges come from: ``--calib`` with a repair, else a seeded subset of ``--data``."""
    spec = repair.calib if repair is not None else data
    return dataclasses.replace(spec, val_split=images, disjoint_from=None) if repair is None else \
        dataclasses.replace(spec, val_split=min(images, spec.val_split or images))


def make_quantizer(source: str | os.PathLike[str], calib: DataSpec, settings: JointSettings,
                   threads: int | None = None) -> Quantizer:
    """``(plan, pruned float model) -> simulated model`` at ``plan.bits``, ranges calibrated on ``calib``."""
    feeds = calibration_feeds(source, calib, threads=threads)
    runtime = Runtime("cpu", threads)

    def quantize(plan: Plan, model: onnx.ModelProto) -> onnx.ModelProto:
        if not plan.bits:
            return model
        layers = {q.node: q for q in find_layers(model)}
        missing = sorted(set(plan.bits) - set(layers))
        if missing:
            raise PlanError(f"layers {missing[:3]} of the bits plan are not in the pruned model; report this bug")
        tensors = [layers[name].activation for name, (_, a) in plan.bits.items() if a != 32]
        ranges = calibrate(model, feeds, tensors, method=settings.method, runtime=runtime)
        return simulate(model, QuantPlan(dict(plan.bits)), ranges)

    return quantize


def quantizing_apply(apply: Callable[[Plan], onnx.ModelProto], quantize: Quantizer) -> Callable[[Plan], onnx.ModelProto]:
    """The joint candidate builder: ``apply`` (prune + repair), then simulate at the plan's bits."""
    return lambda plan: quantize(plan, apply(plan))


def deployable_path(output: Path) -> Path:
    """Where ``compress --quantize`` writes the deployable model: ``out.onnx`` -> ``out.qdq.onnx``."""
    return output.with_name(f"{output.stem}.qdq.onnx")


def deployable_hook(pruned: onnx.ModelProto, plan: Plan, output: Path, source: str | os.PathLike[str],
                    calib: DataSpec, settings: JointSettings, threads: int | None = None
                    ) -> tuple[Path | None, dict[str, tuple[int, int]], str | None]:
    """Write the deployable QDQ model of the chosen pruned *float* model next to ``output``.

    ONNX Runtime's quantizer (:func:`onnxprune.quantize.deploy.to_qdq`) stores weight bits 5-8 as
    int8 and 2-4 as int4 (MatMulNBits for MatMul), activations as uint8; layers at 16-bit
    activations stay float. A model the quantizer cannot take is not a failed run: the simulated
    model is still written, and the reason is returned.

    Returns:
        The written path (None when it could not be made), the bits it stores, and why not (or None).
    """
    if not plan.bits:
        return None, {}, "the plan keeps every layer float"
    feeds = calibration_feeds(source, calib, threads=threads)
    try:
        result = to_qdq(pruned, QuantPlan(dict(plan.bits)), feeds, method=settings.method)
    except OnnxPruneError as exc:
        logger.warning("no deployable QDQ model: %s", exc)
        return None, {}, str(exc)
    path = save_model(result.model, deployable_path(output))
    logger.info("deployable QDQ model (opset %d) written to %s", result.opset, path)
    return path, dict(result.bits), None


def joint_report(before: Model, after: Model, plan: Plan, metric: str) -> dict[str, Any]:
    """The report fields of a joint run, measured on the written model (MACs x its plan's bits).

    ``quant``: :func:`onnxprune.quantize.bops_report` of the written model (its own float32 and
    all-int8 BOPs, stored bytes) plus ``input_bops_float32`` / ``input_bops_int8`` /
    ``input_bytes_float32`` of the input and ``reduction_vs_input_float32`` (fraction of the input's
    float32 BOPs removed) and ``ratio_vs_input_int8`` (BOPs over the all-int8 input's); ``joint_before`` / ``joint_after``: the target metric of the input
    (float32) and of the written model (``bops``, or ``bytes`` as :func:`weight_bytes` counts).
    """
    plan_bits = dict(plan.bits)
    report = bops_report(after, QuantPlan(plan_bits))
    source = bops_report(before, QuantPlan({}))
    if metric == "bops":
        value, base = float(report.bops), float(source.bops_float32)
    else:
        value, base = weight_bytes(after, plan_bits), weight_bytes(before, {})
    quant = {**report.as_dict(), "input_bops_float32": source.bops_float32, "input_bops_int8": source.bops_int8,
             "input_bytes_float32": source.bytes_float32,
             "reduction_vs_input_float32": 1.0 - report.bops / source.bops_float32 if source.bops_float32 else 0.0,
             "ratio_vs_input_int8": report.bops / source.bops_int8 if source.bops_int8 else 0.0}
    return {"bits": plan_bits, "quant": quant, "joint_before": base, "joint_after": value}

