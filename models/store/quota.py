"""What one owner holds and uses, as its quotas (models/quotas.py) count it, and the submission check.

- `QuotaStore.usage(owner=...)`: running and queued jobs, stored bytes, data set uploads in the last hour
  (GET /v1/quota, and the upload checks).
- `check_submission(session, ...)`: the queued_jobs and stored_bytes check, run inside the transaction that inserts
  the jobs (create_job, create_study), after the insert and under a per-owner lock, so two submissions at once
  cannot both pass one free place: raises QuotaExceeded and the insert rolls back.
- `check_upload(session, ...)`: the stored_bytes and uploads_per_hour check, run inside the transaction that inserts
  a data set (create_dataset), under the same per-owner lock, so uploads in flight at once cannot all pass the check
  the API made before their bodies were read.

Stored bytes are what the store records: each uploaded data set's stored size and each checkpoint's weights file
(`checkpoints.size_bytes`). Sample snapshots, a checkpoint's resume state and generate results have no recorded
size and are not counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.quotas import Quotas
from models.records import Checkpoint, Dataset, Job, JobStatus
from models.store.base import StoreBase, as_utc, serialise, utcnow
from models.store.bounds import storable

# The window uploads_per_hour counts data sets created in.
UPLOAD_WINDOW = timedelta(hours=1)
RUNNING = (JobStatus.RUNNING, JobStatus.CANCELLING)


class QuotaExceeded(Exception):
    """A request would take the owner past a quota: `quota` (a Quotas field name), its `limit`, what the owner
    `used` before the request, and what the request `adds` (jobs for queued_jobs; 0 for stored_bytes, which refuses
    while the owner is at or over it)."""

    def __init__(self, quota: str, *, limit: int, used: int, adds: int = 0, retry_after: int | None = None) -> None:
        super().__init__(f"quota {quota}: {used} used of {limit}, the request adds {adds}")
        self.quota, self.limit, self.used, self.adds = quota, limit, used, adds
        self.retry_after = retry_after  # uploads_per_hour: whole seconds until one more fits


@dataclass(frozen=True)
class Usage:
    """One owner's usage: running_jobs (running + cancelling), queued_jobs, stored_bytes (bytes), uploads_last_hour
    (data sets created in the last hour) and oldest_upload_at (the oldest of those; None when there are none)."""

    running_jobs: int
    queued_jobs: int
    stored_bytes: int
    uploads_last_hour: int
    oldest_upload_at: datetime | None

    def upload_retry_after(self, limit: int, now: datetime | None = None) -> int | None:
        """Whole seconds until one more upload fits under `limit` uploads per hour (the oldest counted upload
        leaves the window), at least 1; None when one fits now."""
        if self.uploads_last_hour < limit or self.oldest_upload_at is None:
            return None
        now = now or utcnow()
        return max(1, math.ceil((self.oldest_upload_at + UPLOAD_WINDOW - now).total_seconds()))


def count_jobs(session: Session, owner: str, statuses: tuple[str, ...]) -> int:
    """How many of the owner's jobs are in one of `statuses`."""
    query = select(func.count()).select_from(Job).where(Job.owner == owner, Job.status.in_(statuses))
    return int(session.scalar(query) or 0)


def stored_bytes(session: Session, owner: str) -> int:
    """Bytes the owner holds as the store records them: data sets plus checkpoint weights files."""
    datasets = session.scalar(select(func.coalesce(func.sum(Dataset.size_bytes), 0)).where(Dataset.owner == owner))
    checkpoints = session.scalar(
        select(func.coalesce(func.sum(Checkpoint.size_bytes), 0))
        .select_from(Checkpoint)
        .join(Job, Job.id == Checkpoint.job_id)
        .where(Job.owner == owner)
    )
    return int(datasets or 0) + int(checkpoints or 0)


def check_submission(session: Session, *, owner: str, quotas: Quotas, adds: int) -> None:
    """Raise QuotaExceeded when the owner holds `quotas.stored_bytes` or more, or when the `adds` jobs the caller
    just inserted (uncommitted, in `session`) take its queued jobs past `quotas.queued_jobs`.

    Call it inside the inserting transaction, after the insert: it takes the owner's lock before it counts, so a
    concurrent submission's count waits for this commit (or rollback) and then sees it. The stored bytes are summed
    before the lock (a sum over every checkpoint of the owner's: 1,000 jobs × 200 checkpoints took about 0.1 s);
    they are a level to stay under, not places two submissions could both take.
    """
    held = stored_bytes(session, owner)
    if held >= quotas.stored_bytes:
        raise QuotaExceeded("stored_bytes", limit=int(quotas.stored_bytes), used=held)
    serialise(session, f"quota:{owner}")  # the owner's quota checks, one at a time
    queued = count_jobs(session, owner, (JobStatus.QUEUED,))
    if queued > quotas.queued_jobs:
        raise QuotaExceeded("queued_jobs", limit=quotas.queued_jobs, used=queued - adds, adds=adds)


def uploads_since(session: Session, owner: str, since: datetime) -> tuple[int, datetime | None]:
    """How many data sets the owner created after `since`, and the oldest one's creation time (None when none)."""
    count, oldest = session.execute(
        select(func.count(), func.min(Dataset.created_at)).where(Dataset.owner == owner, Dataset.created_at > since)
    ).one()
    return int(count or 0), as_utc(oldest)


def check_upload(session: Session, *, owner: str, quotas: Quotas) -> None:
    """Raise QuotaExceeded when the owner holds `quotas.stored_bytes` or more (a level to stay under, as for a
    submission: the upload that crosses it is the last one accepted) or created `quotas.uploads_per_hour` data sets
    in the last hour (`retry_after` set).

    Call it inside the transaction that inserts the data set, before the insert: it takes the owner's lock first, so
    a concurrent upload's check waits for this commit (or rollback) and then counts this data set too. Both counts
    run under the lock: each upload adds bytes, unlike a submission, so the sum must include the ones just committed.
    """
    serialise(session, f"quota:{owner}")  # the owner's quota checks, one at a time
    held = stored_bytes(session, owner)
    if held >= quotas.stored_bytes:
        raise QuotaExceeded("stored_bytes", limit=int(quotas.stored_bytes), used=held)
    now = utcnow()
    count, oldest = uploads_since(session, owner, now - UPLOAD_WINDOW)
    wait = Usage(0, 0, held, count, oldest).upload_retry_after(quotas.uploads_per_hour, now)
    if wait is not None:
        raise QuotaExceeded("uploads_per_hour", limit=quotas.uploads_per_hour, used=count, retry_after=wait)


class QuotaStore(StoreBase):
    """The usage quotas count, per owner."""

    def usage(self, *, owner: str) -> Usage:
        """The owner's usage now (one read transaction)."""
        if not storable(owner):
            return Usage(0, 0, 0, 0, None)
        with self.session() as session:
            uploads, oldest = uploads_since(session, owner, utcnow() - UPLOAD_WINDOW)
            return Usage(
                running_jobs=count_jobs(session, owner, RUNNING),
                queued_jobs=count_jobs(session, owner, (JobStatus.QUEUED,)),
                stored_bytes=stored_bytes(session, owner),
                uploads_last_hour=uploads,
                oldest_upload_at=oldest,
            )
