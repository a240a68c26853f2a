"""Turning what people send (photos, drawings, arrays) into the model's (N, 28, 28, 1) input.

The ``mnist`` method repeats how MNIST itself was made (LeCun et al.): light ink on a dark
background, the digit fitted into a 20x20 box keeping its aspect ratio, then placed in the 28x28
field so that its centre of mass sits in the middle.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

from service.errors import InvalidInputError, PayloadTooLargeError, UnsupportedMediaTypeError
from service.repository import PreprocessingSpec, PreprocessMethod

CANVAS = 28
ALLOWED_FORMATS = frozenset({"PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF"})
# Big photos are first shrunk to this longest side: the digit ends up 20 px tall anyway, and it
# bounds the memory and time of everything after decoding, whatever the upload's size.
WORKING_SIDE = 256
# Below this contrast (0-255) between ink and background there is no digit to find.
MIN_INK_CONTRAST = 40.0
# Ink is what is brighter than this fraction of the strongest stroke, after denoising.
INK_THRESHOLD = 0.35
# Ink fainter than this fraction of the strongest stroke is background (paper grain, noise).
FAINT_INK = 0.1
# Images at least this small on their short side are photos/drawings worth denoising.
DENOISE_MIN_SIDE = 64

# Pillow's own bomb check would raise only a warning below 2x its limit; ours runs first anyway.
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True)
class ImageLimits:
    """Bounds checked before any pixel is decoded."""

    max_pixels: int
    max_bytes: int


def open_image(data: bytes, limits: ImageLimits) -> Image.Image:
    """Decode one uploaded image after checking its format and declared size.

    Raises:
        PayloadTooLargeError: too many bytes, or more pixels than allowed (a decompression bomb).
        UnsupportedMediaTypeError: an image format outside ``ALLOWED_FORMATS``.
        InvalidInputError: not an image, or a truncated/corrupt one.
    """
    if len(data) > limits.max_bytes:
        raise PayloadTooLargeError(
            f"image of {len(data)} bytes exceeds the limit of {limits.max_bytes} bytes"
        )
    if not data:
        raise InvalidInputError("empty image")
    try:
        image = Image.open(io.BytesIO(data))  # Reads the header only.
    except UnidentifiedImageError:
        raise InvalidInputError(
            "the data is not an image in a known format",
            details={"allowed_formats": sorted(ALLOWED_FORMATS)},
        ) from None
    if image.format not in ALLOWED_FORMATS:
        raise UnsupportedMediaTypeError(
            f"image format {image.format} is not accepted",
            details={"allowed_formats": sorted(ALLOWED_FORMATS)},
        )
    width, height = image.size
    if width * height > limits.max_pixels:
        raise PayloadTooLargeError(
            f"image of {width}x{height} pixels exceeds the limit of {limits.max_pixels} pixels"
        )
    if image.format == "JPEG":
        # Let the JPEG decoder scale down by up to 8x while decoding: a 12 MP photo then costs
        # a fraction of the time and memory.
        image.draft("L", (WORKING_SIDE, WORKING_SIDE))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about odd metadata; the pixels matter.
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise InvalidInputError(
            f"the image is truncated or corrupt ({type(error).__name__})"
        ) from None
    return image


def to_grayscale(image: Image.Image) -> np.ndarray:
    """Upright, opaque, grayscale pixels, at most ``WORKING_SIDE`` pixels on the longest side.

    EXIF rotation is applied; transparency is composited onto a background that contrasts with
    the strokes (white behind dark ink, black behind light ink), so a transparent drawing keeps
    its strokes whatever their colour. Big images shrink (box filter) before any float copy.

    Returns:
        float32 (H, W) in [0, 255].
    """
    image = ImageOps.exif_transpose(image)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    image = image.convert("RGBA" if has_alpha else "L")
    image.thumbnail((WORKING_SIDE, WORKING_SIDE), Image.Resampling.BOX)
    if not has_alpha:
        return np.asarray(image, dtype=np.float32)
    alpha = np.asarray(image.getchannel("A"), dtype=np.float32) / 255.0
    gray = np.asarray(image.convert("L"), dtype=np.float32)
    opaque = alpha > 0.5
    stroke_level = float(gray[opaque].mean()) if opaque.any() else 0.0
    background = 255.0 if stroke_level < 128 else 0.0
    composited: np.ndarray = gray * alpha + background * (1.0 - alpha)
    return composited


def _border_median(gray: np.ndarray) -> float:
    width = max(1, min(gray.shape) // 20)
    border = np.concatenate(
        [
            gray[:width].ravel(),
            gray[-width:].ravel(),
            gray[:, :width].ravel(),
            gray[:, -width:].ravel(),
        ]
    )
    return float(np.median(border))


def _light_on_dark(gray: np.ndarray, invert: str) -> np.ndarray:
    """Invert dark-ink-on-light-paper images (judged by the border) to MNIST's polarity."""
    light_background = _border_median(gray) > 127.0
    if invert == "always" or (invert == "auto" and light_background):
        return 255.0 - gray
    return gray


def _ink_strength(gray: np.ndarray) -> np.ndarray:
    """Ink above the background level. float32 (H, W) >= 0.

    Photos get a 3x3 median filter first to remove speckle noise; small images (MNIST itself)
    do not, since it would erase their one-pixel strokes.
    """
    if min(gray.shape) >= DENOISE_MIN_SIDE:
        gray = np.asarray(
            Image.fromarray(gray.astype(np.uint8)).filter(ImageFilter.MedianFilter(3)),
            dtype=np.float32,
        )
    return np.clip(gray - _border_median(gray), 0.0, None)


def _digit_box(ink: np.ndarray, peak: float) -> tuple[slice, slice]:
    """Bounding box of the digit: found from its strong strokes, then widened to its faint edges.

    Stray specks far from the strokes stay outside; the anti-aliased rim of the strokes is kept,
    as MNIST's 20x20 box keeps it.
    """
    strong = ink > INK_THRESHOLD * peak
    rows, columns = np.flatnonzero(strong.any(axis=1)), np.flatnonzero(strong.any(axis=0))
    margin = 1 + max(ink.shape) // 25
    top, bottom = max(0, rows[0] - margin), min(ink.shape[0], rows[-1] + margin + 1)
    left, right = max(0, columns[0] - margin), min(ink.shape[1], columns[-1] + margin + 1)
    window = ink[top:bottom, left:right] > FAINT_INK * peak
    rows, columns = np.flatnonzero(window.any(axis=1)), np.flatnonzero(window.any(axis=0))
    return (
        slice(top + rows[0], top + rows[-1] + 1),
        slice(left + columns[0], left + columns[-1] + 1),
    )


def _paste_by_centre_of_mass(digit: np.ndarray) -> np.ndarray:
    """Place a (h, w) patch in a 28x28 field with its centre of mass at the middle."""
    canvas = np.zeros((CANVAS, CANVAS), dtype=np.float32)
    total = float(digit.sum())
    rows, columns = np.indices(digit.shape)
    centre_row = float((rows * digit).sum() / total)
    centre_column = float((columns * digit).sum() / total)
    height, width = digit.shape
    top = int(np.clip(round(CANVAS / 2 - centre_row), 0, CANVAS - height))
    left = int(np.clip(round(CANVAS / 2 - centre_column), 0, CANVAS - width))
    canvas[top : top + height, left : left + width] = digit
    return canvas


def mnist_style(gray: np.ndarray, spec: PreprocessingSpec) -> np.ndarray:
    """A photo or drawing of one digit -> a 28x28 MNIST-like digit.

    Args:
        gray: float32 (H, W) in [0, 255], any polarity.

    Returns:
        float32 (28, 28) in [0, 1], light ink on black, centred by mass.
    """
    ink = _ink_strength(_light_on_dark(gray, spec.invert))
    peak = float(ink.max())
    if peak < MIN_INK_CONTRAST:
        raise InvalidInputError(
            "no digit found: the image is blank or its strokes have too little contrast"
        )
    row_slice, column_slice = _digit_box(ink, peak)
    # Faint background left inside the box fades to black; the strongest stroke becomes 1.0.
    cropped = np.clip(
        (ink[row_slice, column_slice] - FAINT_INK * peak) / ((1 - FAINT_INK) * peak), 0.0, 1.0
    )
    height, width = cropped.shape
    scale = spec.digit_box / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    digit = np.asarray(
        Image.fromarray(cropped.astype(np.float32)).resize(size, Image.Resampling.LANCZOS),
        dtype=np.float32,
    )
    return _paste_by_centre_of_mass(np.clip(digit, 0.0, 1.0))


def plain_resize(gray: np.ndarray, spec: PreprocessingSpec) -> np.ndarray:
    """Pad to a square with the background, then resize to 28x28.

    Returns:
        float32 (28, 28) in [0, 1], light on dark.
    """
    light = _light_on_dark(gray, spec.invert)
    height, width = light.shape
    side = max(height, width)
    square = np.full((side, side), _border_median(light), dtype=np.float32)
    top, left = (side - height) // 2, (side - width) // 2
    square[top : top + height, left : left + width] = light
    resized = Image.fromarray(square).resize((CANVAS, CANVAS), Image.Resampling.LANCZOS)
    scaled: np.ndarray = np.clip(np.asarray(resized, dtype=np.float32) / 255.0, 0.0, 1.0)
    return scaled


def as_is(gray: np.ndarray) -> np.ndarray:
    """No preprocessing: the image must already be 28x28. Returns float32 (28, 28) in [0, 1]."""
    if gray.shape != (CANVAS, CANVAS):
        raise InvalidInputError(
            f"preprocess=none needs a 28x28 image, got {gray.shape[1]}x{gray.shape[0]}; "
            "use preprocess=mnist or resize"
        )
    return gray / 255.0


def prepare(gray: np.ndarray, method: PreprocessMethod, spec: PreprocessingSpec) -> np.ndarray:
    """Apply one method to a (H, W) 0-255 image; returns float32 (28, 28) in [0, 1]."""
    if method == "mnist":
        return mnist_style(gray, spec)
    if method == "resize":
        return plain_resize(gray, spec)
    return as_is(gray)


def images_to_batch(
    blobs: list[bytes], method: PreprocessMethod, spec: PreprocessingSpec, limits: ImageLimits
) -> np.ndarray:
    """Encoded images -> float32 (N, 28, 28, 1) model input."""
    prepared = []
    for index, blob in enumerate(blobs):
        try:
            prepared.append(prepare(to_grayscale(open_image(blob, limits)), method, spec))
        except (InvalidInputError, PayloadTooLargeError, UnsupportedMediaTypeError) as error:
            error.details = {"item": index, **(error.details or {})}
            raise
    return np.stack(prepared)[..., np.newaxis]


def arrays_to_batch(
    values: np.ndarray, method: PreprocessMethod, spec: PreprocessingSpec
) -> np.ndarray:
    """Numeric instances -> float32 (N, 28, 28, 1) model input.

    Args:
        values: (N, 28, 28), (N, 28, 28, 1) or (N, 784) numbers in [0, 1], light ink on dark.
        method: ``none`` passes them through; ``mnist``/``resize`` treat each as a 28x28 image.
    """
    count = values.shape[0] if values.ndim else 0
    if values.ndim == 2 and values.shape[1:] == (CANVAS * CANVAS,):
        values = values.reshape(count, CANVAS, CANVAS)
    if values.ndim == 4 and values.shape[3] == 1:
        values = values[..., 0]
    if values.ndim != 3 or values.shape[1:] != (CANVAS, CANVAS):
        raise InvalidInputError(
            f"each instance must be 28x28, 28x28x1 or 784 numbers; got batch shape "
            f"{list(values.shape)}"
        )
    if not np.isfinite(values).all():
        raise InvalidInputError("instances contain NaN, infinite or null values")
    if values.size and (values.min() < 0.0 or values.max() > 1.0):
        raise InvalidInputError(
            "instance values must lie in [0, 1] (divide 0-255 pixels by 255)",
            details={"min": float(values.min()), "max": float(values.max())},
        )
    values = values.astype(np.float32, copy=False)
    if method != "none":
        values = np.stack([prepare(item * 255.0, method, spec) for item in values])
    return values[..., np.newaxis]
