"""The scheduler in the store (LeaseStore.claim_next, wake_ups, queue_reason) on PostgreSQL and SQLite.

Fair share between owners, priority within them, the running-jobs quota under concurrent claims, and the
reconciler's bounded wake-ups. tests/test_scheduler_service.py runs the same order through a real worker.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import insert, update

from models.quotas import Quotas
from models.records import Job, JobStatus
from models.spec import JobSpec
from models.store import JobStore, utcnow
from models.store.lease import QuotasOf
from tests.race import at_once

SPEC = JobSpec.model_validate(
    {"dataset": {"builtin": "ring8"}, "architecture": {"name": "mlp"}, "loss": {"name": "nsgan"}}
)


def quotas(running_jobs: int = 8, **per_owner: int) -> QuotasOf:
    """Every owner `running_jobs`, except the owners named with their own running_jobs."""

    def of(owner: str) -> Quotas:
        return Quotas(running_jobs=per_owner.get(owner, running_jobs))

    return of


def queue(store: JobStore, owner: str, count: int, priority: int = 50) -> list[str]:
    """`count` queued jobs of `owner`, submitted in this order (one insert: 1,000 jobs in well under a second)."""
    now = utcnow()
    spec = SPEC.model_dump(mode="json")
    rows = [
        {
            "id": str(uuid.uuid4()),
            "owner": owner,
            "name": "",
            "status": JobStatus.QUEUED,
            "spec": spec,
            "tags": {},
            "spec_hash": "h",
            "attempt": 1,
            "max_attempts": 3,
            "lease_token": 0,
            "step": 0,
            "total_steps": 100,
            "latest_metrics": {},
            "last_event": 0,
            "created_at": now,
            "updated_at": now,
            "priority": priority,
        }
        for _ in range(count)
    ]
    with store.session() as session, session.begin():
        session.execute(insert(Job), rows)
    return [str(row["id"]) for row in rows]


def claim(store: JobStore, of: QuotasOf, worker: str = "w") -> Job | None:
    return store.claim_next(worker=worker, quotas_of=of)


def end(store: JobStore, job: Job) -> None:
    assert store.finish(job_id=job.id, worker=job.worker or "", token=job.lease_token, status="succeeded", reason="t")


def test_one_owners_thousand_jobs_do_not_hold_back_another_owners_one(store: JobStore) -> None:
    many = queue(store, "a", 1000)
    (single,) = queue(store, "b", 1)  # submitted after all of A's
    of = quotas()
    assert store.queue_reason(job=store.get_job(job_id=single), quotas_of=of) == (  # type: ignore[arg-type]
        "waiting for a free worker"  # other owners' jobs are not counted: theirs to know
    )
    sixth = store.get_job(job_id=many[5])
    assert store.queue_reason(job=sixth, quotas_of=of) == (  # type: ignore[arg-type]
        "waiting for a free worker (5 of this owner's jobs ahead)"
    )
    first = claim(store, of)
    assert first is not None and first.id == many[0]  # both run nothing: the older job
    second = claim(store, of)
    assert second is not None and second.id == single and second.status == "running"  # B runs fewer than A
    assert [claim(store, of).id for _ in range(3)] == many[1:4]  # type: ignore[union-attr]


def test_with_one_slot_owners_take_turns(store: JobStore) -> None:
    a = queue(store, "a", 3)
    b = queue(store, "b", 2)
    of, order = quotas(), []
    while (job := claim(store, of)) is not None:  # one worker: each job ends before the next claim
        order.append(job.id)
        end(store, job)
    assert order == [a[0], b[0], a[1], b[1], a[2]]


def test_priority_orders_an_owners_jobs_then_submission_order(store: JobStore) -> None:
    low, high, middle, middle_later = (
        queue(store, "a", 1, priority=10)[0],
        queue(store, "a", 1, priority=90)[0],
        queue(store, "a", 1, priority=50)[0],
        queue(store, "a", 1, priority=50)[0],
    )
    of = quotas()
    claimed = [claim(store, of) for _ in range(4)]
    assert [job.id for job in claimed if job] == [high, middle, middle_later, low]
    assert claim(store, of) is None  # nothing queued


def test_the_running_quota_holds_under_concurrent_claims(store: JobStore) -> None:
    a = set(queue(store, "a", 20))
    b = set(queue(store, "b", 20))
    of = quotas(a=2, b=3)
    answers = at_once(*[lambda i=i: claim(store, of, f"w{i}") for i in range(12)])
    taken = [job for job in answers if job is not None]
    assert not [job for job in taken if isinstance(job, Exception)], taken
    ids = [job.id for job in taken]
    assert len(ids) == len(set(ids)) == 5  # no row twice, and no more than the quotas allow
    assert len(a & set(ids)) == 2 and len(b & set(ids)) == 3
    assert claim(store, of) is None


def test_a_job_held_by_the_quota_starts_when_a_slot_frees(store: JobStore) -> None:
    first, held = queue(store, "a", 2)
    of = quotas(a=1)
    running = claim(store, of)
    assert running is not None and running.id == first
    assert claim(store, of) is None  # A is at its quota: the worker just returns
    job = store.get_job(job_id=held)
    assert job is not None and job.priority == 50
    assert store.queue_reason(job=job, quotas_of=of) == "waiting: owner has 1 of 1 running jobs (quota running_jobs)"
    assert store.wake_ups(older_than=timedelta(0), quotas_of=of, limit=8) == []  # no wake-up it could not use
    assert store.next_queued() == held  # what the ending worker wakes the queue with
    end(store, running)
    assert store.queue_reason(job=job, quotas_of=of) == "waiting for a free worker"
    started = claim(store, of)
    assert started is not None and started.id == held
    assert store.queue_reason(job=started, quotas_of=of) is None  # running: no reason


def test_a_cancelling_job_counts_against_the_quota(store: JobStore) -> None:
    first, _held = queue(store, "a", 2)
    of = quotas(a=1)
    assert claim(store, of) is not None
    store.request_cancel(job_id=first, owner="a")
    assert store.get_job(job_id=first).status == "cancelling"  # type: ignore[union-attr]
    assert claim(store, of) is None


@pytest.mark.parametrize("running_jobs", [2, 100])
def test_the_reconciler_wakes_a_bounded_number_of_workers(store: JobStore, running_jobs: int) -> None:
    ids = queue(store, "a", 1000)
    of = quotas(running_jobs)
    sent = store.wake_ups(older_than=timedelta(seconds=60), quotas_of=of, limit=8)
    assert sent == ids[: min(running_jobs, 8)]  # never more than the cap, nor than A's free slots
    assert store.wake_ups(older_than=timedelta(seconds=60), quotas_of=of, limit=8) == []  # all marked as sent
    with store.session() as session, session.begin():  # a minute later nobody has claimed them
        session.execute(update(Job).values(enqueued_at=utcnow() - timedelta(seconds=61)))
    assert len(store.wake_ups(older_than=timedelta(seconds=60), quotas_of=of, limit=8)) == min(running_jobs, 8)
