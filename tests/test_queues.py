"""Named queues: a job's resources.queue routes it to the workers started with that queue (`ganforge worker
--queue NAME`); a job for a queue no live worker serves stays queued and says so, and so does a job whose queue's
live workers cannot run it (resources.gpus more than any of them sees); the default queue still works.
A worker process takes its share of the machine's cores (GANFORGE_WORKER_THREADS)."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from ganforge.cli import main
from ganforge.supervisor import Up
from migrations import downgrade, upgrade
from models.quotas import Quotas
from models.settings import Settings
from models.spec import JobSpec
from models.store import JobStore
from models.store.workers import runs_on
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


@pytest.mark.parametrize("name", ["ganforge.generate", "x.generate", "celery"])
def test_the_services_own_queues_are_not_a_jobs_or_a_workers_queue(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # a job on a generate queue would wake the generate worker and wait for ever (a hostile test found it)
    with pytest.raises(ValidationError) as raised:
        JobSpec.model_validate({**TINY_SPEC, "resources": {"queue": name}})
    [error] = raised.value.errors()
    assert error["loc"] == ("resources", "queue") and "reserved" in error["msg"]
    assert JobSpec.model_validate({**TINY_SPEC, "resources": {"queue": "generate"}}).resources.queue == "generate"
    assert main(["worker", "--queue", name]) == 2
    assert "reserved" in capsys.readouterr().err


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


def _gpu_job(store: JobStore, owner: str, queue: str, gpus: int, device: str = "auto") -> Any:
    spec = {**TINY_SPEC, "training": {**TINY_SPEC["training"], "device": device}}
    return store.create_job(
        owner=owner,
        spec=JobSpec.model_validate({**spec, "resources": {"queue": queue, "gpus": gpus}}),
        idempotency_key=None,
    )[0]


def test_workers_record_their_gpus_and_a_job_none_of_its_queues_workers_can_run_says_so(store: JobStore) -> None:
    store.register_worker(worker="w-1gpu", queues=["gpu"], threads=1, gpus=1)
    store.register_worker(worker="w-1gpu-b", queues=["gpu", "mixed"], threads=1, gpus=1)
    store.register_worker(worker="w-cpu", queues=["cpu", "mixed"], threads=1, gpus=0)
    store.register_worker(worker="w-old", queues=["old"], threads=1)  # a row from before migration 0010: not said
    live = {w.id: w.gpus for w in store.live_workers(within=timedelta(seconds=20))}
    assert live == {"w-1gpu": 1, "w-1gpu-b": 1, "w-cpu": 0, "w-old": None}
    seen = store.gpus_by_queue(within=timedelta(seconds=20))
    assert set(seen) == {"gpu", "mixed", "cpu", "old"} and seen["gpu"] == [1, 1] and seen["old"] == [None]
    assert sorted(seen["mixed"], key=str) == [0, 1] and seen["cpu"] == [0]  # one count per worker
    assert store.gpus_by_queue(within=timedelta(seconds=-1)) == {}
    jobs = iter(range(100))

    def reason(queue: str, gpus: int, device: str = "auto") -> str:
        job = _gpu_job(store, f"owner-{next(jobs)}", queue, gpus, device)  # an owner each: no jobs ahead
        found = store.queue_reason(job=job, quotas_of=default_quotas, served=seen.keys(), gpus_seen=seen)
        assert found is not None  # a queued job always says why
        return found

    free = "waiting for a free worker"
    assert reason("gpu", 4) == (
        "no live worker of queue 'gpu' sees 4 GPUs (the most is 1): the job waits for one that does; start a worker "
        "of this queue on a machine with 4 (`ganforge worker --queue gpu --gpu 0,1,2,3`) or ask for fewer "
        "(resources.gpus)"
    )
    assert reason("gpu", 4, "cuda").startswith("no live worker of queue 'gpu' sees 4 GPUs (the most is 1)")
    assert reason("gpu", 1) == reason("gpu", 1, "cuda") == free
    assert reason("gpu", 4, "cpu") == free  # training.device cpu: 4 gloo processes on a GPU worker's CPU
    # A CPU worker runs any resources.gpus as that many gloo processes ("auto" there is the CPU), not a cuda job.
    assert reason("cpu", 4) == reason("mixed", 4) == free
    assert reason("cpu", 2, "cuda").startswith("no live worker of queue 'cpu' sees 2 GPUs (the most is 0)")
    assert reason("cpu", 1, "cuda").startswith("no live worker of queue 'cpu' sees a GPU (the most is 0)")
    assert reason("mixed", 2, "cuda").startswith("no live worker of queue 'mixed' sees 2 GPUs (the most is 1)")
    assert reason("old", 8, "cuda") == free  # a worker that did not say is taken at its word: no shortfall claimed
    assert reason("nobody", 4).startswith("waiting for a free worker: no worker serves queue 'nobody'")
    # A worker that sees enough, once live, ends the shortfall; the upsert keeps its latest count.
    store.register_worker(worker="w-1gpu", queues=["gpu"], threads=1, gpus=4)
    seen = store.gpus_by_queue(within=timedelta(seconds=20))
    assert sorted(seen["gpu"], key=str) == [1, 4] and reason("gpu", 4) == free
    # A job of resources.gpus 2 on workers that see 0, 1 and 2 GPUs:
    assert [[runs_on(device=d, gpus=2, seen=g) for g in (0, 1, 2)] for d in ("auto", "cpu", "cuda")] == [
        [True, False, True],  # auto: the CPU where there is no GPU, else the GPUs, which must be 2
        [True, True, True],  # cpu: gloo processes on any worker
        [False, False, True],  # cuda: 2 GPUs
    ]


def test_a_worker_claims_only_the_jobs_its_gpus_run_and_leaves_the_rest_queued(store: JobStore) -> None:
    """claim_next's SQL filter is runs_on: every device and resources.gpus against workers seeing 0, 1 and 2."""
    for seen in (0, 1, 2):
        for device in ("auto", "cpu", "cuda"):
            for gpus in (1, 2):
                owner = f"owner-{uuid.uuid4().hex[:8]}"
                queue = f"q-{uuid.uuid4().hex[:8]}"
                job = _gpu_job(store, owner, queue, gpus, device)
                claimed = store.claim_next(worker=f"w-{seen}", quotas_of=default_quotas, queues=[queue], gpus=seen)
                expected = runs_on(device=device, gpus=gpus, seen=seen)
                assert (claimed is not None) == expected, (seen, device, gpus)
                if not expected:  # left queued for a worker that can: the next one with enough GPUs takes it
                    assert store.get_job(job_id=job.id).status == "queued"
                    later = store.claim_next(worker="w-big", quotas_of=default_quotas, queues=[queue], gpus=2)
                    assert later is not None and later.id == job.id
    # A worker that does not say (None) claims anything, as before.
    job = _gpu_job(store, "owner-any", "q-any", 8, "cuda")
    assert store.claim_next(worker="w-any", quotas_of=default_quotas, queues=["q-any"]).id == job.id


def test_migration_0010_adds_workers_gpus_and_a_row_from_before_says_nothing(store: JobStore) -> None:
    store.register_worker(worker="w-2gpu", queues=["gpu"], threads=1, gpus=2)
    url = store.engine.url.render_as_string(hide_password=False)
    store.engine.dispose()
    downgrade(url, "0009")  # the column goes, the row stays
    upgrade(url)
    [row] = store.live_workers(within=timedelta(seconds=60))
    assert (row.id, row.queues, row.gpus) == ("w-2gpu", ["gpu"], None)  # until its next heartbeat says
    job = _gpu_job(store, "a", "gpu", 8, "cuda")
    seen = store.gpus_by_queue(within=timedelta(seconds=60))
    assert store.queue_reason(job=job, quotas_of=default_quotas, served=seen.keys(), gpus_seen=seen) == (
        "waiting for a free worker"
    )


@pytest.mark.parametrize("service", ["postgres", "sqlite"], indirect=True)
def test_a_job_wanting_more_gpus_than_its_queues_live_workers_see_says_so(service: Service) -> None:
    """The deployment's own worker (a real `ganforge worker` on this CPU machine) records 0 GPUs, and a cuda job
    of its queue says so while queued and is left queued by it when it is woken. A worker that sees 1 GPU cannot be
    started here (worker/devices.py counts what torch sees; no setting fakes it), so its heartbeat row is written
    through the store as worker/presence.py writes it."""
    queue = service.env["GANFORGE_QUEUE"]
    store = job_store(service)
    name = f"gpu-{uuid.uuid4().hex[:6]}"  # the Redis broker is shared: a queue of this test's own
    fake = f"one-gpu-{uuid.uuid4().hex[:6]}"
    try:
        deadline = time.monotonic() + 60
        while not (mine := [w for w in store.live_workers(within=timedelta(seconds=20)) if queue in w.queues]):
            assert time.monotonic() < deadline, service.logs()
            time.sleep(0.2)
        assert {w.gpus for w in mine} == {0}, [(w.id, w.gpus) for w in mine]  # its heartbeat row says it: CPU
        with service.client() as client:
            spec = {**TINY_SPEC, "training": {**TINY_SPEC["training"], "device": "cuda"}, "resources": {"gpus": 2}}
            posted = client.post("/v1/jobs", json=spec)
            assert posted.status_code == 201, posted.text
            assert posted.json()["queue_reason"].startswith(
                f"no live worker of queue '{queue}' sees 2 GPUs (the most is 0): the job waits for one that does"
            ), posted.json()
            # The CPU worker is woken for it and leaves it queued (claim_next's runs_on), as the reason says.
            job_id = posted.json()["id"]
            deadline = time.monotonic() + 60
            while f"woken for job {job_id}: no queued job may start now" not in service.logs():
                assert time.monotonic() < deadline, service.logs()
                time.sleep(0.2)
            waiting = client.get(f"/v1/jobs/{job_id}").json()
            assert waiting["status"] == "queued" and waiting["queue_reason"] == posted.json()["queue_reason"], waiting
            client.post(f"/v1/jobs/{job_id}/cancel").raise_for_status()

            store.register_worker(worker=fake, queues=[name], threads=1, gpus=1)
            wide = client.post("/v1/jobs", json={**TINY_SPEC, "resources": {"queue": name, "gpus": 4}})
            assert wide.status_code == 201, wide.text
            short = f"no live worker of queue '{name}' sees 4 GPUs (the most is 1)"
            assert wide.json()["queue_reason"].startswith(short), wide.json()
            got = client.get(f"/v1/jobs/{wide.json()['id']}").json()
            assert got["status"] == "queued" and got["queue_reason"].startswith(short), got
            assert f"ganforge worker --queue {name} --gpu 0,1,2,3" in got["queue_reason"]
            store.register_worker(worker=fake, queues=[name], threads=1, gpus=4)
            now = client.get(f"/v1/jobs/{wide.json()['id']}").json()["queue_reason"]
            assert now.startswith("waiting for a free worker") and "GPU" not in now, now
            assert client.post(f"/v1/jobs/{wide.json()['id']}/cancel").status_code == 202
    finally:
        store.forget_worker(worker=fake)
        store.engine.dispose()
