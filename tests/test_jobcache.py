"""The job read cache (api/jobcache.py): GET /v1/jobs/{id} from memory, never older than the store allows.

On both backends, against a real API, worker and store: a second GET is answered from memory (the cache's hit
counter on /metrics) with the same bytes; another owner still gets the route's 404; a write through the API is read
back at once (this process's commits drop what it kept); a write by another process (here the test's own SQL, as a
worker's or another API's would be) is read back at once on SQLite (data_version) and within a notification's
delay on PostgreSQL (migration 0011's trigger). Without a listener, PostgreSQL answers nothing from memory.
"""

from __future__ import annotations

import re
import sqlite3
import time
import uuid
from contextlib import closing
from pathlib import Path

import httpx
import psycopg

from models.store.notify import CHANNEL, JOB_CHANGED_PREFIX
from tests.conftest import SharedDeployments, api_only
from tests.service import TINY_SPEC, Service, wait_for

# A queue no worker serves: the job stays queued, so the test decides every change to it.
PARKED = {**TINY_SPEC, "resources": {"queue": "jobcache-parked"}}
ROUNDS = 20
NOTIFY_DEADLINE_SECONDS = 2.0  # a notification arrives in milliseconds; 2 s on a loaded 2-core machine


def hits(client: httpx.Client, result: str = "hit") -> float:
    text = client.get("/metrics").raise_for_status().text
    found = re.search(rf'^ganforge_job_cache_requests_total\{{result="{result}"\}} (\S+)$', text, re.M)
    return float(found[1]) if found else 0.0


def run_sql(service: Service, statement: str, *params: str) -> None:
    """One statement committed by this test process: another process's write, as far as the API can tell."""
    url = service.env.get("GANFORGE_DATABASE_URL")
    if url:
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as connection:
            connection.execute(statement.replace("?", "%s"), params)
        return
    with closing(sqlite3.connect(service.data_dir / "ganforge.db", timeout=30)) as connection:
        connection.execute(statement, params)
        connection.commit()


def is_postgres(service: Service) -> bool:
    return bool(service.env.get("GANFORGE_DATABASE_URL"))


def test_second_get_is_answered_from_memory_with_the_same_bytes(service: Service) -> None:
    with service.client() as client, service.client("key-b") as other:
        job_id = client.post("/v1/jobs", json=TINY_SPEC).raise_for_status().json()["id"]
        wait_for(client, job_id, ("succeeded",))
        first = client.get(f"/v1/jobs/{job_id}").raise_for_status()
        before = hits(client)
        answers = [client.get(f"/v1/jobs/{job_id}") for _ in range(5)]
        assert all(a.status_code == 200 and a.content == first.content for a in answers)
        assert all(a.headers["content-type"] == first.headers["content-type"] for a in answers)
        assert hits(client) - before >= 4, "the repeated GETs were not answered from memory"
        # Another owner's GET of the kept job is the route's 404, not the kept answer.
        assert other.get(f"/v1/jobs/{job_id}").status_code == 404
        # Routes under the job are not the job's answer.
        assert "series" in client.get(f"/v1/jobs/{job_id}/metrics").raise_for_status().json()


def test_a_write_through_the_api_is_read_back_at_once(service: Service) -> None:
    with service.client() as client:
        for _ in range(ROUNDS):
            job_id = client.post("/v1/jobs", json=PARKED).raise_for_status().json()["id"]
            for _ in range(3):  # kept (a queued answer for up to a second)
                assert client.get(f"/v1/jobs/{job_id}").raise_for_status().json()["status"] == "queued"
            client.post(f"/v1/jobs/{job_id}/cancel").raise_for_status()
            assert client.get(f"/v1/jobs/{job_id}").raise_for_status().json()["status"] == "cancelled"


def test_another_process_write_is_read_back(service: Service) -> None:
    with service.client() as client:
        job_id = client.post("/v1/jobs", json=TINY_SPEC).raise_for_status().json()["id"]
        wait_for(client, job_id, ("succeeded",))
        for round_ in range(ROUNDS):
            before = hits(client)
            for _ in range(3):
                client.get(f"/v1/jobs/{job_id}").raise_for_status()
            assert hits(client) > before, "the GETs were not answered from memory: the test would prove nothing"
            name = f"renamed-{round_}-{uuid.uuid4().hex[:6]}"
            run_sql(service, "UPDATE jobs SET name = ? WHERE id = ?", name, job_id)
            if not is_postgres(service):  # SQLite: data_version moved, the very next GET reads the store
                assert client.get(f"/v1/jobs/{job_id}").json()["name"] == name
                continue
            deadline = time.monotonic() + NOTIFY_DEADLINE_SECONDS
            while client.get(f"/v1/jobs/{job_id}").json()["name"] != name:
                assert time.monotonic() < deadline, "the change's notification never dropped the kept answer"
                time.sleep(0.005)
        run_sql(service, "DELETE FROM jobs WHERE id = ?", job_id)
        deadline = time.monotonic() + NOTIFY_DEADLINE_SECONDS
        while client.get(f"/v1/jobs/{job_id}").status_code != 404:
            assert time.monotonic() < deadline, "a deleted job was still answered from memory"
            time.sleep(0.005)


def test_every_change_of_a_job_row_notifies(shared_deployments: SharedDeployments) -> None:
    """Migration 0011's trigger (PostgreSQL), whatever code path (here plain SQL) changes the row."""
    service = shared_deployments.get("postgres")
    try:
        with service.client() as client:
            job_id = client.post("/v1/jobs", json=PARKED).raise_for_status().json()["id"]
        url = service.env["GANFORGE_DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(url, autocommit=True) as listener:
            listener.execute(f"LISTEN {CHANNEL}")
            run_sql(service, "UPDATE jobs SET name = ? WHERE id = ?", "changed", job_id)
            run_sql(service, "DELETE FROM jobs WHERE id = ?", job_id)
            heard = [n.payload for n in listener.notifies(timeout=5, stop_after=2)]
        assert heard == [JOB_CHANGED_PREFIX + job_id] * 2
    finally:
        shared_deployments.release("postgres")


def test_postgres_without_a_listener_answers_nothing_from_memory(tmp_path: Path) -> None:
    with api_only("postgres", tmp_path, GANFORGE_SSE_LISTEN="false") as deployment, deployment.client() as client:
        job_id = client.post("/v1/jobs", json=PARKED).raise_for_status().json()["id"]
        for _ in range(5):
            client.get(f"/v1/jobs/{job_id}").raise_for_status()
        assert hits(client) == 0
        assert hits(client, "miss") >= 5
