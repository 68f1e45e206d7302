"""Evaluation data: preprocessing, layouts, presets, npz, image folders, hooks, seeded splits."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from evaluate_models import cifar_preprocessed, raw_images

from onnxprune.errors import DataError
from onnxprune.evaluate import DataSpec, make_preprocess, open_data
from onnxprune.evaluate.data import split_indices, subset_indices
from onnxprune.evaluate.preprocess import apply
from onnxprune.evaluate.runtime import TensorSpec

NCHW = TensorSpec("input", (None, 3, 8, 8), np.dtype(np.float32))


def test_cifar_preset_equals_the_formula_bit_for_bit() -> None:
    images = raw_images(7)
    out = apply(images, make_preprocess("cifar"), NCHW)
    assert out.shape == (7, 3, 8, 8) and out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, cifar_preprocessed(images))


def test_explicit_flags_override_the_preset() -> None:
    spec = make_preprocess("cifar", scale=1.0, mean=(0.0,), std=(2.0,))
    assert spec.layout == "nchw" and spec.scale == 1.0 and spec.mean == (0.0,) and spec.std == (2.0,)
    out = apply(raw_images(2), spec, NCHW)
    np.testing.assert_array_equal(out, raw_images(2).astype(np.float32).transpose(0, 3, 1, 2) / 2)


def test_nhwc_model_keeps_channels_last_and_nchw_data_is_transposed() -> None:
    nhwc = TensorSpec("input", (None, 8, 8, 3), np.dtype(np.float32))
    images = raw_images(3)
    kept = apply(images, make_preprocess(scale=255.0, layout="nhwc"), nhwc)
    np.testing.assert_array_equal(kept, images.astype(np.float32) / np.float32(255))
    stored_nchw = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    back = apply(stored_nchw, make_preprocess(scale=255.0, layout="nhwc"), nhwc)
    np.testing.assert_array_equal(back, kept)


def test_grayscale_images_gain_a_channel_axis() -> None:
    gray = TensorSpec("input", (None, 1, 8, 8), np.dtype(np.float32))
    images = np.arange(2 * 64, dtype=np.uint8).reshape(2, 8, 8) % 17
    out = apply(images, make_preprocess(scale=16.0, layout="nchw"), gray)
    assert out.shape == (2, 1, 8, 8)
    np.testing.assert_array_equal(out[:, 0], images.astype(np.float32) / np.float32(16))


def test_preset_none_feeds_uint8_models_unchanged() -> None:
    quant = TensorSpec("input", (None, 8, 8, 3), np.dtype(np.uint8))
    images = raw_images(2)
    np.testing.assert_array_equal(apply(images, make_preprocess(), quant), images)


def test_val_split_is_fixed_by_the_seed_and_sorted() -> None:
    first = split_indices(1000, 100, np.random.default_rng(5))
    again = split_indices(1000, 100, np.random.default_rng(5))
    other = split_indices(1000, 100, np.random.default_rng(6))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert len(np.unique(first)) == 100 and np.all(np.diff(first) > 0) and first.max() < 1000


def test_npz_val_split_selects_the_same_rows(tmp_path: Path) -> None:
    images = raw_images(50)
    labels = np.arange(50) % 10
    np.savez(tmp_path / "d.npz", images=images, labels=labels)
    spec = DataSpec(path=tmp_path / "d.npz", preprocess=make_preprocess("cifar"), val_split=12, seed=3)
    data = open_data(spec, [NCHW])
    keep = split_indices(50, 12, np.random.default_rng(3))
    assert data.size == 12
    np.testing.assert_array_equal(data.labels, labels[keep])
    np.testing.assert_array_equal(data.images, cifar_preprocessed(images[keep]))
    batches = list(data.batches(5))
    assert [len(b.labels) for b in batches] == [5, 5, 2]


def test_image_folder_reads_classes_in_sorted_order(tmp_path: Path) -> None:
    from PIL import Image

    images = raw_images(6)
    for i, img in enumerate(images):
        folder = tmp_path / ("cat" if i % 2 else "ant")
        folder.mkdir(exist_ok=True)
        Image.fromarray(img).save(folder / f"{i}.png")
    data = open_data(DataSpec(path=tmp_path, preprocess=make_preprocess("cifar")), [NCHW])
    assert data.size == 6
    np.testing.assert_array_equal(data.labels, [0, 0, 0, 1, 1, 1])  # ant = 0, cat = 1
    np.testing.assert_array_equal(data.images, cifar_preprocessed(images[[0, 2, 4, 1, 3, 5]]))


def test_image_folder_resizes_to_the_model_size(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "a").mkdir()
    Image.fromarray(np.full((20, 12, 3), 200, np.uint8)).save(tmp_path / "a" / "x.png")
    data = open_data(DataSpec(path=tmp_path, preprocess=make_preprocess(scale=255.0, layout="nchw")), [NCHW])
    assert data.images.shape == (1, 3, 8, 8)
    np.testing.assert_allclose(data.images, 200 / 255, rtol=1e-6)


def test_hook_batches_are_checked_against_the_model(tmp_path: Path) -> None:
    hook = tmp_path / "feeds.py"
    hook.write_text(
        "import numpy as np\n"
        "def batches():\n"
        "    for i in range(3):\n"
        "        yield {'input': np.full((4, 3, 8, 8), i, np.float32)}, np.array([i] * 4)\n")
    data = open_data(DataSpec(hook=f"{hook}:batches"), [NCHW])
    got = list(data.batches(100))
    assert [int(b.feeds["input"][0, 0, 0, 0]) for b in got] == [0, 1, 2]
    assert [b.labels.tolist() for b in got] == [[0] * 4, [1] * 4, [2] * 4]


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"preset": "nope"}, "unknown --preprocess"),
    ({"scale": 0.0}, "--scale"),
    ({"mean": (0.1, 0.2), "std": (1.0,)}, "--mean has 2 values"),
    ({"std": (0.0,)}, "--std"),
])
def test_bad_preprocessing_specs_are_data_errors(kwargs: dict, needle: str) -> None:
    preset = kwargs.pop("preset", None)
    with pytest.raises(DataError, match=needle):
        make_preprocess(preset, **kwargs)


def test_float_images_in_unit_range_are_not_divided_again() -> None:
    images = raw_images(2).astype(np.float32) / 255
    with pytest.raises(DataError, match="already in \\[0, 1\\]"):
        apply(images, make_preprocess("cifar"), NCHW)


def test_hook_module_in_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "evalhook_pkg_for_test").mkdir()
    (tmp_path / "evalhook_pkg_for_test" / "__init__.py").write_text("")
    (tmp_path / "evalhook_pkg_for_test" / "feeds.py").write_text(
        "import numpy as np\n"
        "def one():\n"
        "    yield {'input': np.ones((2, 3, 8, 8), np.float32)}, None\n")
    monkeypatch.chdir(tmp_path)
    data = open_data(DataSpec(hook="evalhook_pkg_for_test.feeds:one"), [NCHW])
    batches = list(data.batches(8))
    assert len(batches) == 1 and batches[0].labels is None
    assert batches[0].feeds["input"].shape == (2, 3, 8, 8) and float(batches[0].feeds["input"].sum()) == 384.0
    assert str(tmp_path) not in sys.path  # the working directory was only on the path while importing


def test_disjoint_split_leaves_out_the_validation_samples(tmp_path: Path) -> None:
    """``disjoint_from`` removes another split's samples first; the rest is split with its own seed."""
    val = DataSpec(path=tmp_path / "x.npz", val_split=30, seed=4)
    calib = DataSpec(path=tmp_path / "x.npz", val_split=50, seed=4, disjoint_from=(30, 4))
    val_idx, calib_idx = subset_indices(100, val), subset_indices(100, calib)
    assert np.array_equal(val_idx, split_indices(100, 30, np.random.default_rng(4)))
    assert calib_idx is not None and len(calib_idx) == 50 and not set(calib_idx) & set(val_idx)
    everything = subset_indices(100, DataSpec(val_split=500, disjoint_from=(30, 4)))
    assert everything is not None and len(everything) == 70  # asks for more than is left: all the rest
    assert subset_indices(100, DataSpec()) is None
    with pytest.raises(DataError, match="no samples are left"):
        subset_indices(100, DataSpec(val_split=5, disjoint_from=(100, 0)))
