"""An uploaded data set as tensors, loaded once per job from its canonical stored form.

The stored form is described, written and read in one place,
models/ingest/canonical.py (read_canonical decodes nothing and memory-maps a
large local array). Here it becomes tensors, resampled on the training machine
when the spec asks for another image size.
"""

from __future__ import annotations

import logging
import secrets

import torch
import torch.nn.functional as F

from models.artifacts import ArtifactStore
from models.datasets import DatasetInfo
from models.ingest import CanonicalMismatch, read_canonical
from models.spec import DatasetRef
from models.store import JobStore
from worker.gan import LoadedData

log = logging.getLogger(__name__)

RESIZE_CHUNK = 1024


class DatasetUnavailable(Exception):
    """The data set a job names is gone, or its stored files are missing, damaged or do not match its record; the
    message is for users (it names the data set's id, never a path)."""


def load_uploaded(ref: DatasetRef, *, store: JobStore, artifacts: ArtifactStore) -> LoadedData:
    """The data set `ref.id` as float32 x (images in [-1, 1], resampled to `ref.resize` when given) and int64 y.

    Raises DatasetUnavailable.
    """
    record = store.get_dataset(dataset_id=ref.id or "")
    if record is None:
        raise DatasetUnavailable(f"data set {ref.id!r} no longer exists")
    info = DatasetInfo.model_validate(record.info)
    try:
        x, y = read_canonical(artifacts, record.data_key, info)
    except CanonicalMismatch as exc:  # dtypes and shapes only: no path in it
        raise DatasetUnavailable(f"data set {ref.id!r}: {exc}") from None
    except FileNotFoundError:  # ArtifactMissing, or a local file gone under a memory-map's size check
        raise DatasetUnavailable(f"data set {ref.id!r}: the data set's stored file is missing (deleted?)") from None
    except (OSError, ValueError, EOFError):
        # The reader's message names the file's path: the log gets it, the user a reference to it.
        ref_id = secrets.token_hex(3)
        log.exception("data set %s does not read (ref %s)", ref.id, ref_id)
        raise DatasetUnavailable(
            f"data set {ref.id!r}: the data set's stored file does not read (damaged?; ref {ref_id})"
        ) from None
    tensor = torch.from_numpy(x)
    if info.kind == "images" and ref.resize is not None and info.shape[1:] != (ref.resize, ref.resize):
        tensor = resize_images(tensor, ref.resize)
        info = info.model_copy(update={"shape": tuple(tensor.shape[1:])})
    return LoadedData(tensor, torch.from_numpy(y) if y is not None else None, info)


def resize_images(x: torch.Tensor, side: int) -> torch.Tensor:
    """N×C×H×W to N×C×side×side: antialiased bilinear, as Pillow's resize at upload; in chunks to bound memory."""
    out = torch.empty((len(x), x.shape[1], side, side), dtype=torch.float32)
    for start in range(0, len(x), RESIZE_CHUNK):
        chunk = x[start : start + RESIZE_CHUNK]
        resized = F.interpolate(chunk, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
        out[start : start + len(chunk)] = resized.clamp_(-1.0, 1.0)
    return out
