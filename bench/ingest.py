"""Metric ingest: points/s of the store's write path against a bare bulk load of the same rows, and a writer fleet.

    python bench/ingest.py [--points 400000] [--batch 8000] [--database postgres|sqlite|both]
                           [--fleet 50] [--fleet-seconds 10] [--steps-per-sec 200]

1. One worker's writes: `JobStore.record_progress` (what the lease keeper calls every flush: the lease check,
   the metric chunks, the `metrics` events and the progress, one transaction) with batches of `--batch` points
   (8 series), against, in the same run, the same rows as one row per point (job_id, name, step, value; the
   layout before migration 0009, primary key included) loaded with a bare `COPY ... FROM STDIN` per batch on
   PostgreSQL, and a bare `executemany` INSERT per batch on SQLite. Prints points/s and the ratio.
2. The fleet (PostgreSQL): `--fleet` worker processes, each holding a claimed job and a real LeaseKeeper
   (flush every second), run a simulated training loop (a 1/steps-per-sec wait standing for the GPU, then 8
   metric values recorded) for `--fleet-seconds`. Prints each step's time (p50, p99, and the worst worker's p99)
   against the same loop in one process alone, and the points/s the store took from the whole fleet.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from migrations import upgrade  # noqa: E402
from models.db import make_engine  # noqa: E402
from models.quotas import Quotas  # noqa: E402
from models.spec import JobSpec  # noqa: E402
from models.store import JobStore, MetricPoint  # noqa: E402
from tests.service import create_postgres_database, drop_postgres_database  # noqa: E402

SPEC = JobSpec.model_validate(
    {"dataset": {"builtin": "ring8"}, "architecture": {"name": "mlp"}, "loss": {"name": "nsgan"}}
)
NAMES = ("loss_d", "loss_g", "grad_norm_d", "grad_norm_g", "d_real", "d_fake", "lr_d", "lr_g")
BARE_TABLE = """CREATE TABLE bare_metrics (job_id VARCHAR(36) NOT NULL, name VARCHAR(64) NOT NULL,
    step BIGINT NOT NULL, value DOUBLE PRECISION NOT NULL, PRIMARY KEY (job_id, name, step))"""


def claimed_job(store: JobStore, worker: str) -> tuple[str, int]:
    job, _ = store.create_job(owner=f"bench-{worker}", spec=SPEC, idempotency_key=None)
    while True:
        claimed = store.claim_next(worker=worker, quotas_of=lambda _owner: Quotas())
        assert claimed is not None, "a queued job to claim"
        if claimed.id == job.id:
            return job.id, claimed.lease_token


def batches(points: int, batch: int) -> list[list[MetricPoint]]:
    rng = np.random.default_rng(0)
    steps_per_batch = batch // len(NAMES)
    out, step = [], 0
    while step * len(NAMES) < points:
        values = rng.standard_normal((steps_per_batch, len(NAMES))).tolist()
        out.append(
            [MetricPoint(name, step + i, row[j]) for i, row in enumerate(values) for j, name in enumerate(NAMES)]
        )
        step += steps_per_batch
    return out


def one_worker(url: str, points: int, batch: int) -> None:
    upgrade(url)
    store = JobStore(make_engine(url))
    job_id, token = claimed_job(store, "w")
    work = batches(points, batch)
    total = sum(len(b) for b in work)
    started = time.perf_counter()
    for chunk in work:
        status = store.record_progress(
            job_id=job_id, worker="w", token=token, step=chunk[-1].step, steps_per_sec=None, points=chunk
        )
        assert status == "running"
    ours = total / (time.perf_counter() - started)
    postgres = store.engine.dialect.name == "postgresql"
    with store.engine.begin() as connection:
        connection.execute(text(BARE_TABLE))
    started = time.perf_counter()
    for chunk in work:
        with store.engine.begin() as connection:
            if postgres:
                buffer = io.StringIO("".join(f"{job_id}\t{p.name}\t{p.step}\t{p.value!r}\n" for p in chunk))
                raw: Any = connection.connection.driver_connection
                with (
                    raw.cursor() as cursor,
                    cursor.copy("COPY bare_metrics (job_id, name, step, value) FROM STDIN") as copy,
                ):
                    copy.write(buffer.getvalue())
            else:
                rows = [(job_id, p.name, p.step, p.value) for p in chunk]
                connection.exec_driver_sql("INSERT INTO bare_metrics VALUES (?, ?, ?, ?)", rows)
    bare = total / (time.perf_counter() - started)
    baseline = "bare COPY" if postgres else "bare executemany"
    print(
        f"{store.engine.dialect.name:>10}: {total:,} points in batches of {batch:,} | write path {ours:>10,.0f} points/s"
        f" | {baseline} {bare:>10,.0f} points/s | ratio {ours / bare:5.2f}"
    )
    store.engine.dispose()


def fleet_member(
    url: str,
    job_id: str,
    token: int,
    worker: str,
    seconds: float,
    steps_per_sec: float,
    start_at: float,
    out: multiprocessing.Queue[object],
) -> None:
    from worker.lease import LeaseKeeper

    store = JobStore(make_engine(url))
    keeper = LeaseKeeper(store=store, job_id=job_id, worker=worker, token=token, flush_seconds=1.0, grace_seconds=60.0)
    period = 1.0 / steps_per_sec
    rng = np.random.default_rng(hash(worker) % 2**32)
    while time.time() < start_at:
        time.sleep(0.01)
    keeper.start()
    times, step = [], 0
    ends = time.perf_counter() + seconds
    while time.perf_counter() < ends:
        began = time.perf_counter()
        time.sleep(period)  # the GPU's share of a step: the host waits
        step += 1
        keeper.record(step, dict(zip(NAMES, rng.standard_normal(len(NAMES)).tolist(), strict=True)))
        keeper.tick()
        times.append(time.perf_counter() - began)
    keeper.close()
    out.put((worker, step, times))
    store.engine.dispose()


def fleet(url: str, size: int, seconds: float, steps_per_sec: float) -> dict[str, float]:
    store = JobStore(make_engine(url))
    jobs = [(f"fleet-{size}-{i}", *claimed_job(store, f"fleet-{size}-{i}")) for i in range(size)]
    store.engine.dispose()
    context = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue[object] = context.Queue()
    start_at = time.time() + 3.0 + size * 0.1  # every process imported and connected before the clock starts
    processes = [
        context.Process(target=fleet_member, args=(url, job_id, token, worker, seconds, steps_per_sec, start_at, out))
        for worker, job_id, token in jobs
    ]
    for process in processes:
        process.start()
    results: list[Any] = [out.get(timeout=seconds + 600) for _ in processes]  # a loaded machine starts 50 slowly
    for process in processes:
        process.join()
    all_times = np.concatenate([np.array(r[2]) for r in results]) * 1000
    worst = max(float(np.percentile(np.array(r[2]) * 1000, 99)) for r in results)
    steps = sum(int(r[1]) for r in results)
    return {
        "p50": float(np.percentile(all_times, 50)),
        "p99": float(np.percentile(all_times, 99)),
        "worst_p99": worst,
        "points_per_sec": steps * len(NAMES) / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=400_000)
    parser.add_argument("--batch", type=int, default=8000)
    parser.add_argument("--database", choices=["postgres", "sqlite", "both"], default="both")
    parser.add_argument("--fleet", type=int, default=50, help="writer processes at once (0: skip the fleet)")
    parser.add_argument("--fleet-seconds", type=float, default=10.0)
    parser.add_argument("--steps-per-sec", type=float, default=200.0)
    args = parser.parse_args()
    if args.database in ("postgres", "both"):
        name, url = create_postgres_database()
        try:
            one_worker(url, args.points, args.batch)
            if args.fleet:
                solo = fleet(url, 1, args.fleet_seconds, args.steps_per_sec)
                many = fleet(url, args.fleet, args.fleet_seconds, args.steps_per_sec)
                print(
                    f"{'fleet':>10}: a step of {1000 / args.steps_per_sec:.1f} ms + 8 metrics, {args.fleet_seconds:.0f} s | "
                    f"alone p50 {solo['p50']:.2f} ms p99 {solo['p99']:.2f} ms | {args.fleet} writers p50 "
                    f"{many['p50']:.2f} ms p99 {many['p99']:.2f} ms (worst worker's p99 {many['worst_p99']:.2f} ms) | "
                    f"p50 ratio {many['p50'] / solo['p50']:.2f} | fleet ingest {many['points_per_sec']:,.0f} points/s"
                )
        finally:
            drop_postgres_database(name)
    if args.database in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            one_worker(f"sqlite:///{tmp}/bench.db", args.points, args.batch)


if __name__ == "__main__":
    main()
