"""Many workers on one machine drain one queue: every job runs once and ends succeeded, also while workers are
killed with SIGKILL and restarted (PostgreSQL + Redis, the production stack).

Sizes, to fit about 40 s on 2 loaded cores: 3 worker processes; each job a 20-step 16-unit MLP (tests/drain.py
DRAIN_SPEC); 18 jobs drained without faults, then 18 more while a worker is killed every second (3 kills) and a new
one started in its place. bench/drain.py measures jobs/min with 1, 2 and 8 workers on 200 jobs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import api_only
from tests.drain import DRAIN_SPEC, Killer, claims, drain, job_store, metric_steps_once, start_workers, submit

WORKERS, JOBS = 3, 18
SETTINGS = {
    # A killed worker's job is re-queued after its lease (4 s) expires; metrics flush (the lease renewal) at 0.5 s.
    "GANFORGE_LEASE_TIMEOUT_SECONDS": "4",
    "GANFORGE_REDELIVER_SECONDS": "2",
    "GANFORGE_QUOTA_QUEUED_JOBS": "1000",
    "GANFORGE_QUOTA_RUNNING_JOBS": "100",
}


@pytest.mark.slow
def test_workers_drain_every_job_once_and_survive_kill_9(tmp_path: Path) -> None:
    steps = DRAIN_SPEC["training"]["steps"]
    with api_only("postgres", tmp_path, **SETTINGS) as service:
        store = job_store(service)
        start_workers(service, WORKERS)
        with service.client() as client:
            # No faults: each job claimed exactly once, by several workers between them, all succeeded.
            ids = submit(client, JOBS)
            assert set(drain(store, ids, timeout=120).values()) == {"succeeded"}
            runs = {job_id: claims(store, job_id) for job_id in ids}
            assert all(run.claims == 1 for run in runs.values()), runs
            assert len({run.workers[0] for run in runs.values()}) > 1, runs  # the workers shared the queue
            problems = [p for job_id in ids for p in metric_steps_once(client, job_id, steps)]
            assert not problems, problems

            # kill -9 of a worker (its whole process group) every second, a new one started at once: every job
            # still ends succeeded (a killed job resumes from its checkpoint) and each metric step is stored once.
            killer = Killer(service, every=1.0, kills=3, seed=14)
            again = submit(client, JOBS)
            assert set(drain(store, again, timeout=180, chaos=killer).values()) == {"succeeded"}
            assert killer.killed == 3
            problems = [p for job_id in again for p in metric_steps_once(client, job_id, steps)]
            assert not problems, problems
            resumed = [job_id for job_id in again if claims(store, job_id).claims > 1]
            for job_id in resumed:  # a re-claimed job was re-queued by its lease, never run twice at once
                assert store.get_job(job_id=job_id).attempt >= 2  # type: ignore[union-attr]
        store.engine.dispose()
