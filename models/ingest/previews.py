"""A data set's preview picture (a grid of real images, or a scatter of the first two dimensions of rows),
and the one resampling rule of ingestion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from models.datasets import DatasetInfo
from models.ingest.canonical import PREVIEW_FILE, Y_FILE, read_examples
from models.pictures import image_grid, scatter

GRID_IMAGES = 64
SCATTER_POINTS = 2500


def write_preview(directory: Path, info: DatasetInfo) -> None:
    """`preview.png` next to the canonical `x.npy`: examples spread evenly (so every class folder shows up);
    images of a labelled data set are captioned with their class names."""
    count = GRID_IMAGES if info.kind == "images" else SCATTER_POINTS
    index = np.unique(np.linspace(0, info.size - 1, min(count, info.size)).round().astype(np.int64))
    examples = read_examples(directory, index)
    title = f"{info.size:,} examples" + (f", {info.num_classes} classes" if info.num_classes else "")
    if info.kind == "images":
        labels = None
        if info.num_classes:
            labels = [int(label) for label in np.load(directory / Y_FILE, mmap_mode="r")[index]]
        picture = image_grid(examples, title=title, labels=labels, class_names=info.class_names)
    else:
        picture = scatter(examples, title=f"{title} (first two dimensions)")
    (directory / PREVIEW_FILE).write_bytes(picture)


def resample(image: Image.Image, side: int) -> Image.Image:
    """The picture as side×side px."""
    # Antialiased bilinear, as torch's interpolate(antialias=True) in the worker: same result either way.
    return image if image.size == (side, side) else image.resize((side, side), Image.Resampling.BILINEAR)
