"""training/augmentation.py: each transform does what it says, on real MNIST digits."""

from __future__ import annotations

import cc3d
import numpy as np
import pytest
import tensorflow as tf

from service.preprocessing import stroke_width
from training import augmentation
from training.augmentation import (
    broken_strokes,
    build_augmenter,
    continental_strokes,
    fading_ink,
    gaussian_blur,
    random_warp,
    stroke_width_change,
)


@pytest.fixture(scope="module")
def batch(mnist_digits: tuple[np.ndarray, np.ndarray]) -> tf.Tensor:
    images, _ = mnist_digits
    return tf.constant((images[:64].astype(np.float32) / 255.0)[..., np.newaxis])


@pytest.fixture(scope="module")
def labels(mnist_digits: tuple[np.ndarray, np.ndarray]) -> tf.Tensor:
    return tf.constant(mnist_digits[1][:64])


def widths(images: np.ndarray) -> np.ndarray:
    return np.array([stroke_width(image[..., 0]) for image in images])


def test_warp_with_nothing_to_do_is_the_identity(batch: tf.Tensor) -> None:
    generator = tf.random.Generator.from_seed(1)
    unchanged = random_warp(
        batch, generator, max_rotation_degrees=0, max_zoom=0, max_shift=0, max_alpha=0
    )
    np.testing.assert_allclose(unchanged.numpy(), batch.numpy(), atol=1e-6)


def test_warp_moves_and_bends_digits_but_keeps_their_ink(batch: tf.Tensor) -> None:
    warped = random_warp(batch, tf.random.Generator.from_seed(2)).numpy()
    original = batch.numpy()
    assert warped.shape == original.shape
    assert np.mean(np.abs(warped - original)) > 0.02  # Something moved.
    ink_ratio = warped.sum(axis=(1, 2, 3)) / original.sum(axis=(1, 2, 3))
    assert 0.7 < float(np.median(ink_ratio)) < 1.4  # Zoom changes the ink by its square.


def test_stroke_width_change_thickens_and_thins(batch: tf.Tensor) -> None:
    changed = stroke_width_change(batch, tf.random.Generator.from_seed(3)).numpy()
    before, after = widths(batch.numpy()), widths(changed)
    assert (after > before + 0.3).sum() >= 8  # Thickened.
    assert (after < before - 0.2).sum() >= 8  # Thinned.
    assert np.isclose(after, before).sum() >= 8  # Left alone.
    assert changed.min() >= 0.0 and changed.max() <= 1.0


def test_drawings_recipe_stays_in_range_and_varies(batch: tf.Tensor, labels: tf.Tensor) -> None:
    augment = build_augmenter("drawings", seed=4)
    assert augment is not None
    first, second = augment(batch, labels).numpy(), augment(batch, labels).numpy()
    assert first.min() >= 0.0 and first.max() <= 1.0
    assert not np.allclose(first, second)


def test_recipe_names() -> None:
    assert build_augmenter("none", seed=0) is None
    assert build_augmenter("light", seed=0) is not None
    with pytest.raises(ValueError, match="unknown augmentation"):
        build_augmenter("heavy", seed=0)


def test_separable_blur_equals_the_two_dimensional_gaussian() -> None:
    planes = tf.random.stateless_uniform([3, 28, 28, 2], seed=[1, 2])
    sigma = 2.0
    offsets = np.arange(-6, 7, dtype=np.float32)
    line = np.exp(-(offsets**2) / (2 * sigma**2))
    plane = np.outer(line, line) / np.outer(line, line).sum()
    kernel = tf.constant(np.repeat(plane[:, :, None, None], 2, axis=2))
    direct = tf.nn.depthwise_conv2d(planes, kernel, strides=[1, 1, 1, 1], padding="SAME")
    np.testing.assert_allclose(gaussian_blur(planes, sigma).numpy(), direct.numpy(), atol=1e-5)


def pieces(mask: np.ndarray) -> int:
    return int(cc3d.connected_components(mask, connectivity=8, return_N=True)[1])


def test_broken_strokes_leave_gaps_in_the_digits_they_break(
    batch: tf.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(augmentation, "BROKEN_STROKE_PROBABILITY", 1.0)
    broken = broken_strokes(batch, tf.random.Generator.from_seed(5)).numpy()
    original = batch.numpy()
    kept = broken.sum(axis=(1, 2, 3)) / original.sum(axis=(1, 2, 3))
    assert 0.3 < float(kept.min()) and float(kept.max()) < 0.9  # Gaps, never the whole digit.
    pieces_before = [pieces(image[..., 0] > 0.5) for image in original]
    pieces_after = [pieces(image[..., 0] > 0.5) for image in broken]
    # Dashes, not one stroke: the typical digit falls into at least one more piece.
    assert np.median(pieces_after) >= np.median(pieces_before) + 1
    assert np.mean(pieces_after) >= np.mean(pieces_before) + 1
    assert (broken <= original + 1e-6).all()  # Ink is only taken away.


def test_broken_strokes_leave_most_digits_alone(batch: tf.Tensor) -> None:
    broken = broken_strokes(batch, tf.random.Generator.from_seed(6)).numpy()
    untouched = np.isclose(broken, batch.numpy()).all(axis=(1, 2, 3))
    assert 0.5 < untouched.mean() < 0.9  # BROKEN_STROKE_PROBABILITY is 0.3.


def test_continental_strokes_only_touch_ones_and_sevens(
    batch: tf.Tensor, labels: tf.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(augmentation, "CONTINENTAL_PROBABILITY", 1.0)
    written = continental_strokes(batch, labels, tf.random.Generator.from_seed(7)).numpy()
    added = (written - batch.numpy()).sum(axis=(1, 2, 3))
    classes = labels.numpy()
    assert (added[~np.isin(classes, [1, 7])] == 0).all()
    assert (added[np.isin(classes, [1, 7])] > 3.0).all()  # A flag or a bar: a few pixels' ink.
    # A 7's bar crosses it half way down: the added ink's centre is near the digit's middle.
    for index in np.flatnonzero(classes == 7):
        bar = (written[index] - batch.numpy()[index])[..., 0]
        ink_rows = np.flatnonzero(batch.numpy()[index][..., 0].max(axis=1) > 0.5)
        bar_row = (bar.sum(axis=1) * np.arange(bar.shape[0])).sum() / bar.sum()
        assert abs(bar_row - (ink_rows[0] + ink_rows[-1]) / 2) <= 3


def test_fading_ink_dims_one_side_and_keeps_the_other(
    batch: tf.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(augmentation, "FADING_INK_PROBABILITY", 1.0)
    faded = fading_ink(batch, tf.random.Generator.from_seed(8)).numpy()
    original = batch.numpy()
    ratio = np.where(original > 0.5, faded / np.maximum(original, 1e-6), np.nan)
    faintest = np.nanmin(ratio.reshape(len(ratio), -1), axis=1)
    strongest = np.nanmax(ratio.reshape(len(ratio), -1), axis=1)
    assert np.median(faintest) < 0.65 and np.median(strongest) > 0.9


def test_photos_recipe_stays_in_range_and_varies(batch: tf.Tensor, labels: tf.Tensor) -> None:
    augment = build_augmenter("photos", seed=9)
    assert augment is not None
    first, second = augment(batch, labels).numpy(), augment(batch, labels).numpy()
    assert first.shape == batch.shape
    assert first.min() >= 0.0 and first.max() <= 1.0
    assert not np.allclose(first, second)
