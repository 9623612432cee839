"""The arrays of an uploaded .npz, read in bounded memory whatever their order, dtype or size.

Every member's .npy header is read and checked first (nothing is unpickled:
a plain numeric or boolean dtype, a size that matches the data); then an array
streams as C-order row chunks of at most CHUNK_BYTES. A Fortran-ordered array
(column-major, as `x.T` or a pandas `.values` can be) is first unpacked to a
scratch file and transposed there tile by tile, so it too is read in bounded
memory; its rows then stream like any other array's.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from models.ingest.errors import invalid
from models.ingest.limits import CHUNK_BYTES

_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
SUPPORTED_KINDS = "biuf"  # bool, signed and unsigned integers, floating point


@dataclass(frozen=True)
class NpyMember:
    """One array of an .npz as its header describes it (nothing read yet)."""

    name: str
    entry: zipfile.ZipInfo
    shape: tuple[int, ...]
    fortran: bool
    dtype: np.dtype
    offset: int

    @property
    def field(self) -> str:
        return f"file.{self.name}"

    @property
    def row_elements(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64))

    @property
    def column_major(self) -> bool:
        """Whether the bytes are in another order than C's (Fortran order with two or more dimensions over 1)."""
        return self.fortran and sum(side > 1 for side in self.shape) >= 2


def npy_members(archive: zipfile.ZipFile) -> dict[str, NpyMember]:
    """Every member's header by array name, refusing (422) anything that is not a plain numeric array."""
    members = {}
    for entry in archive.infolist():
        name = entry.filename
        if not name.endswith(".npy") or entry.is_dir():
            raise invalid("file", f"{name!r}: a .npz may hold only .npy arrays (no pickles or other files)")
        array = name[: -len(".npy")]
        field = f"file.{array}"
        try:
            with archive.open(entry) as handle:
                shape, fortran, dtype = _read_header(handle, field)
                offset = handle.tell()
        except (ValueError, EOFError, zipfile.BadZipFile, OSError) as exc:
            raise invalid(field, f"not a valid .npy array ({exc})") from None
        if dtype.hasobject:
            raise invalid(field, "holds Python objects (pickled data), which are refused: save plain numeric arrays")
        if dtype.kind not in SUPPORTED_KINDS or dtype.subdtype is not None or dtype.names is not None:
            raise invalid(field, f"dtype {dtype} is not supported: use booleans, integers or floating-point numbers")
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if offset + expected != entry.file_size:
            held = entry.file_size - offset
            raise invalid(field, f"the header says shape {shape} ({expected} bytes) but the array holds {held} bytes")
        members[array] = NpyMember(array, entry, tuple(int(d) for d in shape), bool(fortran), dtype, offset)
    return members


def _read_header(handle: IO[bytes], field: str) -> tuple[Any, bool, Any]:
    version = np.lib.format.read_magic(handle)
    if version not in _HEADERS:
        raise invalid(field, f"unsupported .npy format version {version}")
    return _HEADERS[version](handle)


class RowSource:
    """C-order row chunks of one member, as many passes as asked; `scratch` holds a transposed copy if needed."""

    def __init__(self, archive: zipfile.ZipFile, member: NpyMember, scratch: Path) -> None:
        self.archive, self.member, self.scratch = archive, member, scratch
        self._rows_file: Path | None = None

    def chunks(self, rows_per_chunk: int) -> Iterator[np.ndarray]:
        """Chunks of at most `rows_per_chunk` rows (k × shape[1:], the member's dtype), in order.

        Raises IngestError (422) when the data is damaged or truncated.
        """
        member = self.member
        count, row_bytes = member.shape[0], member.row_elements * member.dtype.itemsize
        try:
            with self._open() as handle:
                for start in range(0, count, rows_per_chunk):
                    rows = min(rows_per_chunk, count - start)
                    chunk = np.frombuffer(_read_exact(handle, rows * row_bytes), dtype=member.dtype)
                    yield self._arrange(chunk, rows)
        except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
            raise invalid(member.field, f"the array data is damaged or truncated ({exc})") from None

    def _open(self) -> IO[bytes]:
        if not self.member.column_major:
            handle = self.archive.open(self.member.entry)
            _read_exact(handle, self.member.offset)  # skip the header
            return handle
        if self._rows_file is None:
            self._rows_file = self._transpose()
        return open(self._rows_file, "rb")

    def _arrange(self, chunk: np.ndarray, rows: int) -> np.ndarray:
        rest = self.member.shape[1:]
        if not self.member.column_major:
            return chunk.reshape(rows, *rest)
        # Each transposed row holds its example in Fortran order: reverse the axes back.
        reversed_rows = chunk.reshape(rows, *rest[::-1])
        return np.ascontiguousarray(reversed_rows.transpose(0, *range(len(rest), 0, -1)))

    def _transpose(self) -> Path:
        """Unpack the column-major data to scratch, then write it row-major tile by tile; the row-major file."""
        member = self.member
        count, width, size = member.shape[0], member.row_elements, member.dtype.itemsize
        self.scratch.mkdir(parents=True, exist_ok=True)
        columns, rows = self.scratch / f"{member.name}.columns", self.scratch / f"{member.name}.rows"
        with self.archive.open(member.entry) as source, open(columns, "wb") as target:
            _read_exact(source, member.offset)
            left = count * width * size
            while left:
                block = _read_exact(source, min(left, CHUNK_BYTES))
                target.write(block)
                left -= len(block)
        source_fd = os.open(columns, os.O_RDONLY)
        target_fd = os.open(rows, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _transpose_tiles(source_fd, target_fd, width, count, member.dtype)
        finally:
            os.close(source_fd)
            os.close(target_fd)
            columns.unlink()
        return rows


def _transpose_tiles(source: int, target: int, height: int, width: int, dtype: np.dtype) -> None:
    """Write the transpose of the C-order height×width matrix in file `source` to `target`, a tile at a time."""
    size = dtype.itemsize
    budget = max(1, CHUNK_BYTES // size)
    side = math.isqrt(budget)
    # Whole rows or whole columns when one side is short, so each tile is one read or one write.
    if height <= side:
        tile_h, tile_w = height, max(1, budget // height)
    elif width <= side:
        tile_h, tile_w = max(1, budget // width), width
    else:
        tile_h = tile_w = side
    for top in range(0, height, tile_h):
        bottom = min(height, top + tile_h)
        for left in range(0, width, tile_w):
            right = min(width, left + tile_w)
            if right - left == width:
                data = _pread(source, (bottom - top) * width * size, top * width * size)
                tile = np.frombuffer(data, dtype).reshape(bottom - top, width)
            else:
                tile = np.empty((bottom - top, right - left), dtype)
                for i in range(top, bottom):
                    data = _pread(source, (right - left) * size, (i * width + left) * size)
                    tile[i - top] = np.frombuffer(data, dtype)
            flipped = np.ascontiguousarray(tile.T)
            if bottom - top == height:
                _pwrite(target, flipped.tobytes(), left * height * size)
            else:
                for j in range(right - left):
                    _pwrite(target, flipped[j].tobytes(), ((left + j) * height + top) * size)


def _pread(fd: int, size: int, offset: int) -> bytes:
    parts, done = [], 0
    while done < size:
        part = os.pread(fd, size - done, offset + done)
        if not part:
            raise EOFError(f"{size - done} bytes missing")
        parts.append(part)
        done += len(part)
    return b"".join(parts)


def _pwrite(fd: int, data: bytes, offset: int) -> None:
    view, done = memoryview(data), 0
    while done < len(data):
        done += os.pwrite(fd, view[done:], offset + done)


def _read_exact(handle: IO[bytes], size: int) -> bytes:
    parts, left = [], size
    while left:
        part = handle.read(min(left, CHUNK_BYTES))
        if not part:
            raise EOFError(f"{left} bytes missing")
        parts.append(part)
        left -= len(part)
    return b"".join(parts)
