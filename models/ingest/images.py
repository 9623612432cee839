"""A .zip of class folders of PNG/JPEG images (folder name = label) into the canonical form.

`cats/001.png, dogs/002.jpg` is labelled with classes cats and dogs; a single
wrapping folder (`pets/cats/001.png`) is skipped; images at the top level make
an unlabelled data set. Two passes, each entry streamed from the archive:

1. headers only (Pillow limited to the format the name claims, so a file that
   claims to be a PNG and is not is refused): sizes, modes and transparency,
   checked before any pixel is decoded; the data set has one channel when every
   picture is gray, else three;
2. pixels: each picture decoded by its mode's real range (models/ingest/pixels.py)
   and written to the canonical array in chunks.

A data set whose pictures are all blank is refused (models/ingest/values.py).
"""

from __future__ import annotations

import zipfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from models.datasets import DatasetInfo
from models.ingest.archives import open_archive
from models.ingest.canonical import Canonical, CanonicalWriter
from models.ingest.errors import invalid, too_large
from models.ingest.limits import CHUNK_BYTES, Limits, check_size
from models.ingest.options import IngestOptions, check_upscale
from models.ingest.pixels import decode, has_alpha, is_gray, mode_range
from models.ingest.previews import resample
from models.ingest.values import spread_warnings

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
JUNK = ("__MACOSX/", "Thumbs.db", "desktop.ini")
MAX_CLASS_NAME = 200
MAX_SIDE = 4096


@dataclass(frozen=True)
class ImageEntry:
    """One picture of the archive: its entry, class folder (None at the top level) and claimed format."""

    entry: zipfile.ZipInfo
    label: str | None
    format: str


@dataclass(frozen=True)
class Survey:
    """What the headers say: one size, the channel count, the modes seen and whether any had alpha."""

    size: tuple[int, int]
    channels: int
    modes: Counter[str]
    alpha: bool


def normalise_image_zip(path: Path, directory: Path, limits: Limits, options: IngestOptions) -> Canonical:
    """Every picture decoded once into float32 N×C×H×W in [-1, 1]; labels from the folder names."""
    with open_archive(path, limits) as archive:
        images = _image_entries(archive)
        labelled = [image.label is not None for image in images]
        if any(labelled) and not all(labelled):
            top = next(image.entry.filename for image in images if image.label is None)
            raise invalid(
                "file", f"{top!r} is outside a class folder: put every image in a folder named after its label"
            )
        class_names = tuple(sorted({image.label for image in images if image.label is not None}))
        if len(class_names) > limits.classes:
            raise invalid("file", f"{len(class_names)} class folders; at most {limits.classes} classes are supported")
        survey = _survey(archive, images, options.resize, limits)
        width, height = survey.size
        writer = CanonicalWriter(directory, (len(images), survey.channels, height, width), limits)
        low, high = _decode(archive, images, survey, options.resize, writer)
    ranges = {mode: mode_range(mode) for mode in sorted(survey.modes)}
    spans = sorted(set(ranges.values()))
    what = "the pictures' values" if len(spans) > 1 else f"the pictures' values of [{spans[0][0]:g}, {spans[0][1]:g}]"
    warnings = spread_warnings(low, high, what, "file")
    modes = ", ".join(
        f"{mode} {ranges[mode][0]:g}..{ranges[mode][1]:g} ×{n}" for mode, n in sorted(survey.modes.items())
    )
    description = f"uploaded .zip: {len(images)} images {survey.channels}×{height}×{width}"
    description += f" in {len(class_names)} class folders" if class_names else " (unlabelled)"
    description += f"; modes {modes}"
    if survey.alpha:
        description += "; alpha composited over white"
    if options.resize is not None:
        description += f"; resampled to {options.resize}×{options.resize} px"
    info = DatasetInfo(
        kind="images",
        shape=(survey.channels, height, width),
        size=len(images),
        num_classes=len(class_names),
        class_names=class_names,
        description="; ".join((description, *warnings)),
        source_dtype=", ".join(sorted(survey.modes)),
        source_range=spans[0] if len(spans) == 1 else None,
        alpha="composited over white" if survey.alpha else "",
        warnings=warnings,
    )
    if class_names:
        index = {name: i for i, name in enumerate(class_names)}
        writer.write_labels([np.array([index[image.label or ""] for image in images], np.int64)])
    return writer.finish("zip", info)


def _image_entries(archive: zipfile.ZipFile) -> list[ImageEntry]:
    """The archive's images in a fixed order (by path), with their label folder."""
    found: list[tuple[list[str], zipfile.ZipInfo, str]] = []
    for entry in archive.infolist():
        name = entry.filename
        parts = name.split("/")
        if entry.is_dir() or name.startswith(JUNK) or parts[-1] in JUNK or any(p.startswith(".") for p in parts):
            continue
        suffix = Path(parts[-1]).suffix.lower()
        if suffix not in FORMATS:
            raise invalid("file", f"{name!r}: only .png, .jpg and .jpeg images may be in a .zip data set")
        found.append((parts, entry, FORMATS[suffix]))
    if not found:
        raise invalid("file", "the data set has zero examples: the archive holds no .png or .jpg images")
    tops = {parts[0] for parts, _, _ in found}
    if len(tops) == 1 and all(len(parts) >= 3 for parts, _, _ in found):
        found = [(parts[1:], entry, fmt) for parts, entry, fmt in found]  # one wrapping folder
    images = []
    for parts, entry, fmt in sorted(found, key=lambda item: item[0]):
        label = parts[0] if len(parts) >= 2 else None
        if label is not None and len(label) > MAX_CLASS_NAME:
            raise invalid("file", f"class folder name {label[:40]!r}... is longer than {MAX_CLASS_NAME} characters")
        images.append(ImageEntry(entry, label, fmt))
    return images


def _survey(archive: zipfile.ZipFile, images: list[ImageEntry], resize: int | None, limits: Limits) -> Survey:
    """Headers only: every size checked (one size unless `resize`), modes counted, channels decided."""
    first: tuple[str, tuple[int, int]] | None = None
    modes: Counter[str] = Counter()
    gray, alpha = True, False
    for image in images:
        with _open(archive, image) as picture:
            name, size = image.entry.filename, picture.size
            if max(size) > MAX_SIDE:
                raise too_large("file", f"{name!r} is {size[0]}×{size[1]} px; at most {MAX_SIDE} a side")
            if resize is not None:
                check_upscale(resize, size, repr(name))
            if first is None:
                first = (name, size)
                side = (resize, resize) if resize is not None else size
                check_size((len(images), 1, side[1], side[0]), limits)  # a lower bound, before any pixel is decoded
            elif resize is None and size != first[1]:
                raise invalid(
                    "file",
                    f"images differ in size: {first[0]!r} is {first[1][0]}×{first[1][1]} px, "
                    f"{name!r} is {size[0]}×{size[1]} px; "
                    "set the form field 'resize' (e.g. resize=32) to resample them all to one square size",
                )
            mode_range(picture.mode)  # refuses a mode without a range before anything is decoded
            modes[picture.mode] += 1
            gray = gray and is_gray(picture)
            alpha = alpha or has_alpha(picture)
    assert first is not None  # _image_entries refused an empty archive
    return Survey((resize, resize) if resize is not None else first[1], 1 if gray else 3, modes, alpha)


def _decode(
    archive: zipfile.ZipFile, images: list[ImageEntry], survey: Survey, resize: int | None, writer: CanonicalWriter
) -> tuple[float, float]:
    """Decode every picture into the writer in chunks; the smallest and largest stored value."""
    width, height = survey.size
    batch = max(1, CHUNK_BYTES // (survey.channels * height * width * 4))
    block = np.empty((min(batch, len(images)), survey.channels, height, width), np.float32)
    low, high, filled = np.inf, -np.inf, 0
    for image in images:
        name = image.entry.filename
        try:
            with _open(archive, image) as picture:
                values = decode(picture, survey.channels, name).values
        except (OSError, ValueError, SyntaxError, EOFError, zipfile.BadZipFile) as exc:
            raise invalid("file", f"{name!r} is a damaged {image.format} image ({exc})") from None
        if resize is not None:
            values = np.stack([_resample_plane(plane, resize) for plane in values])
        block[filled] = values
        low, high = min(low, float(values.min())), max(high, float(values.max()))
        filled += 1
        if filled == len(block):
            writer.append(block)
            filled = 0
    if filled:
        writer.append(block[:filled])
    return low, high


def _resample_plane(plane: np.ndarray, side: int) -> np.ndarray:
    resized = np.asarray(resample(Image.fromarray(np.ascontiguousarray(plane), mode="F"), side))
    clipped: np.ndarray = np.clip(resized, -1.0, 1.0)
    return clipped


@contextmanager
def _open(archive: zipfile.ZipFile, image: ImageEntry) -> Iterator[Image.Image]:
    """The picture's header read from its streamed entry (pixels not yet decoded); entry and picture closed after."""
    name = image.entry.filename
    try:
        stream = archive.open(image.entry)
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise invalid("file", f"{name!r}: damaged archive entry ({exc})") from None
    with stream:
        try:
            picture = Image.open(stream, formats=[image.format])
        except UnidentifiedImageError:
            raise invalid("file", f"{name!r} is not a {image.format} image (or its header is damaged)") from None
        except Image.DecompressionBombError as exc:
            raise too_large("file", f"{name!r}: {exc}") from None
        except (OSError, zipfile.BadZipFile, EOFError, ValueError, SyntaxError) as exc:
            raise invalid("file", f"{name!r}: damaged archive entry or image ({exc})") from None
        with picture:
            yield picture
