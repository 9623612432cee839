"""What the uploader asked for: the data set's name, its format, resampling and a declared value range.

The form's text fields arrive as strings; each is checked here and refused with
its field's name (422). A name given nowhere comes from the file name: its
stem, with control, invisible format and line-separator characters removed and at most
200 characters, so `👩‍💻-faces.npz` becomes `👩‍💻-faces`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath
from typing import Any, Literal

from models.ingest.errors import invalid
from models.spec import is_unwanted

RESIZE_RANGE = (4, 1024)
# The most `resize` may enlarge an image's shorter side: the catalog's largest is 8 (digits, 8 px, trained at 64 px).
# Past it resampling invents the picture, and the stored data set grows by the factor squared (4 px to 1024 px: 65,536×).
MAX_UPSCALE = 8
MAX_NAME = 200
FORMATS: dict[str, Literal["npz", "zip"]] = {".npz": "npz", ".zip": "zip"}
_JOINERS = "\u200d\u200c\ufe0f\ufe0e"


@dataclass(frozen=True)
class IngestOptions:
    """The checked form fields of one upload."""

    name: str
    format: Literal["npz", "zip"]
    resize: int | None = None
    value_range: tuple[float, float] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> IngestOptions:
        declared = data.get("value_range")
        return cls(
            name=data["name"],
            format=data["format"],
            resize=data.get("resize"),
            value_range=(float(declared[0]), float(declared[1])) if declared else None,
        )


def options_from_form(filename: str, fields: Mapping[str, str]) -> IngestOptions:
    """The options of an upload named `filename` with the form's text fields; IngestError (422) naming the field."""
    suffix = PurePosixPath(_basename(filename)).suffix.lower()
    if suffix not in FORMATS:
        raise invalid("file", f"file name {filename!r}: upload an .npz of arrays or a .zip of class folders")
    fmt = FORMATS[suffix]
    return IngestOptions(
        name=dataset_name(fields.get("name", ""), filename),
        format=fmt,
        resize=_resize(fields.get("resize", "")),
        value_range=_value_range(fields.get("value_range", ""), fmt),
    )


def dataset_name(given: str, filename: str) -> str:
    """The name sent (refused when it holds control characters or is too long), else one made from the file name."""
    given = given.strip()
    if given:
        bad = next((c for c in given if _unwanted(c)), None)
        if bad is not None:
            raise invalid(
                "name", f"U+{ord(bad):04X} not allowed: no control, invisible format or line-separator characters"
            )
        if len(given) > MAX_NAME:
            raise invalid("name", f"must be at most {MAX_NAME} characters (got {len(given)})")
        return given
    stem = _basename(filename)
    for suffix in FORMATS:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    cleaned = re.sub(r"\s+", " ", "".join(c for c in stem if not _unwanted(c))).strip()
    return cleaned[:MAX_NAME].rstrip(_JOINERS + " ") or "dataset"


def _basename(filename: str) -> str:
    # Some clients send a path (C:\fakepath\x.npz, folder/x.npz): the name is its last part.
    return re.split(r"[/\\]", filename)[-1]


def _unwanted(character: str) -> bool:
    # The one rule for stored text (job and study names, tags): controls, invisible format characters (the
    # bidirectional overrides that make a name display as another, zero-width spaces, BOM), line separators.
    return is_unwanted(character)


def _resize(text: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    low, high = RESIZE_RANGE
    if not text.isdigit() or not low <= int(text) <= high:
        raise invalid("resize", f"must be a whole number of pixels from {low} to {high} (the square side)")
    return int(text)


def check_upscale(side: int, source: tuple[int, int], name: str) -> None:
    """Refuse (422 at `resize`) resampling an image of `source` (width, height) px to `side`×`side` px when that
    enlarges its shorter side more than MAX_UPSCALE times; `name` says which image (a file, "x's images")."""
    shorter = min(source)
    if side > MAX_UPSCALE * shorter:
        raise invalid(
            "resize",
            f"{side} enlarges {name} of {source[0]}×{source[1]} px {side / shorter:g} times; "
            f"at most {MAX_UPSCALE} times: use resize ≤ {MAX_UPSCALE * shorter}",
        )


def _value_range(text: str, fmt: str) -> tuple[float, float] | None:
    text = text.strip()
    if not text:
        return None
    if fmt != "npz":
        raise invalid("value_range", "applies to .npz images only (the pictures of a .zip have their own range)")
    parts = text.split(",")
    try:
        low, high = (float(part) for part in parts) if len(parts) == 2 else (math.nan, math.nan)
    except ValueError:
        low = high = math.nan
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise invalid("value_range", "must be two finite numbers low,high with low < high (e.g. 0,4095)")
    return low, high
