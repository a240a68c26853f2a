"""Decoding uploads within limits: format, size and memory are checked on the header first.

Whatever Pillow raises on a corrupt or hostile file becomes a 4xx for that file. Colour and
transparency are resolved here, so everything after works on upright, opaque grayscale pixels.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import cast

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin

from service.errors import InvalidInputError, PayloadTooLargeError, UnsupportedMediaTypeError

ALLOWED_FORMATS = frozenset({"PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF"})
# Pixels at least this opaque count as drawn; an image whose every pixel is has no transparency.
OPAQUE_ALPHA = 250
# Memory per pixel while decoding and preprocessing, measured on 16 MP images: each band is held
# about twice (four times by WEBP's decoder), plus about 4 bytes of grayscale, mask and reduction
# copies. PNG RGBA peaks at 11.2 B/px, WEBP RGBA at 18.9 B/px.
DECODE_COPIES = 2
WEBP_DECODE_COPIES = 4
PREPROCESS_BYTES_PER_PIXEL = 4
# JPEG photos are decoded at reduced size (DCT scaling) down to about this longest side.
JPEG_DRAFT_SIDE = 512

# Pillow's own bomb check would raise only a warning below 2x its limit; ours runs first anyway.
Image.MAX_IMAGE_PIXELS = None
# PNG text and ICC chunks are inflated while the header is read; a digit needs none of them, so
# a chunk that inflates past these limits makes the file unreadable (422) instead of costly.
PngImagePlugin.MAX_TEXT_CHUNK = 256 * 1024
PngImagePlugin.MAX_TEXT_MEMORY = 1024 * 1024


@dataclass(frozen=True)
class ImageLimits:
    """Bounds checked before any pixel is decoded."""

    max_pixels: int
    max_bytes: int


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header says, read without decoding its pixels."""

    format: str
    size: tuple[int, int]  # (width, height) that decoding will produce
    bands: int

    @property
    def decode_bytes(self) -> int:
        """About the most memory decoding and preprocessing it hold at once (measured per format:
        libwebp decodes into a buffer of its own, then Pillow copies it)."""
        width, height = self.size
        copies = WEBP_DECODE_COPIES if self.format == "WEBP" else DECODE_COPIES
        return width * height * (self.bands * copies + PREPROCESS_BYTES_PER_PIXEL)


def _not_an_image() -> InvalidInputError:
    return InvalidInputError(
        "the data is not an image in a known format, or its header is corrupt",
        details={"allowed_formats": sorted(ALLOWED_FORMATS)},
    )


def open_image(data: bytes, limits: ImageLimits) -> Image.Image:
    """Open (header only) and check format and size; JPEGs are set to decode at reduced size.

    Raises:
        PayloadTooLargeError, UnsupportedMediaTypeError, InvalidInputError: as ``read_header``.
    """
    if len(data) > limits.max_bytes:
        raise PayloadTooLargeError(
            f"image of {len(data)} bytes exceeds the limit of {limits.max_bytes} bytes"
        )
    if not data:
        raise InvalidInputError("empty image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about odd metadata; the pixels matter.
            image = Image.open(io.BytesIO(data), formats=sorted(ALLOWED_FORMATS))
            if image.format == "JPEG":
                # The JPEG decoder scales down by up to 8x while decoding: a 12 MP photo then
                # costs a fraction of the time and memory.
                image.draft("L", (JPEG_DRAFT_SIDE, JPEG_DRAFT_SIDE))
    except Exception:  # Pillow's plugins raise many kinds of error for bad headers.
        if _is_other_format(data):
            raise UnsupportedMediaTypeError(
                "this image format is not accepted",
                details={"allowed_formats": sorted(ALLOWED_FORMATS)},
            ) from None
        raise _not_an_image() from None
    width, height = image.size
    if width * height > limits.max_pixels:
        image.close()
        raise PayloadTooLargeError(
            f"image of {width}x{height} pixels exceeds the limit of {limits.max_pixels} pixels"
        )
    if width == 0 or height == 0:
        image.close()
        raise _not_an_image()
    return image


def _is_other_format(data: bytes) -> bool:
    """Whether Pillow recognises the data as an image format we do not accept."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                return image.format not in ALLOWED_FORMATS
    except Exception:  # Not an image at all, or a broken one: not "another format".
        return False


def read_header(data: bytes, limits: ImageLimits) -> ImageHeader:
    """Format, decoded size and bands of an upload, checked against the limits. No pixels.

    Raises:
        PayloadTooLargeError: too many bytes, or more pixels than allowed (a decompression bomb).
        UnsupportedMediaTypeError: an image format outside ``ALLOWED_FORMATS``.
        InvalidInputError: not an image.
    """
    with open_image(data, limits) as image:
        return header_of(image)


def header_of(image: Image.Image) -> ImageHeader:
    """The header of an image ``open_image`` opened."""
    return ImageHeader(str(image.format), image.size, len(image.getbands()))


def decode_grayscale(data: bytes, limits: ImageLimits) -> np.ndarray:
    """Decode one upload to upright, opaque grayscale pixels (see ``to_grayscale``).

    Whatever Pillow raises on a corrupt or hostile file (truncated data, chunks that inflate
    past its limits, broken EXIF) becomes a 422 for that file, never a server error.

    Returns:
        uint8 (H, W).

    Raises:
        PayloadTooLargeError, UnsupportedMediaTypeError, InvalidInputError: as ``read_header``,
        or the pixels cannot be decoded.
    """
    return decode_opened(open_image(data, limits))


def decode_opened(image: Image.Image) -> np.ndarray:
    """Decode an image ``open_image`` opened (and close it): uint8 (H, W), as
    ``decode_grayscale``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.load()
            return to_grayscale(image)
    except MemoryError:
        raise PayloadTooLargeError("the image is too large to decode") from None
    except Exception as error:  # Pillow's decoders raise many kinds of error for bad data.
        raise InvalidInputError(
            f"the image is truncated or corrupt ({type(error).__name__})"
        ) from None
    finally:
        image.close()


def to_grayscale(image: Image.Image) -> np.ndarray:
    """Upright, opaque, grayscale pixels at the decoded resolution.

    EXIF rotation is applied; transparency is composited onto a background that contrasts with
    the strokes (white behind dark ink, black behind light ink), so a transparent drawing keeps
    its strokes whatever their colour. Nothing is shrunk here: a one-pixel pen line on a big
    canvas must survive until its width has been judged. Colour images become grayscale
    straight away, so that their colour bands are not held longer than needed.

    Returns:
        uint8 (H, W).
    """
    ImageOps.exif_transpose(image, in_place=True)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if not has_alpha:
        return np.asarray(image if image.mode == "L" else image.convert("L"))
    gray_and_alpha = image.convert("LA")
    gray, alpha = gray_and_alpha.split()
    del gray_and_alpha
    low_alpha, high_alpha = cast(tuple[int, int], alpha.getextrema())
    if low_alpha >= OPAQUE_ALPHA:
        return np.asarray(gray)
    alpha_values = np.asarray(alpha)
    strokes = alpha_values >= min(OPAQUE_ALPHA, high_alpha)
    stroke_level = float(np.asarray(gray)[strokes].mean())
    del alpha_values, strokes
    background = Image.new("L", gray.size, 255 if stroke_level < 128 else 0)
    return np.asarray(Image.composite(gray, background, alpha))
