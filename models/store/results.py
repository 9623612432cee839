"""What a job produces: its event log, metric series, sample snapshots and checkpoints."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import and_, delete, func, select, text, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from models.records import (
    DB_INT_MAX,
    DB_INT_MIN,
    Checkpoint,
    Generation,
    GenerationStatus,
    Job,
    JobEvent,
    JobStatus,
    Metric,
    Sample,
)
from models.retention import Retention
from models.store.base import StoreBase, append_event, utcnow
from models.store.bounds import clamp, in_db_range, storable
from models.store.paging import keyset_page

# Rows per metrics statement. On PostgreSQL a chunk travels as three array parameters (unnest), far under
# the wire protocol's 65,535 bound parameters; on SQLite each row is bound alone (executemany).
METRIC_ROWS_PER_STATEMENT = 10_000
# Points per `metrics` event, so one large flush does not become one multi-megabyte SSE message.
EVENT_POINTS_MAX = 5000
EVENTS_READ_MAX = 10_000

_UPSERT_METRICS_POSTGRESQL = text(
    """
    INSERT INTO metrics (job_id, name, step, value)
    SELECT :job_id, m.name, m.step, m.value
    FROM unnest(CAST(:names AS varchar[]), CAST(:steps AS bigint[]), CAST(:values AS double precision[]))
        AS m(name, step, value)
    ON CONFLICT (job_id, name, step) DO UPDATE SET value = excluded.value
    """
)


# The kind of the event that says which checkpoints were pruned (retention) or deleted (DELETE .../checkpoints/{step}).
PRUNED_EVENT = "pruned"


class CheckpointInUse(Exception):
    """The checkpoint at `step` cannot be deleted now: `reason` says what needs it."""

    def __init__(self, step: int, reason: str) -> None:
        super().__init__(f"checkpoint {step} is in use: {reason}")
        self.step, self.reason = step, reason


class JobNotFinal(Exception):
    """Only an ended job (succeeded, failed, cancelled) can be deleted; `status` is the job's."""

    def __init__(self, status: str) -> None:
        super().__init__(f"the job is {status}: only a succeeded, failed or cancelled job can be deleted")
        self.status = status


class JobInUse(Exception):
    """Active jobs (`users`, at most 10 ids) start from this job's checkpoints (init_from)."""

    def __init__(self, users: list[str]) -> None:
        super().__init__(f"jobs {', '.join(users)} start from this job (init_from)")
        self.users = users


@dataclass(frozen=True)
class DeletedJob:
    """What delete_job removed: the artifact keys the caller deletes, and the checkpoint bytes freed."""

    job_id: str
    keys: list[str]
    freed_bytes: int


@dataclass(frozen=True)
class MetricPoint:
    """One value of the series `name` at training step `step`."""

    name: str
    step: int
    value: float


def write_metrics(session: Session, job_id: str, points: Iterable[MetricPoint]) -> dict[str, float]:
    """Upsert `points` by (job, name, step) in the caller's transaction, and log them as `metrics` events.

    Any number of points: the rows go in statements of at most METRIC_ROWS_PER_STATEMENT,
    each far under the database's bound-parameter limit (PostgreSQL: three arrays;
    SQLite: one row's four per execution); the events hold at most EVENT_POINTS_MAX
    points each. A point repeated in the batch keeps its last value.
    Returns each series' value at its highest step in the batch.
    """
    rows = {(p.name, p.step): p.value for p in points}
    if not rows:
        return {}
    ordered = sorted(((name, step, value) for (name, step), value in rows.items()), key=lambda r: (r[1], r[0]))
    connection = session.connection()
    chunks = [ordered[i : i + METRIC_ROWS_PER_STATEMENT] for i in range(0, len(ordered), METRIC_ROWS_PER_STATEMENT)]
    if connection.dialect.name == "postgresql":
        for chunk in chunks:
            names, steps, values = ([row[i] for row in chunk] for i in range(3))
            connection.execute(
                _UPSERT_METRICS_POSTGRESQL, {"job_id": job_id, "names": names, "steps": steps, "values": values}
            )
    else:
        statement = sqlite.insert(Metric)
        statement = statement.on_conflict_do_update(
            index_elements=["job_id", "name", "step"], set_={"value": statement.excluded.value}
        )
        for chunk in chunks:
            params = [{"job_id": job_id, "name": name, "step": step, "value": value} for name, step, value in chunk]
            connection.execute(statement, params)
    latest_of_batch: dict[str, float] = {}
    for start in range(0, len(ordered), EVENT_POINTS_MAX):
        chunk_items = ordered[start : start + EVENT_POINTS_MAX]
        latest = {name: value for name, _step, value in chunk_items}
        latest_of_batch.update(latest)
        append_event(
            session,
            job_id,
            "metrics",
            {
                "first_step": chunk_items[0][1],
                "last_step": chunk_items[-1][1],
                "latest": latest,
                "points": [list(row) for row in chunk_items],
            },
        )
    return latest_of_batch


class ResultsStore(StoreBase):
    """Events, metrics, samples and checkpoints of a job."""

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
        """Record (or replace) the sample snapshot at `step` and log a `sample` event."""
        with self.session() as session, session.begin():
            sample = session.get(Sample, (job_id, step))
            if sample is None:
                sample = Sample(job_id=job_id, step=step)
                session.add(sample)
            sample.count, sample.png_key, sample.npy_key = count, png_key, npy_key
            sample.labels = {"labels": labels} if labels is not None else None
            sample.evaluation = evaluation
            sample.created_at = utcnow()
            append_event(session, job_id, "sample", {"step": step, "count": count, "evaluation": evaluation})

    def add_checkpoint(self, *, job_id: str, step: int, weights_key: str, state_key: str, size_bytes: int) -> None:
        """Record (or replace) the checkpoint at `step` and log a `checkpoint` event.

        `size_bytes` is the size of the weights file (safetensors at `weights_key`)
        that a user downloads, not of the resume state. In the same transaction the
        job's progress step advances to max(its step, `step`), so progress is never
        behind the latest checkpoint.
        """
        with self.session() as session, session.begin():
            checkpoint = session.get(Checkpoint, (job_id, step))
            if checkpoint is None:
                checkpoint = Checkpoint(job_id=job_id, step=step)
                session.add(checkpoint)
            checkpoint.weights_key, checkpoint.state_key = weights_key, state_key
            checkpoint.size_bytes, checkpoint.created_at = size_bytes, utcnow()
            append_event(session, job_id, "checkpoint", {"step": step, "size_bytes": size_bytes})
            session.execute(update(Job).where(Job.id == job_id, Job.step < step).values(step=step))

    def prune_checkpoints(self, *, job_id: str, retention: Retention) -> list[Checkpoint]:
        """Delete the rows of the job's checkpoints that `retention` does not keep, and log a `pruned` event.

        Kept whatever `retention` says: the latest; a step that an active (queued, running, cancelling) job's
        `init_from` names (its step, or "latest"); a step a queued or running generate request reads. One
        transaction under the job row's lock, so two pruners cannot interleave. Returns the deleted rows (their
        artifact keys are the caller's to delete: rows go first, so no listed checkpoint lacks its files).
        """
        if retention.keeps_all or not storable(job_id):
            return []
        with self.session() as session, session.begin():
            if session.scalar(select(Job.id).where(Job.id == job_id).with_for_update()) is None:
                return []
            rows = list(session.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id)))
            protected = _needed_steps(session, job_id)
            doomed = set(retention.pruned((row.step for row in rows), protected))
            gone = [row for row in rows if row.step in doomed]
            if gone:
                session.execute(
                    delete(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.step.in_(sorted(doomed)))
                )
                append_event(
                    session,
                    job_id,
                    PRUNED_EVENT,
                    {"steps": sorted(doomed), "reason": f"retention ({retention.describe()})", "key": None},
                )
            return sorted(gone, key=lambda row: row.step)

    def delete_checkpoint(self, *, job_id: str, step: int, key: str | None = None) -> Checkpoint | None:
        """Delete the row of the job's checkpoint at `step` and log a `pruned` event naming `key` (the deleting API
        key's id); None when there is none. The caller deletes its files.

        Raises CheckpointInUse for the latest checkpoint of a job that has not ended (its resume starts there), or
        a checkpoint an active job's init_from or a pending generate request needs.
        """
        if not in_db_range(step) or not storable(job_id):
            return None
        with self.session() as session, session.begin():
            job = session.scalar(select(Job).where(Job.id == job_id).with_for_update())
            if job is None:
                return None
            row = session.get(Checkpoint, (job_id, step))
            if row is None:
                return None
            latest = session.scalar(select(func.max(Checkpoint.step)).where(Checkpoint.job_id == job_id))
            if job.status not in JobStatus.FINAL and step == latest:
                raise CheckpointInUse(step, f"it is the latest of a job that is {job.status} (a resume starts there)")
            needed = _needed_steps(session, job_id, latest=latest)
            if step in needed:
                raise CheckpointInUse(step, needed[step])
            session.delete(row)
            append_event(session, job_id, PRUNED_EVENT, {"steps": [step], "reason": "deleted", "key": key})
            return row

    def delete_job(self, *, job_id: str, owner: str) -> DeletedJob | None:
        """Delete an ended job of `owner` and everything the store holds of it (events, metrics, samples,
        checkpoints, generate requests); None when there is no such job. The caller deletes the artifacts: the
        returned keys and the job's folder (worker/checkpoints.py job_prefix).

        Raises JobNotFinal unless the job succeeded, failed or was cancelled; JobInUse while an active job's
        init_from names it. The owner's stored_bytes drop by `freed_bytes` (the checkpoint rows are what it counts).
        """
        if not storable(job_id, owner):
            return None
        with self.session() as session, session.begin():
            job = session.scalar(select(Job).where(Job.id == job_id, Job.owner == owner).with_for_update())
            if job is None:
                return None
            if job.status not in JobStatus.FINAL:
                raise JobNotFinal(job.status)
            users = _init_from_users(session, job_id)
            if users:
                raise JobInUse(sorted(users)[:10])
            checkpoints = list(session.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id)))
            samples = list(session.scalars(select(Sample).where(Sample.job_id == job_id)))
            results = session.scalars(
                select(Generation.result_key).where(Generation.job_id == job_id, Generation.result_key.is_not(None))
            )
            keys = [k for c in checkpoints for k in (c.weights_key, c.state_key)]
            keys += [k for s in samples for k in (s.png_key, s.npy_key)] + [str(k) for k in results]
            for table in (Generation, Checkpoint, Sample, Metric, JobEvent):
                session.execute(delete(table).where(table.job_id == job_id))
            session.delete(job)  # other tables that hang off a job (metric chunks) go with it: ON DELETE CASCADE
            return DeletedJob(job_id=job_id, keys=keys, freed_bytes=sum(c.size_bytes for c in checkpoints))

    def events_after(self, *, job_id: str, after: int, limit: int = 500) -> list[JobEvent]:
        """The job's events with seq > `after`, in seq order, at most `limit` (clamped to 1..10,000).

        `after` may be any integer (a client's Last-Event-ID): past the largest seq
        there is nothing, below 0 means from the start.
        """
        if after >= DB_INT_MAX or not storable(job_id):
            return []
        with self.session() as session:
            return list(
                session.scalars(
                    select(JobEvent)
                    .where(JobEvent.job_id == job_id, JobEvent.seq > max(after, 0))
                    .order_by(JobEvent.seq)
                    .limit(clamp(limit, 1, EVENTS_READ_MAX))
                )
            )

    def metric_names(self, *, job_id: str) -> list[str]:
        """The names of the job's metric series, sorted."""
        if not storable(job_id):
            return []
        with self.session() as session:
            return list(
                session.scalars(select(Metric.name).where(Metric.job_id == job_id).distinct().order_by(Metric.name))
            )

    def metric_series(
        self, *, job_id: str, name: str, since_step: int, max_points: int
    ) -> tuple[list[int], list[float], bool]:
        """One series from `since_step` (any integer); longer than max_points, it comes back as each bucket's min and max.

        Returns steps, values, and whether the series was downsampled.
        """
        if since_step > DB_INT_MAX or not storable(job_id, name):
            return [], [], False
        base = and_(Metric.job_id == job_id, Metric.name == name, Metric.step >= max(since_step, DB_INT_MIN))
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
        """The job's sample snapshots in step order."""
        if not storable(job_id):
            return []
        with self.session() as session:
            return list(session.scalars(select(Sample).where(Sample.job_id == job_id).order_by(Sample.step)))

    def page_samples(self, *, job_id: str, limit: int, cursor: str | None) -> tuple[list[Sample], str | None]:
        """One page of the job's sample snapshots in step order, and the next page's cursor (None at the end).

        `cursor` is the next_cursor of the previous page (the last step it held); raises InvalidCursor for any other
        string. A `job_id` that cannot be stored has no samples.
        """
        if not storable(job_id):
            return [], None
        query = select(Sample).where(Sample.job_id == job_id)
        with self.session() as session:
            scope = self.cursor_scope("samples", job_id)
            return keyset_page(session, query, Sample.step, scope=scope, limit=limit, cursor=cursor, ascending=True)

    def get_sample(self, *, job_id: str, step: int | None) -> Sample | None:
        """The snapshot at `step` (any integer), or the latest when step is None; None when there is none."""
        if (step is not None and not in_db_range(step)) or not storable(job_id):
            return None
        with self.session() as session:
            if step is not None:
                return session.get(Sample, (job_id, step))
            return session.scalar(select(Sample).where(Sample.job_id == job_id).order_by(Sample.step.desc()).limit(1))

    def list_checkpoints(self, *, job_id: str) -> list[Checkpoint]:
        """The job's checkpoints in step order."""
        if not storable(job_id):
            return []
        with self.session() as session:
            return list(
                session.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step))
            )

    def page_checkpoints(self, *, job_id: str, limit: int, cursor: str | None) -> tuple[list[Checkpoint], str | None]:
        """One page of the job's checkpoints in step order, and the next page's cursor (None at the end); as
        page_samples. Raises InvalidCursor."""
        if not storable(job_id):
            return [], None
        query = select(Checkpoint).where(Checkpoint.job_id == job_id)
        with self.session() as session:
            scope = self.cursor_scope("checkpoints", job_id)
            return keyset_page(session, query, Checkpoint.step, scope=scope, limit=limit, cursor=cursor, ascending=True)

    def get_checkpoint(self, *, job_id: str, step: int | None) -> Checkpoint | None:
        """The checkpoint at `step` (any integer), or the latest when step is None; None when there is none."""
        if (step is not None and not in_db_range(step)) or not storable(job_id):
            return None
        with self.session() as session:
            if step is not None:
                return session.get(Checkpoint, (job_id, step))
            return session.scalar(
                select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step.desc()).limit(1)
            )


def _init_from_users(session: Session, job_id: str) -> dict[str, str]:
    """{job id: its init_from step, as text} of the active jobs whose init_from names `job_id`."""
    source = Job.spec["init_from"]["job"].as_string()
    rows = session.execute(
        select(Job.id, Job.spec["init_from"]["step"].as_string()).where(
            Job.status.in_(JobStatus.ACTIVE), source == job_id
        )
    ).all()
    return {str(user): str(step) for user, step in rows}


def _needed_steps(session: Session, job_id: str, latest: int | None = None) -> dict[int, str]:
    """{step: what needs it} of the job's checkpoints that must stay: named by an active job's init_from (a step,
    or "latest" for `latest` when given), or read by a queued or running generate request."""
    needed: dict[int, str] = {}
    for user, step in _init_from_users(session, job_id).items():
        if step == "latest" and latest is not None:
            needed[latest] = f"job {user} is to start from it (init_from latest)"
        elif step.isdigit():
            needed[int(step)] = f"job {user} is to start from it (init_from)"
    params = session.scalars(
        select(Generation.params).where(
            Generation.job_id == job_id,
            Generation.status.in_((GenerationStatus.QUEUED, GenerationStatus.RUNNING)),
        )
    )
    for param in params:
        if isinstance(param, dict) and isinstance(param.get("step"), int):
            needed.setdefault(param["step"], "a generate request reads it")
    return needed
