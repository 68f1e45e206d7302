"""Preprocessing specs: scale, per-channel mean/std, layout and dtype, with named presets.

Contract:
    requires: raw images as a numeric array ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)``
    (or any ``(N, ...)`` array when no layout is asked for), and the model input they feed.
    guarantees: :func:`apply` returns a C-contiguous ``(N, ...)`` array whose per-sample shape
    and dtype equal the model input's static dims and element type, computed as
    ``(x.astype(float32) / scale - mean) / std`` per channel (the order and precision of
    torchvision's ``ToTensor`` + ``Normalize``), or raises :class:`DataError` naming the mismatch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from onnxprune.errors import DataError
from onnxprune.evaluate.runtime import TensorSpec

logger = logging.getLogger(__name__)

Layout = Literal["nchw", "nhwc"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """How raw images become model inputs.

    Attributes:
        scale: Divide raw values by this (255 for uint8 images -> [0, 1]).
        mean: Per-channel mean subtracted after scaling (``None``: none).
        std: Per-channel standard deviation divided after the mean (``None``: none).
        layout: The model input's layout; images stored in the other layout (or without a channel
            axis) are converted. ``None`` keeps the stored layout.
        dtype: Element type fed to the model (e.g. ``float32``); ``None`` uses the model's.
    """

    scale: float = 1.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    layout: Layout | None = None
    dtype: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)


#: Named presets for ``--preprocess``.
PRESETS: Mapping[str, Preprocess] = MappingProxyType({
    "none": Preprocess(),
    "cifar": Preprocess(scale=255.0, mean=IMAGENET_MEAN, std=IMAGENET_STD, layout="nchw"),
    "imagenet": Preprocess(scale=255.0, mean=IMAGENET_MEAN, std=IMAGENET_STD, layout="nchw"),
})


def make_preprocess(preset: str | None = None, **overrides: Any) -> Preprocess:
    """Start from a preset (default ``none``) and replace the fields given explicitly.

    Args:
        preset: A key of :data:`PRESETS`.
        **overrides: Fields of :class:`Preprocess`; ``None`` values are ignored.

    Raises:
        DataError: unknown preset, non-positive scale or std, mean/std of different lengths.
    """
    name = preset or "none"
    if name not in PRESETS:
        raise DataError(f"unknown --preprocess '{name}'; choose one of {', '.join(PRESETS)}")
    spec = replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})
    if spec.scale <= 0:
        raise DataError(f"--scale {spec.scale}: give a positive number (e.g. 255 for uint8 images)")
    if spec.std is not None and any(s <= 0 for s in spec.std):
        raise DataError(f"--std {spec.std}: every std must be positive")
    if spec.mean is not None and spec.std is not None and len(spec.mean) != len(spec.std):
        raise DataError(f"--mean has {len(spec.mean)} values but --std has {len(spec.std)}; "
                        "give one per channel")
    if spec.layout not in (None, "nchw", "nhwc"):
        raise DataError(f"--layout {spec.layout}: use nchw or nhwc")
    return spec


def _sample_shape(target: TensorSpec) -> tuple[int | None, ...]:
    return target.shape[1:]


def _to_layout(images: np.ndarray, layout: Layout | None, want: tuple[int | None, ...]) -> np.ndarray:
    """Bring ``images`` to ``layout``, guessing the stored layout from the model's dims."""
    if layout is None:
        return images
    if images.ndim == 3:  # (N, H, W) grayscale: add the channel axis where the model wants it
        return images[:, None] if layout == "nchw" else images[..., None]
    if images.ndim != 4:
        raise DataError(f"images have shape {images.shape}; a layout needs (N, H, W[, C]) images "
                        "(drop --layout for other data)")
    nhwc_as_nchw = (images.shape[0], images.shape[3], images.shape[1], images.shape[2])
    nchw_as_nhwc = (images.shape[0], images.shape[2], images.shape[3], images.shape[1])
    if _fits(images.shape[1:], want):
        return images
    if layout == "nchw" and _fits(nhwc_as_nchw[1:], want):
        return images.transpose(0, 3, 1, 2)
    if layout == "nhwc" and _fits(nchw_as_nhwc[1:], want):
        return images.transpose(0, 2, 3, 1)
    if any(d is None for d in want):  # model dims unknown: channels-last unless they look first
        stored_nhwc = images.shape[3] in (1, 3, 4) or images.shape[1] not in (1, 3, 4)
        if layout == "nchw" and stored_nhwc:
            return images.transpose(0, 3, 1, 2)
        if layout == "nhwc" and not stored_nhwc:
            return images.transpose(0, 2, 3, 1)
    return images


def _fits(shape: tuple[int, ...], want: tuple[int | None, ...]) -> bool:
    return len(shape) == len(want) and all(w is None or w == s for s, w in zip(shape, want))


def _channel_axis(layout: Layout | None, ndim: int) -> int:
    return 1 if layout == "nchw" and ndim == 4 else ndim - 1


def _normalize(x: np.ndarray, spec: Preprocess) -> np.ndarray:
    """``(x / scale - mean) / std`` in float32, per channel."""
    out = x.astype(np.float32)
    if spec.scale != 1.0:
        out /= np.float32(spec.scale)
    axis = _channel_axis(spec.layout, out.ndim)
    for values, is_mean in ((spec.mean, True), (spec.std, False)):
        if values is None:
            continue
        if len(values) not in (1, out.shape[axis]):
            raise DataError(f"{'--mean' if is_mean else '--std'} has {len(values)} values but the "
                            f"images have {out.shape[axis]} channels; give one per channel")
        shape = [1] * out.ndim
        shape[axis] = len(values)
        vec = np.asarray(values, dtype=np.float32).reshape(shape)
        if is_mean:
            out -= vec
        else:
            out /= vec
    return out


def _target_dtype(spec: Preprocess, target: TensorSpec) -> np.dtype[Any]:
    model = target.dtype
    if spec.dtype is None:
        return model
    try:
        wanted = np.dtype(spec.dtype)
    except TypeError as exc:
        raise DataError(f"--dtype {spec.dtype}: not a numpy type name (e.g. float32, uint8)") from exc
    if model != np.dtype(object) and wanted != model:
        raise DataError(f"--dtype {wanted} does not match the model input '{target.name}' ({model}); "
                        f"use --dtype {model} or re-export the model")
    return wanted


def check_numeric(array: np.ndarray, what: str) -> None:
    """Raise DataError unless ``array`` holds real numbers (ints, uints or floats)."""
    if array.dtype.kind not in "iuf":
        raise DataError(f"{what} have dtype {array.dtype}; store them as numbers "
                        "(uint8 or float images, integer labels)")


def apply(images: np.ndarray, spec: Preprocess, target: TensorSpec) -> np.ndarray:
    """Preprocess ``images`` for the model input ``target`` (see the module contract).

    Raises:
        DataError: non-numeric images, images that look already scaled, a dtype the model does
            not take, or a per-sample shape that differs from the model's.
    """
    check_numeric(images, "images")
    arithmetic = spec.scale != 1.0 or spec.mean is not None or spec.std is not None
    if spec.scale > 1.0 and images.dtype.kind == "f" and images.size and float(images.max()) <= 1.0:
        raise DataError(f"images are {images.dtype} already in [0, 1] but the preprocessing divides by "
                        f"{spec.scale:g}; use --scale 1 (or --preprocess none)")
    dtype = _target_dtype(spec, target)
    want = _sample_shape(target)
    x = _to_layout(images, spec.layout, want)
    if not _fits(x.shape[1:], want):
        shown = tuple("?" if d is None else d for d in want)
        layout = f" in {spec.layout.upper()}" if spec.layout else ""
        raise DataError(f"images have per-sample shape {tuple(images.shape[1:])} but the model input "
                        f"'{target.name}' expects {shown}{layout}; check --layout/--preprocess or the data file")
    if arithmetic:
        if dtype.kind != "f":
            raise DataError(f"the model input '{target.name}' is {dtype}; scaling/normalizing makes floats "
                            "(drop --scale/--mean/--std or use --preprocess none)")
        x = _normalize(x, spec)
    elif x.dtype.kind == "f" and dtype.kind in "iub":
        raise DataError(f"images are {x.dtype} but the model input '{target.name}' is {dtype}; "
                        "store integer images or use a float model")
    if dtype == np.dtype(object):
        raise DataError(f"the model input '{target.name}' has a type onnxprune cannot feed; use a "
                        "--data-module hook")
    return np.ascontiguousarray(x, dtype=dtype)
