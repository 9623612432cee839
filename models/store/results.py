"""What a job produces: its event log, metric series, sample snapshots and checkpoints.

Metric series are stored in chunks (table metric_chunks, models/records.py MetricChunk): one row holds up to
CHUNK_POINTS points of one series as packed little-endian arrays (int64 steps, float64 values) plus a roll-up
made at write time (per ROLLUP_GROUP consecutive points: the min and the max with the steps where they occur).
So a flush of N points costs one row per series, not N index entries (about 17 bytes a point on disk instead of
about 90 for a row per point), and a 1M-point series downsamples from its roll-ups (about 0.5 MB) instead of a
scan of a million rows. The chunks of one series never overlap in steps: a write that touches the steps of
existing chunks (a retried batch, a replay after a resume) merges them, the new value of a step winning, so a
point is stored exactly once however often it is written. A small tail chunk is merged with the next append, so
a slow job's one-point flushes do not leave one row per point.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import BigInteger, and_, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.dml import ReturningDelete

from models.records import (
    DB_INT_MAX,
    DB_INT_MIN,
    Checkpoint,
    Generation,
    GenerationStatus,
    Job,
    JobEvent,
    JobStatus,
    MetricChunk,
    Sample,
)
from models.retention import Retention
from models.store.base import StoreBase, append_event, append_events, utcnow
from models.store.bounds import clamp, in_db_range, storable
from models.store.paging import keyset_page

# Points per chunk row at most (64 KiB of steps and values).
CHUNK_POINTS = 4096
# A series' last chunk under this many points is rewritten with the next append (bounded rewrite per flush).
TAIL_MERGE_POINTS = 512
# Consecutive points per roll-up entry (32 bytes: min value, its step, max value, its step).
ROLLUP_GROUP = 64
# Points per `metrics` event at most (a batch is split between steps), so one large flush does not become one
# multi-megabyte SSE message when the API inlines the points.
EVENT_POINTS_MAX = 5000
EVENTS_READ_MAX = 10_000

# The kind of the event that says which checkpoints were pruned (retention) or deleted (DELETE .../checkpoints/{step}).
PRUNED_EVENT = "pruned"

_STEPS = np.dtype("<i8")
_VALUES = np.dtype("<f8")
_ROLLUP = np.dtype([("min_value", "<f8"), ("min_step", "<i8"), ("max_value", "<f8"), ("max_step", "<i8")])


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


class JobInStudy(Exception):
    """The job is one of a study's: deleting it would rewrite the study's record (its status and table)."""

    def __init__(self, study_id: str) -> None:
        super().__init__(f"the job belongs to study {study_id}")
        self.study_id = study_id


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


def _rollup(steps: np.ndarray, values: np.ndarray) -> bytes:
    """Per ROLLUP_GROUP consecutive points: (min value, its step, max value, its step), packed as _ROLLUP."""
    starts = np.arange(0, len(steps), ROLLUP_GROUP)
    out = np.empty(len(starts), dtype=_ROLLUP)
    low, high = _segment_extremes(values, starts)
    out["min_value"], out["min_step"] = values[low], steps[low]
    out["max_value"], out["max_step"] = values[high], steps[high]
    return out.tobytes()


def _segment_extremes(values: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the first minimum and the first maximum of each segment values[starts[i]:starts[i+1]].

    `starts` is increasing, starts[0] == 0, every segment non-empty. Vectorised: O(len(values)).
    """
    lengths = np.diff(np.append(starts, len(values)))
    segment = np.repeat(np.arange(len(starts)), lengths)
    result = []
    for reduce in (np.fmin, np.fmax):
        extreme = reduce.reduceat(values, starts)
        hits = np.flatnonzero(values == extreme[segment])
        first = np.ones(len(hits), dtype=bool)
        first[1:] = segment[hits[1:]] != segment[hits[:-1]]
        index = starts.copy()  # a segment of NaNs only: its first point
        index[segment[hits[first]]] = hits[first]
        result.append(index)
    return result[0], result[1]


def _chunk_rows(job_id: str, name: str, steps: np.ndarray, values: np.ndarray) -> list[dict[str, object]]:
    """metric_chunks rows for one series' points (sorted by step, unique), CHUNK_POINTS at most each."""
    rows: list[dict[str, object]] = []
    for start in range(0, len(steps), CHUNK_POINTS):
        s, v = steps[start : start + CHUNK_POINTS], values[start : start + CHUNK_POINTS]
        rows.append(
            {
                "job_id": job_id,
                "name": name,
                "first_step": int(s[0]),
                "last_step": int(s[-1]),
                "count": len(s),
                "first_value": float(v[0]),
                "last_value": float(v[-1]),
                "steps": s.astype(_STEPS, copy=False).tobytes(),
                "values": v.astype(_VALUES, copy=False).tobytes(),
                "rollup": _rollup(s, v),
            }
        )
    return rows


def _merge(parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """One series from parts in write order: sorted by step, a step written twice keeps its last value."""
    steps = np.concatenate([p[0] for p in parts])
    values = np.concatenate([p[1] for p in parts])
    if len(steps) < 2 or bool((steps[1:] > steps[:-1]).all()):  # already in order, no step twice (an append)
        return steps, values
    order = np.argsort(steps, kind="stable")
    steps, values = steps[order], values[order]
    keep = np.ones(len(steps), dtype=bool)
    keep[:-1] = steps[1:] != steps[:-1]  # the last of equal steps is the latest written
    return steps[keep], values[keep]


def write_metrics(session: Session, job_id: str, points: Iterable[MetricPoint]) -> dict[str, float]:
    """Store `points` (by job, name, step: a step written again overwrites) in the caller's transaction, and log
    them as `metrics` events.

    Any number of points, in five statements whatever their number and the series': the chunks the batch
    rewrites, deleted and returned in one statement (chunks that overlap the batch's steps, and each series' small
    tail before them: none else when appending); the new chunk rows in one insert; the events' seqs, rows and
    notification (append_events). The events carry no points: each holds first_step, last_step, count and latest
    ({name: value at its highest step in the event}) for at most EVENT_POINTS_MAX points, split between steps; the
    API inlines the points when it serves the event (metric_points). A point repeated in the batch keeps its last
    value. Returns each series' value at its highest step in the batch.
    """
    by_name: dict[str, dict[int, float]] = {}
    for point in points:  # one pass: grouped by series, a step given twice keeps its last value
        by_name.setdefault(point.name, {})[point.step] = point.value
    if not by_name:
        return {}
    series = {
        name: _merge(
            [
                (
                    np.fromiter(values.keys(), dtype=np.int64, count=len(values)),
                    np.fromiter(values.values(), dtype=np.float64, count=len(values)),
                )
            ]
        )
        for name, values in by_name.items()
    }
    _store_series(session, job_id, dict(series))  # merges old points into its copy; the events tell the batch
    append_events(session, job_id, "metrics", _metrics_events(series))
    return {name: float(values[-1]) for name, (_steps, values) in series.items()}


def _rewritten_chunks() -> ReturningDelete[str, bytes, bytes]:
    """DELETE ... RETURNING (name, steps, values) of the chunks a batch rewrites: those of the series
    `names` of job `job_id` that overlap the steps `lowest`..`highest`, and each series' tail under
    TAIL_MERGE_POINTS points that ends before `lowest`. Built once (building costs as much as running it)."""
    outer = aliased(MetricChunk, name="c")
    tail = select(func.max(MetricChunk.last_step)).where(
        MetricChunk.job_id == bindparam("job_id"), MetricChunk.name == outer.name
    )
    lowest, highest = bindparam("lowest", type_=BigInteger), bindparam("highest", type_=BigInteger)
    rewritten = select(outer.id).where(
        outer.job_id == bindparam("job_id"),
        outer.name.in_(bindparam("names", expanding=True)),
        or_(
            and_(outer.last_step >= lowest, outer.first_step <= highest),
            # Before the batch only: a tail after it (a replay of early steps) merged would overlap the chunks between.
            and_(outer.count < TAIL_MERGE_POINTS, outer.last_step < lowest, outer.last_step == tail.scalar_subquery()),
        ),
    )
    return (
        delete(MetricChunk)
        .where(MetricChunk.id.in_(rewritten))
        .returning(MetricChunk.name, MetricChunk.steps, MetricChunk.values)
    )


# Run on the session's connection (Core): no ORM objects of these rows exist, and the ORM's bookkeeping was part of
# the cost of every flush.
_DELETE_REWRITTEN = _rewritten_chunks()
_INSERT_CHUNKS = insert(MetricChunk)


def _store_series(session: Session, job_id: str, series: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Merge each series' new points into its chunks: the chunks that overlap the batch's step range (lowest to
    highest over its series) and each small tail before it are deleted (returning their points) and written again
    with the new points, in one DELETE ... RETURNING and one INSERT. So the chunks of a series never overlap, and a
    flush that appends rewrites only the small tails."""
    lowest = min(int(steps[0]) for steps, _values in series.values())
    highest = max(int(steps[-1]) for steps, _values in series.values())
    connection = session.connection()
    old: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for name, steps_blob, values_blob in connection.execute(
        _DELETE_REWRITTEN, {"job_id": job_id, "names": list(series), "lowest": lowest, "highest": highest}
    ):
        old.setdefault(name, []).append(_decode(steps_blob, values_blob))
    for name, parts in old.items():  # old chunks share no step, in any order; the new points go last and win
        series[name] = _merge([*parts, series[name]])
    new_rows = [row for name, (steps, values) in series.items() for row in _chunk_rows(job_id, name, steps, values)]
    connection.execute(_INSERT_CHUNKS, new_rows)


def _metrics_events(series: dict[str, tuple[np.ndarray, np.ndarray]]) -> list[dict[str, object]]:
    """The data of the `metrics` events of a batch: at most EVENT_POINTS_MAX points each (whole steps), in step
    order, without the points."""
    # A series holds a step once: a step's count over all series is its number of points.
    all_steps, per_step = np.unique(np.concatenate([steps for steps, _values in series.values()]), return_counts=True)
    cumulative = np.cumsum(per_step)
    events: list[dict[str, object]] = []
    start = 0
    while start < len(all_steps):
        done = int(cumulative[start - 1]) if start else 0
        end = max(start + 1, int(np.searchsorted(cumulative, done + EVENT_POINTS_MAX, side="right")))
        first, last = int(all_steps[start]), int(all_steps[end - 1])
        latest: dict[str, float] = {}
        for name, (steps, values) in series.items():
            upto = int(np.searchsorted(steps, last, side="right"))
            if upto and steps[upto - 1] >= first:
                latest[name] = float(values[upto - 1])
        count = int(cumulative[end - 1]) - done
        events.append({"first_step": first, "last_step": last, "count": count, "latest": latest})
        start = end
    return events


def series_of(
    session: Session, job_ids: Sequence[str], names: Sequence[str]
) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """(job id, name) → (steps int64, values float64) in step order: every point of these jobs' series `names`."""
    parts: dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray]]] = {}
    for job_id, name, steps_blob, values_blob in session.execute(
        select(MetricChunk.job_id, MetricChunk.name, MetricChunk.steps, MetricChunk.values)
        .where(MetricChunk.job_id.in_(list(job_ids)), MetricChunk.name.in_(list(names)))
        .order_by(MetricChunk.job_id, MetricChunk.name, MetricChunk.first_step)
    ):
        parts.setdefault((job_id, name), []).append(_decode(steps_blob, values_blob))
    return {
        key: (np.concatenate([p[0] for p in chunks]), np.concatenate([p[1] for p in chunks]))
        for key, chunks in parts.items()
    }


def _decode(steps_blob: bytes, values_blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    return np.frombuffer(steps_blob, dtype=_STEPS), np.frombuffer(values_blob, dtype=_VALUES)


def downsample(
    steps: np.ndarray,
    values: np.ndarray,
    max_points: int,
    *,
    lows: tuple[np.ndarray, np.ndarray] | None = None,
    highs: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[list[int], list[float]]:
    """At most `max_points` (>= 2) points of a series: its first and last point, and each bucket's min and max at the
    steps where they occur (buckets of equal step width, (max_points - 2) // 2 of them), in step order.

    `steps`/`values`: the series (sorted by step). `lows`/`highs`: (steps, values) candidates for the buckets'
    minima and maxima when they are not all points (a roll-up's per-group extremes); default: the points.
    """
    first, last = int(steps[0]), int(steps[-1])
    out = {first: float(values[0]), last: float(values[-1])}
    buckets = (max_points - 2) // 2
    if buckets > 0:
        width = -(-(last - first + 1) // buckets)
        for (cand_steps, cand_values), pick in ((lows or (steps, values), 0), (highs or (steps, values), 1)):
            if not len(cand_steps):
                continue
            order = np.argsort(cand_steps, kind="stable")
            cand_steps, cand_values = cand_steps[order], cand_values[order]
            bucket = (cand_steps - first) // width
            starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
            index = _segment_extremes(cand_values, starts)[pick]
            out.update(zip(cand_steps[index].tolist(), cand_values[index].tolist(), strict=True))
    ordered = sorted(out.items())
    return [s for s, _v in ordered], [v for _s, v in ordered]


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

        Raises JobNotFinal unless the job succeeded, failed or was cancelled; JobInStudy for a study's job (a
        finished study's status and table are made of its jobs); JobInUse while an active job's init_from names it. The owner's stored_bytes drop by `freed_bytes` (the checkpoint rows are what it counts).
        """
        if not storable(job_id, owner):
            return None
        with self.session() as session, session.begin():
            job = session.scalar(select(Job).where(Job.id == job_id, Job.owner == owner).with_for_update())
            if job is None:
                return None
            if job.status not in JobStatus.FINAL:
                raise JobNotFinal(job.status)
            if job.study_id is not None:
                raise JobInStudy(job.study_id)
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
            for table in (Generation, Checkpoint, Sample, MetricChunk, JobEvent):
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
                session.scalars(
                    select(MetricChunk.name).where(MetricChunk.job_id == job_id).distinct().order_by(MetricChunk.name)
                )
            )

    def metric_series(
        self, *, job_id: str, name: str, since_step: int, max_points: int
    ) -> tuple[list[int], list[float], bool]:
        """One series from `since_step` (any integer); longer than max_points (>= 2), it is downsampled.

        Returns steps, values, and whether the series was downsampled. Downsampled (see `downsample`): the first
        and last point from since_step, and per bucket of equal step width the min and the max at the steps where
        they occur, at most max_points in all. A long series is read from its chunks' roll-ups (ROLLUP_GROUP points
        per entry), so a bucket edge may split a roll-up group: such a group's extremes count in the buckets of
        their own steps. The series' global min and max are always kept.
        """
        if since_step > DB_INT_MAX or not storable(job_id, name):
            return [], [], False
        since = max(since_step, DB_INT_MIN)
        max_points = max(2, max_points)
        where = (MetricChunk.job_id == job_id, MetricChunk.name == name, MetricChunk.last_step >= since)
        with self.session() as session:
            chunks = session.execute(
                select(
                    MetricChunk.id,
                    MetricChunk.first_step,
                    MetricChunk.count,
                    MetricChunk.first_value,
                    MetricChunk.last_step,
                    MetricChunk.last_value,
                    MetricChunk.rollup,
                )
                .where(*where)
                .order_by(MetricChunk.first_step)
            ).all()
            if not chunks:
                return [], [], False
            total = sum(int(c[2]) for c in chunks)  # c.count would be the tuple method
            # Roll-ups when each bucket gathers at least two groups on average; else every point (<= 128k for 2,000).
            rollups = [c for c in chunks if c.first_step >= since]
            use_rollups = total >= 2 * ROLLUP_GROUP * max(1, (max_points - 2) // 2) and len(rollups) > 1
            raw_ids = [c.id for c in chunks if c.first_step < since] if use_rollups else [c.id for c in chunks]
            parts = (
                [
                    _decode(steps_blob, values_blob)
                    for steps_blob, values_blob in session.execute(
                        select(MetricChunk.steps, MetricChunk.values)
                        .where(MetricChunk.id.in_(raw_ids))
                        .order_by(MetricChunk.first_step)
                    )
                ]
                if raw_ids
                else []
            )
        steps, values = (
            (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
            if parts
            else (np.empty(0, dtype=np.int64), np.empty(0))
        )
        if len(steps) and steps[0] < since:
            keep = steps >= since
            steps, values = steps[keep], values[keep]
        if not use_rollups:
            if len(steps) <= max_points:
                return steps.tolist(), values.tolist(), False
            return *downsample(steps, values, max_points), True
        table = np.frombuffer(b"".join(r.rollup for r in rollups), dtype=_ROLLUP)
        ends_steps = np.array([r.first_step for r in rollups] + [r.last_step for r in rollups], dtype=np.int64)
        ends_values = np.array([r.first_value for r in rollups] + [r.last_value for r in rollups])
        # The ends of the range: the raw points of a partly covered first chunk, then each chunk's first and last.
        edge_steps = np.concatenate([steps, ends_steps])
        edge_values = np.concatenate([values, ends_values])
        order = np.argsort(edge_steps, kind="stable")
        edge_steps, edge_values = edge_steps[order], edge_values[order]
        lows = (np.concatenate([steps, table["min_step"]]), np.concatenate([values, table["min_value"]]))
        highs = (np.concatenate([steps, table["max_step"]]), np.concatenate([values, table["max_value"]]))
        ends = (edge_steps[[0, -1]], edge_values[[0, -1]])
        return *downsample(ends[0], ends[1], max_points, lows=lows, highs=highs), True

    def metric_points(
        self, *, job_id: str, names: Sequence[str], first_step: int, last_step: int
    ) -> list[tuple[str, int, float]]:
        """The points of the series `names` with first_step <= step <= last_step, as (name, step, value) ordered by
        step then name: what a `metrics` event (first_step, last_step, latest's names) stood for, read back when
        the API serves it."""
        wanted = [n for n in names if storable(n)]
        if not wanted or not storable(job_id) or not (in_db_range(first_step) and in_db_range(last_step)):
            return []
        with self.session() as session:
            chunks = session.execute(
                select(MetricChunk.name, MetricChunk.steps, MetricChunk.values).where(
                    MetricChunk.job_id == job_id,
                    MetricChunk.name.in_(wanted),
                    MetricChunk.last_step >= first_step,
                    MetricChunk.first_step <= last_step,
                )
            ).all()
        points: list[tuple[str, int, float]] = []
        for name, steps_blob, values_blob in chunks:
            steps, values = _decode(steps_blob, values_blob)
            lo, hi = int(np.searchsorted(steps, first_step)), int(np.searchsorted(steps, last_step, side="right"))
            points += zip([name] * (hi - lo), steps[lo:hi].tolist(), values[lo:hi].tolist(), strict=True)
        points.sort(key=lambda p: (p[1], p[0]))
        return points

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
