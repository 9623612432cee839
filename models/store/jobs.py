"""Submission and the API's view of jobs: create (idempotent), get, list, cancel, mark enqueued, counts."""

from __future__ import annotations

import hashlib
import json
import uuid

from sqlalchemy import ColumnElement, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from models.quotas import Quotas
from models.records import DEFAULT_QUEUE, Checkpoint, Dataset, Job, JobStatus
from models.spec import JobSpec
from models.store.base import StoreBase, append_event, status_event, transition, transition_where, utcnow
from models.store.bounds import storable
from models.store.errors import DatasetGone, IdempotencyConflict, InitFromGone
from models.store.paging import keyset_page
from models.store.quota import check_submission

# The reason of a job's first status event (create_job, create_study).
SUBMITTED = "submitted"
# The reasons request_cancel (and cancel_where, its set-based form) gives in the status event.
CANCELLED_QUEUED = "cancelled by the user before it started"
CANCEL_REQUESTED = "cancel requested by the user"


# GET /v1/jobs/{id}'s read (every job route's OwnedJob), built once: building and hashing the statement anew was
# a good part of each call's time.
_JOB_BY_ID = select(Job).where(Job.id == bindparam("job_id"))
_OWNED_JOB_BY_ID = _JOB_BY_ID.where(Job.owner == bindparam("owner"))


def spec_hash(spec_json: dict[str, object]) -> str:
    """The hex SHA-256 of the spec's canonical JSON (what an Idempotency-Key is bound to)."""
    return hashlib.sha256(json.dumps(spec_json, sort_keys=True).encode()).hexdigest()


class JobsStore(StoreBase):
    """Jobs as the API sees them."""

    def create_job(
        self,
        *,
        owner: str,
        spec: JobSpec,
        idempotency_key: str | None,
        key: str | None = None,
        quotas: Quotas | None = None,
    ) -> tuple[Job, bool]:
        """Store a new queued job; returns (job, created).

        `key` is the non-secret id of the API key submitting it (api/deps.py Caller.key_id; None with auth off or
        outside the API): the `submitted` status event records it as `key` (base.status_event).

        With an `idempotency_key` the owner used before, returns that earlier job
        and False, also when concurrent calls race with one key: the insert is
        `INSERT ... ON CONFLICT (owner, idempotency_key) DO NOTHING`, so exactly one
        creates and the others read its row. Raises IdempotencyConflict when the
        key was used with a different spec.

        A job on an uploaded data set holds the data set's row FOR SHARE until it is
        inserted (delete_dataset holds it FOR UPDATE): a concurrent delete either sees
        the job and refuses (DatasetInUse) or wins, and then this raises DatasetGone.
        The job that init_from names is held the same way (delete_job and delete_checkpoint
        lock it FOR UPDATE): InitFromGone when it, or its checkpoint, was deleted meanwhile.
        Raises ValueError for text the database cannot store (NUL, lone surrogates;
        the spec refuses both before). With `quotas`, a new job that would take the owner past
        queued_jobs, or any while it holds stored_bytes, raises models.store.quota.QuotaExceeded and
        nothing is stored (checked in the inserting transaction: quota.check_submission).
        """
        spec_json = spec.model_dump(mode="json")
        if not storable(idempotency_key, *_texts(spec_json)):
            raise ValueError("the spec or Idempotency-Key holds text the store cannot hold (NUL or a lone surrogate)")
        digest = spec_hash(spec_json)
        now = utcnow()
        job_id = str(uuid.uuid4())
        row = {
            "id": job_id,
            "owner": owner,
            "name": spec.name,
            "status": JobStatus.QUEUED,
            "spec": spec_json,
            "tags": dict(spec.tags),
            "dataset_id": spec.dataset.id,
            "idempotency_key": idempotency_key,
            "spec_hash": digest,
            "attempt": 1,
            "max_attempts": spec.training.max_attempts,
            "priority": spec.priority,
            "queue": spec.resources.queue or DEFAULT_QUEUE,
            "lease_token": 0,
            "step": 0,
            "total_steps": spec.training.steps,
            "latest_metrics": {},
            "last_event": 0,
            "created_at": now,
            "updated_at": now,
        }
        with self.session() as session, session.begin():
            if spec.dataset.id is not None:
                # SQLite ignores FOR SHARE; its writers are serialised (BEGIN IMMEDIATE, models/db.py).
                held = session.scalar(
                    select(Dataset.id)
                    .where(Dataset.id == spec.dataset.id, Dataset.owner == owner)
                    .with_for_update(read=True)
                )
                if held is None:
                    raise DatasetGone(spec.dataset.id)
            if spec.init_from is not None:
                _hold_init_from(session, spec, owner)
            insert = postgresql.insert if _dialect(session) == "postgresql" else sqlite.insert
            statement = (
                insert(Job)
                .values(row)
                .on_conflict_do_nothing(index_elements=[Job.owner, Job.idempotency_key])
                .returning(Job.seq)
            )
            # On PostgreSQL a racing insert waits for the winner's commit, then does nothing; the read below
            # (a fresh snapshot under READ COMMITTED) sees the winner's row. SQLite writers are serialised.
            created = session.execute(statement).scalar_one_or_none() is not None
            if created:
                if quotas is not None:
                    check_submission(session, owner=owner, quotas=quotas, adds=1)
                append_event(session, job_id, "status", status_event(None, JobStatus.QUEUED, SUBMITTED, 1, key=key))
                return session.scalars(select(Job).where(Job.id == job_id)).one(), True
            earlier = session.scalars(
                select(Job).where(Job.owner == owner, Job.idempotency_key == idempotency_key)
            ).one()
            if earlier.spec_hash != digest:
                raise IdempotencyConflict(idempotency_key)
            return earlier, False

    def get_job(self, *, job_id: str, owner: str | None = None) -> Job | None:
        """The job, or None when it does not exist or belongs to another owner."""
        if not storable(job_id, owner):
            return None
        with self.session() as session:
            if owner is None:
                return session.scalar(_JOB_BY_ID, {"job_id": job_id})
            return session.scalar(_OWNED_JOB_BY_ID, {"job_id": job_id, "owner": owner})

    def list_jobs(
        self,
        *,
        owner: str,
        status: str | None = None,
        tag: tuple[str, str] | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """The owner's jobs newest first, at most `limit` (1..1000), and the next page's cursor (None at the end).

        `cursor` is the next_cursor of the previous page; raises InvalidCursor for any other string.
        """
        if not storable(owner, status):
            return [], None
        query = select(Job).where(Job.owner == owner)
        if status is not None:
            query = query.where(Job.status == status)
        scope = self.cursor_scope("jobs", owner)
        with self.session() as session:
            if tag is None:
                return keyset_page(session, query, Job.seq, scope=scope, limit=limit, cursor=cursor)
            # Tags are a small JSON object; filter in Python so SQLite and PostgreSQL agree.
            key, value = tag
            return keyset_page(
                session,
                query,
                Job.seq,
                scope=scope,
                limit=limit,
                cursor=cursor,
                keep=lambda job: job.tags.get(key) == value,
            )

    def request_cancel(self, *, job_id: str, owner: str, key: str | None = None) -> Job | None:
        """Queued jobs are cancelled at once; running ones go to `cancelling` for the worker to stop.

        `key`: the non-secret id of the API key asking (Caller.key_id; None with auth off), recorded as the status
        event's `key`. Returns the job (None when the owner has no such job); a finished job is returned unchanged.
        """
        if not storable(job_id, owner):
            return None
        with self.session() as session, session.begin():
            job = session.scalar(select(Job).where(Job.id == job_id, Job.owner == owner).with_for_update())
            if job is None:
                return None
            if job.status == JobStatus.QUEUED:
                transition(session, job, JobStatus.CANCELLED, CANCELLED_QUEUED, key=key)
                job.finished_at = utcnow()
            elif job.status == JobStatus.RUNNING:
                transition(session, job, JobStatus.CANCELLING, CANCEL_REQUESTED, key=key)
            return job

    def cancel_where(self, session: Session, condition: ColumnElement[bool], *, key: str | None = None) -> list[str]:
        """request_cancel for every job matching `condition`, set-based in the caller's transaction (the same
        moves and status events, `key` included); returns the ids of the jobs it moved."""
        by = {"key": key}
        cancelled = transition_where(
            session, condition, JobStatus.QUEUED, JobStatus.CANCELLED, CANCELLED_QUEUED, extra=by, finished_at=utcnow()
        )
        return cancelled + transition_where(
            session, condition, JobStatus.RUNNING, JobStatus.CANCELLING, CANCEL_REQUESTED, extra=by
        )

    def mark_enqueued(self, *, job_id: str) -> None:
        """Record that the job's broker message was just sent (the reconciler re-sends old ones)."""
        with self.session() as session, session.begin():
            session.execute(update(Job).where(Job.id == job_id).values(enqueued_at=utcnow()))

    def count_jobs_by_status(self) -> dict[str, int]:
        """How many jobs are in each status (statuses with none are absent)."""
        with self.session() as session:
            rows = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
        return {status: int(count) for status, count in rows}


def _texts(value: object) -> list[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for key, item in value.items() for text in [str(key), *_texts(item)]]
    if isinstance(value, list):
        return [text for item in value for text in _texts(item)]
    return []


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _hold_init_from(session: Session, spec: JobSpec, owner: str) -> None:
    """Share-lock the job `spec.init_from` names and check it still has the checkpoint (or any, for "latest");
    raises InitFromGone. SQLite ignores FOR SHARE; its writers are serialised (BEGIN IMMEDIATE, models/db.py)."""
    assert spec.init_from is not None
    source = session.scalar(
        select(Job.id).where(Job.id == spec.init_from.job, Job.owner == owner).with_for_update(read=True)
    )
    if source is None:
        raise InitFromGone("job", f"no job {spec.init_from.job!r}")
    checkpoints = select(Checkpoint.step).where(Checkpoint.job_id == source)
    if spec.init_from.step != "latest":
        checkpoints = checkpoints.where(Checkpoint.step == spec.init_from.step)
    if session.scalar(checkpoints.limit(1)) is None:
        raise InitFromGone("step", f"job {source} has no checkpoint at step {spec.init_from.step}")
