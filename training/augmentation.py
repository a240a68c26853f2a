"""Training-time augmentation: the variation that real drawings and photos bring.

Two recipes, chosen with ``--augment``:

- ``light``: small rotations, shifts and zooms (the tutorial's own).
- ``drawings``: what preprocessing cannot fully undo on real input: stroke-width changes (random
  grey-level erosion or dilation), small elastic distortions (Simard et al., 2003), and larger
  rotations, shifts and zooms.

Everything runs inside the ``tf.data`` pipeline on batches of float32 (N, 28, 28, 1) in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

AUGMENTATIONS = ("none", "light", "drawings")
Augmenter = Callable[[tf.Tensor], tf.Tensor]

# Elastic distortion as Simard et al. describe it for MNIST: a random displacement field in
# [-1, 1], smoothed by a Gaussian of ELASTIC_SIGMA pixels and scaled by up to ELASTIC_ALPHA.
ELASTIC_ALPHA = 34.0
ELASTIC_SIGMA = 4.0
# Share of images whose strokes are thickened or thinned, and how far (blend towards a 3x3 grey
# dilation, or a 2x2 grey erosion, which removes about one pixel of width).
STROKE_CHANGE_PROBABILITY = 0.7
MAX_EROSION_BLEND = 0.8
# Rotation, zoom and shift of the drawings recipe: people tilt and size digits more than MNIST's
# writers did, and preprocessing centres by mass, not perfectly.
MAX_ROTATION_DEGREES = 15.0
MAX_ZOOM = 0.12
MAX_SHIFT_PIXELS = 2.5


def _affine(rotation: float, shift: float, zoom: float, seed: int) -> keras.Sequential:
    return keras.Sequential(
        [
            keras.layers.RandomRotation(rotation, fill_mode="constant", seed=seed),
            keras.layers.RandomTranslation(shift, shift, fill_mode="constant", seed=seed + 1),
            keras.layers.RandomZoom(zoom, fill_mode="constant", seed=seed + 2),
        ],
        name="affine",
    )


def _gaussian_kernel(sigma: float) -> tf.Tensor:
    """A (size, size, 2, 1) depthwise kernel that blurs both displacement channels."""
    radius = int(3 * sigma)
    offsets = np.arange(-radius, radius + 1, dtype=np.float32)
    line = np.exp(-(offsets**2) / (2 * sigma**2))
    plane = np.outer(line, line)
    plane /= plane.sum()
    return tf.constant(np.repeat(plane[:, :, np.newaxis, np.newaxis], 2, axis=2))


def _bilinear_sample(images: tf.Tensor, rows: tf.Tensor, columns: tf.Tensor) -> tf.Tensor:
    """Sample (N, H, W, 1) images at fractional (N, H, W) coordinates; outside reads 0."""
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    padded = tf.pad(images[..., 0], [[0, 0], [1, 1], [1, 1]])  # A zero border for outside reads.
    rows = tf.clip_by_value(rows + 1.0, 0.0, tf.cast(height, tf.float32) + 1.0)
    columns = tf.clip_by_value(columns + 1.0, 0.0, tf.cast(width, tf.float32) + 1.0)
    top, left = tf.floor(rows), tf.floor(columns)
    row_weight, column_weight = rows - top, columns - left
    top = tf.cast(top, tf.int32)
    left = tf.cast(left, tf.int32)
    bottom = tf.minimum(top + 1, height + 1)
    right = tf.minimum(left + 1, width + 1)
    index = tf.broadcast_to(tf.range(batch)[:, None, None], tf.shape(top))

    def pick(row_index: tf.Tensor, column_index: tf.Tensor) -> tf.Tensor:
        return tf.gather_nd(padded, tf.stack([index, row_index, column_index], axis=-1))

    upper = pick(top, left) * (1 - column_weight) + pick(top, right) * column_weight
    lower = pick(bottom, left) * (1 - column_weight) + pick(bottom, right) * column_weight
    return (upper * (1 - row_weight) + lower * row_weight)[..., tf.newaxis]


def random_warp(
    images: tf.Tensor,
    generator: tf.random.Generator,
    *,
    max_rotation_degrees: float = MAX_ROTATION_DEGREES,
    max_zoom: float = MAX_ZOOM,
    max_shift: float = MAX_SHIFT_PIXELS,
    max_alpha: float = ELASTIC_ALPHA,
) -> tf.Tensor:
    """Rotate, zoom, shift and elastically distort each image, resampling it only once.

    Each image gets its own rotation, zoom and shift, and its own smooth random displacement
    field of strength up to ``max_alpha``; one bilinear lookup then applies all of them, so the
    strokes blur no more than one resampling blurs them.

    Args:
        images: float32 (N, H, W, 1).
    """
    shape = tf.shape(images)
    count, height, width = shape[0], shape[1], shape[2]
    per_image = tf.stack([count, 1, 1])
    angle = generator.uniform(per_image, -1.0, 1.0) * (max_rotation_degrees * np.pi / 180)
    scale = 1.0 / generator.uniform(per_image, 1.0 - max_zoom, 1.0 + max_zoom)
    shift_rows = generator.uniform(per_image, -max_shift, max_shift)
    shift_columns = generator.uniform(per_image, -max_shift, max_shift)
    field = generator.uniform(tf.stack([count, height, width, 2]), -1.0, 1.0)
    smooth = tf.nn.depthwise_conv2d(
        field, _gaussian_kernel(ELASTIC_SIGMA), strides=[1, 1, 1, 1], padding="SAME"
    )
    displacement = smooth * generator.uniform(tf.stack([count, 1, 1, 1]), 0.0, max_alpha)
    centre_row = (tf.cast(height, tf.float32) - 1) / 2
    centre_column = (tf.cast(width, tf.float32) - 1) / 2
    rows, columns = tf.meshgrid(
        tf.range(height, dtype=tf.float32) - centre_row,
        tf.range(width, dtype=tf.float32) - centre_column,
        indexing="ij",
    )
    cos, sin = tf.cos(angle) * scale, tf.sin(angle) * scale
    source_rows = cos * rows[None] - sin * columns[None] + centre_row - shift_rows
    source_columns = sin * rows[None] + cos * columns[None] + centre_column - shift_columns
    return _bilinear_sample(
        images, source_rows + displacement[..., 0], source_columns + displacement[..., 1]
    )


def stroke_width_change(images: tf.Tensor, generator: tf.random.Generator) -> tf.Tensor:
    """Thicken or thin each image's strokes by a random amount (some images are left alone).

    A blend towards the 3x3 grey dilation adds up to two pixels of width; a blend towards the
    2x2 grey erosion removes up to about one, so that thin MNIST strokes never vanish.
    """
    count = tf.shape(images)[0]
    dilated = tf.nn.max_pool2d(images, ksize=3, strides=1, padding="SAME")
    eroded = -tf.nn.max_pool2d(-images, ksize=2, strides=1, padding="SAME")
    amount = generator.uniform(tf.stack([count, 1, 1, 1]), -1.0, 1.0)
    changed = generator.uniform(tf.stack([count, 1, 1, 1])) < STROKE_CHANGE_PROBABILITY
    amount = tf.where(changed, amount, tf.zeros_like(amount))
    thicker = images + tf.nn.relu(amount) * (dilated - images)
    return thicker + MAX_EROSION_BLEND * tf.nn.relu(-amount) * (eroded - images)


def build_augmenter(name: str, seed: int) -> Augmenter | None:
    """The named recipe as a function of a batch, or None for ``none``.

    Raises:
        ValueError: an unknown recipe name.
    """
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; choose one of {AUGMENTATIONS}")
    if name == "none":
        return None
    if name == "light":
        light = _affine(rotation=0.04, shift=0.08, zoom=0.08, seed=seed)
        return lambda images: light(images, training=True)
    generator = tf.random.Generator.from_seed(seed)

    def drawings(images: tf.Tensor) -> tf.Tensor:
        images = random_warp(stroke_width_change(images, generator), generator)
        return tf.clip_by_value(images, 0.0, 1.0)

    return drawings
