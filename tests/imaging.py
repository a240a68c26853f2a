"""Real-looking test images made from real MNIST digits: photos, drawings, transparent strokes."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter


def encode(image: Image.Image, image_format: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def mnist_png(digit: np.ndarray) -> bytes:
    """A 28x28 uint8 MNIST digit as a PNG, exactly as in the dataset (light on dark)."""
    return encode(Image.fromarray(digit))


def paper_photo(digit: np.ndarray, seed: int, size: tuple[int, int] = (480, 640)) -> bytes:
    """The digit as dark ink on off-white paper, large, off-centre, noisy, JPEG-compressed."""
    rng = np.random.default_rng(seed)
    width, height = size
    scale = int(rng.integers(8, 14))
    ink = Image.fromarray(digit).resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC)
    ink = ink.filter(ImageFilter.GaussianBlur(1.5))
    paper = np.full((height, width), 225.0) + rng.normal(0, 8, (height, width))
    paper += np.linspace(-15, 15, width)[np.newaxis, :]  # Uneven lighting.
    left = int(rng.integers(10, width - ink.width - 10))
    top = int(rng.integers(10, height - ink.height - 10))
    region = paper[top : top + ink.height, left : left + ink.width]
    region -= np.asarray(ink, dtype=np.float64) * 0.75
    photo = Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8)).convert("RGB")
    return encode(photo, "JPEG", quality=85)


def transparent_strokes(digit: np.ndarray, color: tuple[int, int, int] = (20, 20, 20)) -> bytes:
    """The digit as coloured strokes on a fully transparent 280x280 canvas, like a drawing app."""
    alpha = Image.fromarray(digit).resize((280, 280), Image.Resampling.BICUBIC)
    rgba = Image.new("RGBA", (280, 280), (*color, 0))
    rgba.putalpha(alpha)
    return encode(rgba)
