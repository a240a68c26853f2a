"""The writing surface: a sheet of paper photographed on a darker desk, table or floor.

In a photo of a sheet, the sheet's edge and the desk around it are by far the strongest "ink"
there is: left in, the model sees a white frame with a small digit inside and answers 0. The
sheet is found first, on a thumbnail, as the largest bright region that is nearly all paper (the
ink is only a small part of it), roughly quadrilateral, much brighter than what surrounds it,
and surrounded by it; the image is then cropped to the sheet, and what is left of the desk inside
the crop (the corners of a tilted sheet) is painted with the paper's own level.

Drawings on a plain canvas (the canvas fills the picture) and light ink on dark screens (the
bright part is the ink, full of holes and far from being a quadrilateral) have no sheet, and
pass through unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import cc3d
import numpy as np

from service.preprocessing.primitives import box_of, rank_filter, thumbnail

SHEET_SIDE = 128  # The thumbnail the sheet is looked for on.
MIN_PHOTO_SIDE = 64  # Smaller pictures are drawings or digits already cut out: no desk.
# Something on the sheet is at least this much darker (0-255) than its paper: writing.
MIN_WRITING_CONTRAST = 5.0
# A sheet covers at least this share of the picture, and at most the other (else the whole
# picture is paper: nothing to crop).
MIN_SHEET_SHARE = 0.12
MAX_SHEET_SHARE = 0.985
# At least this share of the sheet's area is bright paper (the rest: ink, lines, shadows).
MIN_PAPER_SHARE = 0.85
# The sheet fills at least this share of its bounding box (a tilted quadrilateral still does).
MIN_RECTANGULARITY = 0.6
# Paper is at least this much brighter (0-255) than the desk's median.
MIN_DESK_CONTRAST = 20.0
# The crop keeps this share of the sheet's size inside its edges, past their shading.
EDGE_MARGIN = 0.03


@dataclass(frozen=True)
class Sheet:
    """Where the sheet is, in full-resolution pixels, and the paper around its edges."""

    rows: slice
    columns: slice
    mask: np.ndarray  # bool (SHEET_SIDE-scale thumbnail rows, columns): the sheet's pixels
    factor: int  # full-resolution pixels per thumbnail pixel
    paper: np.ndarray  # float32, the thumbnail's shape: the paper, extended over the desk


def otsu_threshold(values: np.ndarray) -> float:
    """The grey level that best splits ``values`` (0-255) into two classes (Otsu, 1979)."""
    histogram = np.bincount(np.clip(values, 0, 255).astype(np.int64).ravel(), minlength=256)
    probabilities = histogram / max(1, histogram.sum())
    levels = np.arange(256)
    below = np.cumsum(probabilities)
    mean_below = np.cumsum(probabilities * levels)
    total_mean = mean_below[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total_mean * below - mean_below) ** 2 / (below * (1 - below))
    return float(np.nanargmax(np.where(np.isfinite(between), between, np.nan)))


def find_sheet(gray: np.ndarray) -> Sheet | None:
    """The sheet of paper in a photo, or None when there is no desk around one.

    Args:
        gray: (H, W) 0-255, uint8 or float.
    """
    if min(gray.shape) < MIN_PHOTO_SIDE:
        return None
    factor = max(1, -(-max(gray.shape) // SHEET_SIDE))
    small = thumbnail(gray, SHEET_SIDE)
    if float(np.ptp(small)) < MIN_DESK_CONTRAST:
        return None
    bright = small > otsu_threshold(small)
    # Cut one-pixel bridges between the sheet and bright spots on the desk.
    bright = rank_filter(rank_filter(bright.astype(np.float32), 3, False), 3, True) > 0.5
    labels, count = cc3d.connected_components(bright, connectivity=4, return_N=True)
    if count == 0:
        return None
    areas = np.bincount(labels.ravel())[1:]
    paper = labels == int(np.argmax(areas)) + 1
    sheet = _filled(paper)
    share = float(sheet.mean())
    if not MIN_SHEET_SHARE <= share <= MAX_SHEET_SHARE:
        return None
    top, left, bottom, right = box_of(_bounding_slices(sheet))
    rectangularity = float(sheet.sum()) / ((bottom - top) * (right - left))
    paper_level = float(np.median(small[paper]))
    desk_level = float(np.median(small[~sheet]))
    if (
        float(paper.sum()) < MIN_PAPER_SHARE * float(sheet.sum())
        or rectangularity < MIN_RECTANGULARITY
        or paper_level - desk_level < MIN_DESK_CONTRAST
    ):
        return None
    margin = max(1, round(EDGE_MARGIN * max(bottom - top, right - left)))
    # The picture's border counts as an edge too: a sheet running off the picture is cut there.
    bordered = np.pad(sheet.astype(np.float32), margin)
    inner = (rank_filter(bordered, 2 * margin + 1, False) > 0.5)[margin:-margin, margin:-margin]
    # A bright shape with nothing darker on it (a light stroke on a dark screen) is no sheet.
    if not inner.any() or float(small[inner].min()) > paper_level - MIN_WRITING_CONTRAST:
        return None
    top, left, bottom, right = box_of(_bounding_slices(inner))
    height, width = gray.shape
    return Sheet(
        rows=slice(top * factor, min(height, bottom * factor)),
        columns=slice(left * factor, min(width, right * factor)),
        mask=inner,
        factor=factor,
        paper=_extended(small, inner & paper),
    )


def _extended(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """``values`` where ``known``, and elsewhere a smooth extension of the known values around
    (normalised convolution at growing scales): the paper's own shading continues over the
    desk, so painting the desk leaves no edge that could pass for ink.

    Args:
        values: float32 (h, w); known: bool (h, w).
    """
    extended = np.where(known, values, 0.0).astype(np.float32)
    filled = known.astype(np.float32)
    for radius in (2, 4, 8, 16, 32):
        total = _box_sum(extended * filled, radius)
        weight = _box_sum(filled, radius)
        estimate = np.divide(total, weight, out=np.zeros_like(total), where=weight > 0.5)
        missing = (filled == 0) & (weight > 0.5)
        extended[missing] = estimate[missing]
        filled[missing] = 1.0
    extended[filled == 0] = float(np.median(values[known]))
    return extended


def _box_sum(values: np.ndarray, radius: int) -> np.ndarray:
    """The sum of ``values`` over a (2 radius + 1) square around each pixel (cut at the edges)."""
    padded = np.pad(values.astype(np.float64), radius + 1)  # float64: no cancellation
    cumulative = padded.cumsum(axis=0).cumsum(axis=1)
    size = 2 * radius + 1
    return np.asarray(
        cumulative[size:, size:]
        - cumulative[:-size, size:]
        - cumulative[size:, :-size]
        + cumulative[:-size, :-size],
        dtype=np.float32,
    )[: values.shape[0], : values.shape[1]]


def _filled(region: np.ndarray) -> np.ndarray:
    """``region`` with its holes (pieces of the rest that do not touch the border) filled."""
    labels = cc3d.connected_components(~region, connectivity=4)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return region | ~np.isin(labels, border)


def _bounding_slices(mask: np.ndarray) -> tuple[slice, slice]:
    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(columns[0]), int(columns[-1]) + 1)


def on_sheet(gray: np.ndarray, sheet: Sheet) -> np.ndarray:
    """The sheet cropped out of ``gray``, the desk left inside the crop painted as paper.

    Painted one band of thumbnail rows at a time, so that no full-size mask is made.

    Returns:
        (h, w) 0-255, of ``gray``'s dtype; memory: the crop's.
    """
    crop = np.array(gray[sheet.rows, sheet.columns])
    columns = np.minimum(
        np.arange(sheet.columns.start, sheet.columns.stop) // sheet.factor,
        sheet.mask.shape[1] - 1,
    )
    first = sheet.rows.start // sheet.factor
    last = min(-(-sheet.rows.stop // sheet.factor), sheet.mask.shape[0])
    for thumbnail_row in range(first, last):
        top = max(sheet.rows.start, thumbnail_row * sheet.factor) - sheet.rows.start
        bottom = min(sheet.rows.stop, (thumbnail_row + 1) * sheet.factor) - sheet.rows.start
        outside = ~sheet.mask[thumbnail_row, columns]
        if outside.any():
            paint = np.round(sheet.paper[thumbnail_row, columns[outside]]).astype(crop.dtype)
            crop[top:bottom, outside] = paint
    return crop
