"""The job store against real PostgreSQL and SQLite: claims, leases, reconciler queries, metrics, migrations."""

from __future__ import annotations

from datetime import timedelta

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import update

from models.records import Base, Job
from models.spec import JobSpec
from models.store import JobStore, MetricPoint, utcnow

SPEC = JobSpec.model_validate(
    {
        "dataset": {"builtin": "ring8"},
        "architecture": {"name": "mlp"},
        "loss": {"name": "nsgan"},
        "training": {"max_attempts": 2},
    }
)


def test_migrations_create_exactly_the_models_tables(store: JobStore) -> None:
    with store.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def test_a_job_is_claimed_once(store: JobStore) -> None:
    job, created = store.create_job(owner="a", spec=SPEC, idempotency_key=None)
    assert created
    first = store.claim(job_id=job.id, worker="w1")
    assert first is not None and first.attempt == 1 and first.status == "running"
    assert store.claim(job_id=job.id, worker="w2") is None
    assert store.heartbeat(job_id=job.id, worker="w2", attempt=1) is None  # w2 holds nothing
    assert store.heartbeat(job_id=job.id, worker="w1", attempt=1) == "running"


def test_a_silent_worker_loses_its_job_and_max_attempts_bounds_retries(store: JobStore) -> None:
    job, _ = store.create_job(owner="a", spec=SPEC, idempotency_key=None)
    for attempt in (1, 2):
        claimed = store.claim(job_id=job.id, worker=f"w{attempt}")
        assert claimed is not None and claimed.attempt == attempt
        assert store.requeue_silent_jobs(lease_timeout=timedelta(seconds=60)) == []  # lease is fresh
        _age_heartbeat(store, job.id, seconds=120)
        sent = store.requeue_silent_jobs(lease_timeout=timedelta(seconds=60))
        after = store.get_job(job_id=job.id)
        assert after is not None
        if attempt < 2:
            assert sent == [job.id] and after.status == "queued"
        else:
            assert sent == [] and after.status == "failed" and "gave up after 2 attempts" in (after.error or "")
    # The old worker cannot write once its lease is gone.
    assert store.record_progress(job_id=job.id, worker="w1", attempt=1, step=5, steps_per_sec=None, points=[]) is None
    reasons = [e.data["reason"] for e in store.events_after(job_id=job.id, after=0) if e.kind == "status"]
    assert reasons[0] == "submitted" and "silent" in reasons[2] and "gave up" in reasons[-1]


def _age_heartbeat(store: JobStore, job_id: str, seconds: float) -> None:
    with store.session() as session, session.begin():
        session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow() - timedelta(seconds=seconds)))


def test_unclaimed_jobs_are_sent_again(store: JobStore) -> None:
    job, _ = store.create_job(owner="a", spec=SPEC, idempotency_key=None)
    assert store.unclaimed_jobs(older_than=timedelta(seconds=60)) == [job.id]  # never sent
    assert store.unclaimed_jobs(older_than=timedelta(seconds=60)) == []  # just re-sent
    store.claim(job_id=job.id, worker="w")
    assert store.unclaimed_jobs(older_than=timedelta(seconds=0)) == []


def test_metrics_are_idempotent_by_job_name_step_and_downsample_keeping_extremes(store: JobStore) -> None:
    job, _ = store.create_job(owner="a", spec=SPEC, idempotency_key=None)
    store.claim(job_id=job.id, worker="w")
    points = [MetricPoint("loss", step, float(step % 7)) for step in range(1, 1001)]
    points[500] = MetricPoint("loss", 501, 100.0)  # a spike
    store.record_progress(job_id=job.id, worker="w", attempt=1, step=1000, steps_per_sec=10.0, points=points)
    # A replayed stretch after a resume overwrites, never duplicates.
    store.record_progress(
        job_id=job.id,
        worker="w",
        attempt=1,
        step=1000,
        steps_per_sec=10.0,
        points=[MetricPoint("loss", step, -1.0) for step in range(900, 1001)],
    )
    steps, values, downsampled = store.metric_series(job_id=job.id, name="loss", since_step=0, max_points=5000)
    assert steps == list(range(1, 1001)) and not downsampled
    assert values[899:] == [-1.0] * 101
    steps, values, downsampled = store.metric_series(job_id=job.id, name="loss", since_step=0, max_points=100)
    assert downsampled and len(steps) <= 100
    assert max(values) == 100.0 and min(values) == -1.0
    assert steps == sorted(steps) and steps[0] == 1 and steps[-1] == 1000
    assert store.metric_series(job_id=job.id, name="loss", since_step=990, max_points=100)[0] == list(range(990, 1001))


def test_event_ids_are_dense_per_job(store: JobStore) -> None:
    a, _ = store.create_job(owner="a", spec=SPEC, idempotency_key=None)
    b, _ = store.create_job(owner="a", spec=SPEC, idempotency_key=None)
    store.claim(job_id=a.id, worker="w")
    store.request_cancel(job_id=b.id, owner="a")
    store.record_progress(
        job_id=a.id, worker="w", attempt=1, step=1, steps_per_sec=None, points=[MetricPoint("x", 1, 1.0)]
    )
    assert [e.seq for e in store.events_after(job_id=a.id, after=0)] == [1, 2, 3]
    assert [e.seq for e in store.events_after(job_id=b.id, after=0)] == [1, 2]
    assert [e.seq for e in store.events_after(job_id=a.id, after=2)] == [3]
