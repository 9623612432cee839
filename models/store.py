"""The job store: every SQL statement of ganforge lives here.

Functions take keyword-only arguments and a session factory; each call is one
short transaction (no transaction stays open while a job trains).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, overload

from sqlalchemy import Engine, and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from models.records import Checkpoint, Dataset, Job, JobEvent, JobStatus, Metric, Sample
from models.spec import JobSpec


def utcnow() -> datetime:
    return datetime.now(UTC)


@overload
def as_utc(value: datetime) -> datetime: ...
@overload
def as_utc(value: None) -> None: ...
def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with a different spec."""


class InvalidCursor(ValueError):
    pass


@dataclass(frozen=True)
class MetricPoint:
    name: str
    step: int
    value: float


class JobStore:
    """All reads and writes of jobs, events, metrics, samples, checkpoints and datasets."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    # ------------------------------------------------------------------ helpers

    def session(self) -> Session:
        return self._sessions()

    def _append_event(self, session: Session, job_id: str, kind: str, data: dict[str, Any]) -> int:
        # Allocating seq under the job row's lock makes events commit in seq order.
        seq = session.execute(
            update(Job).where(Job.id == job_id).values(last_event=Job.last_event + 1).returning(Job.last_event)
        ).scalar_one()
        session.add(JobEvent(job_id=job_id, seq=seq, kind=kind, time=utcnow(), data=data))
        return seq

    def _transition(self, session: Session, job: Job, to: str, reason: str, **extra: Any) -> None:
        data = {"from": job.status, "to": to, "reason": reason, "attempt": job.attempt, **extra}
        job.status = to
        job.updated_at = utcnow()
        session.flush()
        self._append_event(session, job.id, "status", data)

    # ------------------------------------------------------------------ jobs (API side)

    def create_job(self, *, owner: str, spec: JobSpec, idempotency_key: str | None) -> tuple[Job, bool]:
        """Store a new queued job; with a known idempotency key, return the earlier job instead."""
        spec_json = spec.model_dump(mode="json")
        spec_hash = hashlib.sha256(json.dumps(spec_json, sort_keys=True).encode()).hexdigest()
        with self.session() as session, session.begin():
            if idempotency_key is not None:
                earlier = session.scalar(select(Job).where(Job.owner == owner, Job.idempotency_key == idempotency_key))
                if earlier is not None:
                    if earlier.spec_hash != spec_hash:
                        raise IdempotencyConflict(idempotency_key)
                    return earlier, False
            now = utcnow()
            job = Job(
                id=str(uuid.uuid4()),
                owner=owner,
                name=spec.name,
                status=JobStatus.QUEUED,
                spec=spec_json,
                tags=dict(spec.tags),
                dataset_id=spec.dataset.id,
                idempotency_key=idempotency_key,
                spec_hash=spec_hash,
                attempt=0,
                max_attempts=spec.training.max_attempts,
                step=0,
                total_steps=spec.training.steps,
                latest_metrics={},
                last_event=0,
                created_at=now,
                updated_at=now,
            )
            session.add(job)
            session.flush()
            self._append_event(
                session, job.id, "status", {"from": None, "to": JobStatus.QUEUED, "reason": "submitted", "attempt": 0}
            )
        return job, True

    def get_job(self, *, job_id: str, owner: str | None = None) -> Job | None:
        """The job, or None when it does not exist or belongs to another owner."""
        with self.session() as session:
            query = select(Job).where(Job.id == job_id)
            if owner is not None:
                query = query.where(Job.owner == owner)
            return session.scalar(query)

    def list_jobs(
        self,
        *,
        owner: str,
        status: str | None = None,
        tag: tuple[str, str] | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """Newest first; `cursor` is the opaque next_cursor of the previous page."""
        query = select(Job).where(Job.owner == owner).order_by(Job.seq.desc())
        if status is not None:
            query = query.where(Job.status == status)
        if cursor is not None:
            try:
                before = int(cursor)
            except ValueError as exc:
                raise InvalidCursor(cursor) from exc
            query = query.where(Job.seq < before)
        with self.session() as session:
            if tag is None:
                jobs = list(session.scalars(query.limit(limit + 1)))
            else:
                # Tags are a small JSON object; filter in Python so SQLite and PostgreSQL agree.
                key, value = tag
                jobs = []
                for job in session.scalars(query.execution_options(yield_per=200)):
                    if job.tags.get(key) == value:
                        jobs.append(job)
                        if len(jobs) > limit:
                            break
        next_cursor = str(jobs[limit - 1].seq) if len(jobs) > limit else None
        return jobs[:limit], next_cursor

    def request_cancel(self, *, job_id: str, owner: str) -> Job | None:
        """Queued jobs are cancelled at once; running ones go to `cancelling` for the worker to stop."""
        with self.session() as session, session.begin():
            job = session.scalar(select(Job).where(Job.id == job_id, Job.owner == owner).with_for_update())
            if job is None:
                return None
            if job.status == JobStatus.QUEUED:
                self._transition(session, job, JobStatus.CANCELLED, "cancelled by the user before it started")
                job.finished_at = utcnow()
            elif job.status == JobStatus.RUNNING:
                self._transition(session, job, JobStatus.CANCELLING, "cancel requested by the user")
            return job

    def mark_enqueued(self, *, job_id: str) -> None:
        with self.session() as session, session.begin():
            session.execute(update(Job).where(Job.id == job_id).values(enqueued_at=utcnow()))

    # ------------------------------------------------------------------ jobs (worker side)

    def claim(self, *, job_id: str, worker: str) -> Job | None:
        """Take a queued job (conditional UPDATE); None when someone else has it or it is not queued."""
        now = utcnow()
        with self.session() as session, session.begin():
            claimed = session.execute(  # type: ignore[attr-defined]
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
                .values(
                    status=JobStatus.RUNNING,
                    attempt=Job.attempt + 1,
                    worker=worker,
                    heartbeat_at=now,
                    updated_at=now,
                    started_at=func.coalesce(Job.started_at, now),
                )
            ).rowcount
            if not claimed:
                return None
            job = session.scalars(select(Job).where(Job.id == job_id)).one()
            self._append_event(
                session,
                job_id,
                "status",
                {
                    "from": JobStatus.QUEUED,
                    "to": JobStatus.RUNNING,
                    "reason": f"claimed by {worker}",
                    "attempt": job.attempt,
                },
            )
            return job

    def _owned(self, job_id: str, worker: str, attempt: int) -> Any:
        return and_(
            Job.id == job_id,
            Job.worker == worker,
            Job.attempt == attempt,
            Job.status.in_((JobStatus.RUNNING, JobStatus.CANCELLING)),
        )

    def heartbeat(self, *, job_id: str, worker: str, attempt: int) -> str | None:
        """Renew the lease; the job's status, or None when this worker no longer holds it."""
        with self.session() as session, session.begin():
            return session.execute(
                update(Job)
                .where(self._owned(job_id, worker, attempt))
                .values(heartbeat_at=utcnow())
                .returning(Job.status)
            ).scalar_one_or_none()

    def record_progress(
        self,
        *,
        job_id: str,
        worker: str,
        attempt: int,
        step: int,
        steps_per_sec: float | None,
        points: Sequence[MetricPoint],
    ) -> str | None:
        """Write a batch of metric points (upsert by job, name, step) and the job's progress in one commit.

        Returns the job's status, or None when this worker no longer holds the job.
        """
        now = utcnow()
        latest: dict[str, float] = {}
        for point in sorted(points, key=lambda p: p.step):
            latest[point.name] = point.value
        with self.session() as session, session.begin():
            job = session.scalar(select(Job).where(self._owned(job_id, worker, attempt)).with_for_update())
            if job is None:
                return None
            if points:
                self._upsert_metrics(session, job_id, points)
                first, last = min(p.step for p in points), max(p.step for p in points)
                self._append_event(
                    session,
                    job_id,
                    "metrics",
                    {
                        "first_step": first,
                        "last_step": last,
                        "latest": latest,
                        "points": [[p.name, p.step, p.value] for p in points],
                    },
                )
            job.step = step
            job.steps_per_sec = steps_per_sec
            job.latest_metrics = {**job.latest_metrics, **latest}
            job.heartbeat_at = now
            job.updated_at = now
            return job.status

    def _upsert_metrics(self, session: Session, job_id: str, points: Iterable[MetricPoint]) -> None:
        rows = {(p.name, p.step): {"job_id": job_id, "name": p.name, "step": p.step, "value": p.value} for p in points}
        insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
        statement = insert(Metric).values(list(rows.values()))
        statement = statement.on_conflict_do_update(
            index_elements=[Metric.job_id, Metric.name, Metric.step], set_={"value": statement.excluded.value}
        )
        session.execute(statement)

    def add_sample(
        self,
        *,
        job_id: str,
        step: int,
        count: int,
        png_key: str,
        npy_key: str,
        labels: list[int] | None,
        evaluation: dict[str, float] | None,
    ) -> None:
        with self.session() as session, session.begin():
            sample = session.get(Sample, (job_id, step))
            if sample is None:
                sample = Sample(job_id=job_id, step=step)
                session.add(sample)
            sample.count, sample.png_key, sample.npy_key = count, png_key, npy_key
            sample.labels = {"labels": labels} if labels is not None else None
            sample.evaluation = evaluation
            sample.created_at = utcnow()
            self._append_event(session, job_id, "sample", {"step": step, "count": count, "evaluation": evaluation})

    def add_checkpoint(self, *, job_id: str, step: int, weights_key: str, state_key: str, size_bytes: int) -> None:
        with self.session() as session, session.begin():
            checkpoint = session.get(Checkpoint, (job_id, step))
            if checkpoint is None:
                checkpoint = Checkpoint(job_id=job_id, step=step)
                session.add(checkpoint)
            checkpoint.weights_key, checkpoint.state_key = weights_key, state_key
            checkpoint.size_bytes, checkpoint.created_at = size_bytes, utcnow()
            self._append_event(session, job_id, "checkpoint", {"step": step, "size_bytes": size_bytes})

    def finish(
        self, *, job_id: str, worker: str, attempt: int, status: str, reason: str, error: str | None = None
    ) -> bool:
        """Move a job this worker holds to a final status (or back to queued); False when it lost the lease."""
        with self.session() as session, session.begin():
            job = session.scalar(select(Job).where(self._owned(job_id, worker, attempt)).with_for_update())
            if job is None:
                return False
            self._transition(session, job, status, reason)
            job.error = error
            job.worker = None if status == JobStatus.QUEUED else job.worker
            if status in JobStatus.FINAL:
                job.finished_at = utcnow()
            return True

    # ------------------------------------------------------------------ reconciler

    def requeue_silent_jobs(self, *, lease_timeout: timedelta) -> list[str]:
        """Running jobs whose worker stopped renewing its lease go back to the queue (or fail after max_attempts).

        Returns the ids to send to the broker again.
        """
        cutoff = utcnow() - lease_timeout
        to_send = []
        with self.session() as session, session.begin():
            stale = session.scalars(
                select(Job)
                .where(Job.status.in_((JobStatus.RUNNING, JobStatus.CANCELLING)), Job.heartbeat_at < cutoff)
                .with_for_update()
            ).all()
            for job in stale:
                silent = f"worker {job.worker} silent for over {lease_timeout.total_seconds():.0f} s"
                job.worker = None
                if job.status == JobStatus.CANCELLING:
                    self._transition(session, job, JobStatus.CANCELLED, f"{silent} while cancelling")
                    job.finished_at = utcnow()
                elif job.attempt >= job.max_attempts:
                    job.error = f"{silent}; gave up after {job.attempt} attempts"
                    self._transition(session, job, JobStatus.FAILED, job.error)
                    job.finished_at = utcnow()
                else:
                    self._transition(
                        session, job, JobStatus.QUEUED, f"{silent}: re-queued to resume from its latest checkpoint"
                    )
                    job.enqueued_at = utcnow()
                    to_send.append(job.id)
        return to_send

    def unclaimed_jobs(self, *, older_than: timedelta) -> list[str]:
        """Queued jobs whose broker message may have been lost; marks them as sent again."""
        cutoff = utcnow() - older_than
        with self.session() as session, session.begin():
            ids = list(
                session.scalars(
                    select(Job.id).where(
                        Job.status == JobStatus.QUEUED, or_(Job.enqueued_at.is_(None), Job.enqueued_at < cutoff)
                    )
                )
            )
            if ids:
                session.execute(update(Job).where(Job.id.in_(ids)).values(enqueued_at=utcnow()))
        return ids

    # ------------------------------------------------------------------ events, metrics, artifacts (read side)

    def events_after(self, *, job_id: str, after: int, limit: int = 500) -> list[JobEvent]:
        with self.session() as session:
            return list(
                session.scalars(
                    select(JobEvent)
                    .where(JobEvent.job_id == job_id, JobEvent.seq > after)
                    .order_by(JobEvent.seq)
                    .limit(limit)
                )
            )

    def metric_names(self, *, job_id: str) -> list[str]:
        with self.session() as session:
            return list(
                session.scalars(select(Metric.name).where(Metric.job_id == job_id).distinct().order_by(Metric.name))
            )

    def metric_series(
        self, *, job_id: str, name: str, since_step: int, max_points: int
    ) -> tuple[list[int], list[float], bool]:
        """One series from `since_step`; longer than max_points, it comes back as each bucket's min and max.

        Returns steps, values, and whether the series was downsampled.
        """
        base = and_(Metric.job_id == job_id, Metric.name == name, Metric.step >= since_step)
        with self.session() as session:
            count, first, last = session.execute(
                select(func.count(), func.min(Metric.step), func.max(Metric.step)).where(base)
            ).one()
            if count <= max_points:
                points = session.execute(select(Metric.step, Metric.value).where(base).order_by(Metric.step)).all()
                return [p[0] for p in points], [p[1] for p in points], False
            # Two points per bucket (its min and its max) keep spikes visible.
            buckets = max(1, max_points // 2)
            width = max(1, -(-(last - first + 1) // buckets))
            bucket = (Metric.step - first) // width
            rows = session.execute(
                select(
                    bucket.label("b"),
                    func.min(Metric.value),
                    func.max(Metric.value),
                    func.min(Metric.step),
                    func.max(Metric.step),
                )
                .where(base)
                .group_by("b")
                .order_by("b")
            ).all()
        steps: list[int] = []
        values: list[float] = []
        for _b, low, high, first_step, last_step in rows:
            steps += [int(first_step), int(last_step)]
            values += [float(low), float(high)]
        return steps, values, True

    def list_samples(self, *, job_id: str) -> list[Sample]:
        with self.session() as session:
            return list(session.scalars(select(Sample).where(Sample.job_id == job_id).order_by(Sample.step)))

    def get_sample(self, *, job_id: str, step: int) -> Sample | None:
        with self.session() as session:
            return session.get(Sample, (job_id, step))

    def list_checkpoints(self, *, job_id: str) -> list[Checkpoint]:
        with self.session() as session:
            return list(
                session.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step))
            )

    def get_checkpoint(self, *, job_id: str, step: int | None) -> Checkpoint | None:
        """The checkpoint at `step`, or the latest when step is None."""
        with self.session() as session:
            if step is not None:
                return session.get(Checkpoint, (job_id, step))
            return session.scalar(
                select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step.desc()).limit(1)
            )

    # ------------------------------------------------------------------ datasets

    def get_dataset(self, *, dataset_id: str, owner: str | None = None) -> Dataset | None:
        with self.session() as session:
            query = select(Dataset).where(Dataset.id == dataset_id)
            if owner is not None:
                query = query.where(Dataset.owner == owner)
            return session.scalar(query)

    def find_dataset(self, *, owner: str, content_hash: str) -> Dataset | None:
        """The owner's data set with this content hash, if one was uploaded before."""
        with self.session() as session:
            return session.scalar(select(Dataset).where(Dataset.owner == owner, Dataset.content_hash == content_hash))

    def create_dataset(
        self,
        *,
        dataset_id: str,
        owner: str,
        name: str,
        format: str,
        info: dict[str, Any],
        content_hash: str,
        size_bytes: int,
        data_key: str,
        preview_key: str | None,
    ) -> tuple[Dataset, bool]:
        """Store a new data set record; when the owner has this content already, return that one (and False)."""
        record = Dataset(
            id=dataset_id,
            owner=owner,
            name=name,
            format=format,
            info=info,
            content_hash=content_hash,
            size_bytes=size_bytes,
            data_key=data_key,
            preview_key=preview_key,
            created_at=utcnow(),
        )
        try:
            with self.session() as session, session.begin():
                session.add(record)
            return record, True
        except IntegrityError:
            existing = self.find_dataset(owner=owner, content_hash=content_hash)
            if existing is None:
                raise
            return existing, False

    def list_datasets(
        self, *, owner: str, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[Dataset], str | None]:
        """Newest first; `cursor` is the opaque next_cursor of the previous page."""
        query = select(Dataset).where(Dataset.owner == owner).order_by(Dataset.seq.desc())
        if cursor is not None:
            try:
                query = query.where(Dataset.seq < int(cursor))
            except ValueError as exc:
                raise InvalidCursor(cursor) from exc
        with self.session() as session:
            datasets = list(session.scalars(query.limit(limit + 1)))
        next_cursor = str(datasets[limit - 1].seq) if len(datasets) > limit else None
        return datasets[:limit], next_cursor

    def delete_dataset(self, *, dataset_id: str, owner: str) -> Dataset | None:
        """Delete the owner's data set record (None when there is none); DatasetInUse while an active job uses it."""
        with self.session() as session, session.begin():
            record = session.scalar(
                select(Dataset).where(Dataset.id == dataset_id, Dataset.owner == owner).with_for_update()
            )
            if record is None:
                return None
            users = list(
                session.scalars(
                    select(Job.id)
                    .where(Job.dataset_id == dataset_id, Job.status.in_(JobStatus.ACTIVE))
                    .order_by(Job.seq)
                    .limit(10)
                )
            )
            if users:
                raise DatasetInUse(users)
            session.delete(record)
            return record

    def count_jobs_by_status(self) -> dict[str, int]:
        with self.session() as session:
            rows = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
        return {status: int(count) for status, count in rows}

    def ping(self) -> None:
        with self.session() as session:
            session.execute(select(1))


class DatasetInUse(Exception):
    """A data set cannot be deleted while queued or running jobs use it."""

    def __init__(self, job_ids: list[str]) -> None:
        super().__init__(f"used by active jobs: {', '.join(job_ids)}")
        self.job_ids = job_ids
