"""An uploaded .npz into the canonical form (models/ingest/canonical.py).

`x` is N×D rows (stored as they are, in float32) or N×H×W, N×C×H×W or
N×H×W×C images (C = 1 or 3), scaled to [-1, 1] by the rules of
models/ingest/values.py; `y`, optional, holds integer labels. Both stream in
row chunks (models/ingest/npy.py): a first pass over `x` checks every value
(NaN, infinities) and finds its range, a second writes the canonical array.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from models.datasets import DatasetInfo
from models.ingest.archives import open_archive
from models.ingest.canonical import Canonical, CanonicalWriter
from models.ingest.errors import invalid
from models.ingest.labels import Labels
from models.ingest.limits import CHUNK_BYTES, Limits
from models.ingest.npy import RowSource, npy_members
from models.ingest.options import IngestOptions, check_upscale
from models.ingest.previews import resample
from models.ingest.values import Scale, source_range, spread_warnings

MIN_SIDE, MAX_SIDE = 4, 4096


def normalise_npz(path: Path, directory: Path, limits: Limits, options: IngestOptions) -> Canonical:
    """The canonical form of an .npz upload in `directory`; IngestError (422/413) naming the array."""
    scratch = directory.parent / "scratch"
    try:
        with open_archive(path, limits, npz=True) as archive:
            return _normalise(archive, directory, scratch, limits, options)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _normalise(
    archive: zipfile.ZipFile, directory: Path, scratch: Path, limits: Limits, options: IngestOptions
) -> Canonical:
    members = npy_members(archive)
    if "x" not in members:
        found = ", ".join(sorted(members)) or "none"
        raise invalid("file.x", f"the .npz has no array named 'x' (it has: {found})")
    member = members["x"]
    layout = _layout(member.shape)
    example = _example_shape(member.shape, layout)
    if layout == "rows" and options.resize is not None:
        raise invalid("resize", "resize applies to image data sets only; x holds N×D rows")
    if options.resize is not None:
        check_upscale(options.resize, (example[2], example[1]), "x's images")
    if layout == "rows" and options.value_range is not None:
        raise invalid("value_range", "applies to images only; x holds N×D rows, stored as they are")
    source = RowSource(archive, member, scratch)
    count = member.shape[0]
    labels = Labels(RowSource(archive, members["y"], scratch), count, limits) if "y" in members else None
    step = max(1, CHUNK_BYTES // (member.row_elements * 8))  # rows whose float64 working copy fits a chunk
    low, high = _survey(source, step, layout)
    dtype = member.dtype.name
    if layout == "rows":
        shape = example
        writer = CanonicalWriter(directory, (count, *shape), limits)
        for chunk in source.chunks(step):
            writer.append(chunk.astype(np.float32))
        same = bool(np.all(low == high))
        warnings: tuple[str, ...] = (
            (f"every row is the same point ({', '.join(f'{v:g}' for v in low[:8])}{', …' if len(low) > 8 else ''})",)
            if same
            else ()
        )
        description = f"uploaded .npz: {count} rows of dimension {shape[0]} ({dtype}, stored as float32)"
        info = DatasetInfo(
            kind="points",
            shape=shape,
            size=count,
            description=description,
            source_dtype=dtype,
            source_range=(float(low.min()), float(high.max())),
            warnings=warnings,
        )
    else:
        lo, hi = source_range(member.dtype, float(low.min()), float(high.max()), options.value_range, "file.x")
        scale = Scale(lo, hi)
        what = f"x's {dtype} values [{low.min():g}, {high.max():g}] of [{lo:g}, {hi:g}]"
        warnings = spread_warnings(scale.of(float(low.min())), scale.of(float(high.max())), what, "file.x")
        side = options.resize
        shape = example if side is None else (example[0], side, side)
        writer = CanonicalWriter(directory, (count, *shape), limits, "file" if side is None else "resize")
        for chunk in source.chunks(step):
            images = _channels_first(scale(chunk), layout)
            writer.append(images if side is None else _resized(images, side))
        why = (
            "value_range"
            if options.value_range
            else "the dtype's range"
            if member.dtype.kind in "biu"
            else "float convention"
        )
        description = f"uploaded .npz: {count} images {'×'.join(map(str, shape))} from {dtype} in [{lo:g}, {hi:g}]"
        description += f" ({why})"
        if side is not None:
            description += f", resampled to {side}×{side} px"
        info = DatasetInfo(
            kind="images",
            shape=shape,
            size=count,
            description="; ".join((description, *warnings)),
            source_dtype=dtype,
            source_range=(lo, hi),
            warnings=warnings,
        )
    if labels is not None:
        writer.write_labels(labels.indices())
        info = info.model_copy(update={"num_classes": len(labels.classes), "class_names": labels.names})
    return writer.finish("npz", info)


def _survey(source: RowSource, step: int, layout: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-column (rows) or overall (images) min and max; refuses NaN, infinities and float32 overflow (rows)."""
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    done = 0
    for chunk in source.chunks(step):
        flat = chunk.reshape(len(chunk), -1)
        if flat.dtype.kind == "f" or layout == "rows":
            with np.errstate(over="ignore", invalid="ignore"):  # overflow becomes inf, refused just below
                stored = flat.astype(np.float32) if layout == "rows" else flat
            finite = np.isfinite(stored).all(axis=1)
            if not finite.all():
                bad = done + int(np.argmin(finite))
                raise invalid("file.x", f"example {bad} holds NaN or infinite values (or values too large for float32)")
        axis = 0 if layout == "rows" else None
        chunk_low, chunk_high = np.min(flat, axis=axis), np.max(flat, axis=axis)
        low = chunk_low if low is None else np.minimum(low, chunk_low)
        high = chunk_high if high is None else np.maximum(high, chunk_high)
        done += len(chunk)
    assert low is not None and high is not None  # count > 0 was checked
    return np.atleast_1d(low).astype(np.float64), np.atleast_1d(high).astype(np.float64)


def _channels_first(images: np.ndarray, layout: str) -> np.ndarray:
    if layout == "nhwc":
        return images.transpose(0, 3, 1, 2)
    if layout == "nhw":
        return images[:, None]
    return images


def _resized(images: np.ndarray, side: int) -> np.ndarray:
    out = np.empty((len(images), images.shape[1], side, side), np.float32)
    for i, image in enumerate(images):
        for c, plane in enumerate(image):
            out[i, c] = np.asarray(resample(Image.fromarray(np.ascontiguousarray(plane), mode="F"), side))
    return np.clip(out, -1.0, 1.0)


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
    if layout == "rows":
        return shape[1:]
    if layout == "nhwc":
        example = (shape[3], shape[1], shape[2])
    else:
        example = (1, *shape[1:]) if layout == "nhw" else shape[1:]
    if not all(MIN_SIDE <= side <= MAX_SIDE for side in example[1:]):
        raise invalid("file.x", f"images are {example[1]}×{example[2]} px; each side must be {MIN_SIDE} to {MAX_SIDE}")
    return example
