"""Sample snapshots as pictures: an image grid, or a scatter plot over the real data for points."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw

SCATTER_SIZE = 512
REAL_POINTS = 2500


def image_grid(images: np.ndarray, min_cell: int = 32) -> bytes:
    """PNG of N×C×H×W images in [-1, 1], in a near-square grid; small images are enlarged."""
    n, channels, height, width = images.shape
    columns = math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    scale = max(1, math.ceil(min_cell / max(height, width)))
    pad = 2
    pixels = ((np.clip(images, -1, 1) + 1) * 127.5).round().astype(np.uint8)
    if channels == 1:
        pixels = np.repeat(pixels, 3, axis=1)
    cell_h, cell_w = height * scale, width * scale
    canvas = np.full((rows * (cell_h + pad) + pad, columns * (cell_w + pad) + pad, 3), 255, np.uint8)
    for i in range(n):
        tile = pixels[i, :3].transpose(1, 2, 0).repeat(scale, axis=0).repeat(scale, axis=1)
        top, left = pad + (i // columns) * (cell_h + pad), pad + (i % columns) * (cell_w + pad)
        canvas[top : top + cell_h, left : left + cell_w] = tile
    return _png(Image.fromarray(canvas))


def scatter(points: np.ndarray, real: np.ndarray) -> bytes:
    """PNG of generated points (blue) over real points (grey), first two dimensions, same axes."""
    real = real[:REAL_POINTS, :2]
    points = points[:, :2]
    both = np.concatenate([real, points[np.isfinite(points).all(axis=1)]])
    low, high = np.percentile(both, 0.5, axis=0), np.percentile(both, 99.5, axis=0)
    low_r, high_r = real.min(axis=0), real.max(axis=0)
    low, high = np.minimum(low, low_r), np.maximum(high, high_r)
    span = max(float((high - low).max()), 1e-6) * 1.1
    centre = (low + high) / 2
    image = Image.new("RGB", (SCATTER_SIZE, SCATTER_SIZE), "white")
    draw = ImageDraw.Draw(image)

    def to_pixels(values: np.ndarray) -> np.ndarray:
        unit = (values - centre) / span + 0.5
        return np.stack([unit[:, 0] * SCATTER_SIZE, (1 - unit[:, 1]) * SCATTER_SIZE], axis=1)

    for px, py in to_pixels(real):
        draw.ellipse((px - 1.5, py - 1.5, px + 1.5, py + 1.5), fill=(190, 190, 190))
    for px, py in to_pixels(points[np.isfinite(points).all(axis=1)]):
        draw.ellipse((px - 1.5, py - 1.5, px + 1.5, py + 1.5), fill=(31, 119, 180))
    return _png(image)


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
