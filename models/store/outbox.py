"""The webhook outbox's writer: the delivery rows of a job event, written in the transaction of the event itself.

models/store/base.py calls `write_deliveries` from append_event and transition_where, where every status and
checkpoint event is written, so a state change and its deliveries commit (or roll back) together. An owner
without enabled endpoints costs one indexed query (webhook_endpoints by owner); metrics, sample and alert events
cost nothing. After a commit that wrote deliveries, this process's wakers (the API's sender) are called at once.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import event, func, insert, select
from sqlalchemy.orm import Session

from models.records import Job, JobStatus, WebhookDelivery, WebhookEndpoint
from models.webhooks import JOB_STATUS, SOURCE_KINDS, STUDY_FINISHED, new_event_id

_WROTE = "ganforge_webhook_deliveries"  # session.info flag: this transaction wrote deliveries
_wakers: list[Callable[[], None]] = []
_wakers_lock = threading.Lock()


@dataclass(frozen=True)
class SourceEvent:
    """A job event that may make webhook events: its job, owner, study, per-job seq, kind, time and data."""

    job_id: str
    owner: str
    study_id: str | None
    seq: int
    kind: str
    time: datetime
    data: dict[str, Any]


def add_waker(waker: Callable[[], None]) -> None:
    """Call `waker` (thread-safe, quick) after every commit of this process that wrote webhook deliveries."""
    with _wakers_lock:
        _wakers.append(waker)


def remove_waker(waker: Callable[[], None]) -> None:
    """Stop calling `waker`."""
    with _wakers_lock:
        if waker in _wakers:
            _wakers.remove(waker)


def mark_written(session: Session) -> None:
    """Wake this process's senders when `session`'s transaction commits (the redeliver call's rows, too)."""
    session.info[_WROTE] = True


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if session.info.pop(_WROTE, False):
        with _wakers_lock:
            wakers = list(_wakers)
        for waker in wakers:
            waker()


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_WROTE, None)


def write_deliveries(session: Session, events: Sequence[SourceEvent]) -> int:
    """Insert one pending delivery per (event, enabled endpoint of its owner that wants its kind) in the caller's
    transaction, and a `study.finished` one when a status event ends its study's last active job. Returns the
    rows inserted. Events whose kind makes no webhook event are ignored without a query."""
    events = [e for e in events if e.kind in SOURCE_KINDS]
    if not events:
        return 0
    owners = sorted({e.owner for e in events})
    endpoints = session.execute(
        select(WebhookEndpoint.id, WebhookEndpoint.owner, WebhookEndpoint.events).where(
            WebhookEndpoint.owner.in_(owners), WebhookEndpoint.enabled.is_(True)
        )
    ).all()
    if not endpoints:
        return 0
    by_owner: dict[str, list[tuple[str, set[str]]]] = {}
    for endpoint_id, owner, kinds in endpoints:
        by_owner.setdefault(owner, []).append((endpoint_id, set(kinds)))
    rows: list[dict[str, Any]] = []
    studies_done: set[str] = set()
    for source in events:
        kind = SOURCE_KINDS[source.kind]
        wanted = by_owner.get(source.owner, [])
        payload = _payload(
            kind, source.time, {"job_id": source.job_id, "study_id": source.study_id, "seq": source.seq, **source.data}
        )
        rows += _rows(wanted, kind, payload, source.time)
        if (
            kind == JOB_STATUS
            and source.study_id is not None
            and source.study_id not in studies_done
            and source.data.get("to") in JobStatus.FINAL
            and any(STUDY_FINISHED in kinds for _id, kinds in wanted)
        ):
            counts = _finished_study_counts(session, source.study_id)
            if counts is not None:
                studies_done.add(source.study_id)
                data = {"study_id": source.study_id, "jobs": counts}
                rows += _rows(wanted, STUDY_FINISHED, _payload(STUDY_FINISHED, source.time, data), source.time)
    if rows:
        session.execute(insert(WebhookDelivery), rows)
        mark_written(session)
    return len(rows)


def _payload(kind: str, time: datetime, data: dict[str, Any]) -> dict[str, Any]:
    # The Standard Webhooks payload shape: type, timestamp, data.
    return {"type": kind, "timestamp": time.isoformat(), "data": data}


def _rows(
    endpoints: list[tuple[str, set[str]]], kind: str, payload: dict[str, Any], now: datetime
) -> list[dict[str, Any]]:
    event_id = new_event_id()  # one id per event, shared by its endpoints (as Svix and the spec's examples do)
    return [
        {
            "id": str(uuid.uuid4()),
            "endpoint_id": endpoint_id,
            "event_id": event_id,
            "type": kind,
            "payload": payload,
            "status": "pending",
            "attempts": 0,
            "created_at": now,
            "next_attempt_at": now,
        }
        for endpoint_id, kinds in endpoints
        if kind in kinds
    ]


def _finished_study_counts(session: Session, study_id: str) -> dict[str, int] | None:
    """The study's job counts by status when none is active any more (counted under the study's lock, so of two
    jobs ending at once exactly one sees the study finished); None while one is."""
    from models.store.base import serialise

    serialise(session, f"webhooks:study:{study_id}")
    counts = {
        status: count
        for status, count in session.execute(
            select(Job.status, func.count()).where(Job.study_id == study_id).group_by(Job.status)
        ).all()
    }
    if any(counts.get(status) for status in JobStatus.ACTIVE):
        return None
    return counts
