"""A .zip of class folders of PNG/JPEG images (folder name = label) into the canonical form.

`cats/001.png, dogs/002.jpg` is labelled with classes cats and dogs; a single
wrapping folder (`pets/cats/001.png`) is skipped; images at the top level make
an unlabelled data set. Each image is read and decoded once, by Pillow limited
to the format its name claims (a file that claims to be a PNG and is not is
refused), its size checked from the header before its pixels are decoded. The
pixels go to a uint8 staging map (N×H×W×3, so a colour image after gray ones
needs no second pass), then to the float32 canonical array in chunks.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from api.archives import Limits, invalid, open_archive, too_large
from api.canonical import MAX_SIDE, Canonical, check_size, finish, new_x, resample, with_classes
from models.datasets import DatasetInfo

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
JUNK = ("__MACOSX/", "Thumbs.db", "desktop.ini")
BATCH = 512
MAX_CLASS_NAME = 200


@dataclass(frozen=True)
class ImageEntry:
    entry: zipfile.ZipInfo
    label: str | None
    format: str


def normalise_image_zip(path: Path, directory: Path, limits: Limits, resize: int | None) -> Canonical:
    """Decode every image once into float32 N×C×H×W in [-1, 1]; labels from the folder names."""
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
        size, channels = _decode(archive, images, directory, resize, limits)
    index = {name: i for i, name in enumerate(class_names)}
    y = np.array([index[image.label or ""] for image in images], np.int64) if class_names else None
    description = f"uploaded .zip: {len(images)} images {channels}×{size[1]}×{size[0]}"
    description += f" in {len(class_names)} class folders" if class_names else " (unlabelled)"
    if resize is not None:
        description += f", resampled to {resize}×{resize} px"
    info = DatasetInfo(kind="images", shape=(channels, size[1], size[0]), size=len(images), description=description)
    return finish(directory, "zip", with_classes(info, class_names), y)


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


def _open(source: io.BytesIO, image: ImageEntry) -> Image.Image:
    name = image.entry.filename
    try:
        return Image.open(source, formats=[image.format])
    except UnidentifiedImageError:
        raise invalid("file", f"{name!r} is not a {image.format} image (or its header is damaged)") from None
    except Image.DecompressionBombError as exc:
        raise too_large("file", f"{name!r}: {exc}") from None
    except (OSError, zipfile.BadZipFile, EOFError, ValueError, SyntaxError) as exc:
        raise invalid("file", f"{name!r}: damaged archive entry or image ({exc})") from None


def _decode(
    archive: zipfile.ZipFile, images: list[ImageEntry], directory: Path, resize: int | None, limits: Limits
) -> tuple[tuple[int, int], int]:
    """Decode every image into `x.npy`; returns (width, height) and the channel count (1 when all are gray)."""
    first = _open_checked(archive, images[0], None)
    size = (resize, resize) if resize is not None else first.size
    expected = None if resize is not None else (images[0].entry.filename, size)
    check_size((len(images), 1, size[1], size[0]), limits)  # a lower bound, before any pixel is decoded
    staging_path = directory / "staging.npy"
    staging = np.lib.format.open_memmap(
        staging_path, mode="w+", dtype=np.uint8, shape=(len(images), size[1], size[0], 3)
    )
    gray = np.zeros(len(images), bool)
    for i, image in enumerate(images):
        picture = first if i == 0 else _open_checked(archive, image, expected)
        gray[i] = picture.mode in GRAY_MODES
        pixels = _pixels(picture, image, "L" if gray[i] else "RGB", resize)
        if gray[i]:
            staging[i, :, :, 0] = pixels
        else:
            staging[i] = pixels
    channels = 1 if gray.all() else 3
    x = new_x(directory, (len(images), channels, size[1], size[0]), limits)
    for start in range(0, len(images), BATCH):
        block = np.array(staging[start : start + BATCH])
        if channels == 3:
            block[gray[start : start + BATCH], :, :, 1:] = block[gray[start : start + BATCH], :, :, :1]
        x[start : start + len(block)] = block[..., :channels].transpose(0, 3, 1, 2) * np.float32(1 / 127.5) - 1
    x.flush()
    del x, staging
    staging_path.unlink()
    return size, channels


def _open_checked(
    archive: zipfile.ZipFile, image: ImageEntry, expected: tuple[str, tuple[int, int]] | None
) -> Image.Image:
    """The image opened from its bytes (header read, pixels not yet decoded); its size must be `expected`'s."""
    name = image.entry.filename
    try:
        data = archive.read(image.entry)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise invalid("file", f"{name!r}: damaged archive entry ({exc})") from None
    picture = _open(io.BytesIO(data), image)
    width, height = picture.size
    if max(width, height) > MAX_SIDE:
        raise too_large("file", f"{name!r} is {width}×{height} px; at most {MAX_SIDE} a side")
    if expected is not None and (width, height) != expected[1]:
        (first, size) = expected
        raise invalid(
            "file",
            f"images differ in size: {first!r} is {size[0]}×{size[1]} px, "
            f"{name!r} is {width}×{height} px; "
            "set the form field 'resize' (e.g. resize=32) to resample them all to one square size",
        )
    return picture


def _pixels(picture: Image.Image, image: ImageEntry, mode: str, resize: int | None) -> np.ndarray:
    try:
        with picture:
            converted = picture if picture.mode == mode else picture.convert(mode)
            return np.asarray(resample(converted, resize) if resize is not None else converted)
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise invalid("file", f"{image.entry.filename!r} is a damaged {image.format} image ({exc})") from None
