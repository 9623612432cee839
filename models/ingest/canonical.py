"""The canonical stored form of an uploaded data set: written once here, read once here.

A data set is a folder (`datasets/<id>/` in the artifact store) holding

- `x.npy`: float32, C order, shape (N, *info.shape): either N×D rows exactly as
  uploaded (cast to float32), or N×C×H×W images (C = 1 or 3) with values in
  [-1, 1]; how the source values were mapped is recorded in the data set's
  DatasetInfo (`source_dtype`, `source_range`, `alpha`, `warnings`);
- `y.npy`: int64, shape (N,), labels 0..K-1, only when `info.num_classes` > 0
  (the names, in label order, are `info.class_names`: class folder names or
  the uploaded label values, sorted);
- `preview.png`: a grid of examples (images) or a scatter plot of the first two
  dimensions (rows).

Both arrays are plain .npy (format 1.0, never a pickle). The content hash is
SHA-256 over JSON `{kind, shape, classes}` and then the bytes of `x.npy` and
`y.npy`, so the same data uploaded twice (even zipped differently) is the same
data set.

`CanonicalWriter` writes the form sequentially, chunk by chunk: an upload is
never held whole in memory and nothing is memory-mapped, so the address-space
limit of the ingest subprocess holds whatever the data set's size.
`read_canonical` is the one reader (the worker loads a job's data with it);
`read_examples` reads a few rows (previews).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from models.artifacts import ArtifactStore
from models.datasets import DatasetInfo
from models.ingest.limits import CHUNK_BYTES, Limits, check_size

X_FILE, Y_FILE, PREVIEW_FILE = "x.npy", "y.npy", "preview.png"
MMAP_BYTES = 256 * 1024**2  # the worker memory-maps a local x.npy this large instead of reading it


class CanonicalMismatch(Exception):
    """Stored files that do not match their data set's record (a damaged or foreign folder)."""


@dataclass(frozen=True)
class Canonical:
    """A normalised data set in `directory`, ready to be moved into the artifact store."""

    directory: Path
    format: str
    info: DatasetInfo
    content_hash: str

    @property
    def files(self) -> list[str]:
        """The canonical files, preview included."""
        return [X_FILE, Y_FILE, PREVIEW_FILE] if self.info.num_classes else [X_FILE, PREVIEW_FILE]

    @property
    def size_bytes(self) -> int:
        """Bytes of the arrays (the preview not counted)."""
        return sum((self.directory / name).stat().st_size for name in self.files if name != PREVIEW_FILE)

    def to_json(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "format": self.format,
            "info": self.info.model_dump(mode="json"),
            "content_hash": self.content_hash,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Canonical:
        return cls(
            directory=Path(data["directory"]),
            format=data["format"],
            info=DatasetInfo.model_validate(data["info"]),
            content_hash=data["content_hash"],
        )


def _header(handle: BinaryIO, descr: str, shape: tuple[int, ...]) -> None:
    np.lib.format.write_array_header_1_0(handle, {"descr": descr, "fortran_order": False, "shape": shape})


class CanonicalWriter:
    """Writes `x.npy` (and `y.npy`) of one data set in order, chunk by chunk.

    `shape` is (N, *example); the float32 size is checked against the limits
    (413 on `field`) before the file is created. `append` takes float32-castable
    chunks of whole examples; `finish` checks that exactly N were written.
    """

    def __init__(self, directory: Path, shape: tuple[int, ...], limits: Limits, field: str = "file") -> None:
        check_size(shape, limits, field)
        self.directory, self.shape, self.written = directory, shape, 0
        self._labels = False
        self._handle: BinaryIO = open(directory / X_FILE, "wb")  # noqa: SIM115 - closed by finish()
        _header(self._handle, "<f4", shape)

    def append(self, rows: np.ndarray) -> None:
        """Write the next examples (k × example shape)."""
        if rows.shape[1:] != self.shape[1:] or self.written + len(rows) > self.shape[0]:
            raise ValueError(f"chunk {rows.shape} does not continue an array of shape {self.shape}")
        self._handle.write(np.ascontiguousarray(rows, dtype="<f4").data)
        self.written += len(rows)

    def write_labels(self, chunks: Iterable[np.ndarray]) -> None:
        """Write `y.npy`: int64 labels 0..K-1, one per example, from chunks in order."""
        count = 0
        with open(self.directory / Y_FILE, "wb") as handle:
            _header(handle, "<i8", (self.shape[0],))
            for chunk in chunks:
                handle.write(np.ascontiguousarray(chunk, dtype="<i8").data)
                count += len(chunk)
        if count != self.shape[0]:
            raise ValueError(f"{count} labels written for {self.shape[0]} examples")
        self._labels = True

    def finish(self, fmt: str, info: DatasetInfo) -> Canonical:
        """Close the arrays and hash them; `info` must describe what was written."""
        self._handle.close()
        if self.written != self.shape[0] or (self.shape[1:] != info.shape) or (info.size != self.shape[0]):
            raise ValueError(f"{self.written} of {self.shape} written; the description says {info.shape}")
        if self._labels != bool(info.num_classes):
            raise ValueError("labels written for a data set without classes, or missing")
        return Canonical(self.directory, fmt, info, content_hash(self.directory, info))

    def abandon(self) -> None:
        """Close without finishing (the folder is discarded by its owner)."""
        self._handle.close()


def content_hash(directory: Path, info: DatasetInfo) -> str:
    """SHA-256 of the description's kind, shape and class names and of the canonical arrays' bytes."""
    digest = hashlib.sha256(json.dumps({"kind": info.kind, "shape": info.shape, "classes": info.class_names}).encode())
    for name in (X_FILE, Y_FILE) if info.num_classes else (X_FILE,):
        with open(directory / name, "rb") as handle:
            while chunk := handle.read(CHUNK_BYTES):
                digest.update(chunk)
    return digest.hexdigest()


def read_canonical(artifacts: ArtifactStore, data_key: str, info: DatasetInfo) -> tuple[np.ndarray, np.ndarray | None]:
    """x (float32, N×shape) and y (int64 N, or None) of a stored data set, checked against its description.

    On a local artifact store a large `x.npy` is memory-mapped copy-on-write
    (nothing is read until a batch touches it; jobs on one machine share the
    page cache); otherwise it is read into memory once. Raises CanonicalMismatch
    when the stored arrays are not what `info` describes.
    """
    x = read_array(artifacts, f"{data_key}/{X_FILE}")
    if x.dtype != np.float32 or x.shape != (info.size, *info.shape):
        raise CanonicalMismatch(f"stored x is {x.dtype} {x.shape}, its record says float32 {(info.size, *info.shape)}")
    if not info.num_classes:
        return x, None
    y = read_array(artifacts, f"{data_key}/{Y_FILE}")
    if y.dtype != np.int64 or y.shape != (info.size,):
        raise CanonicalMismatch(f"stored labels are {y.dtype} {y.shape}, its record says int64 ({info.size},)")
    return x, y


def read_array(artifacts: ArtifactStore, key: str) -> np.ndarray:
    """One canonical .npy: memory-mapped when local and large, else read whole (never unpickled)."""
    path = artifacts.local_path(key)
    if path is not None:
        # "c" (copy-on-write) gives a writable array, which torch.from_numpy wants, without touching the file.
        if os.path.getsize(path) >= MMAP_BYTES:
            return np.load(path, mmap_mode="c", allow_pickle=False)  # type: ignore[no-any-return]
        return np.load(path, allow_pickle=False)  # type: ignore[no-any-return]
    with artifacts.open(key) as handle:
        return np.lib.format.read_array(handle, allow_pickle=False)


def read_examples(directory: Path, index: np.ndarray) -> np.ndarray:
    """The examples `index` (sorted) of a canonical `x.npy` in `directory`, read row by row (no memory map)."""
    with open(directory / X_FILE, "rb") as handle:
        np.lib.format.read_magic(handle)
        shape, _fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        offset = handle.tell()
        row = int(np.prod(shape[1:], dtype=np.int64))
        out = np.empty((len(index), *shape[1:]), np.float32)
        for i, example in enumerate(index):
            handle.seek(offset + int(example) * row * dtype.itemsize)
            out[i] = np.frombuffer(handle.read(row * dtype.itemsize), dtype=dtype).reshape(shape[1:])
    return out
