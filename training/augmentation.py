"""Training-time augmentation: the variation that real drawings and photos bring.

Three recipes, chosen with ``--augment``:

- ``light``: small rotations, shifts and zooms (the tutorial's own).
- ``drawings``: what preprocessing cannot fully undo on real input: stroke-width changes (random
  grey-level erosion or dilation), small elastic distortions (Simard et al., 2003), and larger
  rotations, shifts and zooms.
- ``photos``: ``drawings`` plus what photographed handwriting adds: dotted and broken strokes,
  ink that fades along the digit (a pen running dry), and continental styles (a 1 with a flag
  and a foot, a crossed 7), which MNIST's American writers rarely used.

Everything runs inside the ``tf.data`` pipeline on batches of float32 (N, 28, 28, 1) in [0, 1]
with their (N,) integer labels.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

AUGMENTATIONS = ("none", "light", "drawings", "photos")
Augmenter = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]

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
# The photos recipe: the share of images whose strokes are broken into dashes or dots, and the
# size (Gaussian sigma, pixels) of the gaps' random pattern; how much of the ink survives.
BROKEN_STROKE_PROBABILITY = 0.25
GAP_PATTERN_SIGMA = 1.8
INK_KEPT = (0.5, 0.8)
# The share of images whose ink fades across the digit, and how faint its faint side gets.
FADING_INK_PROBABILITY = 0.25
FADED_INK = (0.25, 0.6)
# The share of 1s and 7s written the continental way (a 1's flag, sometimes a foot; a 7's bar).
CONTINENTAL_PROBABILITY = 0.5
PEN_HALF_WIDTH = 1.1


def _affine(rotation: float, shift: float, zoom: float, seed: int) -> keras.Sequential:
    return keras.Sequential(
        [
            keras.layers.RandomRotation(rotation, fill_mode="constant", seed=seed),
            keras.layers.RandomTranslation(shift, shift, fill_mode="constant", seed=seed + 1),
            keras.layers.RandomZoom(zoom, fill_mode="constant", seed=seed + 2),
        ],
        name="affine",
    )


def gaussian_blur(planes: tf.Tensor, sigma: float) -> tf.Tensor:
    """Blur each channel of float32 (N, H, W, C) by a Gaussian of ``sigma`` pixels (zero
    outside), as two one-dimensional passes: (2r + 1) taps a pixel each instead of
    (2r + 1) squared."""
    radius = int(3 * sigma)
    offsets = np.arange(-radius, radius + 1, dtype=np.float32)
    line = np.exp(-(offsets**2) / (2 * sigma**2))
    line /= line.sum()
    channels = int(planes.shape[-1])
    down = tf.constant(np.tile(line[:, None, None, None], (1, 1, channels, 1)))
    across = tf.constant(np.tile(line[None, :, None, None], (1, 1, channels, 1)))
    planes = tf.nn.depthwise_conv2d(planes, down, strides=[1, 1, 1, 1], padding="SAME")
    return tf.nn.depthwise_conv2d(planes, across, strides=[1, 1, 1, 1], padding="SAME")


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
    smooth = gaussian_blur(field, ELASTIC_SIGMA)
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


def _per_image(
    generator: tf.random.Generator, count: tf.Tensor, low: float = 0.0, high: float = 1.0
) -> tf.Tensor:
    """One uniform value per image, float32 (N, 1, 1, 1)."""
    return generator.uniform(tf.stack([count, 1, 1, 1]), low, high)


def _chosen(generator: tf.random.Generator, count: tf.Tensor, probability: float) -> tf.Tensor:
    """Which images a transform changes, each with ``probability``: bool (N, 1, 1, 1)."""
    return _per_image(generator, count) < probability


def stroke_width_change(images: tf.Tensor, generator: tf.random.Generator) -> tf.Tensor:
    """Thicken or thin each image's strokes by a random amount (some images are left alone).

    A blend towards the 3x3 grey dilation adds up to two pixels of width; a blend towards the
    2x2 grey erosion removes up to about one, so that thin MNIST strokes never vanish.
    """
    count = tf.shape(images)[0]
    dilated = tf.nn.max_pool2d(images, ksize=3, strides=1, padding="SAME")
    eroded = -tf.nn.max_pool2d(-images, ksize=2, strides=1, padding="SAME")
    amount = _per_image(generator, count, -1.0, 1.0)
    changed = _chosen(generator, count, STROKE_CHANGE_PROBABILITY)
    amount = tf.where(changed, amount, tf.zeros_like(amount))
    thicker = images + tf.nn.relu(amount) * (dilated - images)
    return thicker + MAX_EROSION_BLEND * tf.nn.relu(-amount) * (eroded - images)


def broken_strokes(images: tf.Tensor, generator: tf.random.Generator) -> tf.Tensor:
    """Break some images' strokes into dashes and dots, as a dotted pen or a rough surface does.

    A smooth random pattern (uniform noise blurred by a Gaussian of 1.8 px) is thresholded
    at a per-image quantile, so that about 50-80 % of the ink survives in blobs about as long as the
    strokes are wide, in every direction at once.

    Args:
        images: float32 (N, H, W, 1).
    """
    count = tf.shape(images)[0]
    pattern = gaussian_blur(generator.uniform(tf.shape(images)), GAP_PATTERN_SIGMA)
    mean, variance = tf.nn.moments(pattern, axes=[1, 2, 3], keepdims=True)
    pattern = (pattern - mean) / tf.sqrt(variance + 1e-12)  # Unit spread, whatever the blur.
    # The threshold keeps the chosen share of each image's ink pixels (a quantile over them).
    inked = tf.reshape(images > 0.3, tf.stack([count, -1]))
    flat = tf.sort(tf.where(inked, tf.reshape(pattern, tf.shape(inked)), -1e9), axis=1)
    kept = generator.uniform(tf.stack([count]), *INK_KEPT)
    ink_pixels = tf.reduce_sum(tf.cast(inked, tf.float32), axis=1)
    position = tf.shape(flat)[1] - 1 - tf.cast(kept * ink_pixels, tf.int32)
    threshold = tf.gather(flat, tf.maximum(position, 0), axis=1, batch_dims=1)
    threshold = threshold[:, None, None, None]
    mask = tf.sigmoid((pattern - threshold) * 12.0)  # Soft edges, like a real pen's.
    broken = _chosen(generator, count, BROKEN_STROKE_PROBABILITY)
    return tf.where(broken, images * mask, images)


def fading_ink(images: tf.Tensor, generator: tf.random.Generator) -> tf.Tensor:
    """Make some images' ink fade from one side of the digit to the other (a pen running dry).

    Args:
        images: float32 (N, H, W, 1).
    """
    shape = tf.shape(images)
    count, height, width = shape[0], shape[1], shape[2]
    angle = _per_image(generator, count, 0.0, 2 * np.pi)
    rows, columns = tf.meshgrid(
        tf.linspace(-1.0, 1.0, height), tf.linspace(-1.0, 1.0, width), indexing="ij"
    )
    along = tf.cos(angle) * rows[None, :, :, None] + tf.sin(angle) * columns[None, :, :, None]
    edge = _per_image(generator, count, -0.4, 0.4)
    sharpness = _per_image(generator, count, 3.0, 20.0)
    faint = _per_image(generator, count, *FADED_INK)
    fade = faint + (1.0 - faint) * tf.sigmoid((along - edge) * sharpness)
    fading = _chosen(generator, count, FADING_INK_PROBABILITY)
    return tf.where(fading, images * fade, images)


def _segments(start: tf.Tensor, end: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """Pen strokes from ``start`` to ``end`` ((N, 2) row, column), drawn as float32 (N, H, W, 1)."""
    rows, columns = tf.meshgrid(
        tf.range(height, dtype=tf.float32), tf.range(width, dtype=tf.float32), indexing="ij"
    )
    pixels = tf.stack([rows, columns], axis=-1)[None]  # (1, H, W, 2)
    origin, direction = start[:, None, None, :], (end - start)[:, None, None, :]
    length = tf.reduce_sum(direction**2, axis=-1, keepdims=True) + 1e-6
    along = tf.clip_by_value(
        tf.reduce_sum((pixels - origin) * direction, axis=-1, keepdims=True) / length, 0.0, 1.0
    )
    distance = tf.norm(pixels - (origin + along * direction), axis=-1, keepdims=True)
    return tf.clip_by_value(PEN_HALF_WIDTH + 0.5 - distance, 0.0, 1.0)


def continental_strokes(
    images: tf.Tensor, labels: tf.Tensor, generator: tf.random.Generator
) -> tf.Tensor:
    """Write some 1s with a flag (and sometimes a foot) and some 7s with a crossbar.

    The strokes start from the digit's own ink: a 1's flag leaves its topmost ink down to the
    left, its foot crosses under its lowest ink; a 7's bar crosses its stem half way down.

    Args:
        images: float32 (N, H, W, 1); labels: integer (N,).
    """
    shape = tf.shape(images)
    count, height, width = shape[0], shape[1], shape[2]
    ink = images[..., 0] > 0.5
    columns = tf.range(width, dtype=tf.float32)
    row_has_ink = tf.reduce_any(ink, axis=2)
    top = tf.argmax(tf.cast(row_has_ink, tf.int32), axis=1, output_type=tf.int32)
    bottom = (
        height
        - 1
        - tf.argmax(tf.cast(tf.reverse(row_has_ink, [1]), tf.int32), axis=1, output_type=tf.int32)
    )
    tall = tf.cast(tf.maximum(bottom - top, 1), tf.float32)

    def ink_column(row: tf.Tensor) -> tf.Tensor:
        """The mean column of each image's ink on ``row`` (N,)."""
        line = tf.cast(tf.gather(ink, row, axis=1, batch_dims=1), tf.float32)
        return tf.reduce_sum(line * columns, axis=1) / tf.maximum(tf.reduce_sum(line, axis=1), 1.0)

    top_f, bottom_f = tf.cast(top, tf.float32), tf.cast(bottom, tf.float32)
    top_column, bottom_column = ink_column(top), ink_column(bottom)
    middle = (top + bottom) // 2
    middle_f, middle_column = tf.cast(middle, tf.float32), ink_column(middle)
    flag_length = generator.uniform(tf.stack([count]), 0.22, 0.38) * tall
    flag_angle = generator.uniform(tf.stack([count]), 0.6, 1.1)  # Radians below horizontal.
    flag = _segments(
        tf.stack([top_f, top_column], axis=1),
        tf.stack(
            [
                top_f + flag_length * tf.sin(flag_angle),
                top_column - flag_length * tf.cos(flag_angle),
            ],
            axis=1,
        ),
        height,
        width,
    )
    foot_half = generator.uniform(tf.stack([count]), 0.15, 0.28) * tall
    foot = _segments(
        tf.stack([bottom_f, bottom_column - foot_half], axis=1),
        tf.stack([bottom_f, bottom_column + foot_half], axis=1),
        height,
        width,
    )
    with_foot = _chosen(generator, count, 0.5)
    one = tf.maximum(flag, tf.where(with_foot, foot, tf.zeros_like(foot)))
    bar_half = generator.uniform(tf.stack([count]), 0.15, 0.28) * tall
    bar_tilt = generator.uniform(tf.stack([count]), -0.08, 0.08) * tall
    seven = _segments(
        tf.stack([middle_f + bar_tilt, middle_column - bar_half], axis=1),
        tf.stack([middle_f - bar_tilt, middle_column + bar_half], axis=1),
        height,
        width,
    )
    labels = tf.reshape(tf.cast(labels, tf.int32), tf.stack([count, 1, 1, 1]))
    chosen = _chosen(generator, count, CONTINENTAL_PROBABILITY)
    added = tf.where(labels == 1, one, tf.where(labels == 7, seven, tf.zeros_like(one)))
    return tf.maximum(images, tf.where(chosen, added, tf.zeros_like(added)))


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
        return lambda images, labels: light(images, training=True)
    generator = tf.random.Generator.from_seed(seed)

    def drawings(images: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        images = random_warp(stroke_width_change(images, generator), generator)
        return tf.clip_by_value(images, 0.0, 1.0)

    def photos(images: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        images = stroke_width_change(continental_strokes(images, labels, generator), generator)
        images = random_warp(broken_strokes(images, generator), generator)
        return tf.clip_by_value(fading_ink(images, generator), 0.0, 1.0)

    return photos if name == "photos" else drawings
