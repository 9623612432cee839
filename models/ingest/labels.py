"""Integer labels of an .npz as class indices 0..K-1, counted and mapped in chunks (never np.unique of all)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from models.ingest.errors import invalid
from models.ingest.limits import CHUNK_BYTES, Limits
from models.ingest.npy import NpyMember, RowSource

MAX_COUNTED = CHUNK_BYTES // 8  # distinct values counted exactly up to this many (for the refusal's message)


class Labels:
    """The classes of a `y` member (its distinct values, sorted; their names are the values as text)."""

    def __init__(self, source: RowSource, count: int, limits: Limits) -> None:
        member = source.member
        if member.dtype.kind not in "iu":
            raise invalid(member.field, f"labels must be integers, not {member.dtype}")
        if member.shape not in ((count,), (count, 1)):
            raise invalid(member.field, f"shape {member.shape}: expected one label per example, ({count},)")
        self.source, self.member = source, member
        self.classes = self._classes(limits)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(str(value) for value in self.classes)

    def _classes(self, limits: Limits) -> np.ndarray:
        seen = np.empty(0, self.member.dtype)
        for chunk in self.source.chunks(_rows(self.member)):
            seen = np.union1d(seen, np.unique(chunk))
            if len(seen) > MAX_COUNTED:
                raise invalid(self.member.field, f"more than {MAX_COUNTED} distinct labels; at most {limits.classes}")
        if len(seen) > limits.classes:
            raise invalid(
                self.member.field, f"{len(seen)} distinct labels; at most {limits.classes} classes are supported"
            )
        return seen

    def indices(self) -> Iterator[np.ndarray]:
        """int64 class indices, chunk by chunk, in example order."""
        for chunk in self.source.chunks(_rows(self.member)):
            yield np.searchsorted(self.classes, chunk.reshape(-1)).astype(np.int64)


def _rows(member: NpyMember) -> int:
    return max(1, CHUNK_BYTES // (max(1, member.row_elements) * 8))
