"""The service's figures for Prometheus (api/telemetry.py): jobs by status and queue, and the queued jobs' wait.

Two grouped queries in one short transaction; the API caches the answer for a few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from models.records import Job, JobStatus
from models.store.base import StoreBase, as_utc, utcnow


@dataclass(frozen=True)
class QueueFigures:
    """Jobs by (status, queue); per queue, how many wait and how long (seconds) the oldest has waited."""

    jobs: dict[tuple[str, str], int]
    depth: dict[str, int]
    oldest_seconds: dict[str, float]


def queue_figures(store: StoreBase) -> QueueFigures:
    """Count `store`'s jobs by status and queue, and per queue the queued jobs and the oldest one's wait since it
    was (last) enqueued (created, when it never was). Raises SQLAlchemy's errors when the store is away."""
    waited_since = func.min(func.coalesce(Job.enqueued_at, Job.created_at))
    with store.session() as session:
        counts = session.execute(select(Job.status, Job.queue, func.count()).group_by(Job.status, Job.queue)).all()
        queued = session.execute(
            select(Job.queue, func.count(), waited_since).where(Job.status == JobStatus.QUEUED).group_by(Job.queue)
        ).all()
    now = utcnow()
    jobs = {(str(status), str(queue)): int(count) for status, queue, count in counts}
    depth = {str(queue): int(count) for queue, count, _since in queued}
    oldest = {str(queue): _age(now, since) for queue, _count, since in queued}
    return QueueFigures(jobs=jobs, depth=depth, oldest_seconds=oldest)


# Queue names come from job specs, so any owner can make new ones: the label values /metrics exports are bounded.
MAX_QUEUE_LABELS = 50
OTHER_QUEUE = "_other"  # a queue name starts with a letter or digit (models/spec.py QUEUE_NAME): this is none


def bounded(figures: QueueFigures, keep: set[str], cap: int = MAX_QUEUE_LABELS) -> QueueFigures:
    """`figures` with at most `cap` queue labels (plus OTHER_QUEUE): the queues in `keep` (the default queue, those
    live workers serve), then those holding the most queued or running jobs; the rest, and every queue with
    neither (only ended jobs), are summed into OTHER_QUEUE (its oldest wait is the largest of theirs)."""
    active: dict[str, int] = {}
    for (status, queue), count in figures.jobs.items():
        if status in JobStatus.ACTIVE:
            active[queue] = active.get(queue, 0) + count
    ranked = sorted(keep) + sorted((q for q in active if q not in keep), key=lambda q: (-active[q], q))
    named = set(ranked[: max(cap, len(keep))])

    def label(queue: str) -> str:
        return queue if queue in named else OTHER_QUEUE

    jobs: dict[tuple[str, str], int] = {}
    for (status, queue), count in figures.jobs.items():
        jobs[(status, label(queue))] = jobs.get((status, label(queue)), 0) + count
    depth: dict[str, int] = {}
    for queue, count in figures.depth.items():
        depth[label(queue)] = depth.get(label(queue), 0) + count
    oldest: dict[str, float] = {}
    for queue, seconds in figures.oldest_seconds.items():
        oldest[label(queue)] = max(oldest.get(label(queue), 0.0), seconds)
    return QueueFigures(jobs=jobs, depth=depth, oldest_seconds=oldest)


def _age(now: datetime, since: datetime | str | None) -> float:
    if since is None:
        return 0.0
    if isinstance(since, str):  # SQLite's min() of a DateTime column comes back as its stored text
        since = datetime.fromisoformat(since)
    return max((now - as_utc(since)).total_seconds(), 0.0)
