"""Rewrite stage: apply a :class:`~onnxprune.plan.Plan` to a model (physically smaller ONNX)."""

from onnxprune.rewrite.prune import prune_model

__all__ = ["prune_model"]
