"""The candidate evaluator of ``compress``, and its picklable recipe for remote workers.

:func:`candidate_score` is the one scorer every backend uses; :class:`CandidateSpec` carries
what a worker needs to build the same evaluator as the main process (model path, data,
repair and quantization settings, runtime device and threads), so a plan gives the same pruned
model and the same score wherever it runs. Latency is never measured here: the main process
predicts it from the table timed on the user's device.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import onnx

from onnxprune.analyze import analyze
from onnxprune.evaluate import DataSpec, Runtime, evaluate, open_data
from onnxprune.evaluate.data import Dataset
from onnxprune.evaluate.runtime import ConvSearch, Device
from onnxprune.execute.base import Evaluator
from onnxprune.large import PROTOBUF_LIMIT
from onnxprune.load import load
from onnxprune.pipeline.joint import JointSettings, make_quantizer, quantizing_apply
from onnxprune.pipeline.pruning import RepairSettings, repairing_apply
from onnxprune.plan import Plan

logger = logging.getLogger(__name__)


def candidate_score(runtime: Runtime, dataset: Dataset) -> Callable[[onnx.ModelProto], float]:
    """The candidate scorer: top-1 on ``dataset`` as a fraction (0 when the run yields none)."""

    def score(model: onnx.ModelProto) -> float:
        acc = evaluate(runtime.create(model), dataset).accuracy
        return acc.top1 / 100.0 if acc is not None else 0.0

    return score


@dataclasses.dataclass(frozen=True)
class CandidateSpec:
    """What a worker needs to evaluate plans of one ``compress`` run (pickled once per worker).

    Attributes:
        source: The input model.
        data: The validation data that scores candidates.
        device: Execution provider of the scoring sessions.
        threads: ONNX Runtime intra-op threads of the scoring sessions.
        conv_search: cuDNN algorithm search of the scoring sessions (CUDA only).
        input_shapes: ``--input-shape`` overrides, as ``(name, dims)`` pairs.
        proto_limit: Byte size above which models are handled in parts.
        repair: Candidate repair settings (``None``: unrepaired).
        joint: Joint quantization settings (``None``: pruning only).
        calib: Calibration data of the activation ranges (joint search).
        calib_threads: ONNX Runtime threads of that calibration (the main process's, so the ranges match).
    """

    source: Path
    data: DataSpec
    device: Device = "cpu"
    threads: int = 1
    conv_search: ConvSearch = "HEURISTIC"
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...] | None = None
    proto_limit: int = PROTOBUF_LIMIT
    repair: RepairSettings | None = None
    joint: JointSettings | None = None
    calib: DataSpec | None = None
    calib_threads: int | None = None

    @staticmethod
    def shapes(input_shapes: Mapping[str, Sequence[int]] | None) -> tuple[tuple[str, tuple[int, ...]], ...] | None:
        """``--input-shape`` overrides in the spec's hashable form."""
        if input_shapes is None:
            return None
        return tuple((name, tuple(int(d) for d in dims)) for name, dims in sorted(input_shapes.items()))

    def build(self) -> Evaluator:
        """Load and analyze the model, open the data once; the evaluator prunes, repairs and scores a plan."""
        shapes = dict(self.input_shapes) if self.input_shapes is not None else None
        analysis = analyze(load(self.source, input_shapes=shapes, proto_limit=self.proto_limit))
        apply = repairing_apply(analysis, self.source, self.repair)
        if self.joint is not None and self.calib is not None:
            apply = quantizing_apply(apply, make_quantizer(self.source, self.calib, self.joint,
                                                        threads=self.calib_threads))
        runtime = Runtime(device=self.device, threads=self.threads, conv_search=self.conv_search,
                          proto_limit=self.proto_limit)
        dataset = open_data(self.data, runtime.session(self.source).inputs)
        score = candidate_score(runtime, dataset)

        def evaluate_plan(plan: Plan) -> tuple[float | None, onnx.ModelProto]:
            candidate = apply(plan)
            return score(candidate), candidate

        logger.info("worker evaluator ready: %s on %s, %d threads", self.source.name, self.device, self.threads)
        return evaluate_plan
