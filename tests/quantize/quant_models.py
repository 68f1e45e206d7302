"""Helpers of the quantize tests."""

from __future__ import annotations

import numpy as np
import onnx

from models.zoo import zoo_entries

ZOO = tuple(e.name for e in zoo_entries())


def feeds_for(model: onnx.ModelProto, count: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded standard-normal inputs for every graph input (batch ``count``)."""
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    out = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = [d.dim_value if d.dim_value > 0 else 1 for d in vi.type.tensor_type.shape.dim]
        out[vi.name] = rng.standard_normal([count, *dims[1:]]).astype(np.float32)
    return out
