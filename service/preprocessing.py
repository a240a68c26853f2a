"""Turning what people send (photos, drawings, arrays) into the model's (N, S, S, 1) input.

S, the input's side (28 for MNIST), comes from the model card (``spec.canvas``). The ``mnist``
method repeats how MNIST itself was made (LeCun et al.): light ink on a dark background, the digit
fitted into a 20x20 box keeping its aspect ratio, then placed in the 28x28 field so that its
centre of mass sits in the middle. Before that, it finds the digit's strokes in whatever people
send: any polarity, uneven lighting, one-pixel pen lines on big canvases, thick markers, noise.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, cast

import cc3d
import numpy as np
from PIL import Image, ImageFilter, ImageOps, PngImagePlugin

from model_card import PreprocessingSpec, PreprocessMethod
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
# The ink is analysed at most this large: the digit ends up 20 px tall anyway, and it bounds the
# time and memory of everything after decoding, whatever the upload's size.
ANALYSIS_SIDE = 256
# Polarity and background are judged on a thumbnail this large.
POLARITY_SIDE = 64
BACKGROUND_FIT_ROUNDS = 4
# A reduction keeps each block's strongest pixel (not the mean) when strokes cover less than
# this share of the blocks they cross: they are thinner than a block.
THIN_STROKE_COVERAGE = 0.5
# Below this contrast (0-255) between ink and background there is no digit to find.
MIN_INK_CONTRAST = 40.0
# Ink is what is brighter than this fraction of the strongest stroke, after denoising.
INK_THRESHOLD = 0.35
# Ink fainter than this fraction of the strongest stroke is background (paper grain, noise).
FAINT_INK = 0.1
# Background texture up to this many times its noise level (robust spread) is not ink.
BACKGROUND_NOISE_FLOOR = 3.0
# Strong-ink pieces touching the image's edge are ignored while the others hold this share of it.
EDGE_PIECES_SHARE = 0.2
# Pieces whose box lies within this fraction of the main piece's size belong to the digit.
NEARBY_PIECE_DISTANCE = 0.4
# Ink at this fraction of the typical stroke core becomes full white, as MNIST's cores are.
CORE_INK = 0.8
# Strokes at least this wide (pixels, after analysis scaling) get a 3x3 median filter: speckle
# is smaller than them. Thinner strokes would be erased by it.
DENOISE_MIN_STROKE = 4.0
# The digit is brought to a longest side of about this many pixels to normalise its strokes.
STROKE_SCALE = 80
# MNIST's median stroke width in its 20x20 box, measured with ``stroke_width`` at half ink
# (2.27 px over the 500 committed test digits). Strokes are thickened below STROKE_TOO_THIN of it
# and thinned above STROKE_TOO_THICK of it.
MNIST_STROKE_WIDTH = 2.3
STROKE_TOO_THIN = 0.8
STROKE_TOO_THICK = 1.5

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


def _open(data: bytes, limits: ImageLimits) -> Image.Image:
    """Open (header only) and check format and size; JPEGs are set to decode at reduced size."""
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
    with _open(data, limits) as image:
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
    image = _open(data, limits)
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


def _block_reduce(
    pixels: np.ndarray, factor: int, how: Literal["mean", "min", "max"]
) -> np.ndarray:
    """Shrink (H, W) by an integer factor, each output pixel the mean, min or max of its block.

    Blocks at the right and bottom edges hold what is left of the image (no padding), and the
    image is reduced one band of ``factor`` rows at a time: the memory used is the output's plus
    one band's, whatever the aspect ratio (padding a 16,000,000 x 1 image to whole blocks of
    62,500 would ask for terabytes; converting a whole upload to float, 4 bytes a pixel).

    Returns:
        float32 (ceil(H / factor), ceil(W / factor)).
    """
    if factor == 1:
        return pixels.astype(np.float32, copy=False)
    height, width = pixels.shape
    starts = np.arange(0, width, factor)
    block_widths = np.diff(np.append(starts, width)).astype(np.float32)
    reduced = np.empty((-(-height // factor), starts.size), dtype=np.float32)
    for row, top in enumerate(range(0, height, factor)):
        band = pixels[top : top + factor]
        if how == "mean":
            sums = np.add.reduceat(band.sum(axis=0, dtype=np.float32), starts)
            reduced[row] = sums / (block_widths * band.shape[0])
        elif how == "max":
            reduced[row] = np.maximum.reduceat(band.max(axis=0), starts)
        else:
            reduced[row] = np.minimum.reduceat(band.min(axis=0), starts)
    return reduced


@dataclass(frozen=True)
class Background:
    """The paper or screen behind the ink: a smooth surface, so uneven lighting is removed too.

    ``coefficients`` of a quadratic in (row, column) scaled to [0, 1]; ``noise`` is the spread
    (robust standard deviation, 0-255) of the pixels around it.
    """

    coefficients: np.ndarray
    noise: float

    def at(self, shape: tuple[int, int]) -> np.ndarray:
        """The surface sampled on an (H, W) grid. Returns float32 (H, W).

        Evaluated from one column of rows and one row of columns, so it costs the output's
        memory only, whatever the grid (no (H * W, 6) matrix of terms).
        """
        c0, c_row, c_column, c_cross, c_row2, c_column2 = self.coefficients
        rows = np.linspace(0.0, 1.0, shape[0])[:, np.newaxis]
        columns = np.linspace(0.0, 1.0, shape[1])[np.newaxis, :]
        by_row = (c0 + c_row * rows + c_row2 * rows**2).astype(np.float32)
        by_column = (c_column * columns + c_column2 * columns**2).astype(np.float32)
        cross = (c_cross * rows).astype(np.float32) * columns.astype(np.float32)
        return np.asarray(by_row + by_column + cross, dtype=np.float32)


@lru_cache(maxsize=16)
def _quadratic_terms(shape: tuple[int, int]) -> np.ndarray:
    """The 6 quadratic terms (1, r, c, rc, r², c²) at each pixel of a grid. float64 (H*W, 6).

    Only for fitting, on thumbnails of at most ``POLARITY_SIDE`` squared pixels: each cached
    matrix is at most 200 KB.
    """
    row_grid, column_grid = np.meshgrid(
        np.linspace(0.0, 1.0, shape[0]), np.linspace(0.0, 1.0, shape[1]), indexing="ij"
    )
    rows, columns = row_grid.ravel(), column_grid.ravel()
    terms = np.stack(
        [np.ones_like(rows), rows, columns, rows * columns, rows**2, columns**2], axis=1
    )
    terms.setflags(write=False)
    return terms


def fit_background(gray: np.ndarray) -> Background:
    """Fit the background of a (small) grayscale image, ignoring the ink as outliers.

    A least-squares quadratic surface is refitted a few times on the pixels that lie close to
    it, so that strokes of either polarity (a minority of the pixels) do not pull it.

    Args:
        gray: float32 (H, W) in [0, 255], at most a few thousand pixels (a thumbnail).
    """
    terms = _quadratic_terms(gray.shape)
    values = gray.ravel().astype(np.float64)
    inliers = np.ones(values.shape, dtype=bool)
    coefficients = np.zeros(terms.shape[1])
    coefficients[0] = np.median(values)
    noise = 0.0
    for _ in range(BACKGROUND_FIT_ROUNDS):
        residual = values - terms @ coefficients
        noise = 1.4826 * float(np.median(np.abs(residual[inliers])))
        refined = np.abs(residual) <= max(2.5 * noise, 2.0)
        if refined.sum() < terms.shape[1] * 4 or np.array_equal(refined, inliers):
            break
        inliers = refined
        # Normal equations: a 6x6 solve is far cheaper than an SVD of the whole design matrix.
        chosen = terms[inliers]
        normal = chosen.T @ chosen + np.eye(terms.shape[1]) * 1e-9
        coefficients = np.linalg.solve(normal, chosen.T @ values[inliers])
    return Background(coefficients, noise)


def _thumbnail(pixels: np.ndarray, side: int) -> np.ndarray:
    """Box-filtered copy of (H, W) with its longest side at most ``side``. float32."""
    factor = max(1, -(-max(pixels.shape) // side))
    return _block_reduce(pixels, factor, "mean")


def ink_is_dark(gray: np.ndarray, invert: str) -> bool:
    """Whether the strokes are darker than their background (so the image must be inverted).

    Judged on the whole picture, not a filtered one: the background surface is fitted, and the
    side (darker or lighter than it) that carries more clear ink wins. One-pixel strokes on a big
    canvas weigh as much in this sum as thick ones, since a box filter keeps their ink mass.

    Args:
        gray: float32 (H, W) in [0, 255].
        invert: the model card's policy: ``auto``, ``always`` (ink is dark) or ``never``.
    """
    return _polarity_and_background(gray, invert)[0]


def _polarity_and_background(gray: np.ndarray, invert: str) -> tuple[bool, Background]:
    """(ink is dark, the background fitted on a thumbnail of ``gray``)."""
    thumbnail = _thumbnail(gray, POLARITY_SIDE)
    background = fit_background(thumbnail)
    if invert != "auto":
        return invert == "always", background
    residual = thumbnail - background.at(thumbnail.shape)
    clear = max(3.0 * background.noise, 4.0)
    darker = float(np.clip(-residual - clear, 0.0, None).sum())
    lighter = float(np.clip(residual - clear, 0.0, None).sum())
    return darker > lighter, background


def stroke_width(ink: np.ndarray) -> float:
    """Typical stroke width (pixels) of a drawing: twice its ink mass over its outline's length.

    Ink mass (the sum of coverage, 0-1 per pixel) does not change when strokes are blurred or
    resampled, so the estimate holds for anti-aliased, blurry and aliased strokes alike. The
    outline is that of the half-covered pixels, measured with the Cauchy-Crofton formula over
    four directions (rows, columns, both diagonals): its length comes out within about 5 %
    whatever the strokes' directions, where rows and columns alone would be off by up to 27 %.

    Args:
        ink: float (H, W) coverage in [0, 1], or bool.
    """
    mask = ink > 0.5
    if not mask.any():
        return 0.0
    padded = np.pad(mask, 1)
    straight = (padded[:, 1:] != padded[:, :-1]).sum() + (padded[1:] != padded[:-1]).sum()
    diagonal = (padded[1:, 1:] != padded[:-1, :-1]).sum() + (
        padded[1:, :-1] != padded[:-1, 1:]
    ).sum()
    perimeter = np.pi / 8 * (float(straight) + float(diagonal) / np.sqrt(2))
    mass = float(np.clip(ink.astype(np.float32), 0.0, 1.0).sum())
    return float(2.0 * mass / perimeter)


def ink_map(gray: np.ndarray, spec: PreprocessingSpec) -> tuple[np.ndarray, float]:
    """How much ink each pixel holds, 0-255, with one-pixel strokes kept visible.

    The image is brought to at most ``ANALYSIS_SIDE`` pixels. Where its strokes are thinner
    than the reduction step, each block keeps its darkest (or lightest) pixel so that a pen line
    survives; where they are wider, blocks are averaged, which also averages noise away. The
    fitted background is then subtracted, so uneven lighting disappears with it.

    Args:
        gray: float32 (H, W) in [0, 255], any polarity.

    Returns:
        float32 (h, w) >= 0, light ink on black, and the background's noise level (0-255).
    """
    dark, background = _polarity_and_background(gray, spec.invert)
    oriented = 255 - gray if dark else gray
    if dark:  # The surface is fitted in [0, 1] coordinates: it fits any averaged size.
        background = Background(-background.coefficients, background.noise)
        background.coefficients[0] += 255.0
    factor = max(1, -(-max(gray.shape) // ANALYSIS_SIDE))
    averaged = _block_reduce(oriented, factor, "mean")
    averaged_ink = np.clip(averaged - background.at(averaged.shape), 0.0, None)
    if factor > 1:
        strongest = _block_reduce(oriented, factor, "max")
        # The maximum of each block sits above the background by the noise: refit there.
        strongest_background = fit_background(_thumbnail(strongest, POLARITY_SIDE))
        ink_blocks = np.clip(strongest - strongest_background.at(strongest.shape), 0.0, None)
        # The share of a block that a stroke covers: about width / factor for thin strokes.
        strong = ink_blocks > 0.5 * ink_blocks.max()
        coverage = averaged_ink[strong] / ink_blocks[strong]
        if strong.any() and float(np.median(coverage)) < THIN_STROKE_COVERAGE:
            return ink_blocks, strongest_background.noise
    return averaged_ink, background.noise


def _median(ink: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(
        Image.fromarray(ink.astype(np.float32)).filter(ImageFilter.MedianFilter(size)),
        dtype=np.float32,
    )


def _rank_filter(ink: np.ndarray, size: int, thicken: bool) -> np.ndarray:
    """Grey dilation (thicken) or erosion by a size x size square. float32 in, float32 out."""
    rank = ImageFilter.MaxFilter(size) if thicken else ImageFilter.MinFilter(size)
    return np.asarray(Image.fromarray(ink.astype(np.float32)).filter(rank), dtype=np.float32)


def _digit_strokes(ink: np.ndarray, peak: float, denoise: bool) -> np.ndarray:
    """Which strong-ink pixels belong to the digit: bool (H, W).

    The strong ink is split into connected pieces. The digit is the biggest piece plus the
    pieces near it (a broken stroke, the bar of a 5); specks and smudges farther away are not.
    Pieces touching the image's edge (a table or shadow behind photographed paper, the corner of
    a tilted page) are left out unless there is nothing else.
    """
    strong_ink = _rank_filter(_rank_filter(ink, 3, False), 3, True) if denoise else ink
    strong = strong_ink > INK_THRESHOLD * peak
    if not strong.any():
        strong = ink > INK_THRESHOLD * peak
    labels, count = cc3d.connected_components(strong, connectivity=8, return_N=True)
    statistics = cc3d.statistics(labels)
    areas = np.asarray(statistics["voxel_counts"][1:], dtype=np.int64)
    boxes = [_box_of(slices) for slices in statistics["bounding_boxes"][1 : count + 1]]
    height, width = ink.shape
    inner = [
        top > 0 and left > 0 and bottom < height and right < width
        for top, left, bottom, right in boxes
    ]
    candidates = [index for index in range(count) if inner[index]]
    if sum(areas[index] for index in candidates) < EDGE_PIECES_SHARE * areas.sum():
        candidates = list(range(count))
    main = max(candidates, key=lambda index: areas[index])
    top, left, bottom, right = boxes[main]
    reach = NEARBY_PIECE_DISTANCE * max(bottom - top, right - left)
    kept = [index for index in candidates if _gap(boxes[index], boxes[main]) <= reach]
    return np.isin(labels, np.asarray(kept, dtype=labels.dtype) + 1)


def _box_of(slices: tuple[slice, ...]) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of a (rows, columns) bounding box."""
    rows, columns = slices[:2]
    return int(rows.start), int(columns.start), int(rows.stop), int(columns.stop)


def _gap(first: tuple[int, int, int, int], second: tuple[int, int, int, int]) -> int:
    """Pixels between two boxes (0 when they touch or overlap)."""
    vertical = max(0, max(first[0], second[0]) - min(first[2], second[2]))
    horizontal = max(0, max(first[1], second[1]) - min(first[3], second[3]))
    return max(vertical, horizontal)


def _digit_box(ink: np.ndarray, digit: np.ndarray, peak: float) -> tuple[slice, slice]:
    """Bounding box of the digit's strokes, widened to their faint (anti-aliased) edges.

    Args:
        ink: float32 (H, W).
        digit: bool (H, W), the digit's strong strokes (see ``_digit_strokes``).
    """
    rows, columns = np.flatnonzero(digit.any(axis=1)), np.flatnonzero(digit.any(axis=0))
    margin = 1 + max(ink.shape) // 25
    top, bottom = max(0, rows[0] - margin), min(ink.shape[0], rows[-1] + margin + 1)
    left, right = max(0, columns[0] - margin), min(ink.shape[1], columns[-1] + margin + 1)
    window = ink[top:bottom, left:right] > FAINT_INK * peak
    rows, columns = np.flatnonzero(window.any(axis=1)), np.flatnonzero(window.any(axis=0))
    return (
        slice(top + rows[0], top + rows[-1] + 1),
        slice(left + columns[0], left + columns[-1] + 1),
    )


def _to_stroke_scale(digit: np.ndarray) -> np.ndarray:
    """Resize a cropped digit so that its longest side is about ``STROKE_SCALE`` pixels.

    Shrinking keeps each block's strongest pixel, so thin strokes stay whole; small crops are
    enlarged by an integer factor, so that stroke widths can be measured to a fraction of a pixel
    of the final 20x20 box.
    """
    longest = max(digit.shape)
    if longest > STROKE_SCALE * 3 // 2:
        return _block_reduce(digit, round(longest / STROKE_SCALE), "max")
    factor = -(-STROKE_SCALE // longest)
    if factor == 1:
        return digit
    size = (digit.shape[1] * factor, digit.shape[0] * factor)
    return np.asarray(
        Image.fromarray(digit).resize(size, Image.Resampling.BILINEAR), dtype=np.float32
    )


def normalise_stroke(digit: np.ndarray, digit_box: int) -> np.ndarray:
    """Thicken thin strokes and thin very thick ones to MNIST's width once scaled to the box.

    Args:
        digit: float32 (h, w) in [0, 1], a cropped digit at stroke scale.
        digit_box: the side of the box the digit will be fitted into (20 for MNIST).

    Returns:
        float32 (h, w) in [0, 1].
    """
    pixels_per_box_pixel = max(digit.shape) / digit_box
    target = MNIST_STROKE_WIDTH * pixels_per_box_pixel
    width = stroke_width(digit)
    if width < STROKE_TOO_THIN * target:
        radius = round((target - width) / 2)
        if radius >= 1:
            return _rank_filter(digit, 2 * radius + 1, True)
    elif width > STROKE_TOO_THICK * target:
        radius = min(round((width - target) / 2), int(width / 2 - pixels_per_box_pixel))
        if radius >= 1:
            return _rank_filter(digit, 2 * radius + 1, False)
    return digit


def _paste_by_centre_of_mass(digit: np.ndarray, canvas: int) -> np.ndarray:
    """Place a (h, w) patch in a canvas x canvas field with its centre of mass at the middle."""
    field = np.zeros((canvas, canvas), dtype=np.float32)
    total = float(digit.sum())
    rows, columns = np.indices(digit.shape)
    centre_row = float((rows * digit).sum() / total)
    centre_column = float((columns * digit).sum() / total)
    height, width = digit.shape
    top = int(np.clip(round(canvas / 2 - centre_row), 0, canvas - height))
    left = int(np.clip(round(canvas / 2 - centre_column), 0, canvas - width))
    field[top : top + height, left : left + width] = digit
    return field


def mnist_style(gray: np.ndarray, spec: PreprocessingSpec) -> np.ndarray:
    """A photo or drawing of one digit -> an MNIST-like digit.

    The ink is separated from its background (either polarity, uneven lighting), denoised only
    at a scale below its stroke width, cropped, brought to MNIST's stroke width, fitted into the
    model's digit box keeping its aspect ratio, and centred by mass.

    Args:
        gray: float32 (H, W) in [0, 255], any polarity.

    Returns:
        float32 (canvas, canvas) in [0, 1], light ink on black.
    """
    ink, noise = ink_map(gray, spec)
    peak = float(np.percentile(ink[ink > 0.5 * ink.max()], 90)) if ink.max() > 0 else 0.0
    if peak < MIN_INK_CONTRAST:
        raise InvalidInputError(
            "no digit found: the image is blank or its strokes have too little contrast"
        )
    wide_strokes = stroke_width(ink / peak) >= DENOISE_MIN_STROKE
    if wide_strokes:
        ink = _median(ink, 3)  # Speckle is smaller than these strokes: remove it.
    digit_strokes = _digit_strokes(ink, peak, wide_strokes)
    # Keep the digit's pieces and their faint rims; other marks inside the box are dropped.
    rim = 2 * (1 + max(ink.shape) // 50) + 1
    ink = ink * (_rank_filter(digit_strokes.astype(np.float32), rim, True) > 0)
    row_slice, column_slice = _digit_box(ink, digit_strokes, peak)
    # Faint background left inside the box fades to black; the stroke's core becomes 1.0.
    floor = max(FAINT_INK * peak, BACKGROUND_NOISE_FLOOR * noise)
    cropped = np.clip((ink[row_slice, column_slice] - floor) / (CORE_INK * peak - floor), 0.0, 1.0)
    digit = normalise_stroke(_to_stroke_scale(cropped), spec.digit_box)
    height, width = digit.shape
    scale = spec.digit_box / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    fitted = np.asarray(Image.fromarray(digit).resize(size, Image.Resampling.BOX), dtype=np.float32)
    return _paste_by_centre_of_mass(np.clip(fitted, 0.0, 1.0), spec.canvas)


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
    reduced = _block_reduce(gray, max(1, -(-max(gray.shape) // ANALYSIS_SIDE)), "mean")
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


def prepare(gray: np.ndarray, method: PreprocessMethod, spec: PreprocessingSpec) -> np.ndarray:
    """Apply one method to a (H, W) 0-255 image (uint8 or float).

    Returns:
        float32 (canvas, canvas) in [0, 1].
    """
    if method == "mnist":
        return mnist_style(gray, spec)
    if method == "resize":
        return plain_resize(gray, spec)
    return as_is(gray, spec)


def prepare_image(
    data: bytes, method: PreprocessMethod, spec: PreprocessingSpec, limits: ImageLimits
) -> np.ndarray:
    """One encoded image -> float32 (canvas, canvas) in [0, 1]."""
    return prepare(decode_grayscale(data, limits), method, spec)


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
