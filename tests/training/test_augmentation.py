"""training/augmentation.py: each transform does what it says, on real MNIST digits."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from service.preprocessing import stroke_width
from training.augmentation import build_augmenter, random_warp, stroke_width_change


@pytest.fixture(scope="module")
def batch(mnist_digits: tuple[np.ndarray, np.ndarray]) -> tf.Tensor:
    images, _ = mnist_digits
    return tf.constant((images[:64].astype(np.float32) / 255.0)[..., np.newaxis])


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


def test_drawings_recipe_stays_in_range_and_varies(batch: tf.Tensor) -> None:
    augment = build_augmenter("drawings", seed=4)
    assert augment is not None
    first, second = augment(batch).numpy(), augment(batch).numpy()
    assert first.min() >= 0.0 and first.max() <= 1.0
    assert not np.allclose(first, second)


def test_recipe_names() -> None:
    assert build_augmenter("none", seed=0) is None
    assert build_augmenter("light", seed=0) is not None
    with pytest.raises(ValueError, match="unknown augmentation"):
        build_augmenter("heavy", seed=0)
