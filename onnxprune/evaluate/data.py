"""Evaluation data: ``.npz`` arrays, image folders and user hooks, with seeded splits.

Contract:
    requires: a :class:`DataSpec` naming exactly one source, and the model's inputs as
    :class:`~onnxprune.evaluate.runtime.TensorSpec`.
    guarantees: :func:`open_data` returns a dataset whose :meth:`batches` yield
    :class:`Batch` feeds keyed by the model's input names, with the model's per-sample shape and
    dtype, and integer labels (or ``None``). Every problem with the data (unreadable file,
    pickled objects, wrong shape or dtype, labels out of range, empty folder, a hook that raises)
    is a :class:`DataError` with one line naming it. ``.npz`` files are always read with
    ``allow_pickle=False``.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxprune.errors import DataError, OnnxPruneError
from onnxprune.evaluate.preprocess import Preprocess, apply, check_numeric
from onnxprune.evaluate.runtime import TensorSpec, first_line

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})


@dataclass(frozen=True)
class DataSpec:
    """What to evaluate on, as the user gave it.

    Attributes:
        path: An ``.npz`` file (``images`` and optional ``labels``) or an image folder.
        hook: ``pkg.mod:function`` or ``file.py:function``; the function takes no arguments and
            yields ``(feeds, labels)`` pairs (``feeds``: input name -> array; labels may be None).
        preprocess: How raw images become model inputs (ignored for hooks).
        val_split: Keep only a fixed, seeded subset of this many samples.
        seed: Seed of that subset.
        disjoint_from: ``(val_split, seed)`` of another split of the same data whose samples are
            left out first (calibration images never overlap the validation images that score them).
    """

    path: Path | None = None
    hook: str | None = None
    preprocess: Preprocess = field(default_factory=Preprocess)
    val_split: int | None = None
    seed: int = 0
    disjoint_from: tuple[int, int] | None = None


@dataclass(frozen=True)
class Batch:
    """One batch: model feeds and integer labels (``None`` without labels)."""

    feeds: Mapping[str, np.ndarray]
    labels: np.ndarray | None


@dataclass(frozen=True)
class ArrayData:
    """Preprocessed samples held in memory (from an npz file or an image folder)."""

    input_name: str
    images: np.ndarray
    labels: np.ndarray | None
    source: str

    @property
    def size(self) -> int:
        """Number of samples."""
        return int(self.images.shape[0])

    def batches(self, batch_size: int) -> Iterator[Batch]:
        """Yield consecutive batches (views into the arrays, no copies)."""
        for start in range(0, self.size, batch_size):
            end = start + batch_size
            labels = None if self.labels is None else self.labels[start:end]
            yield Batch({self.input_name: self.images[start:end]}, labels)


@dataclass(frozen=True)
class HookData:
    """Batches produced by a user function; checked against the model as they arrive."""

    function: Callable[[], Any]
    inputs: tuple[TensorSpec, ...]
    source: str

    @property
    def size(self) -> int | None:
        """Unknown until the hook is exhausted."""
        return None

    def batches(self, batch_size: int) -> Iterator[Batch]:  # noqa: ARG002 - the hook batches
        """Yield the hook's batches, turning any exception it raises into a DataError."""
        try:
            iterator = iter(self.function())
        except OnnxPruneError:
            raise
        except Exception as exc:
            raise DataError(f"data hook {self.source} raised {first_line(exc)}; fix the hook") from exc
        index = 0
        while True:
            try:
                item = next(iterator)
            except StopIteration:
                return
            except OnnxPruneError:
                raise
            except Exception as exc:
                raise DataError(f"data hook {self.source} raised {first_line(exc)} at batch {index}; "
                                "fix the hook") from exc
            yield _check_hook_batch(item, self.inputs, self.source, index)
            index += 1


Dataset = ArrayData | HookData


def _check_hook_batch(item: Any, inputs: Sequence[TensorSpec], source: str, index: int) -> Batch:
    where = f"data hook {source}, batch {index}"
    if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], Mapping)):
        raise DataError(f"{where}: expected a (feeds dict, labels or None) pair, got "
                        f"{type(item).__name__}; yield (dict of arrays, labels)")
    feeds, labels = item
    names = [i.name for i in inputs]
    if sorted(feeds) != sorted(names):
        raise DataError(f"{where}: feeds {sorted(feeds)} do not match the model inputs {names}")
    checked: dict[str, np.ndarray] = {}
    count: int | None = None
    for spec in inputs:
        array = np.asarray(feeds[spec.name])
        if array.dtype != spec.dtype:
            raise DataError(f"{where}: input '{spec.name}' has dtype {array.dtype}, the model takes "
                            f"{spec.dtype}; cast it in the hook")
        want = spec.shape[1:]
        if array.ndim != len(spec.shape) or any(w is not None and w != s for s, w in zip(array.shape[1:], want)):
            shown = tuple("?" if d is None else d for d in spec.shape)
            raise DataError(f"{where}: input '{spec.name}' has shape {array.shape}, the model expects "
                            f"{shown}; reshape it in the hook")
        if count is not None and len(array) != count:
            raise DataError(f"{where}: inputs have different batch sizes; yield equal batches")
        count = len(array)
        checked[spec.name] = np.ascontiguousarray(array)
    return Batch(checked, None if labels is None else check_labels(np.asarray(labels), count or 0, where))


def check_labels(labels: np.ndarray, count: int, where: str) -> np.ndarray:
    """Return ``labels`` as int64 of length ``count`` or raise DataError."""
    check_numeric(labels, f"{where}: labels")
    if labels.dtype.kind == "f":
        raise DataError(f"{where}: labels have dtype {labels.dtype}; store integer class indices")
    flat = labels.reshape(-1) if labels.ndim == 2 and labels.shape[1] == 1 else labels
    if flat.ndim != 1 or len(flat) != count:
        raise DataError(f"{where}: labels have shape {labels.shape} but there are {count} samples; "
                        "give one integer label per sample")
    return flat.astype(np.int64, copy=False)


def check_label_range(labels: np.ndarray, classes: int, where: str) -> None:
    """Raise DataError if a label is negative or not below ``classes``."""
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        bad = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
        raise DataError(f"{where}: label {bad} is out of range for a model with {classes} classes "
                        f"(0..{classes - 1}); check the labels or the model")


def split_indices(total: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """Return ``count`` sorted indices of a seeded permutation of ``range(total)``.

    The same generator state always gives the same subset, so a search's validation set is
    fixed; the complement (``np.setdiff1d(np.arange(total), idx)``) holds the other samples.

    Raises:
        DataError: ``count`` is not in ``1..total``.
    """
    if not 0 < count <= total:
        raise DataError(f"--val-split {count}: choose between 1 and the {total} samples of the data")
    return np.sort(rng.permutation(total)[:count])


def subset_indices(total: int, spec: DataSpec) -> np.ndarray | None:
    """Sorted indices ``spec`` keeps out of ``total`` samples (``None``: all of them).

    Samples of ``spec.disjoint_from`` are removed first; ``spec.val_split`` then picks a seeded
    subset of the rest (all of the rest when it asks for more than there is).

    Raises:
        DataError: ``val_split`` outside ``1..total`` (without ``disjoint_from``), or nothing left.
    """
    if spec.disjoint_from is None:
        if spec.val_split is None:
            return None
        return split_indices(total, spec.val_split, np.random.default_rng(spec.seed))
    count, seed = spec.disjoint_from
    pool = np.setdiff1d(np.arange(total), split_indices(total, min(count, total), np.random.default_rng(seed)))
    if pool.size == 0:
        raise DataError(f"no samples are left once the {count} validation samples are set aside; "
                        "use a separate --calib file or a smaller --val-split")
    if spec.val_split is None or spec.val_split >= pool.size:
        return pool
    return pool[split_indices(int(pool.size), spec.val_split, np.random.default_rng(spec.seed))]


def read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read ``images`` and optional ``labels`` from an ``.npz`` without unpickling anything."""
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != b"PK\x03\x04":
        raise DataError(f"{path.name}: not a .npz file (numpy.savez writes a zip archive); save it with "
                        "numpy.savez(path, images=..., labels=...)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.keys())
            if "images" not in keys:
                raise DataError(f"{path.name}: no 'images' array (found {keys}); save images= and labels=")
            images = npz["images"]
            labels = npz["labels"] if "labels" in keys else None
    except ValueError as exc:
        if "pickle" in str(exc):
            raise DataError(f"{path.name}: holds pickled Python objects, which onnxprune never loads; "
                            "save plain numeric arrays") from exc
        raise DataError(f"{path.name}: cannot read the npz ({first_line(exc)}); re-save it with "
                        "numpy.savez") from exc
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path.name}: not a readable .npz file ({first_line(exc)}); re-save it with "
                        "numpy.savez") from exc
    return images, labels


def _image_mode(target: TensorSpec, layout: str | None) -> tuple[str, tuple[int, int] | None]:
    """Pillow mode and (width, height) the model wants, from its input dims."""
    dims = target.shape[1:]
    if len(dims) != 3:
        return "RGB", None
    channels, height, width = (dims[0], dims[1], dims[2]) if layout != "nhwc" else (dims[2], dims[0], dims[1])
    mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(channels or 3, "RGB")
    size = (width, height) if width is not None and height is not None else None
    return mode, size


def read_folder(path: Path, target: TensorSpec, layout: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Read an image folder (one sub-folder per class, sorted names = label indices) as NHWC uint8.

    Images are converted to the model's channel count and resized (bilinear) to its spatial
    size when that is static.
    """
    from PIL import Image, UnidentifiedImageError

    classes = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = [(f, label) for label, d in enumerate(classes) for f in sorted(d.iterdir())
             if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataError(f"{path}: no images found; expected one sub-folder per class holding image "
                        f"files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    mode, size = _image_mode(target, layout)
    arrays = []
    for file, _ in files:
        try:
            with Image.open(file) as img:
                img = img.convert(mode)
                if size is not None and img.size != size:
                    img = img.resize(size, Image.BILINEAR)
                arrays.append(np.asarray(img, dtype=np.uint8))
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"{file}: not a readable image ({first_line(exc)}); remove or replace it") from exc
    if len({a.shape for a in arrays}) > 1:
        raise DataError(f"{path}: images have different sizes and the model's size is not static; "
                        "resize them to one size")
    images = np.stack(arrays)
    logger.info("read %d images in %d classes from %s", len(files), len(classes), path)
    return (images if images.ndim == 4 else images[..., None]), np.array([lbl for _, lbl in files], np.int64)


def _import_from_cwd(name: str) -> Any:
    """Import ``name`` with the working directory on the path (as ``python -m`` has), then restore it."""
    cwd = str(Path.cwd())
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def load_hook(target: str) -> Callable[[], Any]:
    """Import ``pkg.mod:function`` (importable, or under the working directory) or ``file.py:function``.

    Raises:
        DataError: malformed reference, import failure or missing function.
    """
    module_name, sep, func_name = target.rpartition(":")
    if not sep or not module_name or not func_name:
        raise DataError(f"--data-module '{target}': use the form pkg.module:function or file.py:function")
    try:
        if module_name.endswith(".py"):
            file = Path(module_name)
            if not file.is_file():
                raise DataError(f"--data-module: {file} does not exist; check the path")
            spec = importlib.util.spec_from_file_location(file.stem, file)
            if spec is None or spec.loader is None:
                raise DataError(f"--data-module: cannot import {file}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = _import_from_cwd(module_name)
    except OnnxPruneError:
        raise
    except Exception as exc:
        raise DataError(f"--data-module {target}: importing it raised {first_line(exc)}; fix the module "
                        "or its path") from exc
    function = getattr(module, func_name, None)
    if not callable(function):
        raise DataError(f"--data-module {target}: '{func_name}' is not a function of {module_name}")
    return function


def open_data(spec: DataSpec, inputs: Sequence[TensorSpec]) -> Dataset:
    """Open the data source of ``spec`` for a model with ``inputs``.

    Raises:
        DataError: see the module contract.
    """
    if (spec.path is None) == (spec.hook is None):
        raise DataError("give exactly one data source: --data FILE.npz|FOLDER or --data-module pkg.mod:function")
    if spec.hook is not None:
        if spec.val_split is not None:
            raise DataError("--val-split needs --data (an npz file or folder); a hook chooses its own samples")
        return HookData(load_hook(spec.hook), tuple(inputs), spec.hook)
    path = Path(spec.path)  # type: ignore[arg-type]
    if len(inputs) != 1:
        raise DataError(f"the model has {len(inputs)} inputs; --data feeds one image input, use "
                        "--data-module pkg.mod:function for this model")
    if path.is_dir():
        images, labels = read_folder(path, inputs[0], spec.preprocess.layout)
    elif path.is_file():
        images, labels = read_npz(path)
    else:
        raise DataError(f"{path}: no such file or folder; check --data")
    check_numeric(images, f"{path.name}: images")
    if images.ndim < 2 or images.shape[0] == 0:
        raise DataError(f"{path.name}: images have shape {images.shape}; expected (N, ...) with N > 0")
    if labels is not None:
        labels = check_labels(labels, int(images.shape[0]), path.name)
    keep = subset_indices(int(images.shape[0]), spec)
    if keep is not None:
        images = images[keep]
        labels = None if labels is None else labels[keep]
    feeds = apply(images, spec.preprocess, inputs[0])
    return ArrayData(inputs[0].name, feeds, labels, str(path))
