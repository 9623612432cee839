"""Pictures of data (numpy + Pillow, no torch): image grids and 2-D scatter plots as PNG bytes.

The worker draws sample snapshots with them, the API data set previews.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw

SCATTER_SIZE = 512
BACKGROUND_POINTS = 2500
GENERATED = (31, 119, 180)
REAL = (190, 190, 190)


def image_grid(images: np.ndarray, min_cell: int = 32, pad: int = 2) -> bytes:
    """PNG of N×C×H×W images in [-1, 1], in a near-square grid; small images are enlarged."""
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
        tile = pixels[i, :3].transpose(1, 2, 0).repeat(scale, axis=0).repeat(scale, axis=1)
        top, left = pad + (i // columns) * (cell_h + pad), pad + (i % columns) * (cell_w + pad)
        canvas[top : top + cell_h, left : left + cell_w] = tile
    return png(Image.fromarray(canvas))


def _plane(rows: np.ndarray) -> np.ndarray:
    """The first two dimensions of N×D rows (a zero second axis for 1-D rows), finite rows only."""
    rows = rows.reshape(len(rows), -1)
    points = rows[:, :2] if rows.shape[1] >= 2 else np.stack([rows[:, 0], np.zeros(len(rows))], axis=1)
    finite: np.ndarray = points[np.isfinite(points).all(axis=1)]
    return finite


def scatter(points: np.ndarray, background: np.ndarray | None = None) -> bytes:
    """PNG of points (blue), over `background` points (grey, e.g. the real data) on the same axes."""
    front = _plane(points)
    back = _plane(background[:BACKGROUND_POINTS]) if background is not None else front[:0]
    both = np.concatenate([back, front])
    if len(both) == 0:
        both = np.zeros((1, 2))
    # Robust bounds for the generated points (outliers), exact bounds for the background.
    low, high = np.percentile(both, 0.5, axis=0), np.percentile(both, 99.5, axis=0)
    if len(back):
        low, high = np.minimum(low, back.min(axis=0)), np.maximum(high, back.max(axis=0))
    span = max(float((high - low).max()), 1e-6) * 1.1
    centre = (low + high) / 2
    image = Image.new("RGB", (SCATTER_SIZE, SCATTER_SIZE), "white")
    draw = ImageDraw.Draw(image)
    for layer, colour in ((back, REAL), (front, GENERATED)):
        unit = (layer - centre) / span + 0.5
        for px, py in zip(unit[:, 0] * SCATTER_SIZE, (1 - unit[:, 1]) * SCATTER_SIZE, strict=True):
            draw.ellipse((px - 1.5, py - 1.5, px + 1.5, py + 1.5), fill=colour)
    return png(image)


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
