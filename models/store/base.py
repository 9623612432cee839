"""What every part of the job store shares: the session factory, time, and the job's event log."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, overload

from sqlalchemy import BigInteger, ColumnElement, Engine, bindparam, insert, select, text, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from models.db import make_sessionmaker
from models.records import Job, JobEvent
from models.store.notify import notify_appended
from models.store.outbox import SourceEvent, write_deliveries
from models.store.paging import CursorScope, load_secret
from models.webhooks import SOURCE_KINDS


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (every stored time is UTC)."""
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


def serialise(session: Session, name: str) -> None:
    """Hold the lock `name` until the session's transaction ends, so count-then-insert checks under the same name
    run one at a time (PostgreSQL: a transaction-scoped advisory lock on hashtext(name); SQLite's BEGIN IMMEDIATE,
    models/db.py, already serialises every writer)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": name})


def append_event(session: Session, job_id: str, kind: str, data: dict[str, Any]) -> int:
    """Append one event to the job's log in the caller's transaction; returns its per-job seq (1, 2, ...).

    On PostgreSQL the append is also announced to other processes when the transaction commits (pg_notify,
    models/store/notify.py), which wakes the SSE feeds of every API process."""
    return append_events(session, job_id, kind, [data])[0]


# append_events' statements, built once: building a statement costs about as much CPU as running it (SQLAlchemy).
_NEXT_SEQS = (
    update(Job)
    .where(Job.id == bindparam("job_id"))
    .values(last_event=Job.last_event + bindparam("count", type_=BigInteger))
    .returning(Job.last_event, Job.owner, Job.study_id)
    .execution_options(synchronize_session=False)  # append_events sets a loaded job's last_event itself
)
_INSERT_EVENTS = insert(JobEvent)


def append_events(session: Session, job_id: str, kind: str, datas: Sequence[dict[str, Any]]) -> list[int]:
    """Append events of one `kind` (one per item of `datas`, in order) as append_event does, in three statements
    whatever their number: the seqs, the rows, the notification. Returns their seqs, consecutive."""
    if not datas:
        return []
    # Allocating seq under the job row's lock makes events commit in seq order. Through the session, so a job
    # inserted or changed in it is flushed first.
    last, owner, study_id = session.execute(_NEXT_SEQS, {"job_id": job_id, "count": len(datas)}).one()
    for loaded in session.identity_map.values():  # the job as loaded in this session shows it (a cancel answers it)
        if isinstance(loaded, Job) and loaded.id == job_id:
            set_committed_value(loaded, "last_event", last)
    seqs = range(last - len(datas) + 1, last + 1)
    now = utcnow()
    events = [SourceEvent(job_id, owner, study_id, seq, kind, now, data) for seq, data in zip(seqs, datas, strict=True)]
    # A Core insert: the ORM's unit of work for new rows costs more than the rows (the lease keeper's every flush).
    session.connection().execute(
        _INSERT_EVENTS, [{"job_id": job_id, "seq": e.seq, "kind": kind, "time": now, "data": e.data} for e in events]
    )
    if kind in SOURCE_KINDS:  # their webhook deliveries, in this transaction (the outbox)
        write_deliveries(session, events)
    notify_appended(session, [(job_id, seq) for seq in seqs])
    return list(seqs)


def status_event(was: str | None, to: str, reason: str, attempt: int, **extra: Any) -> dict[str, Any]:
    """A `status` event's data: from, to, reason, attempt, plus `extra`.

    A move a user's request makes (submitted, a cancel) also carries `key`: the non-secret id of the API key that
    made it (a store key's prefix `gf_xxxxxxxx`, "env:<owner>" for an environment key; api/deps.py Caller.key_id),
    null with auth off. Moves the service makes itself (a worker's claim, a retry, the end) have no `key`.
    """
    return {"from": was, "to": to, "reason": reason, "attempt": attempt, **extra}


def transition(session: Session, job: Job, to: str, reason: str, **extra: Any) -> None:
    """Move `job` to status `to` and log a `status` event (from, to, reason, attempt, plus `extra`)."""
    data = status_event(job.status, to, reason, job.attempt, **extra)
    job.status = to
    job.updated_at = utcnow()
    session.flush()
    append_event(session, job.id, "status", data)


def transition_where(
    session: Session,
    condition: ColumnElement[bool],
    was: str,
    to: str,
    reason: str,
    *,
    extra: Mapping[str, Any] | None = None,
    **values: Any,
) -> list[str]:
    """`transition` for every job matching `condition` whose status is `was`, set-based: one UPDATE (which also
    sets the columns `values` and allocates each job's next event seq under its row lock, as append_event does)
    and one INSERT of their status events (each with `extra` added, as transition's), announced as append_event's
    are. Returns the ids moved."""
    now = utcnow()
    moved = session.execute(
        update(Job)
        .where(condition, Job.status == was)
        .values(status=to, updated_at=now, last_event=Job.last_event + 1, **values)
        .returning(Job.id, Job.last_event, Job.attempt, Job.owner, Job.study_id)
        .execution_options(synchronize_session=False)
    ).all()
    if moved:
        events = [
            {
                "job_id": job_id,
                "seq": seq,
                "kind": "status",
                "time": now,
                "data": status_event(was, to, reason, attempt, **(extra or {})),
            }
            for job_id, seq, attempt, _owner, _study in moved
        ]
        session.execute(insert(JobEvent), events)
        # Their webhook deliveries, in this transaction (the outbox): one query for all their owners.
        write_deliveries(
            session,
            [
                SourceEvent(
                    job_id, owner, study_id, seq, "status", now, status_event(was, to, reason, attempt, **(extra or {}))
                )
                for job_id, seq, attempt, owner, study_id in moved
            ],
        )
        notify_appended(session, [(job_id, seq) for job_id, seq, _attempt, _owner, _study in moved])
    return [job_id for job_id, _seq, _attempt, _owner, _study in moved]


class StoreBase:
    """The engine and its sessions; each store call is one short transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = make_sessionmaker(engine)
        self._cursor_secret: bytes | None = None

    def cursor_scope(self, list_name: str, scope: str) -> CursorScope:
        """What seals and opens the cursors of list `list_name` for `scope` (an owner, or a job id); the store's
        cursor secret is read (made on first use) once per store object."""
        if self._cursor_secret is None:
            self._cursor_secret = load_secret(self._sessions)
        return CursorScope(self._cursor_secret, list_name, scope)

    def session(self) -> Session:
        """A new session (use as `with store.session() as s, s.begin(): ...`)."""
        return self._sessions()

    def ping(self) -> None:
        """Raise when the database does not answer."""
        with self.session() as session:
            session.execute(select(1))
