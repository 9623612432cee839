"""The job read cache (api/jobcache.py): GET /v1/jobs/{id} from memory, never older than a store read.

On both backends, against a real API, worker and store: a second GET is answered from memory (the cache's hit
counter on /metrics) with the same bytes; another owner still gets the route's 404; a write through the API, and a
write by another process (here the test's own SQL, as a worker's or another API's would be), are read back by the
very next GET (SQLite: data_version; PostgreSQL: the row's xmin); a deleted job is a 404 at once. A queued job's
answer on PostgreSQL is not kept (its reason depends on other rows).
"""

from __future__ import annotations

import re
import sqlite3
import uuid
from contextlib import closing

import httpx
import psycopg

from tests.conftest import SharedDeployments
from tests.service import TINY_SPEC, Service, wait_for

# A queue no worker serves: the job stays queued, so the test decides every change to it.
PARKED = {**TINY_SPEC, "resources": {"queue": "jobcache-parked"}}
ROUNDS = 20


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
        for _ in range(ROUNDS):  # a queued job's answer (kept on SQLite) and its cancel
            job_id = client.post("/v1/jobs", json=PARKED).raise_for_status().json()["id"]
            for _ in range(3):
                assert client.get(f"/v1/jobs/{job_id}").raise_for_status().json()["status"] == "queued"
            client.post(f"/v1/jobs/{job_id}/cancel").raise_for_status()
            assert client.get(f"/v1/jobs/{job_id}").raise_for_status().json()["status"] == "cancelled"
        job_id = client.post("/v1/jobs", json=TINY_SPEC).raise_for_status().json()["id"]
        wait_for(client, job_id, ("succeeded",))
        before = hits(client)
        for _ in range(3):  # a finished job's answer, kept on both backends, and its deletion
            client.get(f"/v1/jobs/{job_id}").raise_for_status()
        assert hits(client) > before
        assert client.delete(f"/v1/jobs/{job_id}").status_code == 204
        assert client.get(f"/v1/jobs/{job_id}").status_code == 404


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
            assert client.get(f"/v1/jobs/{job_id}").json()["name"] == name
        run_sql(service, "DELETE FROM jobs WHERE id = ?", job_id)
        assert client.get(f"/v1/jobs/{job_id}").status_code == 404


def test_a_queued_answer_on_postgres_is_read_from_the_store_every_time(shared_deployments: SharedDeployments) -> None:
    service = shared_deployments.get("postgres")
    try:
        with service.client() as client:
            job_id = client.post("/v1/jobs", json=PARKED).raise_for_status().json()["id"]
            before = hits(client), hits(client, "miss")
            for _ in range(5):
                assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"
            assert (hits(client), hits(client, "miss")) == (before[0], before[1] + 5)
            client.post(f"/v1/jobs/{job_id}/cancel").raise_for_status()
    finally:
        shared_deployments.release("postgres")
