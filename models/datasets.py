"""What the service knows about a data set without loading it (no torch, no numpy)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class DatasetInfo(BaseModel):
    """Shape and labels of a data set, as the spec checks and the worker builds networks.

    `shape` is one example's shape: `(D,)` for points/rows, `(C, H, W)` for images.
    Image values are stored in [-1, 1]; points as they are. For an uploaded data
    set the `source_*` fields, `alpha` and `warnings` say how its values were read
    (models/ingest/values.py holds the rules).
    """

    model_config = ConfigDict(frozen=True)

    kind: Literal["points", "images"]
    shape: tuple[int, ...]
    num_classes: int = 0
    class_names: tuple[str, ...] = ()
    size: int = 0
    description: str = ""
    source_dtype: str = Field(
        default="", description="the uploaded x's numpy dtype, or the Pillow modes of the uploaded images"
    )
    source_range: tuple[float, float] | None = Field(
        default=None,
        description="images: the source values stored as -1 and +1 (null when image modes with different ranges "
        "are mixed; the description lists each); rows: the smallest and largest value",
    )
    alpha: Literal["", "composited over white"] = Field(
        default="", description="what was done with transparency, when some image had it"
    )
    warnings: tuple[str, ...] = Field(default=(), description="what a user should know about how the data was read")


BUILTIN_DATASETS: dict[str, DatasetInfo] = {
    "ring8": DatasetInfo(
        kind="points",
        shape=(2,),
        num_classes=8,
        size=100_000,
        description="8 Gaussians at (cos 2πi/8, sin 2πi/8), std 0.01 (PacGAN protocol); label = mode",
    ),
    "grid25": DatasetInfo(
        kind="points",
        shape=(2,),
        num_classes=25,
        size=100_000,
        description="25 Gaussians at {-4,-2,0,2,4}², std 0.05 (PacGAN protocol); label = mode",
    ),
    "spiral": DatasetInfo(
        kind="points",
        shape=(2,),
        num_classes=0,
        size=100_000,
        description="a noisy 2-D spiral (Swiss roll cross-section), unlabelled",
    ),
    "digits": DatasetInfo(
        kind="images",
        shape=(1, 8, 8),
        num_classes=10,
        class_names=tuple(str(i) for i in range(10)),
        size=1797,
        description="scikit-learn's bundled 8x8 handwritten digits (UCI), labelled 0-9",
    ),
}
