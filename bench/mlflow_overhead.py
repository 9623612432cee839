"""What MLflow mirroring costs a job: steps/s mirrored to a real local `mlflow server`, and to a server that is down
(a closed port), against the same job unmirrored, in the same run.

    python bench/mlflow_overhead.py                     # MLP on ring8, 600 steps, metrics every step
    python bench/mlflow_overhead.py --steps 2000 --repeats 3

Each job runs `worker.trainer.train` through the service's own sink (worker/sink.py: SQLite job store, local
artifact store, the lease thread) with the worker's mirror (worker/mlflow_mirror.py, opened as worker/tasks.py
opens it) on or off. Metrics every step (the most points a job can send), a sample every 100 steps, a checkpoint
every 300. steps/s is the trainer's own (result.step / result.seconds: the loop, not the mirror's drain after it).
The three modes are interleaved and the best of --repeats kept, so a busy machine penalises all alike. Printed:
steps/s per mode and mirrored / unmirrored (1.00: mirroring costs nothing), and for the live server what reached it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from migrations import upgrade  # noqa: E402
from models.artifacts import ArtifactStore  # noqa: E402
from models.db import make_engine  # noqa: E402
from models.quotas import Quotas  # noqa: E402
from models.settings import Settings  # noqa: E402
from models.spec import JobSpec  # noqa: E402
from models.store import JobStore  # noqa: E402
from tests.service import free_port  # noqa: E402
from tests.test_mlflow import MlflowServer  # noqa: E402
from worker.gan import load_builtin  # noqa: E402
from worker.lease import LeaseKeeper  # noqa: E402
from worker.mlflow_mirror import MlflowMirror, open_mirror  # noqa: E402
from worker.sink import StoreSink  # noqa: E402
from worker.trainer import train  # noqa: E402


def run_job(steps: int, folder: Path, tracking_uri: str) -> tuple[float, str]:
    """steps/s of one job mirrored to `tracking_uri` ("" = not mirrored), and what its mirror sent."""
    folder.mkdir(parents=True)
    url = f"sqlite:///{folder / 'bench.db'}"
    upgrade(url)
    store = JobStore(make_engine(url))
    artifacts = ArtifactStore(str(folder / "artifacts"))
    settings = Settings(data_dir=folder, mlflow_tracking_uri=tracking_uri, mlflow_experiment="ganforge-bench")
    spec = JobSpec.model_validate(
        {
            "dataset": {"builtin": "ring8"},
            "architecture": {"name": "mlp"},
            "loss": {"name": "nsgan"},
            "training": {"steps": steps, "batch_size": 256},
            "every": {"metrics": 1, "samples": 100, "checkpoint": 300},
        }
    )
    data = load_builtin("ring8", None)
    store.create_job(owner="bench", spec=spec, idempotency_key=None)
    job = store.claim_next(worker="bench", quotas_of=lambda _owner: Quotas())
    assert job is not None
    keeper = LeaseKeeper(
        store=store, job_id=job.id, worker="bench", token=job.lease_token, flush_seconds=1.0, grace_seconds=60.0
    )
    with open_mirror(job, settings, store, artifacts) as mirror, keeper:
        sink = StoreSink(
            keeper=keeper,
            store=store,
            artifacts=artifacts,
            job_id=job.id,
            spec_json=job.spec,
            real_points=data.x[:2500].numpy(),
            scratch_dir=str(folder / "tmp"),
            dataset=data.info,
            mirror=mirror,
        )
        keeper.start()
        result = train(spec, data, sink, torch.device("cpu"))
        sink.close()
        store.finish(job_id=job.id, worker="bench", token=job.lease_token, status="succeeded", reason="bench")
    sent = ""
    if isinstance(mirror, MlflowMirror):
        sent = f"sent {dict(mirror.sent)}, dropped {dict(mirror.dropped)}"
    return result.step / result.seconds, sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="ganforge-mlflow-bench-") as temp:
        root = Path(temp)
        (root / "mlflow").mkdir()
        server = MlflowServer(root / "mlflow")
        try:
            server.wait_ready(timeout=900)  # ~10-20 s on an idle machine; far more on a loaded one
            modes = {"off": "", "live": server.url, "down": f"http://127.0.0.1:{free_port()}"}
            run_job(50, root / "warm-up", server.url)  # imports MLflow's client once, as a worker does
            best: dict[str, float] = dict.fromkeys(modes, 0.0)
            notes: dict[str, str] = {}
            for repeat in range(args.repeats):
                for mode, uri in modes.items():
                    started = time.perf_counter()
                    rate, sent = run_job(args.steps, root / f"{mode}-{repeat}", uri)
                    best[mode] = max(best[mode], rate)
                    notes[mode] = sent
                    print(f"  {mode:5s} run {repeat + 1}: {rate:7.1f} steps/s ({time.perf_counter() - started:.1f} s "
                          f"with set-up and drain) {sent}", flush=True)
        finally:
            server.stop()
    print(f"\nMLP on ring8, batch 256, {args.steps} steps, metrics every step; best of {args.repeats}, CPU, 1 thread")
    for mode in modes:
        print(f"  {mode:5s} {best[mode]:7.1f} steps/s   ratio to off: {best[mode] / best['off']:.3f}   {notes[mode]}")


if __name__ == "__main__":
    main()
