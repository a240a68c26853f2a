"""Write ``tests/fixtures/not_digits.npz``: 28x28 model inputs that are not one digit.

Kinds (float32 (N, 28, 28) in [0, 1], light on dark like MNIST): ``blank`` (zeros and faint
noise), ``noise`` (uniform and salt), ``letters`` (letters and symbols of the DejaVu and
Liberation fonts, framed by the service's own ``mnist`` preprocessing), ``fashion`` (the first
200 Fashion-MNIST test images), ``two_digits`` (pairs of committed MNIST test digits side by
side, framed the same way). Fixed seeds: running it again writes the same file.

Usage: ``python scripts/make_not_digits.py FASHION_MNIST_DIR`` (the directory of its IDX files)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from model_card import PreprocessingSpec  # noqa: E402
from service.errors import InvalidInputError  # noqa: E402
from service.preprocessing import mnist_style  # noqa: E402
from training.data import read_idx  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SPEC = PreprocessingSpec(default="mnist", invert="auto", digit_box=20, canvas=28)
FONTS = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSerif-Bold.ttf",
]
# Letters that no one would take for a digit (no O, I, l, S, Z, B, g, q).
CHARACTERS = "ACEFHKMNPRTUVWXYacefhkmnrtuvwxy#%&@?+=*$"


def framed(gray: np.ndarray) -> np.ndarray | None:
    try:
        return mnist_style(gray.astype(np.float32), SPEC)
    except InvalidInputError:
        return None


def letters() -> np.ndarray:
    glyphs = []
    for path in FONTS:
        font = ImageFont.truetype(path, 90)
        for character in CHARACTERS:
            image = Image.new("L", (150, 150), 255)
            ImageDraw.Draw(image).text((25, 10), character, font=font, fill=0)
            glyph = framed(np.asarray(image))
            if glyph is not None:
                glyphs.append(glyph)
    return np.stack(glyphs)


def main() -> None:
    fashion_dir = Path(sys.argv[1])
    rng = np.random.default_rng(2026)
    with np.load(ROOT / "tests" / "fixtures" / "mnist_test_500.npz") as archive:
        digits = archive["images"].astype(np.float32)
    pairs = [
        framed(255 - np.concatenate([digits[i], digits[i + 1]], axis=1)) for i in range(0, 200, 2)
    ]
    fashion = read_idx(next(fashion_dir.glob("t10k-images*")))[:200].astype(np.float32) / 255
    kinds = {
        "blank": np.concatenate([np.zeros((10, 28, 28)), rng.uniform(0, 0.05, (20, 28, 28))]),
        "noise": np.concatenate(
            [rng.uniform(0, 1, (40, 28, 28)), (rng.random((40, 28, 28)) < 0.2) * 1.0]
        ),
        "letters": letters(),
        "fashion": fashion,
        "two_digits": np.stack([pair for pair in pairs if pair is not None]),
    }
    path = ROOT / "tests" / "fixtures" / "not_digits.npz"
    np.savez_compressed(path, **{name: values.astype(np.float32) for name, values in kinds.items()})
    print({name: len(values) for name, values in kinds.items()}, f"{path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
