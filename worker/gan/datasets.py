"""The built-in data sets: ring8, grid25 and spiral points, and scikit-learn's digits.

Points are a fixed 100,000 drawn from a fixed seed, so every job sees the same
data; images are N×C×H×W float32 in [-1, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from models.datasets import BUILTIN_DATASETS, DatasetInfo

POINTS = 100_000
DATA_SEED = 20180101  # fixed: the data set is part of the benchmark, not of a job's seed

RING_STD = 0.01
GRID_STD = 0.05


@dataclass
class LoadedData:
    x: torch.Tensor  # float32, N×D or N×C×H×W (images in [-1, 1])
    y: torch.Tensor | None  # int64 labels or None
    info: DatasetInfo  # shape after resize


def ring8_centers() -> np.ndarray:
    """The 8 modes at (cos 2πi/8, sin 2πi/8)."""
    angles = 2 * math.pi * np.arange(8) / 8
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def grid25_centers() -> np.ndarray:
    """The 25 modes at {−4, −2, 0, 2, 4}², row-major."""
    values = np.array([-4.0, -2.0, 0.0, 2.0, 4.0])
    return np.stack(np.meshgrid(values, values, indexing="ij"), axis=-1).reshape(-1, 2)


MIXTURES: dict[str, tuple[np.ndarray, float]] = {
    "ring8": (ring8_centers(), RING_STD),
    "grid25": (grid25_centers(), GRID_STD),
}


def _mixture(name: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    centers, std = MIXTURES[name]
    labels = rng.integers(len(centers), size=POINTS)
    points = centers[labels] + std * rng.standard_normal((POINTS, 2))
    return points.astype(np.float32), labels.astype(np.int64)


def _spiral(rng: np.random.Generator) -> np.ndarray:
    """The Swiss roll's cross-section (t cos t, t sin t), t ∈ 1.5π[1, 3], scaled to about [−3, 3]."""
    t = 1.5 * math.pi * (1 + 2 * rng.random(POINTS))
    points = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / 5 + 0.05 * rng.standard_normal((POINTS, 2))
    return points.astype(np.float32)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0 * 2 - 1  # 0..16 -> [-1, 1]
    return images[:, None], digits.target.astype(np.int64)


def resize_images(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resample of N×C×H×W images to size×size (values stay in [−1, 1])."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(-1, 1)


def load_builtin(name: str, resize: int | None = None) -> LoadedData:
    """Load a built-in data set; `resize` resamples image data sets to resize×resize px."""
    if name not in BUILTIN_DATASETS:
        raise ValueError(f"unknown built-in data set {name!r}; known: {sorted(BUILTIN_DATASETS)}")
    info = BUILTIN_DATASETS[name]
    if info.kind == "points" and resize is not None:
        raise ValueError("resize applies to image data sets only")
    rng = np.random.default_rng(DATA_SEED)
    y: np.ndarray | None
    if name in MIXTURES:
        x, y = _mixture(name, rng)
    elif name == "spiral":
        x, y = _spiral(rng), None
    else:
        x, y = _digits()
    tensor = torch.from_numpy(x)
    if info.kind == "images" and resize is not None:
        tensor = resize_images(tensor, resize)
        info = info.model_copy(update={"shape": tuple(tensor.shape[1:])})
    return LoadedData(x=tensor.contiguous(), y=torch.from_numpy(y) if y is not None else None, info=info)
