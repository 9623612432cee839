"""An uploaded data set as tensors, loaded once per job from its canonical stored form.

The API wrote the canonical form (api/normalise.py): `x.npy` float32, rows as
uploaded or N×C×H×W images in [-1, 1], and `y.npy` int64 labels when labelled.
So loading decodes nothing: on a local artifact store a large `x.npy` is
memory-mapped (copy-on-write: nothing is read until a batch touches it, and jobs
on one machine share the page cache); otherwise it is read into memory once.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

from models.artifacts import ArtifactStore
from models.datasets import DatasetInfo
from models.spec import DatasetRef
from models.store import JobStore
from worker.gan import LoadedData

MMAP_BYTES = 256 * 1024**2
RESIZE_CHUNK = 1024


class DatasetUnavailable(Exception):
    """The data set a job names is gone or its stored files do not match its record."""


def load_uploaded(ref: DatasetRef, *, store: JobStore, artifacts: ArtifactStore) -> LoadedData:
    """The data set `ref.id` as float32 x (images in [-1, 1], resampled to `ref.resize` when given) and int64 y."""
    record = store.get_dataset(dataset_id=ref.id or "")
    if record is None:
        raise DatasetUnavailable(f"data set {ref.id!r} no longer exists")
    info = DatasetInfo.model_validate(record.info)
    x = read_array(artifacts, f"{record.data_key}/x.npy")
    y = read_array(artifacts, f"{record.data_key}/y.npy") if info.num_classes else None
    if x.dtype != np.float32 or x.shape != (info.size, *info.shape):
        raise DatasetUnavailable(f"data set {ref.id!r}: stored x is {x.dtype} {x.shape}, its record says otherwise")
    if y is not None and (y.dtype != np.int64 or y.shape != (info.size,)):
        raise DatasetUnavailable(f"data set {ref.id!r}: stored labels do not match its record")
    tensor = torch.from_numpy(x)
    if info.kind == "images" and ref.resize is not None and info.shape[1:] != (ref.resize, ref.resize):
        tensor = resize_images(tensor, ref.resize)
        info = info.model_copy(update={"shape": tuple(tensor.shape[1:])})
    return LoadedData(tensor, torch.from_numpy(y) if y is not None else None, info)


def read_array(artifacts: ArtifactStore, key: str) -> np.ndarray:
    """A canonical .npy: memory-mapped when local and large, else read whole (never unpickled)."""
    path = artifacts.local_path(key)
    if path is not None:
        # "c" (copy-on-write) gives a writable array, which torch.from_numpy wants, without touching the file.
        if os.path.getsize(path) >= MMAP_BYTES:
            return np.load(path, mmap_mode="c", allow_pickle=False)  # type: ignore[no-any-return]
        return np.load(path, allow_pickle=False)  # type: ignore[no-any-return]
    with artifacts.open(key) as handle:
        return np.lib.format.read_array(handle, allow_pickle=False)  # type: ignore[no-any-return]


def resize_images(x: torch.Tensor, side: int) -> torch.Tensor:
    """N×C×H×W to N×C×side×side: antialiased bilinear, as Pillow's resize at upload; in chunks to bound memory."""
    out = torch.empty((len(x), x.shape[1], side, side), dtype=torch.float32)
    for start in range(0, len(x), RESIZE_CHUNK):
        chunk = x[start : start + RESIZE_CHUNK]
        resized = F.interpolate(chunk, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
        out[start : start + len(chunk)] = resized.clamp_(-1.0, 1.0)
    return out
