"""The service's overhead on training speed, and the time from POST to running.

    python bench/trainer_overhead.py [--steps 3000] [--jobs 5]

1. steps/s of `worker.trainer.train` writing to the real store sink (SQLite job
   store, local artifact store, lease thread) against the same GAN steps run in a
   bare loop, in the same process: printed as a ratio (1.00 = no overhead).
2. With the embedded default running (a real uvicorn and a real Celery worker,
   warmed by one job), the time from `POST /v1/jobs` to the job being `running`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from migrations import upgrade  # noqa: E402
from models.artifacts import ArtifactStore  # noqa: E402
from models.db import make_engine  # noqa: E402
from models.quotas import Quotas  # noqa: E402
from models.spec import JobSpec  # noqa: E402
from models.store import JobStore  # noqa: E402
from tests.service import (  # noqa: E402
    REDIS_URL,
    Service,
    create_postgres_database,
    drop_postgres_database,
    service_env,
    wait_for,
)
from worker.data import Batches  # noqa: E402
from worker.gan import build_gan, load_builtin  # noqa: E402
from worker.lease import LeaseKeeper  # noqa: E402
from worker.sink import StoreSink  # noqa: E402
from worker.trainer import train  # noqa: E402


def default_quotas(_owner: str) -> Quotas:
    """Every owner the quota defaults (running_jobs 8): what claim_next is given here."""
    return Quotas()


def spec_for(steps: int) -> JobSpec:
    return JobSpec.model_validate(
        {
            "dataset": {"builtin": "ring8"},
            "architecture": {"name": "mlp"},
            "loss": {"name": "nsgan"},
            "training": {"steps": steps, "batch_size": 256},
            "every": {"metrics": 10, "samples": 500, "checkpoint": 1000},
        }
    )


def bare_steps_per_sec(spec: JobSpec) -> float:
    torch.manual_seed(0)
    data = load_builtin("ring8")
    gan = build_gan(spec, data.info, torch.device("cpu"))
    batches = Batches(data.x, data.y, spec.training.batch_size, torch.device("cpu"), seed=1)
    started = time.perf_counter()
    for _ in range(spec.training.steps):
        gan.train_step(batches.next)
    return spec.training.steps / (time.perf_counter() - started)


def service_steps_per_sec(spec: JobSpec, folder: Path) -> float:
    url = f"sqlite:///{folder / 'bench.db'}"
    upgrade(url)
    store = JobStore(make_engine(url))
    artifacts = ArtifactStore(str(folder / "artifacts"))
    job, _ = store.create_job(owner="bench", spec=spec, idempotency_key=None)
    claimed = store.claim_next(worker="bench", quotas_of=default_quotas)
    assert claimed is not None
    data = load_builtin("ring8")
    keeper = LeaseKeeper(
        store=store, job_id=job.id, worker="bench", token=claimed.lease_token, flush_seconds=1.0, grace_seconds=60.0
    )
    sink = StoreSink(
        keeper=keeper,
        store=store,
        artifacts=artifacts,
        job_id=job.id,
        spec_json=job.spec,
        real_points=data.x[:2500].numpy(),
        scratch_dir=str(folder / "tmp"),
    )
    keeper.start()
    result = train(spec, data, sink, torch.device("cpu"))
    keeper.close()
    return result.step / result.seconds


def post_to_running(jobs: int, folder: Path, database_url: str | None, broker_url: str | None) -> list[float]:
    service = Service(env=service_env(folder, database_url, broker_url, GANFORGE_API_KEYS=""), data_dir=folder)
    service.migrate()
    service.start_api()
    service.start_worker()
    quick = {
        "dataset": {"builtin": "ring8"},
        "architecture": {"name": "mlp"},
        "loss": {"name": "nsgan"},
        "training": {"steps": 20},
        "every": {"samples": 20, "checkpoint": 20},
    }
    latencies = []
    try:
        with httpx.Client(base_url=service.url, timeout=30) as client:
            wait_for(client, client.post("/v1/jobs", json=quick).json()["id"], ("succeeded",))  # warm the worker
            for _ in range(jobs):
                started = time.perf_counter()
                job_id = client.post("/v1/jobs", json=quick).json()["id"]
                while client.get(f"/v1/jobs/{job_id}").json()["status"] == "queued":
                    time.sleep(0.005)
                latencies.append(time.perf_counter() - started)
                wait_for(client, job_id, ("succeeded",))
    finally:
        service.stop()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--jobs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = spec_for(args.steps)
    # Interleaved, best of `--repeats`, so that a busy machine penalises both sides alike.
    bare, served = 0.0, 0.0
    for _ in range(args.repeats):
        bare = max(bare, bare_steps_per_sec(spec))
        with tempfile.TemporaryDirectory() as tmp:
            served = max(served, service_steps_per_sec(spec, Path(tmp)))
    print(f"ring8 nsgan mlp, {args.steps} steps, batch 256, 1 CPU thread, best of {args.repeats}")
    print(f"  bare loop            {bare:8.1f} steps/s")
    print(f"  trainer + store sink {served:8.1f} steps/s   ratio {served / bare:.3f}")
    for label in ("embedded (SQLite + file broker)", "PostgreSQL + Redis"):
        with tempfile.TemporaryDirectory() as tmp:
            if label.startswith("PostgreSQL"):
                database, url = create_postgres_database()
                try:
                    latencies = post_to_running(args.jobs, Path(tmp), url, REDIS_URL)
                finally:
                    drop_postgres_database(database)
            else:
                latencies = post_to_running(args.jobs, Path(tmp), None, None)
        print(
            f"POST -> running, warm worker, {label}, {args.jobs} jobs: "
            f"median {statistics.median(latencies) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms"
        )


if __name__ == "__main__":
    main()
