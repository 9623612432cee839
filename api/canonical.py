"""The one canonical stored form of an uploaded data set, which workers read.

In a folder: `x.npy`, float32, either N×D rows exactly as uploaded or N×C×H×W
images (C = 1 or 3) scaled to [-1, 1]; `y.npy`, int64 labels 0..K-1, when the
data set is labelled (class names are in its DatasetInfo). The readers
(api/npz.py, api/image_folders.py) write `x.npy` in chunks through a memory
map, so an upload is never held whole in memory. The content hash covers the
canonical bytes and the class names, so the same data uploaded twice (even
zipped differently) is the same data set.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from api.archives import Limits, invalid, too_large
from models.datasets import DatasetInfo

CHUNK_BYTES = 16 * 1024**2
MIN_SIDE, MAX_SIDE = 4, 4096


@dataclass(frozen=True)
class Canonical:
    """A normalised data set in `directory`, ready to be moved into the artifact store."""

    directory: Path
    format: str
    info: DatasetInfo
    content_hash: str

    @property
    def files(self) -> list[str]:
        return ["x.npy", "y.npy"] if self.info.num_classes else ["x.npy"]

    @property
    def size_bytes(self) -> int:
        return sum((self.directory / name).stat().st_size for name in self.files)


def check_size(shape: tuple[int, ...], limits: Limits, field: str = "file") -> None:
    """Refuse (413) a canonical float32 array of this shape over GANFORGE_MAX_DATASET_BYTES."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * 4
    if nbytes > limits.dataset_bytes:
        message = f"normalised to float32 this data set is {nbytes} bytes; at most {limits.dataset_bytes}"
        raise too_large(field, message)


def new_x(directory: Path, shape: tuple[int, ...], limits: Limits) -> np.memmap:
    """The canonical float32 array on disk, after checking it fits the limit."""
    check_size(shape, limits)
    return np.lib.format.open_memmap(directory / "x.npy", mode="w+", dtype=np.float32, shape=shape)


def finish(directory: Path, fmt: str, info: DatasetInfo, y: np.ndarray | None) -> Canonical:
    """Write the labels, hash the canonical bytes, and describe the result."""
    files = ["x.npy"]
    if y is not None:
        np.save(directory / "y.npy", y.astype(np.int64), allow_pickle=False)
        files.append("y.npy")
    digest = hashlib.sha256(json.dumps({"kind": info.kind, "shape": info.shape, "classes": info.class_names}).encode())
    for name in files:
        with open(directory / name, "rb") as handle:
            while chunk := handle.read(CHUNK_BYTES):
                digest.update(chunk)
    return Canonical(directory=directory, format=fmt, info=info, content_hash=digest.hexdigest())


def labels_of(values: np.ndarray, limits: Limits, field: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Labels as indices 0..K-1 and the class names (the original values, sorted)."""
    classes, index = np.unique(values, return_inverse=True)
    if len(classes) > limits.classes:
        raise invalid(field, f"{len(classes)} distinct labels; at most {limits.classes} classes are supported")
    return index.reshape(-1), tuple(str(c) for c in classes)


def with_classes(info: DatasetInfo, class_names: tuple[str, ...]) -> DatasetInfo:
    return info.model_copy(update={"num_classes": len(class_names), "class_names": class_names})


def resample(image: Image.Image, side: int) -> Image.Image:
    # Antialiased bilinear, as torch's interpolate(antialias=True) in the worker: same result either way.
    return image if image.size == (side, side) else image.resize((side, side), Image.Resampling.BILINEAR)
