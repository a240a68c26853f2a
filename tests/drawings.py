"""A corpus of digits as people really send them, rendered from real MNIST test digits.

Each MNIST digit is re-drawn the way a person would draw or photograph it: its skeleton is
re-stroked at a chosen pen width (1 px up to 8 % of the canvas) on canvases from 64 to 1,500 px,
dark on light or light on dark, as opaque RGB, opaque RGBA or transparent RGBA, off-centre with wide
margins, saved as JPEG at quality 60, or turned into a phone-photo-like picture (uneven lighting,
paper texture, sensor noise, slight rotation and perspective).

``scripts/make_drawings_corpus.py`` writes the corpus to ``tests/fixtures/drawings/``; the tests
read the committed files. Rendering needs SciPy and scikit-image (development dependencies only).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage
from skimage.morphology import skeletonize

Rng = np.random.Generator
MAX_PEN_FRACTION = 0.16  # Of the digit's height: MNIST's boldest strokes are about that.


@dataclass(frozen=True)
class Rendering:
    """One rendered file and what it was made from."""

    data: bytes
    extension: str  # "png" or "jpg"
    canvas: tuple[int, int]  # (width, height)
    stroke_px: float
    polarity: str  # "dark-on-light" or "light-on-dark"


def skeleton_of(digit: np.ndarray, size: int) -> np.ndarray:
    """The centre line of an MNIST digit scaled to ``size`` x ``size`` pixels.

    Args:
        digit: uint8 (28, 28), light ink on black.

    Returns:
        bool (size, size), one-pixel-wide strokes.
    """
    smooth = Image.fromarray(digit).resize((size, size), Image.Resampling.BICUBIC)
    smooth = smooth.filter(ImageFilter.GaussianBlur(max(1.0, size / 56)))
    values = np.asarray(smooth, dtype=np.float32)
    return np.asarray(skeletonize(values > 0.45 * values.max()))


def restroke_fidelity(digit: np.ndarray) -> float:
    """How well the digit survives re-stroking: correlation of its blurred pixels with those of
    its centre line drawn back at MNIST's own scale and typical pen width.

    Bold digits whose loops are filled in (a 9 drawn as a blot) lose their shape when reduced to
    a centre line, and the result may no longer be the digit its label says; those score low.

    Args:
        digit: uint8 (28, 28).
    """
    size = 112
    ink = stroke_intensity(skeleton_of(digit, size), 2.8 * size / 28, antialias=True)
    redrawn = Image.fromarray(np.round(ink * 255).astype(np.uint8)).resize(
        (28, 28), Image.Resampling.BOX
    )
    first = ndimage.gaussian_filter(np.asarray(redrawn, dtype=np.float64), 1.0)
    second = ndimage.gaussian_filter(digit.astype(np.float64), 1.0)
    return float(np.corrcoef(first.ravel(), second.ravel())[0, 1])


def stroke_intensity(skeleton: np.ndarray, width: float, antialias: bool) -> np.ndarray:
    """Ink coverage (0-1) of a pen of ``width`` pixels drawn along ``skeleton``.

    Anti-aliased pens get a one-pixel soft edge; aliased ones (paint programs' pencil tool) are
    hard-edged, so a 1 px pen leaves exactly the skeleton.

    Returns:
        float32, the shape of ``skeleton``.
    """
    distance = ndimage.distance_transform_edt(~skeleton)
    if antialias:
        return np.clip(width / 2 + 0.5 - distance, 0.0, 1.0).astype(np.float32)
    return (distance <= max(width / 2, 0.5)).astype(np.float32)


def place_digit(
    digit: np.ndarray,
    canvas: tuple[int, int],
    digit_fraction: float,
    width: float,
    antialias: bool,
    rng: Rng,
    centred: bool = True,
) -> np.ndarray:
    """Ink coverage of the re-stroked digit on a canvas.

    Args:
        digit: uint8 (28, 28) MNIST digit.
        canvas: (width, height) in pixels.
        digit_fraction: the digit's box as a fraction of the canvas's short side.
        centred: near the middle (jittered) or anywhere, leaving wide margins elsewhere.

    Returns:
        float32 (height, width) ink coverage in [0, 1].
    """
    canvas_width, canvas_height = canvas
    box = max(12, int(min(canvas) * digit_fraction))
    ink = stroke_intensity(skeleton_of(digit, box), width, antialias)
    # The pen's width can push the ink past the box: give it room.
    pad = int(np.ceil(width / 2)) + 1
    ink = np.pad(ink, pad)
    field = np.zeros((canvas_height, canvas_width), dtype=np.float32)
    free_x, free_y = max(0, canvas_width - ink.shape[1]), max(0, canvas_height - ink.shape[0])
    if centred:
        left = int(free_x / 2 + rng.uniform(-0.25, 0.25) * free_x)
        top = int(free_y / 2 + rng.uniform(-0.25, 0.25) * free_y)
    else:
        left, top = int(rng.integers(0, free_x + 1)), int(rng.integers(0, free_y + 1))
    visible = ink[: canvas_height - top, : canvas_width - left]
    field[top : top + visible.shape[0], left : left + visible.shape[1]] = visible
    return field


def _encode(image: Image.Image, extension: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG" if extension == "jpg" else "PNG", **options)
    return buffer.getvalue()


def _colours(rng: Rng, polarity: str) -> tuple[np.ndarray, np.ndarray]:
    """(ink, background) RGB colours: dark pens on light paper, or light pens on dark screens."""
    dark = rng.choice([[0, 0, 0], [20, 20, 20], [10, 30, 120], [120, 10, 10], [40, 40, 60]])
    light = rng.choice([[255, 255, 255], [245, 245, 240], [230, 230, 230], [250, 240, 200]])
    if polarity == "dark-on-light":
        return np.asarray(dark, np.float32), np.asarray(light, np.float32)
    return np.asarray(light, np.float32), np.asarray(dark, np.float32) * 0.5


def _log_uniform(rng: Rng, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(max(low, high)))))


def _canvas(rng: Rng, low: int, high: int) -> tuple[int, int]:
    """A canvas whose long side is log-uniform in [low, high], some of them not square."""
    long_side = int(_log_uniform(rng, low, high))
    short_side = long_side if rng.random() < 0.5 else int(long_side * rng.uniform(0.6, 1.0))
    return (long_side, short_side) if rng.random() < 0.5 else (short_side, long_side)


def _opaque(
    coverage: np.ndarray, ink: np.ndarray, background: np.ndarray, with_alpha: bool
) -> Image.Image:
    rgb = background + coverage[..., np.newaxis] * (ink - background)
    pixels = np.clip(np.round(rgb), 0, 255).astype(np.uint8)
    if with_alpha:
        alpha = np.full(coverage.shape + (1,), 255, dtype=np.uint8)
        return Image.fromarray(np.concatenate([pixels, alpha], axis=2), "RGBA")
    return Image.fromarray(pixels, "RGB")


def _drawing(
    digit: np.ndarray,
    rng: Rng,
    *,
    canvas_range: tuple[int, int],
    width_range: tuple[float, float] | None,
    polarity: str | None = None,
    alpha: str = "none",
    centred: bool = True,
    digit_fraction: tuple[float, float] = (0.45, 0.85),
    width_fraction: tuple[float, float] = (0.0, 0.08),
    jpeg_quality: int | None = None,
) -> Rendering:
    """A drawn digit.

    The pen is ``width_range`` pixels wide, or when that is None, between ``width_fraction`` of
    the canvas's short side (at least 1 px), log-uniform.
    """
    canvas = _canvas(rng, *canvas_range)
    if width_range is None:
        short_side = min(canvas)
        width_range = (
            max(1.0, width_fraction[0] * short_side),
            max(1.0, width_fraction[1] * short_side),
        )
    fraction = float(rng.uniform(*digit_fraction))
    # Nobody writes a digit with a pen wider than about a sixth of its height (an MNIST digit
    # fills 20 of its box's 28 rows).
    digit_height = fraction * min(canvas) * 20 / 28
    width = min(_log_uniform(rng, *width_range), max(1.0, MAX_PEN_FRACTION * digit_height))
    antialias = bool(rng.random() < 0.6) or width > 6
    polarity = polarity or str(rng.choice(["dark-on-light", "light-on-dark"]))
    coverage = place_digit(digit, canvas, fraction, width, antialias, rng, centred)
    ink, background = _colours(rng, polarity)
    if alpha == "transparent":
        # A drawing app's layer: the strokes' colour everywhere, opacity where the pen went.
        rgba = np.empty(coverage.shape + (4,), dtype=np.uint8)
        rgba[..., :3] = ink.astype(np.uint8)
        rgba[..., 3] = np.round(coverage * 255).astype(np.uint8)
        image = Image.fromarray(rgba, "RGBA")
    else:
        image = _opaque(coverage, ink, background, with_alpha=alpha == "opaque")
    extension = "jpg" if jpeg_quality else "png"
    options: dict[str, object] = {"quality": jpeg_quality} if jpeg_quality else {"optimize": True}
    return Rendering(_encode(image, extension, **options), extension, canvas, width, polarity)


def _smooth_noise(rng: Rng, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Low-frequency noise (paper texture, lighting blotches), zero mean, unit-ish spread."""
    noise = ndimage.gaussian_filter(rng.normal(0, 1, shape), scale)
    return np.asarray(noise / (noise.std() + 1e-6), dtype=np.float32)


def phone_photo(digit: np.ndarray, rng: Rng) -> Rendering:
    """A phone photo of a digit written on paper: lighting gradient, texture, noise, tilt."""
    canvas = (int(rng.integers(300, 481)), int(rng.integers(400, 641)))
    width = float(rng.uniform(0.025, 0.06) * min(canvas))
    coverage = place_digit(digit, canvas, float(rng.uniform(0.4, 0.75)), width, True, rng)
    height_px, width_px = coverage.shape
    rows, columns = np.mgrid[0:height_px, 0:width_px].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * columns / width_px + np.sin(angle) * rows / height_px
    paper = (
        rng.uniform(170, 230)
        + rng.uniform(20, 45) * (ramp - ramp.mean())
        + rng.uniform(3, 8) * _smooth_noise(rng, coverage.shape, 12)
        + rng.uniform(2, 5) * _smooth_noise(rng, coverage.shape, 1.5)
    )
    ink_darkness = rng.uniform(0.45, 0.8)
    gray = paper * (1 - ink_darkness * ndimage.gaussian_filter(coverage, rng.uniform(0.6, 1.4)))
    tint = rng.uniform(0.9, 1.05, size=3)
    rgb = gray[..., np.newaxis] * tint + rng.normal(0, rng.uniform(2, 6), gray.shape + (3,))
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    image = image.rotate(
        float(rng.uniform(-8, 8)),
        Image.Resampling.BICUBIC,
        fillcolor=tuple(int(v) for v in rgb[0, 0]),
    )
    image = image.transform(
        image.size,
        Image.Transform.PERSPECTIVE,
        _perspective(rng, image.size),
        Image.Resampling.BICUBIC,
        fillcolor=tuple(int(v) for v in rgb[-1, -1]),
    )
    data = _encode(image, "jpg", quality=int(rng.integers(70, 90)))
    return Rendering(data, "jpg", canvas, width, "dark-on-light")


def _perspective(rng: Rng, size: tuple[int, int]) -> tuple[float, ...]:
    """Coefficients of a slight perspective tilt (corners moved by up to 6 % of the size)."""
    width, height = size
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float64)
    moved = corners + rng.uniform(-0.06, 0.06, size=(4, 2)) * [width, height]
    matrix = []
    for (x, y), (u, v) in zip(corners, moved, strict=True):
        matrix.append([u, v, 1, 0, 0, 0, -x * u, -x * v])
        matrix.append([0, 0, 0, u, v, 1, -y * u, -y * v])
    solution = np.linalg.solve(np.asarray(matrix), corners.reshape(8))
    return tuple(float(value) for value in solution)


KINDS: dict[str, Callable[[np.ndarray, Rng], Rendering]] = {
    "thin-pen-dark-on-light": lambda digit, rng: _drawing(
        digit, rng, canvas_range=(100, 400), width_range=(1, 2.5), polarity="dark-on-light"
    ),
    "thin-pen-light-on-dark": lambda digit, rng: _drawing(
        digit, rng, canvas_range=(100, 400), width_range=(1, 2.5), polarity="light-on-dark"
    ),
    "thin-pen-opaque-rgba": lambda digit, rng: _drawing(
        digit, rng, canvas_range=(100, 600), width_range=(1, 3), alpha="opaque"
    ),
    "thick-marker": lambda digit, rng: _drawing(
        digit,
        rng,
        canvas_range=(64, 800),
        width_range=None,
        width_fraction=(0.04, 0.08),
        digit_fraction=(0.6, 0.9),
    ),
    "transparent-rgba": lambda digit, rng: _drawing(
        digit, rng, canvas_range=(64, 800), width_range=None, alpha="transparent"
    ),
    "large-canvas": lambda digit, rng: _drawing(
        digit, rng, canvas_range=(800, 1500), width_range=None
    ),
    "small-canvas": lambda digit, rng: _drawing(
        digit, rng, canvas_range=(64, 100), width_range=(1, 6)
    ),
    "off-centre": lambda digit, rng: _drawing(
        digit,
        rng,
        canvas_range=(200, 1000),
        width_range=None,
        centred=False,
        digit_fraction=(0.15, 0.35),
    ),
    "jpeg-q60": lambda digit, rng: _drawing(
        digit, rng, canvas_range=(100, 600), width_range=(2, 12), jpeg_quality=60
    ),
    "phone-photo": phone_photo,
}


SEED = 2026
# Digits whose centre line no longer looks like them (filled loops, blots: about 2 % of them) are
# not used: no pen draws them that way, and their label may not hold once re-stroked.
MIN_RESTROKE_FIDELITY = 0.92


def usable_digits(images: np.ndarray) -> np.ndarray:
    """Indices of the (N, 28, 28) digits that can be re-stroked faithfully."""
    fidelity = np.array([restroke_fidelity(digit) for digit in images])
    return np.flatnonzero(fidelity >= MIN_RESTROKE_FIDELITY)


def renderings(
    kind: str,
    images: np.ndarray,
    usable: np.ndarray,
    count: int,
    kinds: dict[str, Callable[[np.ndarray, Rng], Rendering]] | None = None,
) -> Iterator[tuple[int, Rendering]]:
    """(source digit index, rendering) for ``count`` usable digits, the same on every run.

    ``kinds``: the corpus's renderers (default: this module's ``KINDS``).
    """
    kinds = KINDS if kinds is None else kinds
    rng = np.random.default_rng(SEED + sorted(kinds).index(kind))
    for index in rng.choice(usable, size=count, replace=False):
        yield int(index), kinds[kind](images[index], rng)
