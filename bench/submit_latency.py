"""POST /v1/jobs to the job's `running` status: median and p90 on PostgreSQL + Redis and on the embedded default.

    python bench/submit_latency.py [--jobs 30] [--backend postgres|embedded|both]

For each backend (default both): a fresh store, one real API (`ganforge api`) and one real training worker
(`ganforge worker`, a Celery prefork worker as the README starts it), warmed by one job. Then, one job at a time
(each waits for the previous one to end, so it never queues behind another), a tiny job (5 steps of a 16-unit
MLP) is submitted and its latency is read from its own event log: the time of its `running` status event (the
worker's claim, written in the claiming transaction) minus the wall-clock time just before the POST was sent.
Client, API and worker share this machine's clock.

Printed per backend: the median and p90 of
- POST -> running, against its goal (issue 14: 50 ms on PostgreSQL + Redis, 150 ms embedded);
- POST -> 201, the submission's own round trip (store insert and broker publish);
- 201 -> running, the rest: the broker's delivery to the worker and the worker's claim;
- baseline: a `POST /v1/jobs?validate_only=true` of the same spec on the same API (authentication, admission and
  the HTTP round trip, nothing stored or sent), measured in the same run.

`--backend postgres` makes a throwaway database on 127.0.0.1:5432 and uses Redis on 127.0.0.1:6379 under a queue
name of its own (as the tests do). On a machine whose cores are shared, print `uptime` with the figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.db import make_engine  # noqa: E402
from models.store import JobStore, as_utc  # noqa: E402
from tests.service import (  # noqa: E402
    REDIS_URL,
    TINY_SPEC,
    Service,
    create_postgres_database,
    drop_postgres_database,
    service_env,
    wait_for,
)

GOALS_MS = {"PostgreSQL + Redis": 50.0, "embedded (SQLite + file-system broker)": 150.0}


def running_at(store: JobStore, job_id: str) -> float:
    """The wall-clock time (epoch seconds) of the job's first status event to `running`."""
    for event in store.events_after(job_id=job_id, after=0):
        if event.kind == "status" and event.data.get("to") == "running":
            return as_utc(event.time).timestamp()  # SQLite hands back naive UTC
    raise RuntimeError(f"job {job_id} has no running status event")


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10, method="inclusive")[-1]


def measure(label: str, folder: Path, database_url: str | None, broker_url: str | None, jobs: int) -> None:
    env = service_env(folder, database_url, broker_url, GANFORGE_API_KEYS="bench-key=bench")
    service = Service(env=env, data_dir=folder)
    store: JobStore | None = None
    try:
        service.migrate()
        service.start_api()
        service.start_worker()
        store = JobStore(make_engine(database_url or f"sqlite:///{folder / 'ganforge.db'}"))
        total, submit, rest, baseline = [], [], [], []
        with service.client("bench-key") as client:
            wait_for(client, client.post("/v1/jobs", json=TINY_SPEC).raise_for_status().json()["id"], ("succeeded",))
            for _ in range(jobs):
                started = time.perf_counter()
                client.post("/v1/jobs", params={"validate_only": "true"}, json=TINY_SPEC).raise_for_status()
                baseline.append(time.perf_counter() - started)
                sent_at = time.time()
                started = time.perf_counter()
                job_id = client.post("/v1/jobs", json=TINY_SPEC).raise_for_status().json()["id"]
                answered = time.perf_counter() - started
                wait_for(client, job_id, ("succeeded",))
                latency = running_at(store, job_id) - sent_at
                total.append(latency)
                submit.append(answered)
                rest.append(latency - answered)
        ms = 1000.0
        goal = GOALS_MS[label]
        median = statistics.median(total) * ms
        print(
            f"{label}, {jobs} jobs one at a time, warm worker:\n"
            f"  POST -> running:   median {median:6.1f} ms  p90 {p90(total) * ms:6.1f} ms   goal <= {goal:.0f} ms: "
            f"{'met' if median <= goal else 'missed'}\n"
            f"  POST -> 201:       median {statistics.median(submit) * ms:6.1f} ms  p90 {p90(submit) * ms:6.1f} ms\n"
            f"  201 -> running:    median {statistics.median(rest) * ms:6.1f} ms  p90 {p90(rest) * ms:6.1f} ms"
            " (broker delivery and the worker's claim)\n"
            f"  baseline, POST ?validate_only=true: median {statistics.median(baseline) * ms:6.1f} ms  "
            f"p90 {p90(baseline) * ms:6.1f} ms; POST -> running / baseline: "
            f"{statistics.median(total) / statistics.median(baseline):.1f}",
            flush=True,
        )
    except Exception:
        print(service.logs(), file=sys.stderr)
        raise
    finally:
        if store is not None:
            store.engine.dispose()
        service.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--backend", choices=("postgres", "embedded", "both"), default="both")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} on {os.cpu_count()} cores", flush=True)
    if args.backend in ("postgres", "both"):
        database, url = create_postgres_database()
        try:
            with tempfile.TemporaryDirectory() as tmp:
                measure("PostgreSQL + Redis", Path(tmp), url, REDIS_URL, args.jobs)
        finally:
            drop_postgres_database(database)
    if args.backend in ("embedded", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            measure("embedded (SQLite + file-system broker)", Path(tmp), None, None, args.jobs)
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} after", flush=True)


if __name__ == "__main__":
    main()
