"""Feature maps as pictures: each layer's channels in a labelled grid, as tutorials draw them."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

GRID_COLUMNS = 8
TILE_GAP = 2
TITLE_HEIGHT = 20
TITLE_FONT_SIZE = 13
SECTION_GAP = 8
MIN_TILE_SIDE = 48  # Small maps (pool2 is 4x4) are enlarged so a person can see them.


@dataclass(frozen=True)
class GridGeometry:
    """Pixel layout of one layer's grid."""

    columns: int
    rows: int
    scale: int
    tile_side: int
    width: int
    height: int  # Including the title strip.


def grid_geometry(map_shape: tuple[int, int, int]) -> GridGeometry:
    """Layout for activations of shape (H, W, C): up to 8 tiles a row, nearest-neighbour zoom."""
    height, width, channels = map_shape
    columns = min(GRID_COLUMNS, channels)
    rows = math.ceil(channels / columns)
    scale = max(1, math.ceil(MIN_TILE_SIDE / max(height, width)))
    tile_side = max(height, width) * scale
    grid_width = columns * tile_side + (columns + 1) * TILE_GAP
    grid_height = TITLE_HEIGHT + rows * tile_side + (rows + 1) * TILE_GAP
    return GridGeometry(columns, rows, scale, tile_side, grid_width, grid_height)


def normalise_channels(activations: np.ndarray) -> np.ndarray:
    """Scale each channel to 0-255 on its own (a dead channel stays black).

    Args:
        activations: float (H, W, C).

    Returns:
        uint8 (H, W, C).
    """
    low = activations.min(axis=(0, 1), keepdims=True)
    span = activations.max(axis=(0, 1), keepdims=True) - low
    scaled: np.ndarray = np.divide(
        activations - low, span, out=np.zeros_like(activations), where=span > 0
    )
    return (scaled * 255.0).round().astype(np.uint8)


def _layer_grid(name: str, activations: np.ndarray) -> Image.Image:
    geometry = grid_geometry(activations.shape)
    canvas = Image.new("L", (geometry.width, geometry.height), color=40)
    ImageDraw.Draw(canvas).text(
        (TILE_GAP, 2),
        f"{name}  {'x'.join(map(str, activations.shape))}",
        fill=255,
        font=ImageFont.load_default(size=TITLE_FONT_SIZE),
    )
    tiles = normalise_channels(activations)
    for channel in range(activations.shape[2]):
        row, column = divmod(channel, geometry.columns)
        tile = Image.fromarray(tiles[:, :, channel]).resize(
            (activations.shape[1] * geometry.scale, activations.shape[0] * geometry.scale),
            Image.Resampling.NEAREST,
        )
        left = TILE_GAP + column * (geometry.tile_side + TILE_GAP)
        top = TITLE_HEIGHT + TILE_GAP + row * (geometry.tile_side + TILE_GAP)
        canvas.paste(tile, (left, top))
    return canvas


def feature_maps_png(layers: dict[str, np.ndarray]) -> bytes:
    """One PNG with a grid per layer, stacked top to bottom in the given order.

    Args:
        layers: layer name -> float activations (H, W, C) of one image.
    """
    grids = [_layer_grid(name, values) for name, values in layers.items()]
    width = max(grid.width for grid in grids)
    height = sum(grid.height for grid in grids) + SECTION_GAP * (len(grids) - 1)
    sheet = Image.new("L", (width, height), color=40)
    top = 0
    for grid in grids:
        sheet.paste(grid, (0, top))
        top += grid.height + SECTION_GAP
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def sheet_size(shapes: list[tuple[int, int, int]]) -> tuple[int, int]:
    """(width, height) of ``feature_maps_png`` for layers of these (H, W, C) shapes."""
    geometries = [grid_geometry(shape) for shape in shapes]
    return (
        max(geometry.width for geometry in geometries),
        sum(geometry.height for geometry in geometries) + SECTION_GAP * (len(geometries) - 1),
    )


SALIENCY_SCALE = 10  # 28x28 -> 280x280
FOR_TARGET = np.array([214, 39, 40], dtype=np.float32)  # red: ink that speaks for the target
AGAINST_TARGET = np.array([31, 119, 180], dtype=np.float32)  # blue: ink that speaks against it


def saliency_png(seen: np.ndarray, saliency: np.ndarray) -> bytes:
    """A signed saliency map over what the model saw, as a PNG: the input in grey, red where
    the pixels speak for the target, blue where against, the colour's strength by magnitude
    (scaled to the map's largest; white-free, so that both signs stay readable on black).

    Args:
        seen: float32 (H, W) in [0, 1], the model's input.
        saliency: float32 (H, W), signed.
    """
    grey = np.repeat((np.clip(seen, 0.0, 1.0) * 160.0)[..., np.newaxis], 3, axis=2)
    largest = float(np.abs(saliency).max())
    strength = np.abs(saliency) / largest if largest > 0 else np.zeros_like(saliency)
    colour = np.where((saliency >= 0)[..., np.newaxis], FOR_TARGET, AGAINST_TARGET)
    alpha = np.clip(strength, 0.0, 1.0)[..., np.newaxis] ** 0.7
    mixed = grey * (1.0 - alpha) + colour * alpha
    picture = Image.fromarray(mixed.astype(np.uint8), mode="RGB")
    side = (seen.shape[1] * SALIENCY_SCALE, seen.shape[0] * SALIENCY_SCALE)
    buffer = io.BytesIO()
    picture.resize(side, Image.Resampling.NEAREST).save(buffer, format="PNG")
    return buffer.getvalue()
