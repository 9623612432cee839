"""The job store against real PostgreSQL and SQLite: claims, leases, attempts, reconciler queries, metrics,
idempotent submission under concurrency, paging cursors, client integers, migrations."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text, update

from api.schemas import JobOut
from migrations import HERE as MIGRATIONS
from migrations import alembic_config, downgrade, upgrade
from models.quotas import Quotas
from models.records import DB_INT_MAX, Base, Job
from models.spec import JobSpec
from models.store import IdempotencyConflict, InvalidCursor, JobStore, MetricPoint, utcnow
from tests.race import at_once

SPEC = JobSpec.model_validate(
    {
        "dataset": {"builtin": "ring8"},
        "architecture": {"name": "mlp"},
        "loss": {"name": "nsgan"},
        "training": {"max_attempts": 2},
    }
)
EXPIRED = timedelta(seconds=60)


def _age_heartbeat(store: JobStore, job_id: str, seconds: float = 120) -> None:
    with store.session() as session, session.begin():
        session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow() - timedelta(seconds=seconds)))


def _expire_lease(store: JobStore, job_id: str) -> list[str]:
    """What the reconciler does once a worker has been silent past the lease timeout."""
    _age_heartbeat(store, job_id)
    return store.requeue_silent_jobs(lease_timeout=EXPIRED)


def _job(store: JobStore, job_id: str) -> Job:
    job = store.get_job(job_id=job_id)
    assert job is not None
    return job


def default_quotas(_owner: str) -> Quotas:
    """Every owner the quota defaults (running_jobs 8): what claim_next is given here."""
    return Quotas()


def _claim(store: JobStore, job_id: str, worker: str) -> Job:
    job = store.claim_next(worker=worker, quotas_of=default_quotas)
    assert job is not None and job.id == job_id
    return job


def _status_events(store: JobStore, job_id: str) -> list[dict[str, Any]]:
    return [e.data for e in store.events_after(job_id=job_id, after=0) if e.kind == "status"]


# --------------------------------------------------------------------------- migrations


def test_migrations_create_exactly_the_models_tables(store: JobStore) -> None:
    with store.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def test_migration_0002_separates_the_lease_token_from_the_attempt_up_and_down(store: JobStore) -> None:
    url = store.engine.url.render_as_string(hide_password=False)
    store.engine.dispose()
    downgrade(url, "0001")
    columns = "id, owner, name, status, spec, tags, spec_hash, attempt, max_attempts, step, total_steps, latest_metrics, last_event, created_at, updated_at"
    with store.engine.begin() as connection:
        for job_id, attempt, max_attempts in (("never-run", 0, 3), ("restarted", 4, 3), ("once", 1, 3)):
            connection.execute(
                text(
                    f"INSERT INTO jobs ({columns}) VALUES (:id, 'a', '', 'queued', '{{}}', '{{}}', 'h', :attempt, "
                    ":max_attempts, 0, 10, '{}', 0, :now, :now)"
                ),
                {"id": job_id, "attempt": attempt, "max_attempts": max_attempts, "now": utcnow()},
            )
    store.engine.dispose()
    upgrade(url)
    # Old rows: the claim count becomes the fencing token; the attempt shown is 1-based and bounded.
    assert {j: (_job(store, j).attempt, _job(store, j).lease_token) for j in ("never-run", "restarted", "once")} == {
        "never-run": (1, 0),
        "restarted": (3, 4),
        "once": (1, 1),
    }
    assert JobOut.of(_job(store, "restarted")).attempt == 3
    with store.engine.begin() as connection:  # claimed first of the three queued jobs
        connection.execute(update(Job).where(Job.id == "restarted").values(priority=60))
    claimed = _claim(store, "restarted", "w")
    assert claimed.lease_token == 5 and claimed.attempt == 3
    store.record_progress(
        job_id="restarted", worker="w", token=5, step=3, steps_per_sec=None, points=[MetricPoint("loss", 3, 0.5)]
    )
    store.add_checkpoint(job_id="restarted", step=3, weights_key="w", state_key="s", size_bytes=1)
    children = _child_rows(store)
    assert children == {"job_events": 3, "metrics": 1, "checkpoints": 1}
    store.engine.dispose()
    downgrade(url, "0001")
    with store.engine.connect() as connection:
        rows = {job_id: attempt for job_id, attempt in connection.execute(text("SELECT id, attempt FROM jobs"))}
    assert rows == {"never-run": 0, "restarted": 5, "once": 1}  # the old meaning: claims so far
    assert _child_rows(store) == children  # no copy-and-drop of the jobs table cascaded to its children
    store.engine.dispose()
    upgrade(url)
    assert _child_rows(store) == children


def _child_rows(store: JobStore) -> dict[str, int]:
    with store.engine.connect() as connection:
        # Metric points live in metric_chunks from migration 0009 on (one chunk per series here), in metrics before.
        metrics = "metric_chunks" if inspect(connection).has_table("metric_chunks") else "metrics"
        return {
            name: int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
            for name, table in (("job_events", "job_events"), ("metrics", metrics), ("checkpoints", "checkpoints"))
        }


BATCH_PROBE = '''"""a migration that copies the jobs table (SQLite batch mode), as a future one may"""
import sqlalchemy as sa
from alembic import op

revision = "probe"
down_revision = {head!r}
branch_labels = None
depends_on = None
# SQLite copies the table; PostgreSQL alters it in place (it cannot drop a table others reference).
RECREATE = "always" if op.get_context().dialect.name == "sqlite" else "auto"


def upgrade() -> None:
    with op.batch_alter_table("jobs", recreate=RECREATE) as batch:
        batch.add_column(sa.Column("probe", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", recreate=RECREATE) as batch:
        batch.drop_column("probe")
'''


def test_a_migration_that_copies_the_jobs_table_keeps_every_child_row(store: JobStore, tmp_path: Path) -> None:
    """On SQLite, dropping the old copy of a table with foreign keys enforced would cascade-delete its children."""
    scripts = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    (scripts / "versions" / "probe.py").write_text(BATCH_PROBE.format(head=head))
    job, _ = store.create_job(owner="a", spec=SPEC, idempotency_key=None)
    token = _claim(store, job.id, "w").lease_token
    store.record_progress(
        job_id=job.id, worker="w", token=token, step=1, steps_per_sec=None, points=[MetricPoint("loss", 1, 0.5)]
    )
    store.add_checkpoint(job_id=job.id, step=1, weights_key="w", state_key="s", size_bytes=1)
    children = _child_rows(store)
    config = alembic_config(store.engine.url.render_as_string(hide_password=False))
    config.set_main_option("script_location", str(scripts))
    store.engine.dispose()
    command.upgrade(config, "probe")
    assert _child_rows(store) == children
    command.downgrade(config, head or "")
    assert _child_rows(store) == children


# --------------------------------------------------------------------------- leases and attempts


def test_a_job_is_claimed_once_and_only_the_current_lease_writes(store: JobStore) -> None:
    job, created = store.create_job(owner="a", spec=SPEC, idempotency_key=None)
    assert created and job.attempt == 1 and JobOut.of(job).attempt == 1
    first = _claim(store, job.id, "w1")
    assert first.attempt == 1 and first.status == "running" and first.lease_token == 1
    assert store.claim_next(worker="w2", quotas_of=default_quotas) is None
    assert store.heartbeat(job_id=job.id, worker="w2", token=1) is None  # w2 holds nothing
    assert store.heartbeat(job_id=job.id, worker="w1", token=0) is None  # a stale token holds nothing
    assert store.heartbeat(job_id=job.id, worker="w1", token=1) == "running"


def test_a_silent_worker_loses_its_job_and_max_attempts_bounds_failed_attempts(store: JobStore) -> None:
    job, _ = store.create_job(owner="a", spec=SPEC, idempotency_key=None)
    tokens = []
    for attempt in (1, 2):
        claimed = _claim(store, job.id, f"w{attempt}")
        assert claimed.attempt == attempt
        tokens.append(claimed.lease_token)
        assert store.requeue_silent_jobs(lease_timeout=EXPIRED) == []  # the lease is fresh
        sent = _expire_lease(store, job.id)
        after = _job(store, job.id)
        if attempt < 2:
            assert sent == [job.id] and after.status == "queued" and after.attempt == 2
        else:
            assert sent == [] and after.status == "failed" and "gave up after 2 attempts" in (after.error or "")
            assert after.attempt == 2 and JobOut.of(after).attempt == 2
    # The old worker cannot write once its lease is gone.
    gone = store.record_progress(job_id=job.id, worker="w1", token=tokens[0], step=5, steps_per_sec=None, points=[])
    assert gone is None
    reasons = [e["reason"] for e in _status_events(store, job.id)]
    assert reasons[0] == "submitted" and "silent" in reasons[2] and "attempt 1 of 2 failed" in reasons[2]
    assert "gave up" in reasons[-1]


def test_a_hand_back_does_not_use_an_attempt(store: JobStore) -> None:
    """Fault 8: max_attempts 2, one SIGTERM hand-back, then one crash: the job still runs (and can succeed)."""
    job, _ = store.create_job(owner="a", spec=SPEC, idempotency_key=None)
    shown: list[int] = [JobOut.of(job).attempt]

    first = _claim(store, job.id, "w1")
    assert store.hand_back(job_id=job.id, worker="w1", token=first.lease_token, reason="worker shut down at step 40")
    handed = _job(store, job.id)
    assert handed.status == "queued" and handed.attempt == 1 and handed.worker is None
    shown.append(JobOut.of(handed).attempt)

    second = _claim(store, job.id, "w2")
    assert second.attempt == 1 and second.lease_token == first.lease_token + 1
    # The first worker's token is fenced off for good.
    assert store.heartbeat(job_id=job.id, worker="w1", token=first.lease_token) is None
    assert not store.hand_back(job_id=job.id, worker="w1", token=first.lease_token, reason="again")
    assert not store.finish(job_id=job.id, worker="w1", token=first.lease_token, status="succeeded", reason="x")
    assert _expire_lease(store, job.id) == [job.id]  # w2 crashed: the first failed attempt
    shown.append(JobOut.of(_job(store, job.id)).attempt)

    third = _claim(store, job.id, "w3")
    assert third.status == "running" and third.attempt == 2
    shown.append(JobOut.of(third).attempt)
    assert store.finish(job_id=job.id, worker="w3", token=third.lease_token, status="succeeded", reason="done")
    done = _job(store, job.id)
    assert done.status == "succeeded" and done.error is None and done.attempt == 2
    assert shown == [1, 1, 2, 2] and max(shown) <= done.max_attempts

    events = _status_events(store, job.id)
    assert [(e["from"], e["to"]) for e in events] == [
        (None, "queued"),
        ("queued", "running"),
        ("running", "queued"),
        ("queued", "running"),
        ("running", "queued"),
        ("queued", "running"),
        ("running", "succeeded"),
    ]
    hand_back = events[2]
    assert hand_back["handed_back"] is True and hand_back["attempt"] == 1
    assert hand_back["reason"] == "handed back by w1: worker shut down at step 40"


def test_handing_back_a_job_being_cancelled_cancels_it(store: JobStore) -> None:
    job, _ = store.create_job(owner="a", spec=SPEC, idempotency_key=None)
    claimed = _claim(store, job.id, "w")
    store.request_cancel(job_id=job.id, owner="a")
    assert store.hand_back(job_id=job.id, worker="w", token=claimed.lease_token, reason="shutdown")
    after = _job(store, job.id)
    assert after.status == "cancelled" and after.finished_at is not None


def test_finish_takes_only_final_statuses(store: JobStore) -> None:
    job, _ = store.create_job(owner="a", spec=SPEC, idempotency_key=None)
    claimed = _claim(store, job.id, "w")
    with pytest.raises(ValueError, match="hand_back"):
        store.finish(job_id=job.id, worker="w", token=claimed.lease_token, status="queued", reason="x")
    assert _job(store, job.id).status == "running"


def test_forgive_attempt_gives_back_the_attempt_an_outage_hand_back_lost(store: JobStore) -> None:
    job, _ = store.create_job(owner="a", spec=SPEC, idempotency_key=None)
    _claim(store, job.id, "w1")
    _expire_lease(store, job.id)  # w1 was handing back but could not reach the store
    resumed = _claim(store, job.id, "w2")
    assert resumed.attempt == 2
    assert not store.forgive_attempt(job_id=job.id, worker="w1", token=resumed.lease_token, reason="x")  # not w1's
    reason = "resumed from the checkpoint w1 wrote while handing back"
    assert store.forgive_attempt(job_id=job.id, worker="w2", token=resumed.lease_token, reason=reason)
    assert _job(store, job.id).attempt == 1
    # A retried call (the reply was lost) gives back nothing more.
    assert not store.forgive_attempt(job_id=job.id, worker="w2", token=resumed.lease_token, reason=reason)
    assert _job(store, job.id).attempt == 1
    forgiven = [e.data for e in store.events_after(job_id=job.id, after=0) if e.kind == "attempt"]
    assert forgiven == [{"attempt": 1, "reason": f"attempt 2 given back by w2: {reason}"}]
    # The attempt given back is usable: a crash now is the first failed attempt of two.
    assert _expire_lease(store, job.id) == [job.id]
    assert _job(store, job.id).status == "queued" and _job(store, job.id).attempt == 2


def test_forgive_attempt_never_goes_below_the_first_attempt(store: JobStore) -> None:
    job, _ = store.create_job(owner="a", spec=SPEC, idempotency_key=None)
    claimed = _claim(store, job.id, "w")
    assert not store.forgive_attempt(job_id=job.id, worker="w", token=claimed.lease_token, reason="x")
    assert _job(store, job.id).attempt == 1


def test_unclaimed_jobs_are_sent_again(store: JobStore) -> None:
    job, _ = store.create_job(owner="a", spec=SPEC, idempotency_key=None)
    wake_ups = partial(store.wake_ups, quotas_of=default_quotas, limit=8)
    assert wake_ups(older_than=timedelta(seconds=60)) == [job.id]  # never sent
    assert wake_ups(older_than=timedelta(seconds=60)) == []  # just re-sent
    store.claim_next(worker="w", quotas_of=default_quotas)
    assert wake_ups(older_than=timedelta(seconds=0)) == []


# --------------------------------------------------------------------------- submission


def test_concurrent_submissions_with_one_idempotency_key_get_one_job(store: JobStore) -> None:
    """Fault 3: 8 simultaneous create_job calls with one key and one body: one job, created exactly once."""
    for round_ in range(5):  # several rounds, so the race is met on every run
        key = f"retry-{round_}"

        def submit(key: str = key) -> tuple[Job, bool]:
            return store.create_job(owner="a", spec=SPEC, idempotency_key=key)

        results = at_once(*[submit] * 8)
        errors = [r for r in results if isinstance(r, Exception)]
        assert errors == []
        assert len({job.id for job, _ in results}) == 1
        assert sorted(created for _, created in results) == [False] * 7 + [True]
        # The one job has one submission event.
        job_id = results[0][0].id
        assert [e.data["reason"] for e in store.events_after(job_id=job_id, after=0)] == ["submitted"]
    other = JobSpec.model_validate({**SPEC.model_dump(mode="json"), "name": "another"})
    results = at_once(*[lambda: store.create_job(owner="a", spec=other, idempotency_key="retry-0")] * 4)
    assert all(isinstance(r, IdempotencyConflict) for r in results)
    # Keys are per owner.
    _, created = store.create_job(owner="b", spec=other, idempotency_key="retry-0")
    assert created


# --------------------------------------------------------------------------- paging and client integers

BAD_CURSORS = [str(2**63), str(2**64), str(10**20), "-1", "1e3", " 5", "٣", "0", "05", "+5", "1_0", "", "abc"]


def test_only_cursors_the_store_wrote_are_accepted(store: JobStore) -> None:
    """Fault 4: a cursor beyond BIGINT (or not a plain decimal) is InvalidCursor on both lists, never a SQL error."""
    store.create_job(owner="a", spec=SPEC, idempotency_key=None)
    _dataset(store, 0)
    for cursor in BAD_CURSORS:
        with pytest.raises(InvalidCursor):
            store.list_jobs(owner="a", cursor=cursor)
        with pytest.raises(InvalidCursor):
            store.list_jobs(owner="a", tag=("k", "v"), cursor=cursor)
        with pytest.raises(InvalidCursor):
            store.list_datasets(owner="a", cursor=cursor)


def _dataset(store: JobStore, index: int) -> str:
    record, _ = store.create_dataset(
        dataset_id=f"ds-{index}",
        owner="a",
        name=f"d{index}",
        format="npz",
        info={},
        content_hash=f"hash-{index}",
        size_bytes=1,
        data_key="k",
        preview_key=None,
    )
    return record.id


def test_keyset_pages_walk_both_lists_newest_first(store: JobStore) -> None:
    tagged = JobSpec.model_validate({**SPEC.model_dump(mode="json"), "tags": {"k": "v"}})
    jobs = [store.create_job(owner="a", spec=tagged if i % 2 else SPEC, idempotency_key=None)[0].id for i in range(5)]
    datasets = [_dataset(store, i) for i in range(5)]

    def walk(page: Callable[[str | None], tuple[list[Any], str | None]]) -> list[str]:
        seen, cursor = [], None
        while True:
            rows, cursor = page(cursor)
            seen += [row.id for row in rows]
            if cursor is None:
                return seen
            assert len(rows) == 2

    assert walk(lambda c: store.list_jobs(owner="a", limit=2, cursor=c)) == jobs[::-1]
    assert walk(lambda c: store.list_jobs(owner="a", tag=("k", "v"), limit=2, cursor=c)) == [jobs[3], jobs[1]]
    assert walk(lambda c: store.list_datasets(owner="a", limit=2, cursor=c)) == datasets[::-1]
    # The largest cursor the store could write is accepted; limits beyond the page maximum are clamped.
    largest = store.cursor_scope("jobs", "a").seal(DB_INT_MAX)
    assert [j.id for j in store.list_jobs(owner="a", cursor=largest)[0]] == jobs[::-1]
    assert len(store.list_datasets(owner="a", limit=10**30)[0]) == 5
    assert len(store.list_jobs(owner="a", limit=-(10**30))[0]) == 1


def test_client_integers_beyond_bigint_never_reach_sql(store: JobStore) -> None:
    """Fault 4 (store side): steps, since_step and event positions answer as the query means, without an error."""
    job, _ = store.create_job(owner="a", spec=SPEC, idempotency_key=None)
    claimed = _claim(store, job.id, "w")
    points = [MetricPoint("loss", step, float(step)) for step in (0, 5, 10)]
    store.record_progress(
        job_id=job.id, worker="w", token=claimed.lease_token, step=10, steps_per_sec=1.0, points=points
    )
    store.add_checkpoint(job_id=job.id, step=10, weights_key="w", state_key="s", size_bytes=1)
    for value in (2**63, 2**64, 10**20, DB_INT_MAX, -(2**63), -(2**63) - 1, -(10**20)):
        assert store.get_sample(job_id=job.id, step=value) is None, value
        assert store.get_checkpoint(job_id=job.id, step=value) is None, value
        events = store.events_after(job_id=job.id, after=value)
        series = store.metric_series(job_id=job.id, name="loss", since_step=value, max_points=abs(value))
        if value > 0:  # past the end
            assert events == [] and series == ([], [], False), value
        else:  # before the start
            assert [e.seq for e in events] == [1, 2, 3, 4] and series[0] == [0, 5, 10], value


# --------------------------------------------------------------------------- progress, checkpoints and metrics


def test_a_checkpoint_advances_progress_and_progress_never_trails_the_last_checkpoint(store: JobStore) -> None:
    """Fault 9 (store side): progress 420 then a checkpoint at 425 shows step 425; a late flush of 420 too."""
    job, _ = store.create_job(owner="a", spec=SPEC, idempotency_key=None)
    claimed = _claim(store, job.id, "w")

    def progress(step: int) -> None:
        store.record_progress(
            job_id=job.id, worker="w", token=claimed.lease_token, step=step, steps_per_sec=2.0, points=[]
        )

    progress(420)
    store.add_checkpoint(job_id=job.id, step=425, weights_key="w425", state_key="s425", size_bytes=1234)
    assert _job(store, job.id).step == 425
    progress(420)  # a flush that was computed before the checkpoint
    assert _job(store, job.id).step == 425
    store.add_checkpoint(job_id=job.id, step=100, weights_key="w100", state_key="s100", size_bytes=1)
    assert _job(store, job.id).step == 425  # an older checkpoint registered late moves nothing back
    progress(430)
    assert _job(store, job.id).step == 430
    checkpoint = store.get_checkpoint(job_id=job.id, step=None)
    assert checkpoint is not None and checkpoint.step == 425 and checkpoint.size_bytes == 1234


def test_metrics_are_idempotent_by_job_name_step_and_downsample_keeping_extremes(store: JobStore) -> None:
    job, _ = store.create_job(owner="a", spec=SPEC, idempotency_key=None)
    token = _claim(store, job.id, "w").lease_token
    points = [MetricPoint("loss", step, float(step % 7)) for step in range(1, 1001)]
    points[500] = MetricPoint("loss", 501, 100.0)  # a spike
    store.record_progress(job_id=job.id, worker="w", token=token, step=1000, steps_per_sec=10.0, points=points)
    # A replayed stretch after a resume overwrites, never duplicates.
    replay = [MetricPoint("loss", step, -1.0) for step in range(900, 1001)]
    store.record_progress(job_id=job.id, worker="w", token=token, step=1000, steps_per_sec=10.0, points=replay)
    steps, values, downsampled = store.metric_series(job_id=job.id, name="loss", since_step=0, max_points=5000)
    assert steps == list(range(1, 1001)) and not downsampled
    assert values[899:] == [-1.0] * 101
    steps, values, downsampled = store.metric_series(job_id=job.id, name="loss", since_step=0, max_points=100)
    assert downsampled and len(steps) <= 100
    assert max(values) == 100.0 and min(values) == -1.0
    assert steps == sorted(steps) and steps[0] == 1 and steps[-1] == 1000
    assert store.metric_series(job_id=job.id, name="loss", since_step=990, max_points=100)[0] == list(range(990, 1001))
    assert _job(store, job.id).latest_metrics == {"loss": -1.0}


@pytest.mark.slow
@pytest.mark.parametrize("count", [20_000, 150_000])
def test_a_metrics_batch_of_any_size_is_written(store: JobStore, count: int) -> None:
    """Fault 10: one record_progress of 20,000 (and 150,000) points, over PostgreSQL's 65,535-parameter limit."""
    job, _ = store.create_job(owner="a", spec=SPEC, idempotency_key=None)
    token = _claim(store, job.id, "w").lease_token
    names = ("loss_d", "loss_g", "grad_norm")
    points = [MetricPoint(names[i % 3], i // 3, i * 0.25) for i in range(count)]
    started = time.perf_counter()
    status = store.record_progress(
        job_id=job.id, worker="w", token=token, step=count // 3, steps_per_sec=None, points=points
    )
    elapsed = time.perf_counter() - started
    assert status == "running", elapsed
    for name in names:
        steps, values, downsampled = store.metric_series(job_id=job.id, name=name, since_step=0, max_points=count)
        expected = [p for p in points if p.name == name]
        assert not downsampled
        assert steps == [p.step for p in expected] and values == [p.value for p in expected], name
    logged = [e.data for e in store.events_after(job_id=job.id, after=0, limit=10_000) if e.kind == "metrics"]
    assert sum(e["count"] for e in logged) == count and max(e["count"] for e in logged) <= 5000
    assert _job(store, job.id).latest_metrics == {p.name: p.value for p in points[-3:]}
    print(f"{count} points written in {elapsed:.2f} s on {store.engine.dialect.name}")


def test_event_ids_are_dense_per_job(store: JobStore) -> None:
    a, _ = store.create_job(owner="a", spec=SPEC, idempotency_key=None)
    b, _ = store.create_job(owner="a", spec=SPEC, idempotency_key=None)
    token = _claim(store, a.id, "w").lease_token
    store.request_cancel(job_id=b.id, owner="a")
    store.record_progress(
        job_id=a.id, worker="w", token=token, step=1, steps_per_sec=None, points=[MetricPoint("x", 1, 1.0)]
    )
    assert [e.seq for e in store.events_after(job_id=a.id, after=0)] == [1, 2, 3]
    assert [e.seq for e in store.events_after(job_id=b.id, after=0)] == [1, 2]
    assert [e.seq for e in store.events_after(job_id=a.id, after=2)] == [3]
