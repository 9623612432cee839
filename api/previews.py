"""A data set's preview picture: a grid of real images, or a scatter of the first two dimensions of rows."""

from __future__ import annotations

import numpy as np

from models.pictures import image_grid, scatter

GRID_IMAGES = 64
SCATTER_POINTS = 2500


def preview_png(x: np.ndarray, kind: str) -> bytes:
    """PNG of examples spread evenly over the data set (so every class folder shows up)."""
    count = GRID_IMAGES if kind == "images" else SCATTER_POINTS
    index = np.unique(np.linspace(0, len(x) - 1, min(count, len(x))).round().astype(np.int64))
    examples = np.asarray(x[index], np.float32)
    return image_grid(examples) if kind == "images" else scatter(examples)
