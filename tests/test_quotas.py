"""Per-owner quotas over real HTTP, on both backends (issue 12, "Quotas").

One API per backend (no worker: submitted jobs stay queued) with small quotas from the environment:
GANFORGE_QUOTA_QUEUED_JOBS=3, GANFORGE_QUOTA_STEPS_PER_JOB=1000, GANFORGE_QUOTA_UPLOADS_PER_HOUR=2, and
GANFORGE_OWNER_QUOTAS overrides for two owners (queued_jobs 5; stored_bytes 1). Each test acts as its own owner,
so the tests share the service without sharing a count. The store's counts (checkpoints, the upload window) and a
refused study's rollback are checked on the store itself, on PostgreSQL and SQLite.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import func, select, update

from ganforge.client import AsyncClient, Client, Quota
from models.quotas import Quotas
from models.records import Dataset, Job, JobEvent, Study
from models.spec import JobSpec
from models.store import JobStore, utcnow
from models.store.quota import QuotaExceeded
from tests.conftest import BACKENDS, api_only
from tests.service import TINY_SPEC, Service

OWNERS = ["queued", "override", "steps", "study", "race", "uploads", "full", "look", "low", "validate"]
OVERRIDES = {"override": {"queued_jobs": 5}, "full": {"stored_bytes": 1}, "low": {"max_priority": 30}}
QUEUED_JOBS, STEPS_PER_JOB, UPLOADS_PER_HOUR = 3, 1000, 2


@pytest.fixture(scope="module", params=BACKENDS)
def quota_service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The API alone, with small quotas; owner X's key is "key-X"."""
    with api_only(
        request.param,
        tmp_path_factory.mktemp(f"quotas-{request.param}"),
        GANFORGE_API_KEYS=",".join(f"key-{owner}={owner}" for owner in OWNERS),
        GANFORGE_QUOTA_QUEUED_JOBS=str(QUEUED_JOBS),
        GANFORGE_QUOTA_STEPS_PER_JOB=str(STEPS_PER_JOB),
        GANFORGE_QUOTA_UPLOADS_PER_HOUR=str(UPLOADS_PER_HOUR),
        GANFORGE_OWNER_QUOTAS=json.dumps(OVERRIDES),
    ) as deployment:
        yield deployment


def spec(**training: Any) -> dict[str, Any]:
    """TINY_SPEC with `training` changed, writing output seldom enough for 1,000 steps."""
    every = {"metrics": 10, "samples": 100, "checkpoint": 100}
    return {**TINY_SPEC, "training": {**TINY_SPEC["training"], **training}, "every": every}


def study(**changes: Any) -> dict[str, Any]:
    """One loss × two seeds = 2 jobs of 20 steps."""
    body: dict[str, Any] = {
        "dataset": {"builtin": "ring8"},
        "architecture": {"name": "mlp", "hidden": 16, "depth": 1},
        "losses": ["nsgan"],
        "seeds": 2,
        "training": {"steps": 20, "batch_size": 8},
        "every": {"metrics": 10, "samples": 10, "checkpoint": 20},
    }
    return body | changes


def npz(seed: int) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=np.random.default_rng(seed).normal(size=(64, 2)).astype(np.float32))
    return buffer.getvalue()


def upload(client: httpx.Client, seed: int) -> httpx.Response:
    return client.post("/v1/datasets", files={"file": (f"points-{seed}.npz", npz(seed))})


def refused(response: httpx.Response, status: int, quota: str) -> dict[str, Any]:
    """The quota_exceeded error of `response` (asserted: its status and quota, a message naming the setting)."""
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert (error["code"], error["quota"]) == ("quota_exceeded", quota), error
    assert f"GANFORGE_QUOTA_{quota.upper()}" in error["message"], error
    return error


def queued(client: httpx.Client) -> list[str]:
    return [job["id"] for job in client.get("/v1/jobs", params={"status": "queued"}).json()["jobs"]]


def test_a_submission_past_queued_jobs_is_403_and_stores_nothing(quota_service: Service) -> None:
    with quota_service.client("key-queued") as client:
        made = [client.post("/v1/jobs", json=TINY_SPEC) for _ in range(QUEUED_JOBS)]
        assert [answer.status_code for answer in made] == [201] * QUEUED_JOBS
        fourth = client.post("/v1/jobs", json=TINY_SPEC, headers={"Idempotency-Key": "fourth"})
        error = refused(fourth, 403, "queued_jobs")
        assert (error["limit"], error["used"], error["requested"]) == (QUEUED_JOBS, QUEUED_JOBS, 1)
        assert len(queued(client)) == QUEUED_JOBS  # nothing stored by the refusal
        # The refusal stored nothing under its Idempotency-Key either: a retry is refused again.
        refused(client.post("/v1/jobs", json=TINY_SPEC, headers={"Idempotency-Key": "fourth"}), 403, "queued_jobs")
        # Cancelling a queued job frees its place; a replay of a stored job is no new job, so at the limit it is
        # answered (200), not refused.
        assert client.post(f"/v1/jobs/{made[0].json()['id']}/cancel").status_code == 202
        assert client.post("/v1/jobs", json=TINY_SPEC, headers={"Idempotency-Key": "fourth"}).status_code == 201
        replay = client.post("/v1/jobs", json=TINY_SPEC, headers={"Idempotency-Key": "fourth"})
        assert replay.status_code == 200, replay.text
        refused(client.post("/v1/jobs", json=TINY_SPEC), 403, "queued_jobs")


def test_an_owner_override_replaces_the_default(quota_service: Service) -> None:
    with quota_service.client("key-override") as client:
        answers = [client.post("/v1/jobs", json=TINY_SPEC).status_code for _ in range(6)]
        assert answers == [201] * 5 + [403]
        error = refused(client.post("/v1/jobs", json=TINY_SPEC), 403, "queued_jobs")
        assert (error["limit"], error["used"]) == (5, 5)
        shown = client.get("/v1/quota").json()
        assert shown["quotas"]["queued_jobs"] == 5 and shown["quotas"]["steps_per_job"] == STEPS_PER_JOB
        assert shown["usage"]["queued_jobs"] == 5


def test_training_steps_over_steps_per_job_is_422_at_the_field(quota_service: Service) -> None:
    with quota_service.client("key-steps") as client:
        over = client.post("/v1/jobs", json=spec(steps=STEPS_PER_JOB + 1))
        assert over.status_code == 422, over.text
        (detail,) = over.json()["error"]["details"]
        assert detail["field"] == "training.steps"
        assert f"steps_per_job quota of {STEPS_PER_JOB}" in detail["message"]
        assert "GANFORGE_QUOTA_STEPS_PER_JOB" in detail["message"]
        at = client.post("/v1/jobs", params={"validate_only": "true"}, json=spec(steps=STEPS_PER_JOB))
        assert at.status_code == 200, at.text
        assert queued(client) == []


def test_a_study_counts_all_its_jobs_and_names_the_steps_it_sets(quota_service: Service) -> None:
    with quota_service.client("key-study") as client:
        base = client.post("/v1/studies", json=study(training={"steps": STEPS_PER_JOB + 1, "batch_size": 8}))
        assert base.status_code == 422, base.text
        assert [d["field"] for d in base.json()["error"]["details"]] == ["training.steps"]
        grid = study(grid=[{"param": "training.steps", "values": [500, 2000, STEPS_PER_JOB]}])
        on_grid = client.post("/v1/studies", json=grid)
        assert on_grid.status_code == 422, on_grid.text
        assert [d["field"] for d in on_grid.json()["error"]["details"]] == ["grid.0.values.1"]

        assert client.post("/v1/studies", json=study()).status_code == 201  # 2 jobs of 3
        second = client.post("/v1/studies", json=study(seeds=[5, 6]))  # 2 more: 4 > 3
        error = refused(second, 403, "queued_jobs")
        assert (error["limit"], error["used"], error["requested"]) == (QUEUED_JOBS, 2, 2)
        assert len(client.get("/v1/studies").json()["studies"]) == 1  # neither the study nor any job of it
        assert len(queued(client)) == 2
        assert client.post("/v1/studies", json=study(seeds=[7])).status_code == 201  # 1 more fits


def test_a_study_s_jobs_keep_to_the_owner_s_max_priority(quota_service: Service) -> None:
    # Owner "low" may ask for at most 30: a study cannot lift its jobs past that (they were 50, the job default).
    with quota_service.client("key-low") as client:
        above = client.post("/v1/studies", json=study(seeds=[1], priority=40))
        assert above.status_code == 422, above.text
        assert [d["field"] for d in above.json()["error"]["details"]] == ["priority"]
        assert "30" in above.json()["error"]["details"][0]["message"]
        for asked, runs_at in ((None, 30), (20, 20)):
            body = study(seeds=[1]) | ({} if asked is None else {"priority": asked})
            created = client.post("/v1/studies", json=body)
            assert created.status_code == 201, created.text
            jobs = client.get("/v1/jobs", params={"tag": f"study:{created.json()['id']}"}).json()["jobs"]
            assert [client.get(f"/v1/jobs/{job['id']}").json()["priority"] for job in jobs] == [runs_at]


def test_concurrent_submissions_cannot_both_take_the_last_place(quota_service: Service) -> None:
    start = threading.Barrier(8)
    statuses: list[int] = []

    def submit() -> None:
        with quota_service.client("key-race") as client:
            start.wait()
            statuses.append(client.post("/v1/jobs", json=TINY_SPEC).status_code)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [201] * QUEUED_JOBS + [403] * (8 - QUEUED_JOBS)
    with quota_service.client("key-race") as client:
        assert len(queued(client)) == QUEUED_JOBS
        assert client.get("/v1/quota").json()["usage"]["queued_jobs"] == QUEUED_JOBS


def test_uploads_past_uploads_per_hour_are_429_with_retry_after_also_after_a_restart(
    quota_service: Service,
) -> None:
    with quota_service.client("key-uploads") as client:
        assert [upload(client, seed).status_code for seed in range(UPLOADS_PER_HOUR)] == [201] * UPLOADS_PER_HOUR
        assert upload(client, 0).status_code == 429  # the same content again is an upload too
        third = upload(client, 99)
        error = refused(third, 429, "uploads_per_hour")
        assert (error["limit"], error["used"]) == (UPLOADS_PER_HOUR, UPLOADS_PER_HOUR)
        wait = int(third.headers["Retry-After"])
        assert 3500 < wait <= 3600, wait  # the oldest upload leaves the hour in about an hour
        assert len(client.get("/v1/datasets").json()["datasets"]) == UPLOADS_PER_HOUR
        usage = client.get("/v1/quota").json()["usage"]
        assert usage["uploads_last_hour"] == UPLOADS_PER_HOUR and 3500 < usage["upload_retry_after_seconds"] <= 3600
    if "GANFORGE_DATABASE_URL" in quota_service.env:
        return  # one restart shows it (on the embedded backend: the store is a file there, nothing else is kept)
    # The count is the store's: a restarted API still refuses.
    assert quota_service.api is not None
    os.killpg(quota_service.api.pid, signal.SIGTERM)
    quota_service.api.wait(timeout=30)
    quota_service.start_api()
    with quota_service.client("key-uploads") as client:
        refused(upload(client, 100), 429, "uploads_per_hour")


def test_an_owner_at_stored_bytes_cannot_upload_or_submit(quota_service: Service) -> None:
    with quota_service.client("key-full") as client:
        first = upload(client, 1)  # 0 bytes held of 1: allowed
        assert first.status_code == 201, first.text
        held = first.json()["size_bytes"]
        error = refused(upload(client, 2), 403, "stored_bytes")
        assert (error["limit"], error["used"]) == (1, held)
        assert "bytes" in error["message"]
        job = {**TINY_SPEC, "dataset": {"id": first.json()["id"]}}
        refused(client.post("/v1/jobs", json=job), 403, "stored_bytes")
        refused(client.post("/v1/studies", json=study()), 403, "stored_bytes")
        assert queued(client) == [] and client.get("/v1/studies").json()["studies"] == []
        assert len(client.get("/v1/datasets").json()["datasets"]) == 1
        # Deleting the data set frees the bytes.
        assert client.delete(f"/v1/datasets/{first.json()['id']}").status_code == 204
        assert client.post("/v1/jobs", json=TINY_SPEC).status_code == 201


def test_get_quota_shows_limits_and_usage(quota_service: Service) -> None:
    with quota_service.client("key-look") as client:
        empty = client.get("/v1/quota")
        assert empty.status_code == 200, empty.text
        assert empty.json() == {
            "owner": "look",
            "quotas": {
                "running_jobs": 8,
                "queued_jobs": QUEUED_JOBS,
                "steps_per_job": STEPS_PER_JOB,
                "stored_bytes": 100 * 1024**3,
                "uploads_per_hour": UPLOADS_PER_HOUR,
                "max_priority": 50,
            },
            "usage": {
                "running_jobs": 0,
                "queued_jobs": 0,
                "stored_bytes": 0,
                "uploads_last_hour": 0,
                "upload_retry_after_seconds": None,
            },
        }
        size = upload(client, 3).json()["size_bytes"]
        client.post("/v1/jobs", json=TINY_SPEC)
        usage = client.get("/v1/quota").json()["usage"]
        assert (usage["queued_jobs"], usage["stored_bytes"], usage["uploads_last_hour"]) == (1, size, 1)
    schema = httpx.get(f"{quota_service.url}/openapi.json").json()
    operation = schema["paths"]["/v1/quota"]["get"]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/QuotaOut")
    assert "quota_exceeded" in schema["paths"]["/v1/jobs"]["post"]["responses"]["403"]["description"]
    assert "429" in schema["paths"]["/v1/datasets"]["post"]["responses"]


def test_sdk_and_cli_show_the_quota(quota_service: Service) -> None:
    with Client(quota_service.url, "key-override") as client:
        shown = client.quota()
    assert (shown.owner, shown.quotas.queued_jobs, shown.usage.queued_jobs) == ("override", 5, 5)

    async def read() -> Quota:
        async with AsyncClient(quota_service.url, "key-override") as client:
            return await client.quota()

    assert asyncio.run(read()) == shown
    if "GANFORGE_DATABASE_URL" in quota_service.env:
        return  # the CLI prints what the SDK read: one backend shows it
    env = {k: v for k, v in os.environ.items() if not k.startswith("GANFORGE_")}
    env.update(GANFORGE_URL=quota_service.url, GANFORGE_API_KEY="key-override", COLUMNS="120")
    ganforge = [sys.executable, "-m", "ganforge", "quota"]
    table = subprocess.run(ganforge, env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    assert "quotas of override" in table
    queued_row = next(line for line in table.splitlines() if line.startswith("queued jobs"))
    assert queued_row.split()[2:] == ["5", "5", "100%"], table
    answer = subprocess.run([*ganforge, "--json"], env=env, capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(answer.stdout) == shown.model_dump(mode="json")


# --------------------------------------------------------------------------- the store's counts (both backends)


def add_dataset(store: JobStore, owner: str, size: int, age: timedelta = timedelta(0)) -> None:
    """A data set record of `size` bytes created `age` ago."""
    dataset_id = str(uuid.uuid4())
    store.create_dataset(
        dataset_id=dataset_id,
        owner=owner,
        name="d",
        format="npz",
        info={},
        content_hash=dataset_id.replace("-", ""),
        size_bytes=size,
        data_key=f"datasets/{dataset_id}",
        preview_key=None,
    )
    with store.session() as session, session.begin():
        session.execute(update(Dataset).where(Dataset.id == dataset_id).values(created_at=utcnow() - age))


def test_usage_counts_checkpoints_and_data_sets_and_the_uploads_of_the_last_hour(store: JobStore) -> None:
    job_spec = JobSpec.model_validate(TINY_SPEC)
    job, _ = store.create_job(owner="a", spec=job_spec, idempotency_key=None)
    store.create_job(owner="b", spec=job_spec, idempotency_key=None)
    store.add_checkpoint(job_id=job.id, step=5, weights_key="w", state_key="s", size_bytes=1_000)
    store.add_checkpoint(job_id=job.id, step=10, weights_key="w2", state_key="s2", size_bytes=2_000)
    add_dataset(store, "a", 500, age=timedelta(minutes=70))  # stored, but uploaded over an hour ago
    add_dataset(store, "a", 300, age=timedelta(minutes=50))
    add_dataset(store, "a", 200, age=timedelta(minutes=10))
    add_dataset(store, "b", 7)
    usage = store.usage(owner="a")
    assert (usage.queued_jobs, usage.running_jobs, usage.stored_bytes, usage.uploads_last_hour) == (1, 0, 4_000, 2)
    # At 2 an hour the next upload fits when the 50-minute-old one is an hour old: in about 10 minutes.
    wait = usage.upload_retry_after(2)
    assert wait is not None and 9 * 60 < wait <= 10 * 60, wait
    assert usage.upload_retry_after(3) is None
    assert store.usage(owner="b").stored_bytes == 7 and store.usage(owner="nobody\x00").queued_jobs == 0


def test_a_refused_study_leaves_no_study_job_or_event(store: JobStore) -> None:
    quotas = Quotas(queued_jobs=3)
    specs = [JobSpec.model_validate(TINY_SPEC)] * 4
    with pytest.raises(QuotaExceeded) as refused_study:
        store.create_study(
            study_id=str(uuid.uuid4()),
            owner="a",
            name="s",
            spec_json={},
            request_json={},
            jobs=specs,
            idempotency_key=None,
            quotas=quotas,
        )
    assert (refused_study.value.used, refused_study.value.adds, refused_study.value.limit) == (0, 4, 3)
    with store.session() as session:
        assert [session.scalar(select(func.count()).select_from(t)) for t in (Study, Job, JobEvent)] == [0, 0, 0]


def test_validate_only_answers_the_quota_refusal_the_submission_would_get(quota_service: Service) -> None:
    """?validate_only=true stores nothing and answers what the real POST would (the same 403 body); a study with
    more jobs than queued_jobs says it can never fit instead of "wait for jobs to start"."""
    with quota_service.client("key-validate") as client:
        four = study(seeds=QUEUED_JOBS + 1)
        checked = client.post("/v1/studies", params={"validate_only": "true"}, json=four)
        error = refused(checked, 403, "queued_jobs")
        assert (error["limit"], error["used"], error["requested"]) == (QUEUED_JOBS, 0, QUEUED_JOBS + 1)
        assert "can never fit" in error["message"] and "fewer losses, seeds or grid values" in error["message"]
        assert "wait for jobs" not in error["message"], error
        assert client.post("/v1/studies", json=four).json() == checked.json()  # the real POST's body, word for word
        assert queued(client) == []

        assert client.post("/v1/jobs", params={"validate_only": "true"}, json=TINY_SPEC).status_code == 200
        assert client.post("/v1/studies", json=study()).status_code == 201  # 2 of 3 queued
        two = client.post("/v1/studies", params={"validate_only": "true"}, json=study(seeds=[5, 6]))
        error = refused(two, 403, "queued_jobs")
        assert (error["used"], error["requested"]) == (2, 2) and "wait for jobs to start" in error["message"]
        assert client.post("/v1/studies", json=study(seeds=[5, 6])).json() == two.json()
        one = client.post("/v1/studies", params={"validate_only": "true"}, json=study(seeds=[7]))
        assert (one.status_code, one.json()["job_count"]) == (200, 1), one.text
        assert client.post("/v1/jobs", json=TINY_SPEC).status_code == 201  # 3 of 3
        job = client.post("/v1/jobs", params={"validate_only": "true"}, json=TINY_SPEC)
        assert refused(job, 403, "queued_jobs") == refused(client.post("/v1/jobs", json=TINY_SPEC), 403, "queued_jobs")
        assert len(queued(client)) == QUEUED_JOBS
