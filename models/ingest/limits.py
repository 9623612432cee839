"""What one upload may grow into, and how much the process that normalises it may use."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from models.ingest.errors import too_large
from models.settings import Settings

CHUNK_BYTES = 16 * 1024**2  # the working set of one streamed step (a row chunk, a transpose tile)
RATIO_FLOOR_BYTES = 1024**2  # entries smaller than this cannot hurt, whatever their compression ratio


@dataclass(frozen=True)
class Limits:
    """The GANFORGE_MAX_* and GANFORGE_INGEST_* settings that bound one upload."""

    archive_bytes: int
    archive_files: int
    dataset_bytes: int
    classes: int
    compression_ratio: float = 200.0
    memory_bytes: int = 2 * 1024**3
    timeout_seconds: float = 3600.0

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        """The limits the settings configure."""
        return cls(
            archive_bytes=settings.max_archive_bytes,
            archive_files=settings.max_archive_files,
            dataset_bytes=settings.max_dataset_bytes,
            classes=settings.max_classes,
            compression_ratio=settings.max_compression_ratio,
            memory_bytes=settings.ingest_memory_bytes,
            timeout_seconds=settings.ingest_timeout_seconds,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_size(shape: tuple[int, ...], limits: Limits, field: str = "file") -> None:
    """Refuse (413) a canonical float32 array of this shape over GANFORGE_MAX_DATASET_BYTES."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * 4
    if nbytes > limits.dataset_bytes:
        message = f"normalised to float32 this data set is {nbytes} bytes; at most {limits.dataset_bytes}"
        raise too_large(field, message)
