"""Deploy stage: interface preservation, Triton model repository, target checks, simplification."""

from onnxprune.deploy.checks import CheckReport, Finding, check_target
from onnxprune.deploy.interface import METADATA_PREFIX, check_interface, restore_interface
from onnxprune.deploy.simplify import simplify
from onnxprune.deploy.target_support import TARGETS
from onnxprune.deploy.triton import TritonExport, TritonOptions, build_config, export_triton

__all__ = ["METADATA_PREFIX", "TARGETS", "CheckReport", "Finding", "TritonExport", "TritonOptions",
           "build_config", "check_interface", "check_target", "export_triton", "restore_interface",
           "simplify"]
