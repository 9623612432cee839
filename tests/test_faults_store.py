"""Fault tolerance when the store or the broker goes away: a restarted PostgreSQL, a Redis down at submission, a
worker cut off from the store. Split from tests/test_faults.py (worker faults) so the two run side by side."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.private_servers import PrivatePostgres, PrivateRedis
from tests.service import Service, service_env, wait_for
from tests.tcp_proxy import TcpProxy
from tests.test_faults import SPEC, status_reasons, wait_for_step

# Each test restarts servers or waits out a lease timeout: tens of seconds.
pytestmark = pytest.mark.slow


@pytest.fixture
def private_servers(tmp_path: Path) -> Iterator[tuple[Service, PrivatePostgres, PrivateRedis]]:
    """A migrated deployment on a PostgreSQL and a Redis of its own, which the test may stop and restart."""
    with PrivatePostgres() as postgres, PrivateRedis() as redis:
        service = Service(env=service_env(tmp_path, postgres.url, redis.url), data_dir=tmp_path)
        try:
            service.migrate()
            yield service, postgres, redis
        finally:
            service.stop()


def test_postgres_restart_during_a_run_loses_nothing(
    private_servers: tuple[Service, PrivatePostgres, PrivateRedis],
) -> None:
    service, postgres, _ = private_servers
    service.start_api()
    service.start_worker()
    with service.client() as client:
        job = client.post("/v1/jobs", json={**SPEC, "training": {**SPEC["training"], "steps": 6000}}).json()
        wait_for_step(client, job["id"], 100)
        postgres.restart()
        done = wait_for(client, job["id"], ("succeeded", "failed"), timeout=240)
        assert done["status"] == "succeeded", service.logs()
        series = client.get(f"/v1/jobs/{job['id']}/metrics", params={"names": "loss_d"}).json()["series"]
        assert series["loss_d"]["steps"] == list(range(10, 6001, 10))


def test_a_job_queued_while_redis_is_down_still_runs(
    private_servers: tuple[Service, PrivatePostgres, PrivateRedis],
) -> None:
    service, _, redis = private_servers
    service.start_api()
    redis.stop()
    with service.client() as client:
        response = client.post("/v1/jobs", json={**SPEC, "training": {**SPEC["training"], "steps": 50}})
        assert response.status_code == 201, response.text
        job = response.json()
        assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "queued"
    redis.start()
    service.start_worker()
    with service.client() as client:
        done = wait_for(client, job["id"], ("succeeded", "failed"), timeout=120)
        assert done["status"] == "succeeded", service.logs()


@pytest.mark.parametrize("bare_service", ["postgres"], indirect=True)
def test_a_worker_cut_off_from_the_store_checkpoints_locally_and_the_job_resumes(bare_service: Service) -> None:
    service = bare_service
    proxy = TcpProxy(5432)
    proxy.start()
    through_proxy = service.env["GANFORGE_DATABASE_URL"].replace(":5432/", f":{proxy.port}/")
    service.start_api()
    service.start_worker(GANFORGE_DATABASE_URL=through_proxy)
    spec = {
        **SPEC,
        "training": {**SPEC["training"], "steps": 3000},
        "every": {"metrics": 10, "samples": 3000, "checkpoint": 1000},
    }
    with service.client() as client:
        job = client.post("/v1/jobs", json=spec).json()
        wait_for_step(client, job["id"], 200)
        proxy.cut()  # the worker alone loses the store; the API still has it
        requeued = wait_for(client, job["id"], ("queued",), timeout=60)
        assert requeued["attempt"] == 2  # the expired lease counts as a failed attempt until the successor knows better
        time.sleep(3)  # let the cut-off worker finish its local checkpoint
        proxy.start()
        done = wait_for(client, job["id"], ("succeeded", "failed"), timeout=180)
        # It resumed from a checkpoint marked as a hand-back, so the attempt the lease expiry used is given back.
        assert done["status"] == "succeeded" and done["attempt"] == 1, service.logs()
        assert any("given back" in r for r in status_reasons(client, job["id"]))
        # The cut-off worker blocked at its step-1000 checkpoint, then wrote it with the metrics it
        # could not send; those (steps 210..1000) can only have come from that checkpoint.
        series = client.get(f"/v1/jobs/{job['id']}/metrics", params={"names": "loss_d"}).json()["series"]
        assert series["loss_d"]["steps"] == list(range(10, 3001, 10))
        assert 1000 in [c["step"] for c in client.get(f"/v1/jobs/{job['id']}/checkpoints").json()["checkpoints"]]
    log = (service.data_dir / "worker-0.log").read_text()
    assert "has not answered" in log and f"resuming job {job['id']} from step 1000" in log
