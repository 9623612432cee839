"""Reading a long metric series: server-side min/max downsampling against fetching every point.

    python bench/metrics_query.py [--points 1000000] [--max-points 2000] [--database postgres|sqlite]

Writes one series of N points for one job, then times `JobStore.metric_series`
with max_points (what `GET /v1/jobs/{id}/metrics` does) against the baseline of
reading the whole series, in the same run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from migrations import upgrade  # noqa: E402
from models.db import make_engine  # noqa: E402
from models.records import Metric  # noqa: E402
from models.spec import JobSpec  # noqa: E402
from models.store import JobStore  # noqa: E402
from tests.service import create_postgres_database, drop_postgres_database  # noqa: E402

SPEC = JobSpec.model_validate(
    {"dataset": {"builtin": "ring8"}, "architecture": {"name": "mlp"}, "loss": {"name": "nsgan"}}
)


def best_of(repeats: int, run: object) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return min(times)


def measure(url: str, points: int, max_points: int) -> None:
    upgrade(url)
    store = JobStore(make_engine(url))
    job, _ = store.create_job(owner="bench", spec=SPEC, idempotency_key=None)
    with store.session() as session, session.begin():
        for start in range(0, points, 50_000):
            rows = [
                {"job_id": job.id, "name": "loss_d", "step": s, "value": (s % 997) / 997}
                for s in range(start, min(points, start + 50_000))
            ]
            session.execute(insert(Metric), rows)

    def full() -> None:
        with store.session() as session:
            session.execute(
                select(Metric.step, Metric.value)
                .where(Metric.job_id == job.id, Metric.name == "loss_d")
                .order_by(Metric.step)
            ).all()

    def downsampled() -> None:
        steps, _values, flag = store.metric_series(job_id=job.id, name="loss_d", since_step=0, max_points=max_points)
        assert flag and len(steps) <= max_points

    baseline = best_of(3, full)
    served = best_of(3, downsampled)
    print(
        f"{url.split(':')[0]:>10}: {points:,} points -> {max_points} | all points {baseline * 1000:7.0f} ms | "
        f"downsampled {served * 1000:6.0f} ms | speed-up {baseline / served:5.1f}x"
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
