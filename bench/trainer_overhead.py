"""The trainer against a bare PyTorch loop of the same nets, and the time from POST to running.

    python bench/trainer_overhead.py                       # MLP and DCGAN 32 px, nsgan and wgan-gp, on CPU
    python bench/trainer_overhead.py --latency             # also POST -> running (embedded, PostgreSQL + Redis)

1. steps/s of `worker.trainer.train` at the spec's DEFAULT cadence (models/spec.py `Every`: metrics every 10
   steps with the diagnostics, a snapshot every 500 steps with its quality figures, a checkpoint every 1,000),
   written by the service's own sink (SQLite job store, local artifact store, the lease thread), against the
   bare loop of bench/bare_loops.py (the papers' code: nsgan as the PyTorch DCGAN example, wgan-gp as
   Gulrajani et al.'s; torch.optim.Adam with its defaults, PyTorch's default NCHW layout, nothing logged) on the
   very same networks (built by worker/gan/factory.py, the same initial weights), batch, device and threads.
   The trainer's own speed choices (fused Adam; NHWC convolutions, worker/gan/factory.py) are numerically the
   same algorithm and are not given to the baseline, which is what one writes by hand. Printed as
   trainer / bare (1.00: the trainer costs nothing; above 1: it is faster). EMA is off on both sides (the bare
   loop has none).

   A window of a real job's 1,000 steps would take minutes per case on one CPU thread, so the cadence is
   amortised from measured parts of one trainer run (the bench sink stamps the end of every step):
   - `ordinary`: the mean time of the run's steps that take no snapshot and no checkpoint (every 10th of them
     reads the metrics and diagnostics, as by default), from step 2 (step 1 warms up, as the bare loop's
     untimed first step) to the step before the last (the last writes the job's final snapshot and checkpoint);
   - `snapshot` and `checkpoint`: the run (every.samples s, every.checkpoint 2s, s = ceil(steps / 3)) also takes
     a snapshot at step s and a snapshot and a checkpoint at step 2s (the default's pattern, 500 and 1,000,
     brought inside the window); a snapshot costs step s's time less `ordinary`, a checkpoint step 2s's less
     step s's;
   - trainer time per step = ordinary + snapshot / every.samples + checkpoint / every.checkpoint (defaults).
   The bare loop is timed over as many steps as `ordinary` (mean, after one untimed step). Each case's window
   is sized for ~15 s a side on this project's CPU (WINDOWS; --scale multiplies it); interleaved, best of
   --repeats (2: the whole bench about 5 minutes), so a busy machine penalises both sides alike.
2. (--latency) With the embedded default running (a real uvicorn and a real Celery worker, warmed by one
   job), the time from `POST /v1/jobs` to the job being `running`; the same on PostgreSQL + Redis.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bare_loops import bare_step  # noqa: E402

from migrations import upgrade  # noqa: E402
from models.artifacts import ArtifactStore  # noqa: E402
from models.db import make_engine  # noqa: E402
from models.quotas import Quotas  # noqa: E402
from models.spec import Every, JobSpec  # noqa: E402
from models.store import JobStore  # noqa: E402
from tests.service import (  # noqa: E402
    REDIS_URL,
    Service,
    create_postgres_database,
    drop_postgres_database,
    service_env,
    wait_for,
)
from worker.gan import LoadedData, build_gan, load_builtin  # noqa: E402
from worker.lease import LeaseKeeper  # noqa: E402
from worker.sink import StoreSink  # noqa: E402
from worker.trainer import train  # noqa: E402

NETS: dict[str, dict[str, Any]] = {
    "MLP (ring8, batch 256)": {
        "dataset": {"builtin": "ring8"},
        "architecture": {"name": "mlp"},
        "training": {"batch_size": 256},
    },
    "DCGAN 32 px (digits, batch 64)": {
        "dataset": {"builtin": "digits", "resize": 32},
        "architecture": {"name": "dcgan"},
        "training": {"batch_size": 64},
    },
}
LOSSES = ("nsgan", "wgan-gp")
# (net, loss) -> ordinary steps timed: about 15 s of steps a side on one thread of this project's CPU (generator
# steps/s ~22, ~4, ~4, ~0.7).
WINDOWS: dict[tuple[str, str], int] = {
    ("MLP (ring8, batch 256)", "nsgan"): 300,
    ("MLP (ring8, batch 256)", "wgan-gp"): 60,
    ("DCGAN 32 px (digits, batch 64)", "nsgan"): 60,
    ("DCGAN 32 px (digits, batch 64)", "wgan-gp"): 12,
}
DEFAULT = Every()  # the cadence a job gets when its spec says nothing


def default_quotas(_owner: str) -> Quotas:
    return Quotas()


def spec_for(net: dict[str, Any], loss: str, steps: int, every: dict[str, int] | None = None) -> JobSpec:
    body = {**net, "loss": {"name": loss}}
    body["training"] = {**net["training"], "steps": steps, "ema_decay": None, "device": "cpu"}
    if every is not None:
        body["every"] = every
    return JobSpec.model_validate(body)


# --------------------------------------------------------------------------- the bare loop


def bare_steps_per_sec(spec: JobSpec, data: LoadedData, steps: int) -> float:
    """Generator steps/s of bench/bare_loops.py over `steps` steps, after one untimed step."""
    torch.manual_seed(0)
    device = torch.device("cpu")
    gan = build_gan(spec, data.info, device)  # only for the networks (same init as the trainer's)
    # The papers' code keeps PyTorch's default layout (NCHW); NHWC convolutions are the trainer's own choice
    # (worker/gan/factory.py), as its fused Adam is: the same weights and convolutions, faster on a CPU.
    gan.generator.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    gan.discriminator.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    gan.channels_last = False
    step = bare_step(spec, gan, data.x, device)
    step()  # warm-up, as the trainer's first step is not timed either
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - started)


# --------------------------------------------------------------------------- the trainer


class StampingSink(StoreSink):
    """The service's sink, stamping the end of every step (the loop asks `should_stop` once per step, last)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stamps: list[float] = []

    def should_stop(self) -> bool:
        self.stamps.append(time.perf_counter())
        return super().should_stop()


@dataclass(frozen=True)
class TrainerTiming:
    """Seconds: an ordinary step's mean, and what a snapshot and a checkpoint add to their steps."""

    ordinary: float
    snapshot: float
    checkpoint: float

    def steps_per_sec(self, every: Every) -> float:
        """Generator steps/s at `every`'s cadence (the metrics' cost is inside `ordinary`)."""
        per_step = self.ordinary + self.snapshot / every.samples + self.checkpoint / every.checkpoint
        return 1.0 / per_step


def trainer_timing(net: dict[str, Any], loss: str, window: int, data: LoadedData, folder: Path) -> TrainerTiming:
    """One trainer run of window + 4 steps: metrics at the default cadence, a snapshot at s, a snapshot and a
    checkpoint at 2s, the job's final ones at the last step; see the module docstring."""
    steps = window + 4  # + step 1, s, 2s and the last
    s = -(-steps // 3)  # every s steps: s < 2s < steps <= 3s, so no other snapshot before the last step
    spec = spec_for(net, loss, steps, {"metrics": DEFAULT.metrics, "samples": s, "checkpoint": 2 * s})
    url = f"sqlite:///{folder / 'bench.db'}"
    upgrade(url)
    store = JobStore(make_engine(url))
    artifacts = ArtifactStore(str(folder / "artifacts"))
    job, _ = store.create_job(owner="bench", spec=spec, idempotency_key=None)
    claimed = store.claim_next(worker="bench", quotas_of=default_quotas)
    assert claimed is not None
    keeper = LeaseKeeper(
        store=store, job_id=job.id, worker="bench", token=claimed.lease_token, flush_seconds=1.0, grace_seconds=60.0
    )
    sink = StampingSink(
        keeper=keeper,
        store=store,
        artifacts=artifacts,
        job_id=job.id,
        spec_json=job.spec,
        real_points=data.x[:2500].numpy() if data.info.kind == "points" else None,
        scratch_dir=str(folder / "tmp"),
        dataset=data.info,
    )
    keeper.start()
    result = train(spec, data, sink, torch.device("cpu"))
    sink.close()
    keeper.close()
    assert result.step == steps and len(sink.stamps) == steps
    # seconds[i]: step i + 2 (step 1 has no start stamp)
    seconds = [b - a for a, b in zip(sink.stamps, sink.stamps[1:], strict=False)]
    of_step = dict(enumerate(seconds, start=2))
    ordinary = [t for i, t in of_step.items() if i not in (s, 2 * s, steps)]
    assert len(ordinary) == window
    mean = statistics.fmean(ordinary)
    return TrainerTiming(ordinary=mean, snapshot=of_step[s] - mean, checkpoint=of_step[2 * s] - of_step[s])


# --------------------------------------------------------------------------- POST -> running


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


def latency(jobs: int) -> None:
    for label in ("embedded (SQLite + file broker)", "PostgreSQL + Redis"):
        with tempfile.TemporaryDirectory() as tmp:
            if label.startswith("PostgreSQL"):
                database, url = create_postgres_database()
                try:
                    latencies = post_to_running(jobs, Path(tmp), url, REDIS_URL)
                finally:
                    drop_postgres_database(database)
            else:
                latencies = post_to_running(jobs, Path(tmp), None, None)
        print(
            f"POST -> running, warm worker, {label}, {jobs} jobs: "
            f"median {statistics.median(latencies) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every window's steps (longer: steadier)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads on both sides")
    parser.add_argument("--only", default="", help="only the cases whose 'net loss' name contains this text")
    parser.add_argument("--latency", action="store_true", help="also time POST -> running")
    parser.add_argument("--jobs", type=int, default=5, help="jobs timed by --latency")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"trainer (store sink; metrics every {DEFAULT.metrics} steps, snapshots every {DEFAULT.samples}, "
        f"checkpoints every {DEFAULT.checkpoint}: the spec's defaults) / bare PyTorch loop; CPU, "
        f"{args.threads} thread(s), EMA off, best of {args.repeats}"
    )
    for net_name, net in NETS.items():
        data = load_builtin(net["dataset"]["builtin"], net["dataset"].get("resize"))
        for loss in LOSSES:
            if args.only not in f"{net_name} {loss}":
                continue
            window = max(10, round(WINDOWS[net_name, loss] * args.scale))
            bare, served, best = 0.0, 0.0, None
            for _ in range(args.repeats):
                bare = max(bare, bare_steps_per_sec(spec_for(net, loss, window + 1), data, window))
                with tempfile.TemporaryDirectory() as tmp:
                    timing = trainer_timing(net, loss, window, data, Path(tmp))
                if timing.steps_per_sec(DEFAULT) > served:
                    served, best = timing.steps_per_sec(DEFAULT), timing
            assert best is not None
            print(
                f"  {net_name:32s} {loss:8s} {window:4d} steps: bare {bare:7.2f} steps/s, trainer {served:7.2f} "
                f"steps/s, ratio {served / bare:.3f}  (trainer: step {best.ordinary * 1000:.1f} ms, "
                f"snapshot +{best.snapshot * 1000:.0f} ms, checkpoint +{best.checkpoint * 1000:.0f} ms)",
                flush=True,
            )
    if args.latency:
        latency(args.jobs)


if __name__ == "__main__":
    main()
