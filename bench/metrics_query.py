"""Reading a long metric series downsampled, while the job keeps writing, against full scans of the same series.

    python bench/metrics_query.py [--points 1000000] [--max-points 2000] [--database postgres|sqlite|both]

Writes one series of N points for one job through the store's write path (`record_progress`, batches of 40,000,
into metric chunks), and the same rows as one row per point (the layout before migration 0009, primary key
(job_id, name, step)) into a side table. Then, while a thread keeps appending 1,000 points every 100 ms to that
series, it times (best of 5):

- served: `JobStore.metric_series(max_points=...)`, what `GET /v1/jobs/{id}/metrics` does (from the chunks'
  roll-ups);
- baseline 1, the raw full scan: the old layout's downsampling query (GROUP BY bucket over every row; what the
  store did before 0009);
- baseline 2: reading every point of the series from the old layout.

Prints the milliseconds, the speed-up against each baseline, and bytes per point of both layouts (PostgreSQL:
pg_total_relation_size, table + indexes + TOAST; SQLite: the pages dbstat counts).
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import OperationalError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ingest import BARE_TABLE, claimed_job  # noqa: E402
from migrations import upgrade  # noqa: E402
from models.db import make_engine  # noqa: E402
from models.store import JobStore, MetricPoint  # noqa: E402
from tests.service import create_postgres_database, drop_postgres_database  # noqa: E402

BATCH = 40_000


def best_of(repeats: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def value(step: int) -> float:
    return (step % 997) / 997 + (5.0 if step % 100_003 == 0 else 0.0)


def bytes_per_point(store: JobStore, table: str, points: int) -> float:
    with store.engine.connect() as connection:
        if store.engine.dialect.name == "postgresql":
            size = connection.execute(text(f"SELECT pg_total_relation_size('{table}')")).scalar_one()
        else:
            size = connection.execute(
                text(
                    "SELECT SUM(pgsize) FROM dbstat WHERE name = :t OR name IN (SELECT name FROM sqlite_master WHERE tbl_name = :t)"
                ),
                {"t": table},
            ).scalar_one()
    return float(size) / points


def measure(url: str, points: int, max_points: int) -> None:
    upgrade(url)
    store = JobStore(make_engine(url))
    job_id, token = claimed_job(store, "w")
    postgres = store.engine.dialect.name == "postgresql"
    for start in range(0, points, BATCH):
        batch = [MetricPoint("loss_d", s, value(s)) for s in range(start, min(points, start + BATCH))]
        store.record_progress(
            job_id=job_id, worker="w", token=token, step=batch[-1].step, steps_per_sec=None, points=batch
        )
    with store.engine.begin() as connection:
        connection.execute(text(BARE_TABLE))
        if postgres:
            rows = "".join(f"{job_id}\tloss_d\t{s}\t{value(s)!r}\n" for s in range(points))
            with connection.connection.driver_connection.cursor() as cursor:  # type: ignore[union-attr]
                with cursor.copy("COPY bare_metrics (job_id, name, step, value) FROM STDIN") as copy:
                    copy.write(io.StringIO(rows).getvalue())
        else:
            connection.exec_driver_sql(
                "INSERT INTO bare_metrics VALUES (?, ?, ?, ?)", [(job_id, "loss_d", s, value(s)) for s in range(points)]
            )
        connection.execute(text("ANALYZE" if not postgres else "ANALYZE bare_metrics"))
    chunk_bytes = bytes_per_point(store, "metric_chunks", points)
    row_bytes = bytes_per_point(store, "bare_metrics", points)

    stop = threading.Event()

    def keep_writing() -> None:
        step = points
        while not stop.wait(0.1):
            batch = [MetricPoint("loss_d", s, value(s)) for s in range(step, step + 1000)]
            try:
                store.record_progress(
                    job_id=job_id, worker="w", token=token, step=step + 999, steps_per_sec=None, points=batch
                )
            except OperationalError:  # SQLite: a baseline's long read held the database past the busy timeout
                continue
            step += 1000

    def served() -> None:
        steps, _values, flag = store.metric_series(job_id=job_id, name="loss_d", since_step=0, max_points=max_points)
        assert flag and len(steps) <= max_points

    width = -(-points // ((max_points - 2) // 2))
    old_downsample = text(
        "SELECT (step - 0) / :w AS b, min(value), max(value), min(step), max(step) FROM bare_metrics "
        "WHERE job_id = :j AND name = 'loss_d' GROUP BY b ORDER BY b"
    )

    def old_layout_downsampled() -> None:
        with store.engine.connect() as connection:
            connection.execute(old_downsample, {"w": width, "j": job_id}).all()

    def old_layout_all() -> None:
        with store.engine.connect() as connection:
            connection.execute(
                text("SELECT step, value FROM bare_metrics WHERE job_id = :j AND name = 'loss_d' ORDER BY step"),
                {"j": job_id},
            ).all()

    writer = threading.Thread(target=keep_writing, daemon=True)
    writer.start()
    try:
        ours = best_of(5, served)
        scan = best_of(3, old_layout_downsampled)
        every = best_of(3, old_layout_all)
    finally:
        stop.set()
        writer.join()
    print(
        f"{store.engine.dialect.name:>10}: {points:,} points -> {max_points}, writes continuing | served "
        f"{ours * 1000:6.1f} ms | raw full scan (old layout, GROUP BY) {scan * 1000:7.1f} ms ({scan / ours:5.1f}x) | "
        f"all points {every * 1000:7.1f} ms ({every / ours:5.1f}x) | bytes/point: chunks {chunk_bytes:5.1f}, "
        f"row per point {row_bytes:5.1f}"
    )
    store.engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--max-points", type=int, default=2000)
    parser.add_argument("--database", choices=["postgres", "sqlite", "both"], default="both")
    args = parser.parse_args()
    if args.database in ("postgres", "both"):
        name, url = create_postgres_database()
        try:
            measure(url, args.points, args.max_points)
        finally:
            drop_postgres_database(name)
    if args.database in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            measure(f"sqlite:///{tmp}/bench.db", args.points, args.max_points)


if __name__ == "__main__":
    main()
