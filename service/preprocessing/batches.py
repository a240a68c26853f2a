"""Turning what people send into the model's (N, S, S, 1) input: one image or array at a time.

S, the input's side (28 for MNIST), comes from the model card (``spec.canvas``). Three methods:
``mnist`` (``service.preprocessing.digits``), ``resize`` (pad to a square and resize) and
``none`` (already the model's input).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from PIL import Image

from model_card import PreprocessingSpec, PreprocessMethod
from service.errors import InvalidInputError, PayloadTooLargeError, UnsupportedMediaTypeError
from service.preprocessing.decoding import ImageLimits, decode_grayscale
from service.preprocessing.digits import ANALYSIS_SIDE, ink_is_dark, mnist_style
from service.preprocessing.primitives import block_reduce


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


def plain_resize(gray: np.ndarray, spec: PreprocessingSpec) -> np.ndarray:
    """Pad to a square with the background, then resize to the model's input size.

    The image is first box-reduced to at most ``ANALYSIS_SIDE`` pixels, so that padding costs
    the reduced image's memory, not a float square of the upload's longest side.

    Returns:
        float32 (canvas, canvas) in [0, 1], light on dark.
    """
    dark = ink_is_dark(gray, spec.invert)
    reduced = block_reduce(gray, max(1, -(-max(gray.shape) // ANALYSIS_SIDE)), "mean")
    light = np.float32(255.0) - reduced if dark else reduced
    height, width = light.shape
    side = max(height, width)
    square = np.full((side, side), _border_median(light), dtype=np.float32)
    top, left = (side - height) // 2, (side - width) // 2
    square[top : top + height, left : left + width] = light
    resized = Image.fromarray(square).resize((spec.canvas, spec.canvas), Image.Resampling.LANCZOS)
    scaled: np.ndarray = np.clip(np.asarray(resized, dtype=np.float32) / 255.0, 0.0, 1.0)
    return scaled


def as_is(gray: np.ndarray, spec: PreprocessingSpec) -> np.ndarray:
    """No preprocessing: the image must already have the model's input size.

    Returns:
        float32 (canvas, canvas) in [0, 1].
    """
    check_size_as_is((gray.shape[1], gray.shape[0]), spec)
    return gray.astype(np.float32) / np.float32(255.0)


def check_size_as_is(size: tuple[int, int], spec: PreprocessingSpec) -> None:
    """Refuse an image of (width, height) that ``preprocess=none`` cannot take, before decoding.

    Raises:
        InvalidInputError: it is not canvas x canvas.
    """
    if size != (spec.canvas, spec.canvas):
        raise InvalidInputError(
            f"preprocess=none needs a {spec.canvas}x{spec.canvas} image, got "
            f"{size[0]}x{size[1]}; use preprocess=mnist or resize"
        )


def prepare(
    gray: np.ndarray,
    method: PreprocessMethod,
    spec: PreprocessingSpec,
    notes: set[str] | None = None,
) -> np.ndarray:
    """Apply one method to a (H, W) 0-255 image (uint8 or float); ``notes`` collects what the
    ``mnist`` method noticed (``"several digits"``).

    Returns:
        float32 (canvas, canvas) in [0, 1].
    """
    if method == "mnist":
        return mnist_style(gray, spec, notes)
    if method == "resize":
        return plain_resize(gray, spec)
    return as_is(gray, spec)


def prepare_image(
    data: bytes,
    method: PreprocessMethod,
    spec: PreprocessingSpec,
    limits: ImageLimits,
    notes: set[str] | None = None,
) -> np.ndarray:
    """One encoded image -> float32 (canvas, canvas) in [0, 1] (``notes``: see ``prepare``)."""
    return prepare(decode_grayscale(data, limits), method, spec, notes)


def images_to_batch(
    blobs: list[bytes], method: PreprocessMethod, spec: PreprocessingSpec, limits: ImageLimits
) -> np.ndarray:
    """Encoded images -> float32 (N, canvas, canvas, 1) model input, one after the other.

    Errors name the failing item (``details.item``). The service decodes through
    ``inference.model_input`` instead, which also bounds memory and time.
    """
    prepared = []
    for index, blob in enumerate(blobs):
        with item_errors(index):
            prepared.append(prepare_image(blob, method, spec, limits))
    return np.stack(prepared)[..., np.newaxis]


@contextmanager
def item_errors(index: int) -> Iterator[None]:
    """Add ``{"item": index}`` to the details of an input error raised inside the block."""
    try:
        yield
    except (InvalidInputError, PayloadTooLargeError, UnsupportedMediaTypeError) as error:
        error.details = {"item": index, **(error.details or {})}
        raise


def checked_unit_interval(values: np.ndarray, what: str, hint: str) -> np.ndarray:
    """``values`` as float32, if all are finite and in [0, 1].

    Raises:
        InvalidInputError: NaN, infinite or null values, or values outside [0, 1] (with ``hint``).
    """
    if not np.isfinite(values).all():
        raise InvalidInputError(f"{what} contain NaN, infinite or null values")
    if values.size and (values.min() < 0.0 or values.max() > 1.0):
        raise InvalidInputError(
            f"{what} must lie in [0, 1] ({hint})",
            details={"min": float(values.min()), "max": float(values.max())},
        )
    return values.astype(np.float32, copy=False)


def arrays_to_batch(
    values: np.ndarray, method: PreprocessMethod, spec: PreprocessingSpec
) -> np.ndarray:
    """Numeric instances -> float32 (N, canvas, canvas, 1) model input.

    Args:
        values: (N, S, S), (N, S, S, 1) or (N, S * S) numbers in [0, 1], light ink on dark,
            where S is the model's input side (``spec.canvas``).
        method: ``none`` passes them through; ``mnist``/``resize`` treat each as an image.
    """
    side = spec.canvas
    count = values.shape[0] if values.ndim else 0
    if values.ndim == 2 and values.shape[1:] == (side * side,):
        values = values.reshape(count, side, side)
    if values.ndim == 4 and values.shape[3] == 1:
        values = values[..., 0]
    if values.ndim != 3 or values.shape[1:] != (side, side):
        raise InvalidInputError(
            f"each instance must be {side}x{side}, {side}x{side}x1 or {side * side} numbers; "
            f"got batch shape {list(values.shape)}"
        )
    values = checked_unit_interval(values, "instance values", "divide 0-255 pixels by 255")
    if method != "none":
        values = np.stack([prepare(item * 255.0, method, spec) for item in values])
    return values[..., np.newaxis]
