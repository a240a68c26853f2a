"""A corpus of the hard cases real users send, rendered from real MNIST test digits.

Where ``tests/drawings.py`` varies pens, canvases and polarity, this corpus holds the classes an
outside review found failing on real photos and drawings: a sheet of paper photographed on a
darker desk (its edges and the desk are not ink), ruled and squared notebook paper with dark
corners, faint pencil about 20 grey levels darker than its paper, ink darker in one part than in
another, dotted and broken strokes, blurry blue-pen photos, and continental handwriting (a 1 with
a flag and a foot, a 7 with a crossbar). Each is a digit of ``tests/fixtures/mnist_test_500.npz``
re-stroked along its centre line (see ``tests/drawings.py``) and then photographed in software.

``scripts/make_drawings_corpus.py --corpus photos`` writes ``tests/fixtures/photos/``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from tests.drawings import (
    Rendering,
    Rng,
    _encode,
    _perspective,
    _smooth_noise,
    skeleton_of,
    stroke_intensity,
)

DESKS = {  # RGB of tables and desks photographed under a sheet of paper.
    "oak": (150, 105, 60),
    "walnut": (85, 55, 35),
    "grey": (110, 110, 115),
    "black": (35, 35, 38),
    "blue": (50, 70, 110),
    "green": (60, 95, 70),
}
BLUE_INK = (25, 45, 150)


def _restroked(digit: np.ndarray, box: int, width: float, style: str = "plain") -> np.ndarray:
    """Ink coverage (float32, box x box, padded by the pen) of the digit re-stroked on paper.

    ``style``: ``plain``; ``continental`` adds a 1's flag and foot or a 7's crossbar; ``dotted``
    and ``broken`` leave gaps along the strokes.
    """
    skeleton = skeleton_of(digit, box)
    if style == "continental":
        skeleton = _with_continental_strokes(skeleton)
    pad = int(np.ceil(width / 2)) + 2
    skeleton = np.pad(skeleton, pad)
    if style in ("dotted", "broken"):
        skeleton = _with_gaps(skeleton, period=width * (3.0 if style == "dotted" else 6.0))
    return stroke_intensity(skeleton, width, antialias=True)


def _with_continental_strokes(skeleton: np.ndarray) -> np.ndarray:
    """Add a flag and a foot to a 1, a crossbar to a 7 (told apart by the skeleton's shape)."""
    rows, columns = np.nonzero(skeleton)
    top, bottom = rows.min(), rows.max()
    height = bottom - top + 1
    image = Image.fromarray(skeleton.astype(np.uint8) * 255)
    draw = ImageDraw.Draw(image)
    spread = columns.max() - columns.min() + 1
    if spread < 0.45 * height:  # A 1: a stroke down, a flag at its top, a foot under it.
        top_column = int(np.mean(columns[rows == top]))
        bottom_column = int(np.mean(columns[rows == bottom]))
        draw.line([(top_column, top), (top_column - 0.3 * height, top + 0.28 * height)], fill=255)
        draw.line(
            [(bottom_column - 0.22 * height, bottom), (bottom_column + 0.22 * height, bottom)],
            fill=255,
        )
    else:  # A 7: a bar across the stem, half way down.
        middle = top + height // 2
        stem = columns[np.abs(rows - middle) <= 1]
        centre = int(np.mean(stem)) if stem.size else int(np.mean(columns))
        draw.line([(centre - 0.22 * height, middle), (centre + 0.22 * height, middle)], fill=255)
    return np.asarray(image) > 0


def _with_gaps(skeleton: np.ndarray, period: float) -> np.ndarray:
    """Keep the skeleton on the first half of each ``period`` pixels along it (walking each
    stroke from one end, breadth first), so it looks dotted or dashed in every direction."""
    kept = np.zeros_like(skeleton)
    unvisited = {(int(row), int(column)) for row, column in zip(*np.nonzero(skeleton), strict=True)}
    neighbours = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if dr or dc]
    while unvisited:
        start = min(unvisited)  # The top-left end of what is left.
        frontier, distance = [start], 0
        unvisited.discard(start)
        while frontier:
            if distance % period < period * 0.5:
                for row, column in frontier:
                    kept[row, column] = True
            following = []
            for row, column in frontier:
                for dr, dc in neighbours:
                    pixel = (row + dr, column + dc)
                    if pixel in unvisited:
                        unvisited.discard(pixel)
                        following.append(pixel)
            frontier, distance = following, distance + 1
    return kept


def _sheet_photo(
    coverage: np.ndarray,
    rng: Rng,
    *,
    ink_rgb: tuple[int, int, int] = (25, 25, 30),
    ink_strength: tuple[float, float] = (0.55, 0.85),
    lines: str = "none",
    desk: bool = True,
    blur: float = 0.0,
) -> Image.Image:
    """A photo of a sheet bearing ``coverage`` (float32 ink, the digit on its own), framed by
    a desk, with lighting, paper texture, notebook lines, blur, noise, tilt and perspective."""
    digit_height = coverage.shape[0]
    sheet_width = int(digit_height * rng.uniform(2.0, 3.2))
    sheet_height = int(sheet_width * rng.uniform(1.1, 1.45))
    paper = np.full((sheet_height, sheet_width), rng.uniform(205, 240), dtype=np.float32)
    paper += rng.uniform(2, 5) * _smooth_noise(rng, paper.shape, 2.0)
    line_mask = _notebook_lines(paper.shape, digit_height, lines, rng)
    ink = np.zeros(paper.shape, dtype=np.float32)
    top = int(rng.uniform(0.2, 0.45) * (sheet_height - digit_height))
    left = int(rng.uniform(0.25, 0.6) * (sheet_width - coverage.shape[1]))
    ink[top : top + coverage.shape[0], left : left + coverage.shape[1]] = coverage
    strength = rng.uniform(*ink_strength)
    rgb = np.repeat(paper[..., np.newaxis], 3, axis=2) * (1 - 0.25 * line_mask[..., np.newaxis])
    if lines != "none":
        rgb[..., 2] += 40 * line_mask  # Printed lines are light blue.
    rgb += (np.asarray(ink_rgb, np.float32) - rgb) * (strength * ink)[..., np.newaxis]
    frame_width, frame_height = (
        int(sheet_width * rng.uniform(1.15, 1.6)),
        int(sheet_height * rng.uniform(1.1, 1.4)),
    )
    desk_rgb = np.asarray(DESKS[str(rng.choice(sorted(DESKS)))], np.float32)
    frame = np.empty((frame_height, frame_width, 3), dtype=np.float32)
    frame[:] = desk_rgb if desk else rgb[0, 0]
    frame += 10 * _smooth_noise(rng, (frame_height, frame_width), 6)[..., np.newaxis]
    sheet_top = int(rng.uniform(0.2, 0.8) * (frame_height - sheet_height))
    sheet_left = int(rng.uniform(0.2, 0.8) * (frame_width - sheet_width))
    frame[sheet_top : sheet_top + sheet_height, sheet_left : sheet_left + sheet_width] = rgb
    rows, columns = np.mgrid[0:frame_height, 0:frame_width].astype(np.float32)
    # Light falls off towards the corners and across the picture.
    radius = np.hypot(rows / frame_height - 0.5, columns / frame_width - 0.5)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * columns / frame_width + np.sin(angle) * rows / frame_height
    light = (1 - rng.uniform(0.15, 0.45) * radius**2) * (1 + rng.uniform(0.05, 0.2) * (ramp - 0.5))
    frame *= light[..., np.newaxis]
    if blur:
        frame = ndimage.gaussian_filter(frame, (blur, blur, 0))
    frame += rng.normal(0, rng.uniform(2, 5), frame.shape)
    image = Image.fromarray(np.clip(frame, 0, 255).astype(np.uint8), "RGB")
    fill = tuple(int(value) for value in desk_rgb)
    image = image.rotate(float(rng.uniform(-6, 6)), Image.Resampling.BICUBIC, fillcolor=fill)
    return image.transform(
        image.size,
        Image.Transform.PERSPECTIVE,
        _perspective(rng, image.size),
        Image.Resampling.BICUBIC,
        fillcolor=fill,
    )


def _notebook_lines(shape: tuple[int, int], digit_height: int, lines: str, rng: Rng) -> np.ndarray:
    """Where printed lines are: float32 in [0, 1], the shape of the sheet."""
    mask = np.zeros(shape, dtype=np.float32)
    if lines == "none":
        return mask
    spacing = max(6, int(digit_height * rng.uniform(0.45, 0.7)))
    offset = int(rng.integers(0, spacing))
    mask[offset::spacing, :] = 1.0
    if lines == "squared":
        mask[:, offset::spacing] = 1.0
    else:  # Ruled: a red-ish margin too, drawn as a darker line.
        margin = int(shape[1] * rng.uniform(0.08, 0.15))
        mask[:, margin : margin + 2] = 1.0
    return ndimage.gaussian_filter(mask, 0.6) * 1.6


def _photo(
    digit: np.ndarray, rng: Rng, style: str = "plain", **photo: object
) -> tuple[Image.Image, float]:
    """(the photo, the pen's width in pixels) of one re-stroked digit."""
    box = int(rng.integers(70, 130))
    width = float(rng.uniform(0.05, 0.1) * box)
    coverage = _restroked(digit, box, width, style)
    return _sheet_photo(coverage, rng, **photo), width  # type: ignore[arg-type]


def _jpeg(image: Image.Image, width: float, rng: Rng) -> Rendering:
    data = _encode(image, "jpg", quality=int(rng.integers(75, 90)))
    return Rendering(data, "jpg", image.size, width, "dark-on-light")


def paper_on_desk(digit: np.ndarray, rng: Rng) -> Rendering:
    return _jpeg(*_photo(digit, rng), rng)


def ruled_paper(digit: np.ndarray, rng: Rng) -> Rendering:
    return _jpeg(*_photo(digit, rng, lines="ruled", desk=bool(rng.random() < 0.5)), rng)


def squared_paper(digit: np.ndarray, rng: Rng) -> Rendering:
    return _jpeg(*_photo(digit, rng, lines="squared", desk=bool(rng.random() < 0.5)), rng)


def faint_pencil(digit: np.ndarray, rng: Rng) -> Rendering:
    """Graphite about 15-30 grey levels darker than the paper, grainy along the stroke."""
    box = int(rng.integers(70, 130))
    width = float(rng.uniform(0.03, 0.06) * box)
    coverage = _restroked(digit, box, width)
    grain = np.clip(1 + 0.35 * rng.normal(0, 1, coverage.shape), 0, 1.5).astype(np.float32)
    strength = rng.uniform(15, 30) / 220
    image = _sheet_photo(
        coverage * grain,
        rng,
        ink_rgb=(90, 90, 95),
        ink_strength=(strength * 220 / 130, strength * 220 / 130),
        desk=bool(rng.random() < 0.5),
    )
    return _jpeg(image, width, rng)


def uneven_ink(digit: np.ndarray, rng: Rng) -> Rendering:
    """A pen running dry: one part of the digit dark, the rest two to four times fainter."""
    box = int(rng.integers(70, 130))
    width = float(rng.uniform(0.05, 0.09) * box)
    coverage = _restroked(digit, box, width)
    rows, columns = np.mgrid[0 : coverage.shape[0], 0 : coverage.shape[1]].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * columns + np.sin(angle) * rows
    ramp = (ramp - ramp.min()) / (np.ptp(ramp) + 1e-6)
    fade = rng.uniform(0.25, 0.5) + (1 - rng.uniform(0.25, 0.5)) * (ramp > rng.uniform(0.4, 0.7))
    image = _sheet_photo(coverage * fade.astype(np.float32), rng, desk=bool(rng.random() < 0.5))
    return _jpeg(image, width, rng)


def dotted_strokes(digit: np.ndarray, rng: Rng) -> Rendering:
    style = "dotted" if rng.random() < 0.5 else "broken"
    return _jpeg(*_photo(digit, rng, style=style, desk=bool(rng.random() < 0.5)), rng)


def blurry_blue_pen(digit: np.ndarray, rng: Rng) -> Rendering:
    return _jpeg(
        *_photo(
            digit,
            rng,
            ink_rgb=BLUE_INK,
            ink_strength=(0.45, 0.7),
            blur=float(rng.uniform(1.5, 3.0)),
            desk=bool(rng.random() < 0.5),
        ),
        rng,
    )


def continental(digit: np.ndarray, rng: Rng) -> Rendering:
    return _jpeg(*_photo(digit, rng, style="continental", desk=bool(rng.random() < 0.5)), rng)


KINDS: dict[str, Callable[[np.ndarray, Rng], Rendering]] = {
    "paper-on-desk": paper_on_desk,
    "ruled-paper": ruled_paper,
    "squared-paper": squared_paper,
    "faint-pencil": faint_pencil,
    "uneven-ink": uneven_ink,
    "dotted-strokes": dotted_strokes,
    "blurry-blue-pen": blurry_blue_pen,
    "continental": continental,
}
# Continental styles change only ones and sevens.
DIGITS_OF_KIND = {"continental": (1, 7)}
