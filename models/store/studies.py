"""Studies: create one with all its jobs (idempotent), get, list, its jobs, cancel, and the runs to compare."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from models.quotas import Quotas
from models.records import DEFAULT_QUEUE, Dataset, Job, JobEvent, JobStatus, Study
from models.spec import JobSpec
from models.store.base import status_event, utcnow
from models.store.bounds import clamp, storable
from models.store.errors import DatasetGone, IdempotencyConflict
from models.store.jobs import SUBMITTED, JobsStore, _texts, spec_hash
from models.store.outbox import SourceEvent, write_deliveries
from models.store.paging import keyset_page
from models.store.quota import check_submission
from models.store.results import ResultsStore, series_of
from models.study import study_status

# Points per metric series a study read returns at most (a longer series comes back as a systematic sample), so the
# report of a 200-job study stays small whatever the jobs logged.
SERIES_POINTS_MAX = 2000
# Job ids per IN (...) list: far under SQLite's and PostgreSQL's bound-parameter limits.
_IDS_PER_QUERY = 500


@dataclass(frozen=True)
class StudyJobStats:
    """How many of a study's jobs are in each status, and their generator steps.

    steps_done: the steps actually trained, summed over the jobs (a succeeded job counts whole; a failed, cancelled
    or active one the steps it reached, so a study cut short never reads as done); steps_total: the steps of every
    job as planned; jobs_final: the jobs that succeeded, failed or were cancelled.
    """

    counts: dict[str, int]
    steps_done: int
    steps_total: int
    jobs_final: int


class StudyFinished(Exception):
    """Cancel of a study whose jobs had all finished (none cancelled by a study cancel): it keeps its status."""

    def __init__(self, status: str) -> None:
        super().__init__(f"study is already {status}")
        self.status = status


class StudiesStore(JobsStore, ResultsStore):
    """Studies as the API sees them: one request fanned out into ordinary jobs (jobs.study_id)."""

    def create_study(
        self,
        *,
        study_id: str,
        owner: str,
        name: str,
        spec_json: dict[str, object],
        request_json: dict[str, object],
        jobs: Sequence[JobSpec],
        idempotency_key: str | None,
        key: str | None = None,
        quotas: Quotas | None = None,
    ) -> tuple[Study, bool]:
        """Store the study and every job of it, queued, in one transaction; returns (study, created).

        `key`: the non-secret id of the API key submitting it (Caller.key_id; None with auth off), recorded as
        `key` in each job's `submitted` status event, as create_job does.

        `spec_json` is what GET shows (defaults resolved), `request_json` the request as validated:
        an `idempotency_key` the owner used before returns that earlier study and False (also when
        concurrent calls race: INSERT ... ON CONFLICT DO NOTHING), and raises IdempotencyConflict
        when it came with a different request. Jobs on an uploaded data set hold its row FOR SHARE
        (as create_job): raises DatasetGone when it was deleted meanwhile. Raises ValueError for text
        the store cannot hold. With `quotas`, a new study whose jobs would take the owner past queued_jobs,
        or any while it holds stored_bytes, raises models.store.quota.QuotaExceeded and nothing is stored.
        """
        if not storable(idempotency_key, *_texts(request_json), *_texts(spec_json)):
            raise ValueError("the study or Idempotency-Key holds text the store cannot hold (NUL or a lone surrogate)")
        digest = spec_hash(request_json)
        now = utcnow()
        study_row = {
            "id": study_id,
            "owner": owner,
            "name": name,
            "spec": spec_json,
            "idempotency_key": idempotency_key,
            "spec_hash": digest,
            "job_count": len(jobs),
            "created_at": now,
            "updated_at": now,
        }
        job_rows, event_rows = [], []
        for spec in jobs:
            job_id = str(uuid.uuid4())
            job_rows.append(
                {
                    "id": job_id,
                    "owner": owner,
                    "name": spec.name,
                    "status": JobStatus.QUEUED,
                    "spec": spec.model_dump(mode="json"),
                    "tags": dict(spec.tags),
                    "dataset_id": spec.dataset.id,
                    "idempotency_key": None,
                    "spec_hash": spec_hash(spec.model_dump(mode="json")),
                    "attempt": 1,
                    "max_attempts": spec.training.max_attempts,
                    "priority": spec.priority,
                    "queue": spec.resources.queue or DEFAULT_QUEUE,
                    "lease_token": 0,
                    "step": 0,
                    "total_steps": spec.training.steps,
                    "latest_metrics": {},
                    # The `submitted` event below is the job's first (append_event's seq, written in bulk).
                    "last_event": 1,
                    "created_at": now,
                    "updated_at": now,
                    # Sent right after the commit; were that lost, the reconciler re-sends it after its delay.
                    "enqueued_at": now,
                    "study_id": study_id,
                }
            )
            event_rows.append(
                {
                    "job_id": job_id,
                    "seq": 1,
                    "kind": "status",
                    "time": now,
                    "data": status_event(None, JobStatus.QUEUED, SUBMITTED, 1, key=key),
                }
            )
        dataset_ids = {spec.dataset.id for spec in jobs if spec.dataset.id is not None}
        with self.session() as session, session.begin():
            for dataset_id in dataset_ids:
                # SQLite ignores FOR SHARE; its writers are serialised (BEGIN IMMEDIATE, models/db.py).
                held = session.scalar(
                    select(Dataset.id)
                    .where(Dataset.id == dataset_id, Dataset.owner == owner)
                    .with_for_update(read=True)
                )
                if held is None:
                    raise DatasetGone(dataset_id)
            dialect_insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
            statement = (
                dialect_insert(Study)
                .values(study_row)
                .on_conflict_do_nothing(index_elements=[Study.owner, Study.idempotency_key])
                .returning(Study.seq)
            )
            created = session.execute(statement).scalar_one_or_none() is not None
            if created:
                if job_rows:
                    session.execute(insert(Job), job_rows)
                    session.execute(insert(JobEvent), event_rows)
                    # The jobs' webhook deliveries (job.status, submitted), in this transaction (the outbox).
                    submitted = status_event(None, JobStatus.QUEUED, SUBMITTED, 1, key=key)
                    write_deliveries(
                        session,
                        [SourceEvent(str(e["job_id"]), owner, study_id, 1, "status", now, submitted) for e in event_rows],
                    )
                if quotas is not None:
                    check_submission(session, owner=owner, quotas=quotas, adds=len(job_rows))
                return session.scalars(select(Study).where(Study.id == study_id)).one(), True
            earlier = session.scalars(
                select(Study).where(Study.owner == owner, Study.idempotency_key == idempotency_key)
            ).one()
            if earlier.spec_hash != digest:
                raise IdempotencyConflict(idempotency_key)
            return earlier, False

    def get_study(self, *, study_id: str, owner: str | None = None) -> Study | None:
        """The study, or None when it does not exist or belongs to another owner."""
        if not storable(study_id, owner):
            return None
        with self.session() as session:
            query = select(Study).where(Study.id == study_id)
            if owner is not None:
                query = query.where(Study.owner == owner)
            return session.scalar(query)

    def list_studies(self, *, owner: str, limit: int = 50, cursor: str | None = None) -> tuple[list[Study], str | None]:
        """The owner's studies newest first, at most `limit` (1..1000), and the next page's cursor (None at the end).

        Raises InvalidCursor for a cursor this store did not write.
        """
        if not storable(owner):
            return [], None
        with self.session() as session:
            query = select(Study).where(Study.owner == owner)
            return keyset_page(
                session, query, Study.seq, scope=self.cursor_scope("studies", owner), limit=limit, cursor=cursor
            )

    def study_jobs(self, *, study_id: str) -> list[Job]:
        """The study's jobs in the order they were fanned out (loss, grid point, seed)."""
        if not storable(study_id):
            return []
        with self.session() as session:
            return list(session.scalars(select(Job).where(Job.study_id == study_id).order_by(Job.seq)))

    def study_job_stats(self, *, study_ids: Sequence[str]) -> dict[str, StudyJobStats]:
        """For each study id: its jobs' status counts and steps (one grouped query; a study without jobs is absent)."""
        ids = [i for i in study_ids if storable(i)]
        found: dict[str, dict[str, tuple[int, int, int]]] = {}
        with self.session() as session:
            for start in range(0, len(ids), _IDS_PER_QUERY):
                rows = session.execute(
                    select(Job.study_id, Job.status, func.count(), func.sum(Job.step), func.sum(Job.total_steps))
                    .where(Job.study_id.in_(ids[start : start + _IDS_PER_QUERY]))
                    .group_by(Job.study_id, Job.status)
                ).all()
                for study_id, status, count, steps, total in rows:
                    found.setdefault(str(study_id), {})[status] = (int(count), int(steps or 0), int(total or 0))
        stats = {}
        for study_id, by_status in found.items():
            # Only a succeeded job is done whole; any other counts the steps it trained (its step).
            done = sum(
                total if status == JobStatus.SUCCEEDED else steps for status, (_n, steps, total) in by_status.items()
            )
            stats[study_id] = StudyJobStats(
                counts={status: n for status, (n, _s, _t) in by_status.items()},
                steps_done=done,
                steps_total=sum(total for _n, _s, total in by_status.values()),
                jobs_final=sum(n for status, (n, _s, _t) in by_status.items() if status in JobStatus.FINAL),
            )
        return stats

    def cancel_study(self, *, study_id: str, owner: str, key: str | None = None) -> Study | None:
        """Mark the study cancelled (once) and cancel each of its active jobs as POST /v1/jobs/{id}/cancel does.

        Queued jobs are cancelled at once, running ones go to `cancelling` for their worker to stop, each with
        the status event request_cancel writes (`key`, the asking API key's non-secret id, included), in one transaction of set-based statements (a 200-job study is
        two UPDATEs and two INSERTs, not 200 transactions). Idempotent: a second call cancels whatever is still
        active. Raises StudyFinished when the study was never cancelled and every job is final with one not
        cancelled (it succeeded or failed: it stays so). Returns the study (None when the owner has no such study).
        """
        if not storable(study_id, owner):
            return None
        with self.session() as session, session.begin():
            study = session.scalar(select(Study).where(Study.id == study_id, Study.owner == owner).with_for_update())
            if study is None:
                return None
            if study.cancelled_at is None:
                # The study row's lock serialises cancels; a job's status only moves from active to final meanwhile.
                counts = dict(
                    session.execute(
                        select(Job.status, func.count()).where(Job.study_id == study_id).group_by(Job.status)
                    ).all()
                )
                active = sum(counts.get(s, 0) for s in JobStatus.ACTIVE)
                if counts and not active and set(counts) != {JobStatus.CANCELLED}:
                    raise StudyFinished(study_status(cancelled=False, counts=counts))
                study.cancelled_at = study.updated_at = utcnow()
            self.cancel_where(session, Job.study_id == study_id, key=key)
        return study

    def mark_jobs_enqueued(self, *, job_ids: Sequence[str]) -> None:
        """Record that these jobs' broker messages were just sent (the reconciler re-sends old ones)."""
        with self.session() as session, session.begin():
            for start in range(0, len(job_ids), _IDS_PER_QUERY):
                chunk = list(job_ids[start : start + _IDS_PER_QUERY])
                session.execute(update(Job).where(Job.id.in_(chunk)).values(enqueued_at=utcnow()))

    def study_series(
        self, *, job_ids: Sequence[str], names: Sequence[str], max_points: int = SERIES_POINTS_MAX
    ) -> dict[str, dict[str, tuple[list[int], list[float]]]]:
        """job id → series name → (steps, values) for these jobs and names (absent series are left out).

        A series of more than `max_points` (clamped to 2..SERIES_POINTS_MAX) points comes back as a
        systematic sample: every k-th point in step order, k = ⌈n / (max_points − 1)⌉, plus its last
        point (a run's last snapshot is what the comparison reads), so at most `max_points`. Unlike
        per-bucket min and max this keeps the values' distribution, which the stability figures
        (spread, vanishing fraction) are computed from. One query (of the series' chunks) per
        500 jobs, so a study's report costs a few queries, not one per job.
        """
        max_points = clamp(max_points, 2, SERIES_POINTS_MAX)
        ids = [i for i in job_ids if storable(i)]
        wanted = [n for n in names if storable(n)]
        result: dict[str, dict[str, tuple[list[int], list[float]]]] = {}
        if not ids or not wanted:
            return result
        with self.session() as session:
            for start in range(0, len(ids), _IDS_PER_QUERY):
                for (job_id, name), (steps, values) in series_of(
                    session, ids[start : start + _IDS_PER_QUERY], wanted
                ).items():
                    n = len(steps)
                    if n > max_points:  # every k-th point and the last
                        stride = (n + (max_points - 2)) // (max_points - 1)
                        picked = list(range(0, n, stride))
                        if picked[-1] != n - 1:
                            picked.append(n - 1)
                        steps, values = steps[picked], values[picked]
                    result.setdefault(job_id, {})[name] = (steps.tolist(), values.tolist())
        return result
