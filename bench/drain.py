"""How fast N training workers on one machine drain a queue of small jobs: jobs/min with 1, 2 and 8 workers.

    python bench/drain.py [--jobs 200] [--workers 1,2,8] [--steps 20] [--backend postgres|embedded]

Each worker count gets a fresh deployment (a real API and `ganforge worker` processes, tests/service.py) on a
throwaway store: PostgreSQL at 127.0.0.1:5432 and Redis at 127.0.0.1:6379 (the tests' servers), or the embedded
default (SQLite, file-system broker). The workers start and say they are ready, then `--jobs` jobs (a 16-unit MLP,
`--steps` steps, tests/drain.py DRAIN_SPEC) are posted and timed from the first POST until the last job has
succeeded. Each worker process gets GANFORGE_WORKER_THREADS = cores // workers (its share of the machine, what
`ganforge up --workers N` gives), printed with its result. The baseline is the first worker count, measured in
the same run: jobs/min of each count is printed as a ratio against it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.drain import DRAIN_SPEC, drain, job_store, start_workers, submit  # noqa: E402
from tests.service import (  # noqa: E402
    REDIS_URL,
    Service,
    create_postgres_database,
    drop_postgres_database,
    migrated_sqlite,
    service_env,
)
from worker.presence import machine_cores, share_of_cores  # noqa: E402

SETTINGS = {"GANFORGE_QUOTA_QUEUED_JOBS": "100000", "GANFORGE_QUOTA_RUNNING_JOBS": "1000"}


@contextmanager
def deployment(backend: str, folder: Path) -> Iterator[Service]:
    """A migrated deployment with its API started (no worker), thrown away after."""
    database = None
    if backend == "postgres":
        database, url = create_postgres_database(migrated=True)
        env = service_env(folder, url, REDIS_URL, **SETTINGS)
    else:
        env = service_env(folder, None, None, **SETTINGS)
        migrated_sqlite(folder / "ganforge.db")
    env.pop("OMP_NUM_THREADS", None)  # the workers' threads are GANFORGE_WORKER_THREADS, as in production
    service = Service(env=env, data_dir=folder)
    try:
        service.start_api()
        yield service
    finally:
        service.close()
        if database:
            drop_postgres_database(database)


def jobs_per_minute(backend: str, workers: int, jobs: int, steps: int) -> tuple[float, int, float]:
    """(jobs/min, threads per worker, seconds) for `jobs` jobs drained by `workers` workers."""
    threads = share_of_cores(workers)
    spec = {**DRAIN_SPEC, "training": {**DRAIN_SPEC["training"], "steps": steps}}
    with tempfile.TemporaryDirectory(prefix="ganforge-drain-") as folder, deployment(backend, Path(folder)) as service:
        start_workers(service, workers, GANFORGE_WORKER_THREADS=str(threads))
        store = job_store(service)
        with service.client() as client:
            started = time.monotonic()
            ids = submit(client, jobs, spec)
            statuses = drain(store, ids, timeout=3600)
            seconds = time.monotonic() - started
        failed = [job_id for job_id, status in statuses.items() if status != "succeeded"]
        if failed:
            first = store.get_job(job_id=failed[0])
            error = first.error if first is not None else "?"
            raise SystemExit(f"{len(failed)} jobs did not succeed, e.g. {failed[0]}: {error}\n{service.logs()}")
        store.engine.dispose()
    return jobs / seconds * 60, threads, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--workers", default="1,2,8", help="comma-separated worker counts; the first is the baseline")
    parser.add_argument("--steps", type=int, default=DRAIN_SPEC["training"]["steps"])
    parser.add_argument("--backend", choices=["postgres", "embedded"], default="postgres")
    args = parser.parse_args()
    counts = [int(count) for count in args.workers.split(",")]
    print(
        f"drain: {args.jobs} jobs of {args.steps} steps (16-unit MLP), backend {args.backend}, "
        f"{machine_cores()} cores; GANFORGE_WORKER_THREADS = cores // workers"
    )
    baseline = None
    for workers in counts:
        rate, threads, seconds = jobs_per_minute(args.backend, workers, args.jobs, args.steps)
        baseline = baseline or rate
        print(
            f"{workers:>3} worker(s), {threads} thread(s) each: {rate:8.1f} jobs/min ({seconds:6.1f} s)  "
            f"x{rate / baseline:.2f} vs {counts[0]} worker(s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
