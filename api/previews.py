"""A data set's preview picture: a grid of real images, or a scatter of the first two dimensions of rows."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw

GRID_IMAGES = 64
SCATTER_POINTS = 2500
SCATTER_SIZE = 512


def preview_png(x: np.ndarray, kind: str) -> bytes:
    """PNG of examples spread evenly over the data set (so every class folder shows up)."""
    count = GRID_IMAGES if kind == "images" else SCATTER_POINTS
    index = np.unique(np.linspace(0, len(x) - 1, min(count, len(x))).round().astype(np.int64))
    examples = np.asarray(x[index], np.float32)
    return _grid(examples) if kind == "images" else _scatter(examples)


def _grid(images: np.ndarray, min_cell: int = 32, pad: int = 2) -> bytes:
    n, channels, height, width = images.shape
    columns = math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    scale = max(1, math.ceil(min_cell / max(height, width)))
    pixels = ((np.clip(images, -1, 1) + 1) * 127.5).round().astype(np.uint8)
    if channels == 1:
        pixels = np.repeat(pixels, 3, axis=1)
    cell_h, cell_w = height * scale, width * scale
    canvas = np.full((rows * (cell_h + pad) + pad, columns * (cell_w + pad) + pad, 3), 255, np.uint8)
    for i in range(n):
        tile = pixels[i].transpose(1, 2, 0).repeat(scale, axis=0).repeat(scale, axis=1)
        top, left = pad + (i // columns) * (cell_h + pad), pad + (i % columns) * (cell_w + pad)
        canvas[top : top + cell_h, left : left + cell_w] = tile
    return _png(Image.fromarray(canvas))


def _scatter(rows: np.ndarray) -> bytes:
    points = rows[:, :2] if rows.shape[1] >= 2 else np.stack([rows[:, 0], np.zeros(len(rows))], axis=1)
    low, high = points.min(axis=0), points.max(axis=0)
    span = np.maximum(high - low, 1e-9) * 1.1
    unit = (points - (low + high) / 2) / span + 0.5
    image = Image.new("RGB", (SCATTER_SIZE, SCATTER_SIZE), "white")
    draw = ImageDraw.Draw(image)
    for px, py in zip(unit[:, 0] * SCATTER_SIZE, (1 - unit[:, 1]) * SCATTER_SIZE, strict=True):
        draw.ellipse((px - 1.5, py - 1.5, px + 1.5, py + 1.5), fill=(31, 119, 180))
    return _png(image)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
