"""Evaluate stage: score a model with ONNX Runtime (accuracy, fidelity, latency).

Public face: :class:`DataSpec` and :func:`open_data` (data), :func:`make_preprocess`,
:class:`Runtime` (sessions), :func:`evaluate` (accuracy and fidelity), :func:`bench` (latency),
:func:`timing_threads` (the thread count of every latency measurement).
"""

from onnxprune.evaluate.data import DataSpec, open_data
from onnxprune.evaluate.latency import BenchResult, bench
from onnxprune.evaluate.preprocess import PRESETS, Preprocess, make_preprocess
from onnxprune.evaluate.runtime import RunInfo, Runtime, Session, threads_note, timing_threads
from onnxprune.evaluate.scoring import EvalResult, evaluate
from onnxprune.evaluate.stability import Protocol

__all__ = ["PRESETS", "BenchResult", "DataSpec", "EvalResult", "Preprocess", "Protocol", "RunInfo", "Runtime",
           "Session", "bench", "evaluate", "make_preprocess", "open_data", "threads_note", "timing_threads"]
