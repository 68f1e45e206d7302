"""Version compatibility between the installed onnx and ONNX Runtime.

onnx >= 1.23 stamps new models with IR version 14, which ONNX Runtime <= 1.30 refuses to load
("Unsupported model IR version: 14, max supported IR version: 13"), although nothing in a model
of opset 17 needs it. Models built here carry the lowest IR version their opsets need, so they
load in any runtime that supports those opsets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import onnx
from onnx import helper


def make_model(graph: onnx.GraphProto, *, opset_imports: Sequence[onnx.OperatorSetIdProto],
               **kwargs: Any) -> onnx.ModelProto:
    """``onnx.helper.make_model`` with the lowest IR version the opsets need (unless ``ir_version`` is given).

    Args:
        graph: The model's graph.
        opset_imports: Its opset imports (custom domains do not raise the IR version).
        **kwargs: Other ``ModelProto`` fields (``ir_version``, ``producer_name``, ...).
    """
    if "ir_version" not in kwargs:
        kwargs["ir_version"] = helper.find_min_ir_version_for(list(opset_imports), ignore_unknown=True)
    return helper.make_model(graph, opset_imports=list(opset_imports), **kwargs)
