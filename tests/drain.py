"""Drain a queue with several worker processes on one machine: shared by tests/test_drain.py and bench/drain.py.

A deployment (tests/service.py Service) runs an API and `start_workers(n)` training workers, started at once;
`submit` posts tiny jobs; `drain` waits for every job to end while an optional `chaos` callback runs (the kill
test SIGKILLs worker process groups and starts new ones, as a supervisor would); `check_once` reads each job's
claims and metric series back.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from models.db import make_engine
from models.store import JobStore
from tests.service import Service

# Few steps of a 16-unit MLP: the drain measures the service's overhead per job and the workers' parallelism.
DRAIN_SPEC: dict[str, Any] = {
    "dataset": {"builtin": "ring8"},
    "architecture": {"name": "mlp", "hidden": 16, "depth": 1},
    "loss": {"name": "nsgan"},
    "training": {"steps": 20, "batch_size": 16, "max_attempts": 10},
    "every": {"metrics": 1, "samples": 20, "checkpoint": 10},
}


def job_store(service: Service) -> JobStore:
    """A JobStore on the deployment's own database (PostgreSQL, or the embedded SQLite file)."""
    url = service.env.get("GANFORGE_DATABASE_URL") or f"sqlite:///{service.data_dir / 'ganforge.db'}"
    return JobStore(make_engine(url))


def start_workers(service: Service, count: int, timeout: float = 120.0, wait: bool = True, **env: str) -> list[Any]:
    """Start `count` training workers at once (`ganforge worker`, `env` over the deployment's settings) and (`wait`)
    wait until each says it is ready; returns their processes (also in service.workers)."""
    started = []
    for _ in range(count):
        log_name = f"worker-{len(service.workers)}.log"
        process = service._spawn([sys.executable, "-m", "ganforge", "worker"], log_name, env)  # noqa: SLF001
        service.workers.append(process)
        started.append((process, service.data_dir / log_name))
    deadline = time.monotonic() + timeout
    for process, log in started if wait else []:
        while b" ready." not in log.read_bytes():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "a worker did not start:\n" + log.read_text()
            time.sleep(0.05)
    return [process for process, _log in started]


def submit(client: httpx.Client, count: int, spec: dict[str, Any] | None = None) -> list[str]:
    """Post `count` jobs of `spec` (default DRAIN_SPEC); their ids."""
    ids = []
    for index in range(count):
        response = client.post("/v1/jobs", json={**(spec or DRAIN_SPEC), "name": f"drain-{index}"})
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    return ids


def drain(
    store: JobStore,
    ids: list[str],
    timeout: float,
    chaos: Callable[[], None] | None = None,
    poll: float = 0.2,
) -> dict[str, str]:
    """Wait until every job in `ids` is final (read from the store), calling `chaos` every poll; {id: status}."""
    final = ("succeeded", "failed", "cancelled")
    deadline = time.monotonic() + timeout
    statuses: dict[str, str] = {}
    while time.monotonic() < deadline:
        statuses = {job_id: store.get_job(job_id=job_id).status for job_id in ids}  # type: ignore[union-attr]
        if all(status in final for status in statuses.values()):
            return statuses
        if chaos is not None:
            chaos()
        time.sleep(poll)
    waiting = {job_id: status for job_id, status in statuses.items() if status not in final}
    raise AssertionError(f"{len(waiting)} of {len(ids)} jobs did not end in {timeout} s: {waiting}")


@dataclass
class Claims:
    """What a job's event log says about its runs."""

    claims: int  # `claimed by` status events: runs started
    workers: list[str]


def claims(store: JobStore, job_id: str) -> Claims:
    """The claims in the job's event log (status events to running)."""
    events = store.events_after(job_id=job_id, after=0, limit=10_000)
    runs = [e.data for e in events if e.kind == "status" and e.data.get("to") == "running"]
    return Claims(claims=len(runs), workers=[str(run.get("reason", "")).removeprefix("claimed by ") for run in runs])


def metric_steps_once(client: httpx.Client, job_id: str, steps: int) -> list[str]:
    """Problems with the job's metric series: no step stored twice or out of order in any series, and the
    per-step series (every.metrics 1) hold every step 1..`steps`."""
    response = client.get(f"/v1/jobs/{job_id}/metrics", params={"max_points": 100_000})
    assert response.status_code == 200, response.text
    problems = []
    series = {name: points["steps"] for name, points in response.json()["series"].items()}
    if not any(got == list(range(1, steps + 1)) for got in series.values()):
        problems.append(f"job {job_id}: no series holds steps 1..{steps}: {series}")
    for name, got in series.items():
        if any(later <= earlier for earlier, later in zip(got, got[1:], strict=False)):
            problems.append(f"job {job_id} series {name}: a step twice or out of order: {got}")
    return problems


class Killer:
    """Chaos for a drain: every `every` seconds SIGKILL a random live worker's process group (main process and its
    pool process, as `kill -9` of a machine's worker would) and start a new one at once, as a supervisor would
    (not waiting for it to be ready: the next kill may find it starting)."""

    def __init__(self, service: Service, every: float, kills: int, seed: int = 0, **env: str) -> None:
        self.service, self.every, self.left, self.env = service, every, kills, env
        self.random = random.Random(seed)
        self.next_at = time.monotonic() + every
        self.killed = 0

    def __call__(self) -> None:
        if self.left <= 0 or time.monotonic() < self.next_at:
            return
        alive = [p for p in self.service.workers if p.poll() is None]
        if not alive:
            return
        victim = self.random.choice(alive)
        self.service.kill_worker(victim)
        self.service.workers.remove(victim)
        self.killed += 1
        self.left -= 1
        start_workers(self.service, 1, wait=False, **self.env)
        self.next_at = time.monotonic() + self.every
