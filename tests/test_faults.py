"""Fault tolerance with real processes: a killed worker, a shut-down worker, a dead worker under `up`.

The store and broker outages are in tests/test_faults_store.py."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

import httpx
import numpy as np
import pytest

from tests.service import Service, free_port, wait_for

# Each test starts, kills and restarts processes and waits out lease timeouts: tens of seconds.
pytestmark = pytest.mark.slow

STEPS = 3000
SPEC: dict[str, Any] = {
    "name": "fault",
    "dataset": {"builtin": "ring8"},
    "architecture": {"name": "mlp", "hidden": 64, "depth": 2},
    "loss": {"name": "nsgan"},
    # Long enough (a few seconds) that a fault injected at step 250 lands mid-run on a fast machine.
    "training": {"steps": STEPS, "batch_size": 64, "seed": 7},
    "every": {"metrics": 10, "samples": STEPS, "checkpoint": 100},
}


def wait_for_step(client: httpx.Client, job_id: str, step: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while client.get(f"/v1/jobs/{job_id}").json()["progress"]["step"] < step:
        assert time.monotonic() < deadline, f"job {job_id} did not reach step {step}"
        time.sleep(0.1)


def final_samples(client: httpx.Client, job_id: str, step: int = STEPS) -> np.ndarray:
    return np.load(io.BytesIO(client.get(f"/v1/jobs/{job_id}/samples/{step}.npy").content), allow_pickle=False)


def assert_every_step_once(client: httpx.Client, job_id: str) -> None:
    series = client.get(f"/v1/jobs/{job_id}/metrics", params={"names": "loss_d,loss_g"}).json()["series"]
    for name in ("loss_d", "loss_g"):
        assert series[name]["steps"] == list(range(10, STEPS + 1, 10)), name


def reference_run(service: Service, client: httpx.Client) -> np.ndarray:
    job = client.post("/v1/jobs", json={**SPEC, "name": "reference"}).json()
    assert wait_for(client, job["id"], ("succeeded", "failed"), timeout=180)["status"] == "succeeded", service.logs()
    return final_samples(client, job["id"])


def status_reasons(client: httpx.Client, job_id: str) -> list[str]:
    events: list[str] = []
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and '"reason"' in line:
                events.append(line)
    return events


def test_killed_worker_resumes_elsewhere_with_the_same_result(bare_service: Service) -> None:
    service = bare_service
    service.start_api()
    first = service.start_worker()
    with service.client() as client:
        job = client.post("/v1/jobs", json=SPEC).json()
        wait_for_step(client, job["id"], 250)
        service.kill_worker(first, signal.SIGKILL)
        killed_at = time.monotonic()
        step_at_kill = client.get(f"/v1/jobs/{job['id']}").json()["progress"]["step"]
        service.start_worker()
        while client.get(f"/v1/jobs/{job['id']}").json()["attempt"] < 2:  # re-queued, then claimed again
            assert time.monotonic() - killed_at < 60, service.logs()
            time.sleep(0.1)
        resumed_after = time.monotonic() - killed_at
        done = wait_for(client, job["id"], ("succeeded", "failed"), timeout=180)
        assert done["status"] == "succeeded", service.logs()
        assert done["attempt"] == 2
        assert_every_step_once(client, job["id"])
        reasons = status_reasons(client, job["id"])
        assert any("silent for over" in r and "re-queued" in r for r in reasons), reasons
        np.testing.assert_allclose(final_samples(client, job["id"]), reference_run(service, client), atol=1e-4)
    resumed_from = int(re.findall(r"from step (\d+)", (service.data_dir / "worker-1.log").read_text())[-1])
    print(
        f"\nkill -9 at step {step_at_kill}: running again {resumed_after:.1f} s later "
        f"(lease timeout {service.env['GANFORGE_LEASE_TIMEOUT_SECONDS']} s), resumed from step {resumed_from}, "
        f"{step_at_kill - resumed_from} steps recomputed"
    )


# One backend each (the suite's time): the SIGTERM hand-back on PostgreSQL here, on SQLite in the next test.
@pytest.mark.parametrize("bare_service", ["postgres"], indirect=True)
def test_sigterm_checkpoints_and_hands_the_job_back(bare_service: Service) -> None:
    service = bare_service
    service.start_api()
    first = service.start_worker()
    with service.client() as client:
        job = client.post("/v1/jobs", json={**SPEC, "every": {**SPEC["every"], "checkpoint": 5000}}).json()
        wait_for_step(client, job["id"], 150)
        first.send_signal(signal.SIGTERM)  # the main process only, as `docker stop` does
        first.wait(timeout=60)
        handed = wait_for(client, job["id"], ("queued",), timeout=30)
        checkpoints = [c["step"] for c in client.get(f"/v1/jobs/{job['id']}/checkpoints").json()["checkpoints"]]
        assert checkpoints and checkpoints[-1] >= 150, checkpoints  # written at shutdown, not at a checkpoint step
        assert handed["attempt"] == 1
        service.start_worker()
        done = wait_for(client, job["id"], ("succeeded", "failed"), timeout=180)
        assert done["status"] == "succeeded" and done["attempt"] == 1, service.logs()  # a hand-back is no attempt
        assert_every_step_once(client, job["id"])
        assert any("handed back" in r and "shut down" in r for r in status_reasons(client, job["id"]))


@pytest.mark.parametrize("bare_service", ["embedded"], indirect=True)
def test_a_hand_back_does_not_use_up_an_attempt(bare_service: Service) -> None:
    # Fault 8: max_attempts 2; one SIGTERM (checkpointed, handed back), then one crash: the job still succeeds.
    service = bare_service
    service.start_api()
    first = service.start_worker()
    spec = {**SPEC, "training": {**SPEC["training"], "max_attempts": 2}}
    with service.client() as client:
        job = client.post("/v1/jobs", json=spec).json()
        wait_for_step(client, job["id"], 150)
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=60)
        handed = wait_for(client, job["id"], ("queued",), timeout=30)
        assert handed["attempt"] == 1, handed
        second = service.start_worker()
        wait_for_step(client, job["id"], handed["progress"]["step"] + 100)
        service.kill_worker(second, signal.SIGKILL)
        service.start_worker()
        done = wait_for(client, job["id"], ("succeeded", "failed"), timeout=180)
        assert done["status"] == "succeeded", (status_reasons(client, job["id"]), service.logs())
        assert done["attempt"] == 2 and done["max_attempts"] == 2, done
        assert_every_step_once(client, job["id"])
        reasons = status_reasons(client, job["id"])
        assert any("handed back" in r and "shut down" in r for r in reasons), reasons
        assert any("silent for over" in r and "attempt 1 of 2 failed" in r for r in reasons), reasons


@pytest.mark.parametrize("bare_service", ["embedded"], indirect=True)
def test_ganforge_up_restarts_a_dead_worker(bare_service: Service) -> None:
    service = bare_service
    port = free_port()
    up = subprocess.Popen(
        [sys.executable, "-m", "ganforge", "up", "--port", str(port)],
        env=service.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, headers={"Authorization": "Bearer key-a"}, timeout=30) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline
                time.sleep(0.3)
            job = client.post("/v1/jobs", json=SPEC).json()
            wait_for_step(client, job["id"], 150, timeout=120)
            # The training worker (named ganforge-<pid>@host), not the generate worker beside it.
            workers = subprocess.run(
                ["pgrep", "-P", str(up.pid), "-f", "celery.* -n ganforge-[0-9]"], capture_output=True, text=True
            ).stdout.split()
            assert len(workers) == 1
            # kill -9 the worker and its pool process, as a machine failure would
            subprocess.run(["pkill", "-KILL", "-P", workers[0]], check=True)
            os.kill(int(workers[0]), signal.SIGKILL)
            done = wait_for(client, job["id"], ("succeeded", "failed"), timeout=180)
            assert done["status"] == "succeeded" and done["attempt"] == 2
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=60)
