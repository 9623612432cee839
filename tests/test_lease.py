"""The lease keeper and the service sink in-process, against the real job store (PostgreSQL and SQLite).

The store outage is real too: a store whose database does not answer (a closed
port) raises the same connection errors a restarting PostgreSQL does.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import torch

from models.artifacts import ArtifactStore
from models.db import make_engine
from models.quotas import Quotas
from models.spec import JobSpec
from models.store import JobStore
from tests.service import free_port
from worker.checkpoints import CheckpointKeys, latest_complete, load_checkpoint
from worker.lease import GIL_SWITCH_SECONDS, LeaseKeeper, StoreLost
from worker.sink import StoreSink
from worker.tasks import resume_from


def default_quotas(_owner: str) -> Quotas:
    """Every owner the quota defaults (running_jobs 8): what claim_next is given here."""
    return Quotas()


SPEC = JobSpec.model_validate(
    {
        "dataset": {"builtin": "ring8"},
        "architecture": {"name": "mlp", "hidden": 16, "depth": 2},
        "loss": {"name": "nsgan"},
        "training": {"steps": 100, "max_attempts": 2},
    }
)


def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def claimed(store: JobStore, worker: str = "w1") -> tuple[str, int]:
    job, _ = store.create_job(owner="a", spec=SPEC, idempotency_key=None)
    lease = store.claim_next(worker=worker, quotas_of=default_quotas)
    assert lease is not None
    return job.id, lease.lease_token


@pytest.fixture
def away() -> Iterator[JobStore]:
    """A job store whose database does not answer."""
    engine = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/gone?connect_timeout=2")
    yield JobStore(engine)
    engine.dispose()


def test_the_keeper_writes_metrics_and_progress_sees_a_cancel_and_closes_once(store: JobStore) -> None:
    job_id, token = claimed(store)
    keeper = LeaseKeeper(store=store, job_id=job_id, worker="w1", token=token, flush_seconds=0.05, grace_seconds=5)
    sys.setswitchinterval(0.005)  # CPython's default
    keeper.start()
    assert sys.getswitchinterval() <= GIL_SWITCH_SECONDS  # its flushes hold the trainer 1 ms at a time at most
    keeper.record(10, {"loss_d": 0.5})
    keeper.record(20, {"loss_d": 0.25})
    eventually(lambda: store.get_job(job_id=job_id).step == 20)  # type: ignore[union-attr]
    assert store.metric_series(job_id=job_id, name="loss_d", since_step=0, max_points=100)[:2] == (
        [10, 20],
        [0.5, 0.25],
    )
    assert not keeper.should_stop()
    store.request_cancel(job_id=job_id, owner="a")
    eventually(keeper.should_stop)
    assert keeper.stop_reason == "cancel"
    keeper.record(30, {"loss_d": 0.125})
    keeper.close()
    keeper.close()  # idempotent: nothing written twice, no error
    assert store.get_job(job_id=job_id).step == 30  # type: ignore[union-attr]
    assert store.metric_series(job_id=job_id, name="loss_d", since_step=0, max_points=100)[0] == [10, 20, 30]
    assert store.finish(job_id=job_id, worker="w1", token=token, status="cancelled", reason="test")


def test_a_keeper_that_lost_its_lease_stops_and_writes_nothing(store: JobStore) -> None:
    job_id, token = claimed(store)
    store.requeue_silent_jobs(lease_timeout=timedelta(seconds=-1))  # the lease expires
    assert store.claim_next(worker="w2", quotas_of=default_quotas) is not None
    keeper = LeaseKeeper(store=store, job_id=job_id, worker="w1", token=token, flush_seconds=1, grace_seconds=5)
    keeper.record(10, {"loss_d": 0.5})
    keeper.flush()
    assert keeper.should_stop() and keeper.stop_reason == "lost"
    assert store.metric_names(job_id=job_id) == []
    keeper.close()


def test_progress_written_with_a_checkpoint_is_its_step_not_the_last_metrics_step(
    store: JobStore, tmp_path: Path
) -> None:
    # Fault 9: metrics at 420, a cancel, the stop checkpoint at 425: the job must show 425.
    job_id, token = claimed(store)
    keeper = LeaseKeeper(store=store, job_id=job_id, worker="w1", token=token, flush_seconds=60, grace_seconds=5)
    sink = StoreSink(
        keeper=keeper,
        store=store,
        artifacts=ArtifactStore(str(tmp_path / "artifacts")),
        job_id=job_id,
        spec_json={},
        real_points=None,
        scratch_dir=str(tmp_path / "tmp"),
    )
    sink.metrics(420, {"loss_d": 0.5})
    sink.checkpoint(425, {"generator.w": torch.ones(3)}, {"step": 425})
    job = store.get_job(job_id=job_id)
    assert job is not None and job.step == 425
    (checkpoint,) = store.list_checkpoints(job_id=job_id)
    assert checkpoint.step == 425 and checkpoint.size_bytes == sink.artifacts.size(checkpoint.weights_key)
    keeper.close()
    sink.close()
    sink.close()
    with pytest.raises(RuntimeError, match="closed"):
        sink.metrics(430, {"loss_d": 0.5})
    assert store.get_job(job_id=job_id).step == 425  # type: ignore[union-attr]


def test_a_store_outage_past_the_grace_checkpoints_locally_and_the_next_worker_settles_it(
    store: JobStore, away: JobStore, tmp_path: Path
) -> None:
    job_id, token = claimed(store)
    artifacts = ArtifactStore(str(tmp_path / "artifacts"))
    # The worker's own route to the store is gone (the API's is not).
    keeper = LeaseKeeper(store=away, job_id=job_id, worker="w1", token=token, flush_seconds=0.05, grace_seconds=0.5)
    sink = StoreSink(
        keeper=keeper,
        store=away,
        artifacts=artifacts,
        job_id=job_id,
        spec_json={},
        real_points=None,
        scratch_dir=str(tmp_path / "tmp"),
    )
    keeper.start()
    sink.metrics(10, {"loss_d": 0.5})
    sink.metrics(20, {"loss_d": 0.25})
    eventually(keeper.should_stop)
    assert keeper.stop_reason == "store lost"
    with pytest.raises(StoreLost):
        keeper.retrying(keeper.flush)
    sink.checkpoint(20, {"generator.w": torch.ones(3)}, {"step": 20})
    keeper.close()  # returns at once: nothing to write to a lost store

    keys = latest_complete(artifacts, job_id)
    assert keys == CheckpointKeys.of(job_id, 20)
    local = load_checkpoint(artifacts, keys)
    assert local.handed_back == "store lost"
    assert [(p.name, p.step, p.value) for p in local.pending_metrics] == [("loss_d", 10, 0.5), ("loss_d", 20, 0.25)]
    assert store.list_checkpoints(job_id=job_id) == []

    # The lease expires (a failed attempt, by the store's count); the next worker resumes the local checkpoint.
    assert store.requeue_silent_jobs(lease_timeout=timedelta(seconds=-1)) == [job_id]
    assert store.get_job(job_id=job_id).attempt == 2  # type: ignore[union-attr]
    lease = store.claim_next(worker="w2", quotas_of=default_quotas)
    assert lease is not None
    successor = LeaseKeeper(
        store=store, job_id=job_id, worker="w2", token=lease.lease_token, flush_seconds=60, grace_seconds=5
    )
    resumed = resume_from(successor, store, artifacts, job_id)
    assert resumed is not None and resumed.state["step"] == 20
    successor.close()
    job = store.get_job(job_id=job_id)
    assert job is not None and job.attempt == 1 and job.step == 20  # the hand-back used up no attempt
    assert [c.step for c in store.list_checkpoints(job_id=job_id)] == [20]
    assert store.metric_series(job_id=job_id, name="loss_d", since_step=0, max_points=100)[:2] == (
        [10, 20],
        [0.5, 0.25],
    )
    # Settled once: resuming the same checkpoint again (after a real crash) gives nothing back.
    store.requeue_silent_jobs(lease_timeout=timedelta(seconds=-1))
    again = store.claim_next(worker="w3", quotas_of=default_quotas)
    assert again is not None
    third = LeaseKeeper(
        store=store, job_id=job_id, worker="w3", token=again.lease_token, flush_seconds=60, grace_seconds=5
    )
    resume_from(third, store, artifacts, job_id)
    third.close()
    assert store.get_job(job_id=job_id).attempt == 2  # type: ignore[union-attr]
