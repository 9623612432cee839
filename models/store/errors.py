"""The job store's domain errors (the API maps each to a 4xx)."""

from __future__ import annotations


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with a different spec."""


class InvalidCursor(ValueError):
    """A page cursor the store could not have produced."""


class DatasetGone(Exception):
    """A job names the owner's data set, which does not exist (deleted while the job was being submitted)."""

    def __init__(self, dataset_id: str) -> None:
        super().__init__(f"no data set {dataset_id!r}")
        self.dataset_id = dataset_id


class InitFromGone(Exception):
    """A job's init_from names a job or checkpoint of the owner's that is no longer there (deleted while the job was
    being submitted); `field` is the spec field that names it ("job" or "step", under init_from)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


class DatasetInUse(Exception):
    """A data set cannot be deleted while queued or running jobs use it."""

    def __init__(self, job_ids: list[str]) -> None:
        super().__init__(f"used by active jobs: {', '.join(job_ids)}")
        self.job_ids = job_ids
