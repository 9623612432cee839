"""What a job produces: its event log, metric series, sample snapshots and checkpoints."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import and_, func, select, text, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from models.records import DB_INT_MAX, DB_INT_MIN, Checkpoint, Job, JobEvent, Metric, Sample
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
