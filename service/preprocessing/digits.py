"""The ``mnist`` method: find one digit's strokes in a photo or drawing and frame them as MNIST did.

MNIST's digits (LeCun et al.) are light ink on a dark background, fitted into a 20x20 box keeping
their aspect ratio, then placed in the 28x28 field so that their centre of mass sits in the
middle. Before that, the strokes are found in whatever people send: any polarity, uneven
lighting, one-pixel pen lines on big canvases, thick markers, noise.
"""

from __future__ import annotations

import cc3d
import numpy as np
from PIL import Image

from model_card import PreprocessingSpec
from service.errors import InvalidInputError
from service.preprocessing.primitives import (
    Background,
    block_reduce,
    box_of,
    fit_background,
    gap,
    median,
    rank_filter,
    stroke_width,
    thumbnail,
)
from service.preprocessing.sheet import find_sheet, on_sheet

# The ink is analysed at most this large: the digit ends up 20 px tall anyway, and it bounds the
# time and memory of everything after decoding, whatever the upload's size.
ANALYSIS_SIDE = 256
# Polarity and background are judged on a thumbnail this large.
POLARITY_SIDE = 64
BACKGROUND_FIT_ROUNDS = 4
# A reduction keeps each block's strongest pixel (not the mean) when strokes cover less than
# this share of the blocks they cross: they are thinner than a block.
THIN_STROKE_COVERAGE = 0.5
# Ink must stand out from the background by this many times the background's noise (robust
# spread), and by at least MIN_INK_CONTRAST grey levels: a faint pencil line a person can see
# is a digit; a flat or blank image is not.
INK_OVER_NOISE = 6.0
MIN_INK_CONTRAST = 8.0
# Ink is what is brighter than this fraction of the strongest stroke, after denoising.
INK_THRESHOLD = 0.35
# Ink fainter than this fraction of the strongest stroke is background (paper grain, noise).
FAINT_INK = 0.1
# Ink this strong (a fraction of the strongest stroke) joined to the digit's strokes is part of
# it, however faint the rest: a pen running dry, a light crossbar.
FAINT_PART = 0.15
# Background texture up to this many times its noise level (robust spread) is not ink.
BACKGROUND_NOISE_FLOOR = 3.0
# Strong-ink pieces touching the image's edge are ignored while the others hold this share of it.
EDGE_PIECES_SHARE = 0.2
# Strong-ink pieces this many stroke widths apart or closer form one group (dotted strokes).
GROUP_GAP_STROKES = 3.5
# ... but never farther apart than this fraction of the image (the filter's cost grows with it).
MAX_GROUP_GAP = 0.04
# A group left out with at least this share of the digit's ink is another digit (or a word).
RIVAL_MASS = 0.35
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
    small = thumbnail(gray, POLARITY_SIDE)
    background = fit_background(small)
    if invert != "auto":
        return invert == "always", background
    residual = small - background.at(small.shape)
    clear = max(3.0 * background.noise, 4.0)
    darker = float(np.clip(-residual - clear, 0.0, None).sum())
    lighter = float(np.clip(residual - clear, 0.0, None).sum())
    return darker > lighter, background


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
    averaged = block_reduce(oriented, factor, "mean")
    averaged_ink = np.clip(averaged - background.at(averaged.shape), 0.0, None)
    if factor > 1:
        strongest = block_reduce(oriented, factor, "max")
        # The maximum of each block sits above the background by the noise: refit there.
        strongest_background = fit_background(thumbnail(strongest, POLARITY_SIDE))
        ink_blocks = np.clip(strongest - strongest_background.at(strongest.shape), 0.0, None)
        # The share of a block that a stroke covers: about width / factor for thin strokes.
        strong = ink_blocks > 0.5 * ink_blocks.max()
        coverage = averaged_ink[strong] / ink_blocks[strong]
        if strong.any() and float(np.median(coverage)) < THIN_STROKE_COVERAGE:
            return ink_blocks, strongest_background.noise
    return averaged_ink, background.noise


def _digit_strokes(
    ink: np.ndarray, peak: float, denoise: bool, stroke_px: float
) -> tuple[np.ndarray, bool]:
    """Which strong-ink pixels belong to the digit: bool (H, W); and whether another group of
    comparable ink was left out (several digits side by side, a word).

    Strong ink is grouped into pieces that lie within a few stroke widths of each other, so the
    dots of a dotted stroke and the parts of a broken one stay together. The digit is the group
    with the most ink plus the groups near it (the bar of a 5); specks and smudges farther away
    are not. Groups touching the image's edge (a table or shadow behind photographed paper, the
    corner of a tilted page) are left out unless there is nothing else.
    """
    strong_ink = rank_filter(rank_filter(ink, 3, False), 3, True) if denoise else ink
    strong = strong_ink > INK_THRESHOLD * peak
    if not strong.any():
        strong = ink > INK_THRESHOLD * peak
    gap_px = min(GROUP_GAP_STROKES * max(stroke_px, 1.0), MAX_GROUP_GAP * max(ink.shape))
    link = 2 * int(np.ceil(gap_px / 2)) + 1
    grouped = rank_filter(strong.astype(np.float32), link, True) > 0.5 if link > 1 else strong
    labels, count = cc3d.connected_components(grouped, connectivity=8, return_N=True)
    labels = labels * strong  # Each strong pixel keeps the number of its group.
    pixels = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    # Ink mass, and a trace of the pixel count so that a group of zero ink still counts.
    masses = np.bincount(labels.ravel(), weights=ink.ravel(), minlength=count + 1)[1:]
    masses = masses + 1e-6 * pixels
    statistics = cc3d.statistics(labels)
    boxes = [
        box_of(slices) if slices is not None else (0, 0, 0, 0)
        for slices in statistics["bounding_boxes"][1 : count + 1]
    ]
    present = [index for index in range(count) if pixels[index] > 0]
    height, width = ink.shape
    inner = [
        index
        for index in present
        if boxes[index][0] > 0
        and boxes[index][1] > 0
        and boxes[index][2] < height
        and boxes[index][3] < width
    ]
    candidates = inner
    if sum(masses[index] for index in inner) < EDGE_PIECES_SHARE * masses.sum():
        candidates = present
    main = max(candidates, key=lambda index: masses[index])
    top, left, bottom, right = boxes[main]
    reach = NEARBY_PIECE_DISTANCE * max(bottom - top, right - left)
    kept = [index for index in candidates if gap(boxes[index], boxes[main]) <= reach]
    rivals = [
        index
        for index in candidates
        if index not in kept and masses[index] >= RIVAL_MASS * masses[main]
    ]
    return np.isin(labels, np.asarray(kept, dtype=labels.dtype) + 1), bool(rivals)


def _with_faint_parts(ink: np.ndarray, strokes: np.ndarray, floor: float) -> np.ndarray:
    """``strokes`` grown into the fainter ink connected to them (a pen running dry, a light
    crossbar): bool (H, W), the pixels above ``floor`` joined to the strokes."""
    weak = (ink > floor) | strokes
    labels = cc3d.connected_components(weak, connectivity=8)
    return np.isin(labels, np.unique(labels[strokes]))


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
        return block_reduce(digit, round(longest / STROKE_SCALE), "max")
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
            return rank_filter(digit, 2 * radius + 1, True)
    elif width > STROKE_TOO_THICK * target:
        radius = min(round((width - target) / 2), int(width / 2 - pixels_per_box_pixel))
        if radius >= 1:
            return rank_filter(digit, 2 * radius + 1, False)
    return digit


def _paste_by_centre_of_mass(digit: np.ndarray, canvas: int) -> np.ndarray:
    """Place a (h, w) patch in a canvas x canvas field with its centre of mass at the middle.

    Raises:
        InvalidInputError: the patch holds no ink at all.
    """
    field = np.zeros((canvas, canvas), dtype=np.float32)
    total = float(digit.sum())
    if not total > 0:
        raise InvalidInputError("no digit found: nothing is left of the strokes once framed")
    rows, columns = np.indices(digit.shape)
    centre_row = float((rows * digit).sum() / total)
    centre_column = float((columns * digit).sum() / total)
    height, width = digit.shape
    top = int(np.clip(round(canvas / 2 - centre_row), 0, canvas - height))
    left = int(np.clip(round(canvas / 2 - centre_column), 0, canvas - width))
    field[top : top + height, left : left + width] = digit
    return field


def mnist_style(
    gray: np.ndarray, spec: PreprocessingSpec, notes: set[str] | None = None
) -> np.ndarray:
    """A photo or drawing of one digit -> an MNIST-like digit.

    A photographed sheet of paper is cropped out of its desk first (``sheet``). The ink is
    separated from its background (either polarity, uneven lighting), denoised only
    at a scale below its stroke width, cropped, brought to MNIST's stroke width, fitted into the
    model's digit box keeping its aspect ratio, and centred by mass.

    Args:
        gray: float32 (H, W) in [0, 255], any polarity.
        notes: where to add ``"several digits"`` when another group of comparable ink was
            left out of the digit.

    Returns:
        float32 (canvas, canvas) in [0, 1], light ink on black.
    """
    if spec.invert != "never":  # Dark ink on a sheet of paper is possible.
        sheet = find_sheet(gray)
        if sheet is not None:
            gray = on_sheet(gray, sheet)
    ink, noise = ink_map(gray, spec)
    peak = float(np.percentile(ink[ink > 0.5 * ink.max()], 90)) if ink.max() > 0 else 0.0
    if peak < max(MIN_INK_CONTRAST, INK_OVER_NOISE * noise):
        raise InvalidInputError(
            "no digit found: the image is blank or its strokes have too little contrast"
        )
    stroke_px = stroke_width(ink / peak)
    wide_strokes = stroke_px >= DENOISE_MIN_STROKE
    if wide_strokes:
        ink = median(ink, 3)  # Speckle is smaller than these strokes: remove it.
    floor = max(FAINT_INK * peak, BACKGROUND_NOISE_FLOOR * noise)
    strokes, several = _digit_strokes(ink, peak, wide_strokes, stroke_px)
    if several and notes is not None:
        notes.add("several digits")
    digit_strokes = _with_faint_parts(ink, strokes, max(floor, FAINT_PART * peak))
    # Keep the digit's pieces and their faint rims; other marks inside the box are dropped.
    rim = 2 * (1 + max(ink.shape) // 50) + 1
    ink = ink * (rank_filter(digit_strokes.astype(np.float32), rim, True) > 0)
    row_slice, column_slice = _digit_box(ink, digit_strokes, peak)
    # Faint background left inside the box fades to black; the stroke's core becomes 1.0.
    cropped = np.clip((ink[row_slice, column_slice] - floor) / (CORE_INK * peak - floor), 0.0, 1.0)
    digit = normalise_stroke(_to_stroke_scale(cropped), spec.digit_box)
    height, width = digit.shape
    scale = spec.digit_box / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    fitted = np.asarray(Image.fromarray(digit).resize(size, Image.Resampling.BOX), dtype=np.float32)
    return _paste_by_centre_of_mass(np.clip(fitted, 0.0, 1.0), spec.canvas)
