"""The one exception of ingestion: content that cannot become a data set, with the field it concerns."""

from __future__ import annotations


class IngestError(Exception):
    """An upload refused with a reason.

    `field` is the form field or array path (`file`, `file.x`, `file.y`, `name`, `resize`, `value_range`);
    `status_hint` is the HTTP status the API answers with: 422 for content that cannot become a data set,
    413 for content over a configured limit (size, entry count, compression ratio, memory, time).
    """

    def __init__(self, field: str, message: str, status_hint: int = 422) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.status_hint = field, message, status_hint

    @property
    def code(self) -> str:
        """The error code of the API's one error shape."""
        return "too_large" if self.status_hint == 413 else "invalid_dataset"


def invalid(field: str, message: str) -> IngestError:
    """422: content that cannot become a data set."""
    return IngestError(field, message, 422)


def too_large(field: str, message: str) -> IngestError:
    """413: content over one of the configured limits."""
    return IngestError(field, message, 413)
