"""Named queues: a job's resources.queue routes it to the workers started with that queue (`ganforge worker
--queue NAME`); a job for a queue no live worker serves stays queued and says so; the default queue still works.
A worker process takes its share of the machine's cores (GANFORGE_WORKER_THREADS)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from ganforge.cli import main
from ganforge.supervisor import Up
from models.quotas import Quotas
from models.settings import Settings
from models.spec import JobSpec
from models.store import JobStore
from tests.drain import claims, job_store
from tests.service import TINY_SPEC, Service, wait_for
from worker.presence import training_queues, worker_threads


def default_quotas(_owner: str) -> Quotas:
    return Quotas()


def test_a_worker_claims_only_the_jobs_of_its_queues(store: JobStore) -> None:
    older = store.create_job(
        owner="a", spec=JobSpec.model_validate({**TINY_SPEC, "priority": 50}), idempotency_key=None
    )[0]
    gpu = store.create_job(
        owner="a",
        spec=JobSpec.model_validate({**TINY_SPEC, "priority": 10, "resources": {"queue": "gpu"}}),
        idempotency_key=None,
    )[0]
    assert (older.queue, gpu.queue) == ("ganforge", "gpu")  # left out: the built-in default queue
    assert store.wake_ups(older_than=timedelta(0), quotas_of=default_quotas, limit=8, queues={"gpu"}) == [gpu.id]
    assert store.queues_of(job_ids=[older.id, gpu.id, "nope"]) == {older.id: "ganforge", gpu.id: "gpu"}
    claimed = store.claim_next(worker="w-gpu", quotas_of=default_quotas, queues=["gpu", "gpu-80gb"])
    assert claimed is not None and claimed.id == gpu.id  # the older, higher-priority default job is not its
    assert store.claim_next(worker="w-gpu", quotas_of=default_quotas, queues=["gpu"]) is None
    # Workers say what they serve; one unseen for longer than the window is gone.
    store.register_worker(worker="w-gpu", queues=["gpu"], threads=2)
    store.register_worker(worker="w-gpu", queues=["gpu", "gpu-80gb"], threads=2)  # an upsert
    assert store.served_queues(within=timedelta(seconds=20)) == {"gpu", "gpu-80gb"}
    assert store.served_queues(within=timedelta(seconds=-1)) == set()
    reason = store.queue_reason(job=older, quotas_of=default_quotas, served={"gpu"})
    assert reason == (
        "waiting for a free worker: no worker serves queue 'ganforge' (start one with `ganforge worker --queue ganforge`)"
    )
    assert store.queue_reason(job=older, quotas_of=default_quotas, served={"ganforge"}) == "waiting for a free worker"
    assert store.forget_silent_workers(older_than=timedelta(seconds=-1)) == 1


def test_threads_are_the_setting_else_torch_under_omp_else_all_cores() -> None:
    assert worker_threads(Settings(worker_threads=3), environ={}) == 3
    assert worker_threads(Settings(), environ={"OMP_NUM_THREADS": "1"}) >= 1  # torch's own default, from OMP
    assert worker_threads(Settings(), environ={}) >= 1
    assert training_queues({"gpu", "ganforge.generate", "cpu"}) == ["cpu", "gpu"]


def test_up_keeps_n_training_workers_and_a_bad_queue_name_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    up = Up("127.0.0.1", 8000, workers=3)
    assert [kept.name for kept in up.trainers] == ["worker 1", "worker 2", "worker 3"]
    assert len(up.workers) == 4  # and the generate worker
    assert main(["worker", "--queue", "GPU!"]) == 2
    assert "--queue 'GPU!'" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("service", ["postgres"], indirect=True)  # one backend: a second worker process starts
def test_jobs_go_to_their_queues_workers_and_a_queue_nobody_serves_says_so(service: Service) -> None:
    name, nobody = f"gpu-{uuid.uuid4().hex[:6]}", f"nobody-{uuid.uuid4().hex[:6]}"  # the Redis broker is shared
    gpu_worker = service.start_worker(GANFORGE_WORKER_QUEUES=name)
    store = job_store(service)
    try:
        with service.client() as client:
            on_gpu = client.post("/v1/jobs", json={**TINY_SPEC, "resources": {"queue": name}}).json()
            stranded = client.post("/v1/jobs", json={**TINY_SPEC, "resources": {"queue": nobody}})
            on_default = client.post("/v1/jobs", json=TINY_SPEC).json()
            assert stranded.status_code == 201, stranded.text
            reason = f"waiting for a free worker: no worker serves queue '{nobody}'"
            assert stranded.json()["queue_reason"].startswith(reason), stranded.json()
            done = wait_for(client, on_gpu["id"], ("succeeded",), timeout=120)
            default_done = wait_for(client, on_default["id"], ("succeeded",), timeout=120)
            assert done["spec"]["resources"]["queue"] == name
            assert default_done["spec"]["resources"]["queue"] == service.env["GANFORGE_QUEUE"]  # resolved, stored
            [gpu_id] = [w.id for w in store.live_workers(within=timedelta(seconds=60)) if w.queues == [name]]
            assert claims(store, on_gpu["id"]).workers == [gpu_id]
            assert claims(store, on_default["id"]).workers != [gpu_id]  # the default queue's worker took it
            waiting = client.get(f"/v1/jobs/{stranded.json()['id']}").json()
            assert waiting["status"] == "queued" and waiting["queue_reason"].startswith(reason), waiting
            assert f"ganforge worker --queue {nobody}" in waiting["queue_reason"]
            assert client.post(f"/v1/jobs/{stranded.json()['id']}/cancel").status_code == 202
    finally:
        store.engine.dispose()
        service.kill_worker(gpu_worker)
        service.workers.remove(gpu_worker)  # the shared deployment goes on with its one worker
