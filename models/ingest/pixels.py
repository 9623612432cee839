"""One decoded picture (any Pillow image mode) as float32 C×H×W in [-1, 1], with the range it came from.

Each mode is read by its real range, not by the values seen:

| mode | read as | range |
|---|---|---|
| 1 | gray | [0, 1] |
| L, P (palette, expanded to RGB), RGB, RGBX (X dropped) | 8-bit | [0, 255] |
| CMYK, YCbCr, LAB, HSV | converted to RGB by Pillow (no ICC profile) | [0, 255] |
| LA, La, PA, RGBA, RGBa; L, P, RGB with a `transparency` key | alpha composited over white | [0, 255] |
| I;16, I;16B, I;16L, I;16N | 16-bit gray, any byte order (a 16-bit colour key is ignored) | [0, 65535] |
| I | 32-bit signed gray | [-2147483648, 2147483647] |
| F | refused: floating-point pictures have no range; send them as an .npz | |

Gray modes give one channel, the others three (a data set mixing them is
stored with three, gray replicated). Compositing over white is what a browser
or an image viewer shows for a transparent pixel on a page; the data set's
`alpha` says it was done.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from models.ingest.errors import invalid
from models.ingest.values import Scale

GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N"})
SIXTEEN_BIT = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
_TO_RGB = frozenset({"CMYK", "YCbCr", "LAB", "HSV", "RGBX"})
_INT32 = (float(np.iinfo(np.int32).min), float(np.iinfo(np.int32).max))


@dataclass(frozen=True)
class Picture:
    """A decoded picture: `values` float32 C×H×W in [-1, 1]; its source mode, range and whether it had alpha."""

    values: np.ndarray
    mode: str
    source_range: tuple[float, float]
    alpha: bool


def mode_range(mode: str) -> tuple[float, float]:
    """The value range a Pillow mode stands for; IngestError (422) for a mode without one (F)."""
    if mode == "1":
        return 0.0, 1.0
    if mode in SIXTEEN_BIT:
        return 0.0, 65535.0
    if mode == "I":
        return _INT32
    if mode == "F":
        raise invalid("file", "floating-point (mode F) pictures have no defined value range; send them as an .npz")
    return 0.0, 255.0


def is_gray(image: Image.Image) -> bool:
    """Whether the picture becomes one channel (its mode is a gray mode)."""
    return image.mode in GRAY_MODES


def has_alpha(image: Image.Image) -> bool:
    """Whether the picture carries transparency (an alpha band or a `transparency` key)."""
    return image.mode in ("LA", "La", "PA", "RGBA", "RGBa") or (
        "transparency" in image.info and image.mode in ("L", "P", "RGB")
    )


def decode(image: Image.Image, channels: int, name: str) -> Picture:
    """The picture as float32 `channels`×H×W in [-1, 1] (channels 1 only for a gray mode).

    Raises IngestError (422, field `file`) for a mode without a defined range.
    """
    mode, source = image.mode, mode_range(image.mode)
    alpha = has_alpha(image)
    if alpha:
        # Palette and colour keys become an alpha band first; premultiplied bands are un-premultiplied.
        image = image.convert("LA" if mode in ("L", "LA", "La") else "RGBA")
    elif mode == "P":
        image = image.convert("RGB")
    elif mode in _TO_RGB:
        image = image.convert("RGB")
    pixels = np.asarray(image)
    if alpha:
        coverage = pixels[..., -1:].astype(np.float32) / 255.0
        pixels = pixels[..., :-1].astype(np.float32) * coverage + 255.0 * (1.0 - coverage)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    values = Scale(*source)(pixels).transpose(2, 0, 1)
    if values.shape[0] != channels:
        if values.shape[0] != 1 or channels != 3:
            raise invalid("file", f"{name!r}: a colour picture in a gray data set")  # callers count channels first
        values = np.repeat(values, 3, axis=0)
    return Picture(np.ascontiguousarray(values), mode, source, alpha)
