"""An uploaded .npz into the canonical form (api/canonical.py).

`x` is N×D rows (kept as they are) or N×H×W, N×C×H×W or N×H×W×C images (C = 1
or 3, scaled to [-1, 1] from [0, 255], [0, 1] or [-1, 1]); `y`, optional, holds
integer labels. Nothing is unpickled: every member's .npy header is read and
checked first (numeric dtype, sizes that match), then `x` streams through in
chunks, refusing NaN and infinities.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image

from api.archives import Limits, invalid, open_archive
from api.canonical import (
    CHUNK_BYTES,
    MAX_SIDE,
    MIN_SIDE,
    Canonical,
    check_size,
    finish,
    labels_of,
    new_x,
    resample,
    with_classes,
)
from models.datasets import DatasetInfo

_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


@dataclass(frozen=True)
class NpyMember:
    """One array of an .npz, as its header describes it (nothing read yet)."""

    entry: zipfile.ZipInfo
    shape: tuple[int, ...]
    fortran: bool
    dtype: Any

    @property
    def rows_per_chunk(self) -> int:
        return max(1, CHUNK_BYTES // max(1, int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize))


def normalise_npz(path: Path, directory: Path, limits: Limits, resize: int | None) -> Canonical:
    """An .npz with `x` (N×D rows, N×H×W or N×C×H×W / N×H×W×C images) and optional integer `y`."""
    with open_archive(path, limits) as archive:
        members = {member.entry.filename[: -len(".npy")]: member for member in _npy_members(archive)}
        if "x" not in members:
            found = ", ".join(sorted(members)) or "none"
            raise invalid("file.x", f"the .npz has no array named 'x' (it has: {found})")
        source = members["x"]
        layout = _layout(source.shape)
        if layout == "rows" and resize is not None:
            raise invalid("resize", "resize applies to image data sets only; x holds N×D rows")
        count, example = source.shape[0], _example_shape(source.shape, layout)
        x = new_x(directory, (count, *example), limits)
        low, high = _copy_rows(archive, source, layout, x)
        y, class_names = _labels(archive, members["y"], count, limits) if "y" in members else (None, ())
    if layout == "rows":
        x.flush()
        del x
        description = f"uploaded .npz: {count} rows of dimension {example[0]}"
        info = DatasetInfo(kind="points", shape=example, size=count, description=description)
        return finish(directory, "npz", with_classes(info, class_names), y)
    scale, offset, value_range = _image_scale(source.dtype, low, high)
    step = source.rows_per_chunk
    for start in range(0, count, step):
        x[start : start + step] = np.clip(x[start : start + step] * scale + offset, -1.0, 1.0)
    x.flush()
    if resize is not None and example[1:] != (resize, resize):
        x = _resize_images(x, directory, resize, limits)
    shape = tuple(int(d) for d in x.shape[1:])
    del x
    description = f"uploaded .npz: {count} images {'×'.join(map(str, shape))} from {source.dtype} in {value_range}"
    if resize is not None:
        description += f", resampled to {resize}×{resize} px"
    info = DatasetInfo(kind="images", shape=shape, size=count, description=description)
    return finish(directory, "npz", with_classes(info, class_names), y)


def _npy_members(archive: zipfile.ZipFile) -> Iterator[NpyMember]:
    """Every member's .npy header, refusing anything that is not a plain numeric array."""
    for entry in archive.infolist():
        name = entry.filename
        if not name.endswith(".npy") or entry.is_dir():
            raise invalid("file", f"{name!r}: a .npz may hold only .npy arrays (no pickles or other files)")
        field = f"file.{name[: -len('.npy')]}"
        try:
            with archive.open(entry) as handle:
                shape, fortran, dtype = _read_header(handle, field)
                offset = handle.tell()
        except (ValueError, EOFError, zipfile.BadZipFile, OSError) as exc:
            raise invalid(field, f"not a valid .npy array ({exc})") from None
        if dtype.hasobject:
            raise invalid(field, "holds Python objects (pickled data), which are refused: save plain numeric arrays")
        if dtype.kind not in "iuf" or dtype.subdtype is not None:
            raise invalid(field, f"dtype {dtype} is not supported: use integer or floating-point numbers")
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if offset + expected != entry.file_size:
            held = entry.file_size - offset
            raise invalid(field, f"the header says shape {shape} ({expected} bytes) but the array holds {held} bytes")
        yield NpyMember(entry, tuple(int(d) for d in shape), bool(fortran), dtype)


def _read_header(handle: IO[bytes], field: str) -> tuple[Any, bool, Any]:
    version = np.lib.format.read_magic(handle)
    if version not in _NPY_HEADERS:
        raise invalid(field, f"unsupported .npy format version {version}")
    return _NPY_HEADERS[version](handle)  # type: ignore[no-any-return]


def _copy_rows(archive: zipfile.ZipFile, source: NpyMember, layout: str, x: np.memmap) -> tuple[float, float]:
    """Copy `x` into the canonical array chunk by chunk, refusing NaN/inf; the value range seen."""
    low, high, done = np.inf, -np.inf, 0
    for rows in _row_chunks(archive, source):
        with np.errstate(over="ignore", invalid="ignore"):  # overflow becomes inf, refused just below
            chunk = rows.astype(np.float32)
        if layout == "nhwc":
            chunk = chunk.transpose(0, 3, 1, 2)
        chunk = chunk.reshape(len(chunk), *x.shape[1:])
        finite = np.isfinite(chunk).reshape(len(chunk), -1).all(axis=1)
        if not finite.all():
            bad = done + int(np.argmin(finite))
            raise invalid("file.x", f"example {bad} holds NaN or infinite values (or values too large for float32)")
        low, high = min(low, float(chunk.min())), max(high, float(chunk.max()))
        x[done : done + len(chunk)] = chunk
        done += len(chunk)
    return low, high


def _row_chunks(archive: zipfile.ZipFile, source: NpyMember) -> Iterator[np.ndarray]:
    step, count = source.rows_per_chunk, source.shape[0]
    row_bytes = int(np.prod(source.shape[1:], dtype=np.int64)) * source.dtype.itemsize
    try:
        with archive.open(source.entry) as handle:
            if source.fortran:  # rare: read it whole (the archive limits bound its size)
                whole = np.lib.format.read_array(handle, allow_pickle=False)
                for start in range(0, count, step):
                    yield np.ascontiguousarray(whole[start : start + step])
                return
            _read_header(handle, "file.x")
            for start in range(0, count, step):
                rows = min(step, count - start)
                data = _read_exact(handle, rows * row_bytes)
                yield np.frombuffer(data, dtype=source.dtype).reshape(rows, *source.shape[1:])
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise invalid("file.x", f"the array data is damaged or truncated ({exc})") from None


def _layout(shape: tuple[int, ...]) -> str:
    if len(shape) not in (2, 3, 4):
        raise invalid("file.x", f"shape {shape}: expected N×D rows, N×H×W or N×C×H×W images")
    if shape[0] == 0:
        raise invalid("file.x", "the data set has zero examples")
    if 0 in shape:
        raise invalid("file.x", f"shape {shape} has an empty dimension")
    if len(shape) == 2:
        return "rows"
    if len(shape) == 3:
        return "nhw"
    if shape[1] in (1, 3):
        return "nchw"
    if shape[3] in (1, 3):
        return "nhwc"
    raise invalid("file.x", f"shape {shape}: images need 1 or 3 channels (N×C×H×W or N×H×W×C)")


def _example_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    example: tuple[int, ...]
    if layout == "nhwc":
        example = (shape[3], shape[1], shape[2])
    else:
        example = (1, *shape[1:]) if layout == "nhw" else shape[1:]
    if layout != "rows" and not all(MIN_SIDE <= side <= MAX_SIDE for side in example[1:]):
        raise invalid("file.x", f"images are {example[1]}×{example[2]} px; each side must be {MIN_SIDE} to {MAX_SIDE}")
    return example


def _read_exact(handle: IO[bytes], size: int) -> bytes:
    parts, left = [], size
    while left:
        part = handle.read(left)
        if not part:
            raise EOFError(f"{left} bytes missing")
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _labels(
    archive: zipfile.ZipFile, member: NpyMember, count: int, limits: Limits
) -> tuple[np.ndarray, tuple[str, ...]]:
    entry, shape, dtype = member.entry, member.shape, member.dtype
    if dtype.kind not in "iu":
        raise invalid("file.y", f"labels must be integers, not {dtype}")
    if shape not in ((count,), (count, 1)):
        raise invalid("file.y", f"shape {shape}: expected one label per example, ({count},)")
    try:
        with archive.open(entry) as handle:
            values = np.lib.format.read_array(handle, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise invalid("file.y", f"the labels are damaged or truncated ({exc})") from None
    return labels_of(values.reshape(-1), limits, "file.y")


def _image_scale(dtype: Any, low: float, high: float) -> tuple[float, float, str]:
    """How stored values map onto [-1, 1], from the dtype and the observed range."""
    if dtype.kind in "iu":
        if low >= 0 and high <= 255:
            return 1 / 127.5, -1.0, "[0, 255]"
    elif low >= 0 and high <= 1:
        return 2.0, -1.0, "[0, 1]"
    elif low >= -1 and high <= 1:
        return 1.0, 0.0, "[-1, 1]"
    elif low >= 0 and high <= 255:
        return 1 / 127.5, -1.0, "[0, 255]"
    raise invalid("file.x", f"image values span [{low:g}, {high:g}]; use [0, 255], [0, 1] or [-1, 1]")


def _resize_images(x: np.memmap, directory: Path, side: int, limits: Limits) -> np.memmap:
    count, channels = x.shape[0], x.shape[1]
    check_size((count, channels, side, side), limits, "resize")
    resized = np.lib.format.open_memmap(
        directory / "x-resized.npy", mode="w+", dtype=np.float32, shape=(count, channels, side, side)
    )
    for i in range(count):
        for c in range(channels):
            plane = Image.fromarray(np.ascontiguousarray(x[i, c]), mode="F")
            resized[i, c] = np.asarray(resample(plane, side))
    np.clip(resized, -1.0, 1.0, out=resized)
    resized.flush()
    del x
    os.replace(directory / "x-resized.npy", directory / "x.npy")
    return resized
