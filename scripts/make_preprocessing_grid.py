"""Draw docs/preprocessing.png: uploads from the drawings corpus and what the model saw of them.

Each row is one kind of upload (thin pen, thick marker, phone photo, light on dark, transparent
layer): the file as sent, then the 28x28 input the service's ``mnist`` preprocessing made of it,
with the default model's answer.

Usage: ``python scripts/make_preprocessing_grid.py``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from service.preprocessing import ImageLimits, prepare_image  # noqa: E402
from service.repository import read_model_card  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "fixtures" / "drawings"
MODEL = ROOT / "models" / "mnist-deep-cnn"
OUTPUT = ROOT / "docs" / "preprocessing.png"
ROWS = {
    "thin-pen-dark-on-light": "thin pen (1-2 px)",
    "thick-marker": "thick marker",
    "phone-photo": "phone photo",
    "thin-pen-light-on-dark": "light on dark",
    "transparent-rgba": "transparent layer",
}
PER_ROW = 3
TILE = 150
LABEL_WIDTH = 150
CHECKER = 12


def checkerboard(size: tuple[int, int]) -> Image.Image:
    """The usual grey checks behind transparent pixels."""
    board = Image.new("RGB", size, (235, 235, 235))
    draw = ImageDraw.Draw(board)
    for top in range(0, size[1], CHECKER):
        for left in range((top // CHECKER) % 2 * CHECKER, size[0], 2 * CHECKER):
            draw.rectangle([left, top, left + CHECKER - 1, top + CHECKER - 1], fill=(200, 200, 200))
    return board


def as_sent(path: Path) -> Image.Image:
    image = Image.open(path)
    if image.mode == "RGBA":
        shown = checkerboard(image.size)
        shown.paste(image, mask=image.getchannel("A"))
        image = shown
    image = image.convert("RGB")
    image.thumbnail((TILE - 10, TILE - 10))
    return image


def main() -> None:
    card = read_model_card(MODEL)
    session = ort.InferenceSession(str(MODEL / card.files.onnx))
    manifest = json.loads((CORPUS / "manifest.json").read_text())
    width = LABEL_WIDTH + PER_ROW * 2 * TILE
    sheet = Image.new("RGB", (width, len(ROWS) * TILE + 30), "white")
    draw = ImageDraw.Draw(sheet)
    for column in range(PER_ROW):
        left = LABEL_WIDTH + column * 2 * TILE
        draw.text((left + 10, 8), "uploaded", fill="black")
        draw.text((left + TILE + 10, 8), "what the model saw", fill="black")
    for row, (kind, title) in enumerate(ROWS.items()):
        top = 30 + row * TILE
        draw.text((10, top + TILE // 2 - 6), title, fill="black")
        entries = [entry for entry in manifest if entry["kind"] == kind][:PER_ROW]
        for column, entry in enumerate(entries):
            left = LABEL_WIDTH + column * 2 * TILE
            path = CORPUS / entry["file"]
            original = as_sent(path)
            sheet.paste(original, (left + (TILE - original.width) // 2, top + 5))
            seen = prepare_image(
                path.read_bytes(), "mnist", card.preprocessing, ImageLimits(16_000_000, 8 << 20)
            )
            (probabilities,) = session.run(["probabilities"], {"input": seen[None, ..., None]})
            tile = Image.fromarray((seen * 255).astype(np.uint8)).resize(
                (TILE - 30, TILE - 30), Image.Resampling.NEAREST
            )
            sheet.paste(tile, (left + TILE + 15, top + 5))
            answer = int(probabilities[0].argmax())
            verdict = f"label {entry['label']}, model {answer}"
            draw.text((left + TILE + 15, top + TILE - 22), verdict, fill="black")
            canvas = "x".join(map(str, entry["canvas"]))
            draw.text(
                (left + 10, top + TILE - 22), f"{canvas}, pen {entry['stroke_px']} px", fill="gray"
            )
    OUTPUT.parent.mkdir(exist_ok=True)
    sheet.save(OUTPUT, optimize=True)
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
