"""The quantization plan: weight and activation bits per layer, beside the pruning plan.

A layer is a quantizable node (:func:`onnxprune.quantize.find_layers`) addressed by its node
name in the loaded model (``onnxprune.load`` names every node; pruning keeps the names, so a
plan made on the original model applies to its pruned version too). ``32`` means float.

JSON (``onnxprune quantize --plan bits.json``)::

    {"format": "onnxprune-bits-1",
     "layers": {"Conv_0": {"w": 8, "a": 8}, "Conv_3": {"w": 4, "a": 8}, "Gemm_60": {"w": 32, "a": 32}}}

Layers the plan does not name stay float.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from onnxprune.errors import PlanError

FORMAT = "onnxprune-bits-1"
FLOAT = 32
#: Weight bit-widths a plan may use (besides ``FLOAT``).
W_BITS: tuple[int, ...] = (2, 3, 4, 5, 6, 8)
#: Activation bit-widths a plan may use (besides ``FLOAT``).
A_BITS: tuple[int, ...] = (4, 6, 8, 16)


def check_bits(w: int, a: int, where: str) -> None:
    """Raise PlanError unless ``(w, a)`` are in the allowed sets (``32`` = float)."""
    if w not in W_BITS + (FLOAT,):
        raise PlanError(f"{where}: weight bits {w} not in {list(W_BITS)} (or 32 for float); pick one of those")
    if a not in A_BITS + (FLOAT,):
        raise PlanError(f"{where}: activation bits {a} not in {list(A_BITS)} (or 32 for float); pick one of those")


@dataclass(frozen=True)
class QuantPlan:
    """Bits per layer.

    Attributes:
        bits: node name -> (weight bits, activation bits); 32 = float. Unnamed layers are float.
    """

    bits: Mapping[str, tuple[int, int]] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        clean: dict[str, tuple[int, int]] = {}
        for name, pair in self.bits.items():
            w, a = (int(pair[0]), int(pair[1]))
            check_bits(w, a, f"layer '{name}'")
            clean[str(name)] = (w, a)
        object.__setattr__(self, "bits", MappingProxyType(clean))

    def of(self, layer: str) -> tuple[int, int]:
        """Bits of ``layer`` (``(32, 32)`` when float)."""
        return self.bits.get(layer, (FLOAT, FLOAT))

    @property
    def quantized(self) -> tuple[str, ...]:
        """Layers whose weights are quantized, sorted."""
        return tuple(sorted(k for k, (w, _) in self.bits.items() if w != FLOAT))

    def check_layers(self, layers: Iterable[str]) -> None:
        """Raise PlanError if the plan names a layer that is not a quantizable layer of the model."""
        known = set(layers)
        unknown = sorted(set(self.bits) - known)
        if unknown:
            sample = ", ".join(sorted(known)[:4])
            raise PlanError(f"bits plan names {len(unknown)} unknown layer(s) ({', '.join(unknown[:3])}); "
                            f"use the node names `onnxprune analyze` lists (e.g. {sample})")

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"format": FORMAT, "layers": {k: {"w": w, "a": a} for k, (w, a) in sorted(self.bits.items())}}

    @classmethod
    def from_json(cls, obj: Any) -> QuantPlan:
        """Inverse of :meth:`to_json`; raises PlanError on malformed input."""
        if not isinstance(obj, Mapping) or not isinstance(obj.get("layers"), Mapping):
            raise PlanError("malformed bits plan; expected {\"format\": \"onnxprune-bits-1\", "
                            "\"layers\": {node: {\"w\": 8, \"a\": 8}}}")
        try:
            bits = {str(k): (int(v["w"]), int(v["a"])) for k, v in obj["layers"].items()}
        except (TypeError, ValueError, KeyError) as exc:
            raise PlanError(f"malformed bits plan entry ({exc}); each layer needs integer \"w\" and \"a\"") from exc
        return cls(bits=bits)

    @classmethod
    def read(cls, path: str) -> QuantPlan:
        """Read a bits plan JSON file."""
        try:
            with open(path, encoding="utf-8") as fh:
                return cls.from_json(json.load(fh))
        except (OSError, json.JSONDecodeError) as exc:
            raise PlanError(f"cannot read bits plan {path} ({exc}); pass a JSON file written by onnxprune") from exc


def uniform_plan(layers: Iterable[str], w_bits: int, a_bits: int, keep_float: Iterable[str] = ()) -> QuantPlan:
    """The same bits for every layer except ``keep_float`` (left float)."""
    skip = set(keep_float)
    return QuantPlan({name: (w_bits, a_bits) for name in layers if name not in skip})
