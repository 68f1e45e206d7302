"""Training-time augmentation of preprocessed image batches (numpy, seeded).

Contract:
    requires: a batch ``(N, ...)`` of model inputs, the names of its two spatial axes (or none for
    non-image inputs), and a numpy Generator.
    guarantees: :func:`augment` returns a new array of the same shape and dtype; ``crop-flip``
    zero-pads each image by ``pad`` on both spatial sides, takes a random crop of the original
    size, then mirrors the width axis with probability 1/2 (the usual CIFAR recipe; zero is the
    mean after normalization); ``flip`` only mirrors; ``none`` copies. The same generator state
    always gives the same batch, so a resumed run repeats the interrupted one exactly.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np

from onnxprune.errors import DataError

logger = logging.getLogger(__name__)

Augment = Literal["none", "flip", "crop-flip"]
AUGMENTS: tuple[str, ...] = ("auto", "none", "flip", "crop-flip")


def spatial_axes(shape: tuple[int, ...], layout: str | None) -> tuple[int, int] | None:
    """(height, width) axes of a batch of ``shape`` (``None`` when it is not a 4-D image batch).

    Args:
        shape: The batch shape ``(N, ...)``.
        layout: ``nchw`` / ``nhwc`` from the preprocessing, or ``None`` to infer it (a channel
            axis of 1, 3 or 4 values first means NCHW, last means NHWC).
    """
    if len(shape) != 4:
        return None
    if layout == "nchw":
        return 2, 3
    if layout == "nhwc":
        return 1, 2
    if shape[1] in (1, 3, 4) and shape[3] not in (1, 3, 4):
        return 2, 3
    if shape[3] in (1, 3, 4):
        return 1, 2
    return None


def resolve(name: str, preset: str | None, axes: tuple[int, int] | None) -> Augment:
    """The augmentation ``--augment name`` means for a preprocessing ``preset`` and batch axes.

    ``auto`` is ``crop-flip`` for the ``cifar`` preset, ``flip`` for ``imagenet``, else ``none``.

    Raises:
        DataError: an image augmentation asked for inputs that are no 4-D image batch.
    """
    if name not in AUGMENTS:
        raise DataError(f"--augment {name}: choose one of {list(AUGMENTS)}")
    if name == "auto":
        chosen = {"cifar": "crop-flip", "imagenet": "flip"}.get(preset or "", "none")
        return chosen if axes is not None else "none"  # type: ignore[return-value]
    if name != "none" and axes is None:
        raise DataError(f"--augment {name} needs 4-D image inputs (N,C,H,W or N,H,W,C); use --augment none")
    return name  # type: ignore[return-value]


def augment(batch: np.ndarray, kind: Augment, axes: tuple[int, int] | None, rng: np.random.Generator,
            pad: int = 4) -> np.ndarray:
    """Augment ``batch`` (see the module contract)."""
    out = np.array(batch, copy=True)
    if kind == "none" or axes is None:
        return out
    h_axis, w_axis = axes
    count = out.shape[0]
    if kind == "crop-flip":
        widths = [(0, 0)] * out.ndim
        widths[h_axis] = widths[w_axis] = (pad, pad)
        padded = np.pad(out, widths)
        dy = rng.integers(0, 2 * pad + 1, size=count)
        dx = rng.integers(0, 2 * pad + 1, size=count)
        height, width = out.shape[h_axis], out.shape[w_axis]
        for i in range(count):
            window = [slice(None)] * (out.ndim - 1)
            window[h_axis - 1] = slice(int(dy[i]), int(dy[i]) + height)
            window[w_axis - 1] = slice(int(dx[i]), int(dx[i]) + width)
            out[i] = padded[i][tuple(window)]
    flip = rng.random(count) < 0.5
    if flip.any():
        out[flip] = np.flip(out[flip], axis=w_axis)
    return out
