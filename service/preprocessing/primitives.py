"""Image primitives of the digit finder: block reduction, the background surface, stroke width
and rank filters. Each works on (H, W) arrays, bounded in memory by its output.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from PIL import Image, ImageFilter

BACKGROUND_FIT_ROUNDS = 4


def block_reduce(pixels: np.ndarray, factor: int, how: Literal["mean", "min", "max"]) -> np.ndarray:
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


def thumbnail(pixels: np.ndarray, side: int) -> np.ndarray:
    """Box-filtered copy of (H, W) with its longest side at most ``side``. float32."""
    factor = max(1, -(-max(pixels.shape) // side))
    return block_reduce(pixels, factor, "mean")


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


def median(ink: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(
        Image.fromarray(ink.astype(np.float32)).filter(ImageFilter.MedianFilter(size)),
        dtype=np.float32,
    )


def rank_filter(ink: np.ndarray, size: int, thicken: bool) -> np.ndarray:
    """Grey dilation (thicken) or erosion by a size x size square. float32 in, float32 out."""
    rank = ImageFilter.MaxFilter(size) if thicken else ImageFilter.MinFilter(size)
    return np.asarray(Image.fromarray(ink.astype(np.float32)).filter(rank), dtype=np.float32)


def box_of(slices: tuple[slice, ...]) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of a (rows, columns) bounding box."""
    rows, columns = slices[:2]
    return int(rows.start), int(columns.start), int(rows.stop), int(columns.stop)


def gap(first: tuple[int, int, int, int], second: tuple[int, int, int, int]) -> int:
    """Pixels between two boxes (0 when they touch or overlap)."""
    vertical = max(0, max(first[0], second[0]) - min(first[2], second[2]))
    horizontal = max(0, max(first[1], second[1]) - min(first[3], second[3]))
    return max(vertical, horizontal)
