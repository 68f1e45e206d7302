"""The only place stages meet: load -> analyze -> (embed -> search) -> rewrite -> evaluate -> report.

Commands in ``onnxprune/commands`` call these functions; stages never call each other
except through the plain dataclasses they return. One module per job keeps files small:
:mod:`.evaluating` (eval, bench, cost), :mod:`.pruning` (analyze, prune, repair),
:mod:`.compressing` (policy search and ``compress``), :mod:`.latency_first` (measured latency
target and int8 after pruning; :mod:`.latency_fit`, :mod:`.width_menu`), :mod:`.quantizing` (``quantize``),
:mod:`.finetuning` (``finetune``, ``compress --finetune-epochs``),
:mod:`.reporting` (HTML reports).
"""

from onnxprune.pipeline.compressing import AGENTS, compress_file
from onnxprune.pipeline.deploying import DeployOptions
from onnxprune.pipeline.latency_first import Int8Settings, compress_latency_first
from onnxprune.pipeline.latency_fit import LatencySettings
from onnxprune.pipeline.evaluating import bench_model, check_model_widths, evaluate_model, model_cost
from onnxprune.pipeline.pruning import (
    affected_consumers, analyze_file, calibration_feeds, group_scores, prune_file, repair_pruned)
from onnxprune.pipeline.finetuning import FinetuneSettings, finetune_compressed, finetune_file
from onnxprune.pipeline.quantizing import QuantizeSettings, quantize_file
from onnxprune.pipeline.reporting import report_files, write_report

__all__ = ["AGENTS", "Int8Settings", "LatencySettings", "compress_latency_first", "FinetuneSettings", "finetune_compressed", "finetune_file", "DeployOptions", "affected_consumers", "analyze_file", "bench_model", "check_model_widths", "calibration_feeds", "compress_file",
           "evaluate_model", "group_scores", "model_cost", "prune_file", "quantize_file", "QuantizeSettings", "repair_pruned", "report_files",
           "write_report"]
