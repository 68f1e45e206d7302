"""User-facing errors.

Every error a user can trigger by their input is an :class:`OnnxPruneError`
subclass whose message is one line naming the problem and the fix. The CLI
prints that line and exits with code 2 (no traceback unless ``--debug``).
"""

from __future__ import annotations


class OnnxPruneError(Exception):
    """Base class of all errors caused by user input."""

    exit_code: int = 2


class InvalidModel(OnnxPruneError):
    """The file is not a readable, valid ONNX model."""


class UnsupportedInput(OnnxPruneError):
    """The model is valid but uses something onnxprune cannot handle."""


class PlanError(OnnxPruneError):
    """A pruning plan or ratio is out of range or does not match the model."""


class DataError(OnnxPruneError):
    """Evaluation or calibration data is missing, malformed or mismatched."""


class RuntimeUnavailable(OnnxPruneError):
    """No ONNX Runtime (or the requested execution provider) is installed."""


class OutputError(OnnxPruneError):
    """An output path cannot be written as requested."""


class BackendError(OnnxPruneError):
    """The requested execution backend (``--backend``) is unavailable or could not finish a candidate."""
