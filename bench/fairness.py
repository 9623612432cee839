"""How long one owner's single job waits behind another owner's 1,000: fair share against plain FIFO.

    python bench/fairness.py [--jobs 1000] [--workers 4] [--job-seconds 60] [--backend sqlite|postgres]

Owner A submits `--jobs` jobs, then owner B submits one. `--workers` workers each claim a job, run it for
`--job-seconds` of simulated time, end it and claim the next, until B's job is claimed. Printed for both
schedulers, measured in the same run on fresh stores of the same backend:
- fair share: LeaseStore.claim_next, the service's scheduler (default quotas: running_jobs 8);
- FIFO: the baseline, jobs claimed in submission order (what a worker did when it claimed the job its
  broker message named).
B's wait is given in claims (jobs claimed before B's) and in simulated seconds, with the real time one
claim took (median) at that queue length. The store, the claims and the status events are real; only the
training is simulated.

`--backend postgres` never writes to an existing database: each scheduler gets a throwaway database (ganforge_
fairness_<hex>, dropped after) on the server of GANFORGE_DATABASE_URL when that is a PostgreSQL URL (its user needs
CREATEDB), else on 127.0.0.1:5432 as user postgres (the tests' server). The line it prints says which.
"""

from __future__ import annotations

import argparse
import heapq
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402
from sqlalchemy import URL, make_url, select, update  # noqa: E402

from migrations import upgrade  # noqa: E402
from models.db import make_engine  # noqa: E402
from models.quotas import Quotas  # noqa: E402
from models.records import Job, JobStatus  # noqa: E402
from models.spec import JobSpec  # noqa: E402
from models.store import JobStore, utcnow  # noqa: E402

TESTS_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"

SPEC = JobSpec.model_validate(
    {"dataset": {"builtin": "ring8"}, "architecture": {"name": "mlp"}, "loss": {"name": "nsgan"}}
)
Claim = Callable[[JobStore, str], Job | None]


def default_quotas(_owner: str) -> Quotas:
    return Quotas()


def fair_share(store: JobStore, worker: str) -> Job | None:
    return store.claim_next(worker=worker, quotas_of=default_quotas)


def fifo(store: JobStore, worker: str) -> Job | None:
    """The oldest queued job, taken with the same conditional UPDATE (the baseline: submission order)."""
    with store.session() as session, session.begin():
        job_id = session.scalar(select(Job.id).where(Job.status == JobStatus.QUEUED).order_by(Job.seq).limit(1))
        if job_id is None:
            return None
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
            .values(status=JobStatus.RUNNING, lease_token=Job.lease_token + 1, worker=worker, started_at=utcnow())
        )
        return session.scalars(select(Job).where(Job.id == job_id)).one()


def postgres_server() -> URL:
    """Where `--backend postgres` makes its throwaway databases: GANFORGE_DATABASE_URL when it is a PostgreSQL URL
    (connecting to its database to create and drop them), else the tests' server."""
    configured = os.environ.get("GANFORGE_DATABASE_URL", "").strip()
    if configured and make_url(configured).get_backend_name() == "postgresql":
        return make_url(configured).set(drivername="postgresql+psycopg")
    return make_url(TESTS_SERVER)


def _libpq(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def fresh_store(backend: str) -> Iterator[JobStore]:
    """A migrated, empty job store: SQLite in a temporary folder, or a throwaway PostgreSQL database on
    postgres_server() (dropped after)."""
    with tempfile.TemporaryDirectory() as folder:
        server, database = postgres_server(), None
        if backend == "postgres":
            database = f"ganforge_fairness_{uuid.uuid4().hex[:10]}"
            with psycopg.connect(_libpq(server), autocommit=True, connect_timeout=5) as connection:
                connection.execute(f'CREATE DATABASE "{database}"')
            url = server.set(database=database).render_as_string(hide_password=False)
        else:
            url = f"sqlite:///{folder}/fairness.db"
        try:
            upgrade(url)
            engine = make_engine(url)
            try:
                yield JobStore(engine)
            finally:
                engine.dispose()
        finally:
            if database:
                with psycopg.connect(_libpq(server), autocommit=True, connect_timeout=5) as connection:
                    connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def b_wait(store: JobStore, claim: Claim, *, jobs: int, workers: int, job_seconds: float) -> tuple[int, float, float]:
    """(claims before B's job, B's wait in simulated seconds, median real seconds per claim)."""
    for _ in range(jobs):
        store.create_job(owner="a", spec=SPEC, idempotency_key=None)
    single, _ = store.create_job(owner="b", spec=SPEC, idempotency_key=None)
    free: list[tuple[float, int, Job | None]] = [(0.0, w, None) for w in range(workers)]  # (when, worker, its job)
    claims, took = 0, []
    while free:
        now, worker, done = heapq.heappop(free)
        if done is not None:
            store.finish(job_id=done.id, worker=f"w{worker}", token=done.lease_token, status="succeeded", reason="")
        started = time.perf_counter()
        job = claim(store, f"w{worker}")
        took.append(time.perf_counter() - started)
        if job is None:
            continue
        if job.id == single.id:
            return claims, now, statistics.median(took)
        claims += 1
        heapq.heappush(free, (now + job_seconds, worker, job))
    raise AssertionError("B's job was never claimed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000, help="owner A's queued jobs")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--job-seconds", type=float, default=60.0, help="simulated run time of each job")
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args()
    print(
        f"owner A: {args.jobs} queued jobs, then owner B: 1; {args.workers} workers, {args.job_seconds:g} s a job "
        f"(simulated), {args.backend}"
        + (f" (throwaway databases on {postgres_server().render_as_string()})" if args.backend == "postgres" else "")
    )
    for name, claim in (("fair share", fair_share), ("FIFO", fifo)):
        with fresh_store(args.backend) as store:
            claims, waited, per_claim = b_wait(
                store, claim, jobs=args.jobs, workers=args.workers, job_seconds=args.job_seconds
            )
        print(
            f"{name:>10}: B's job claimed after {claims} claims, waited {waited:,.0f} s "
            f"({waited / 60:,.1f} min); one claim took {per_claim * 1000:.1f} ms (median)"
        )


if __name__ == "__main__":
    main()
