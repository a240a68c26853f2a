"""Draw ``docs/photo-steps.png``: one photo of a digit on a desk, step by step through ``mnist``.

Rows: photos from ``tests/fixtures/photos``: a sheet on a desk and ruled paper (read right), and
faint pencil on a sheet barely brighter than its surroundings (read wrong: the sheet is found in
part, and its edge outweighs the pencil; the open case that keeps faint pencil at 50 %).
Columns: the upload; the sheet found on it, cropped and its desk painted out; the ink map
(background surface removed, analysis scale); the digit's strokes, grouped; what the model saw.

Usage: ``python scripts/make_photo_steps.py``
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from model_card import PreprocessingSpec  # noqa: E402
from service.preprocessing import ImageLimits, decode_grayscale, ink_map, mnist_style  # noqa: E402
from service.preprocessing.digits import _digit_strokes  # noqa: E402
from service.preprocessing.primitives import stroke_width  # noqa: E402
from service.preprocessing.sheet import find_sheet, on_sheet  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = [
    "paper-on-desk/001-digit174.jpg",
    "ruled-paper/000-digit336.jpg",
    "faint-pencil/001-digit254.jpg",
]
SPEC = PreprocessingSpec(default="mnist", invert="auto", digit_box=20, canvas=28)
TILE = 180
TITLES = [
    "upload",
    "the sheet, desk painted out",
    "ink map",
    "the digit's strokes",
    "what the model saw",
]


def tile(values: np.ndarray) -> Image.Image:
    """A grey picture of any range, fitted into TILE x TILE."""
    values = values.astype(np.float32)
    span = float(values.max() - values.min()) or 1.0
    image = Image.fromarray(np.uint8(255 * (values - values.min()) / span))
    if max(image.size) < TILE:  # Small ones (the model's 28x28) are enlarged, pixels kept.
        factor = TILE // max(image.size)
        image = image.resize(
            (image.width * factor, image.height * factor), Image.Resampling.NEAREST
        )
    image.thumbnail(
        (TILE, TILE), Image.Resampling.NEAREST if max(values.shape) <= 64 else Image.Resampling.BOX
    )
    canvas = Image.new("L", (TILE, TILE), 255)
    canvas.paste(image, ((TILE - image.width) // 2, (TILE - image.height) // 2))
    return canvas


def steps(path: Path) -> list[Image.Image]:
    gray = decode_grayscale(path.read_bytes(), ImageLimits(16_000_000, 8 << 20))
    sheet = find_sheet(gray)
    on_paper = on_sheet(gray, sheet) if sheet is not None else gray
    ink, _ = ink_map(on_paper, SPEC)
    peak = float(np.percentile(ink[ink > 0.5 * ink.max()], 90))
    strokes, _ = _digit_strokes(ink, peak, False, stroke_width(ink / peak))
    return [tile(gray), tile(on_paper), tile(ink), tile(strokes), tile(mnist_style(gray, SPEC))]


def main() -> None:
    rows = [steps(ROOT / "tests" / "fixtures" / "photos" / name) for name in PHOTOS]
    header = 24
    picture = Image.new("L", (TILE * len(TITLES), header + TILE * len(rows)), 255)
    draw = ImageDraw.Draw(picture)
    for column, title in enumerate(TITLES):
        draw.text((column * TILE + 6, 6), title, fill=0)
    for row, tiles in enumerate(rows):
        for column, image in enumerate(tiles):
            picture.paste(image, (column * TILE, header + row * TILE))
    picture.save(ROOT / "docs" / "photo-steps.png", optimize=True)
    print("wrote docs/photo-steps.png")


if __name__ == "__main__":
    main()
