"""How uploaded values become the canonical form: the rules of value ranges, in one place.

Images are stored in [-1, 1]: the source range [lo, hi] maps linearly onto it.
The source range is never guessed from integer values:

- bool: [0, 1]; uint8 [0, 255]; int8 [-128, 127]; uint16 [0, 65535];
  int16 [-32768, 32767]; int32, uint32, int64, uint64: their full range. So
  8-bit values kept in an int64 array normalise to one gray and are refused
  below, with the advice to save x as uint8 or to send `value_range=0,255`.
- Floating point has no range of its own: the first of [0, 1], [-1, 1] and
  [0, 255] that holds every value is used; other values are refused.
- Image modes (zips) have their range: see models/ingest/pixels.py.
- The form field `value_range=low,high` (.npz images) states the range
  instead; a value outside it is refused, never clipped.

Never silently blank: images whose stored values span less than one 8-bit step
(2/255 of [-1, 1]) are refused (they would train on an all-black, all-white or
all-gray picture); images that span less than a quarter of [-1, 1] are kept
with a warning in the data set's description (they will look dark, bright or
flat). Rows are stored as they are (cast to float32); a data set whose rows are
all one point is kept with a warning.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.ingest.errors import invalid

BLANK_SPAN = 2 / 255  # one 8-bit step of [-1, 1]: less than this is a blank picture
NARROW_SPAN = 0.5  # a quarter of [-1, 1]: less than this gets a warning
FLOAT_CONVENTIONS = ((0.0, 1.0), (-1.0, 1.0), (0.0, 255.0))


def dtype_range(dtype: np.dtype) -> tuple[float, float] | None:
    """The value range an integer or boolean dtype stands for; None for floating point."""
    if dtype.kind == "b":
        return 0.0, 1.0
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    return None


def float_range(low: float, high: float, field: str) -> tuple[float, float]:
    """The first float convention that holds [low, high]; IngestError (422) when none does."""
    for lo, hi in FLOAT_CONVENTIONS:
        if lo <= low and high <= hi:
            return lo, hi
    raise invalid(
        field,
        f"image values span [{low:g}, {high:g}]; use [0, 1], [-1, 1] or [0, 255], "
        "or send the form field value_range=low,high",
    )


def source_range(
    dtype: np.dtype, low: float, high: float, declared: tuple[float, float] | None, field: str
) -> tuple[float, float]:
    """The source range of image values observed in [low, high]: declared, else the dtype's, else a convention."""
    if declared is not None:
        lo, hi = declared
        if low < lo or high > hi:
            raise invalid(field, f"values span [{low:g}, {high:g}], outside value_range [{lo:g}, {hi:g}]")
        return lo, hi
    return dtype_range(dtype) or float_range(low, high, field)


@dataclass(frozen=True)
class Scale:
    """The linear map of a source range [lo, hi] onto [-1, 1]."""

    lo: float
    hi: float

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """float32 values in [-1, 1] (computed in float64: int64 ranges do not fit float32 exactly)."""
        scaled = (values.astype(np.float64) - self.lo) * (2.0 / (self.hi - self.lo)) - 1.0
        return np.clip(scaled, -1.0, 1.0).astype(np.float32)

    def of(self, value: float) -> float:
        return (value - self.lo) * 2.0 / (self.hi - self.lo) - 1.0


def spread_warnings(low: float, high: float, what: str, field: str) -> tuple[str, ...]:
    """Refuse (422) stored image values in [low, high] (within [-1, 1]) that are blank; warn when narrow.

    `what` names the source in the messages (e.g. "uint16 values [0, 255] of [0, 65535]").
    """
    span = high - low
    if span < BLANK_SPAN - 1e-9:
        shade = "black" if high <= -0.9 else "white" if low >= 0.9 else "one shade of gray"
        raise invalid(
            field,
            f"every image would be blank ({shade}): {what} span less than one 8-bit step once scaled to [-1, 1]; "
            "save the images with a dtype that matches their range (e.g. uint8 for 0..255) "
            "or, for an .npz, send the form field value_range=low,high",
        )
    if span < NARROW_SPAN:
        look = "dark" if high < 0 else "bright" if low > 0 else "flat (low contrast)"
        return (f"{what} use {span / 2:.1%} of the range: the images will look {look}",)
    return ()
