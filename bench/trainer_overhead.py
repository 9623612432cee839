"""The trainer against a bare PyTorch loop of the same nets, and the time from POST to running.

    python bench/trainer_overhead.py                       # MLP and DCGAN 32 px, nsgan and wgan-gp, on CPU
    python bench/trainer_overhead.py --latency             # also POST -> running (embedded, PostgreSQL + Redis)

1. steps/s of `worker.trainer.train`, with metrics (every 10 steps, diagnostics included), snapshots and
   checkpoints on, written by the service's own sink (SQLite job store, local artifact store, the lease
   thread), against a bare loop written as the papers' code is (a few lines per loss: nsgan as the PyTorch
   DCGAN example, wgan-gp as Gulrajani et al.'s gan_toy.py / gan_64x64.py), on the very same networks
   (built once by worker/gan/factory.py, the same initial weights), batch, device and threads. The bare
   loop uses torch.optim.Adam with its defaults and logs nothing. Printed as trainer / bare (1.00: the
   trainer costs nothing; above 1: it is faster). EMA is off on both sides (the bare loop has none).
   Interleaved, best of --repeats, so a busy machine penalises both sides alike.
2. (--latency) With the embedded default running (a real uvicorn and a real Celery worker, warmed by one
   job), the time from `POST /v1/jobs` to the job being `running`; the same on PostgreSQL + Redis.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import torch
import torch.nn.functional as F
from torch import Tensor, nn

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
from worker.gan import LoadedData, build_gan, load_builtin  # noqa: E402
from worker.lease import LeaseKeeper  # noqa: E402
from worker.sink import StoreSink  # noqa: E402
from worker.trainer import train  # noqa: E402

# name -> (spec body without loss and steps, steps per timing on CPU)
NETS: dict[str, tuple[dict[str, Any], int]] = {
    "MLP (ring8, batch 256)": (
        {"dataset": {"builtin": "ring8"}, "architecture": {"name": "mlp"}, "training": {"batch_size": 256}},
        600,
    ),
    "DCGAN 32 px (digits, batch 64)": (
        {
            "dataset": {"builtin": "digits", "resize": 32},
            "architecture": {"name": "dcgan"},
            "training": {"batch_size": 64},
        },
        12,
    ),
}
LOSSES = ("nsgan", "wgan-gp")


def default_quotas(_owner: str) -> Quotas:
    return Quotas()


def spec_for(net: dict[str, Any], loss: str, steps: int) -> JobSpec:
    body = {**net, "loss": {"name": loss}}
    body["training"] = {**net["training"], "steps": steps, "ema_decay": None, "device": "cpu"}
    # Readings every 10 steps; a snapshot and a checkpoint in the run, and at its last step.
    body["every"] = {"metrics": 10, "samples": max(1, steps // 2), "checkpoint": max(1, steps // 2)}
    return JobSpec.model_validate(body)


# --------------------------------------------------------------------------- the bare loops


def bare_nsgan(
    g: nn.Module, d: nn.Module, sample: Callable[[], Tensor], latent: int, lr: float, betas: Any
) -> Callable[[], None]:
    """The non-saturating GAN as the PyTorch DCGAN example writes it (fresh noise for G, as the papers)."""
    opt_g = torch.optim.Adam(g.parameters(), lr=lr, betas=betas)
    opt_d = torch.optim.Adam(d.parameters(), lr=lr, betas=betas)

    def step() -> None:
        real = sample()
        with torch.no_grad():
            fake = g(torch.randn(real.shape[0], latent))
        loss_d = F.softplus(-d(real).score).mean() + F.softplus(d(fake).score).mean()
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        loss_g = F.softplus(-d(g(torch.randn(real.shape[0], latent))).score).mean()
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()

    return step


def bare_wgan_gp(
    g: nn.Module,
    d: nn.Module,
    sample: Callable[[], Tensor],
    latent: int,
    lr: tuple[float, float],
    betas: Any,
    gp: float,
) -> Callable[[], None]:
    """WGAN-GP as Gulrajani et al.'s code: 5 critic steps with the penalty at x̂ (ε per sample), then G."""
    opt_g = torch.optim.Adam(g.parameters(), lr=lr[0], betas=betas)
    opt_d = torch.optim.Adam(d.parameters(), lr=lr[1], betas=betas)

    def step() -> None:
        for p in d.parameters():
            p.requires_grad = True
        for _ in range(5):
            real = sample()
            with torch.no_grad():
                fake = g(torch.randn(real.shape[0], latent))
            eps = torch.rand(real.shape[0], *([1] * (real.dim() - 1)))
            x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
            (grad,) = torch.autograd.grad(d(x_hat).score.sum(), x_hat, create_graph=True)
            penalty = ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()
            loss_d = d(fake).score.mean() - d(real).score.mean() + gp * penalty
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
        for p in d.parameters():
            p.requires_grad = False  # "to avoid computation", as the official code
        loss_g = -d(g(torch.randn(real.shape[0], latent))).score.mean()
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()

    return step


def bare_steps_per_sec(spec: JobSpec, data: LoadedData) -> float:
    torch.manual_seed(0)
    gan = build_gan(spec, data.info, torch.device("cpu"))  # only for the networks (same init as the trainer's)
    g, d, loss = gan.generator, gan.discriminator, spec.loss
    x, batch = data.x, spec.training.batch_size
    draw = torch.Generator().manual_seed(1)

    def sample() -> Tensor:
        return x[torch.randint(len(x), (batch,), generator=draw)]

    latent = spec.architecture.latent_dim
    if loss.name == "nsgan":
        step = bare_nsgan(g, d, sample, latent, loss.lr_d, tuple(loss.betas))
    else:
        weight = gan.objective.penalty_weight
        step = bare_wgan_gp(g, d, sample, latent, (loss.lr_g, loss.lr_d), tuple(loss.betas), weight)
    step()  # warm-up, as the trainer's first step is counted but its set-up is not
    started = time.perf_counter()
    for _ in range(spec.training.steps):
        step()
    return spec.training.steps / (time.perf_counter() - started)


# --------------------------------------------------------------------------- the trainer


def trainer_steps_per_sec(spec: JobSpec, data: LoadedData, folder: Path) -> float:
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
    sink = StoreSink(
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
    return result.step / result.seconds


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
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every run's steps (longer: steadier)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads on both sides")
    parser.add_argument("--latency", action="store_true", help="also time POST -> running")
    parser.add_argument("--jobs", type=int, default=5, help="jobs timed by --latency")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"trainer (metrics every 10 steps, snapshots, checkpoints, store sink) / bare PyTorch loop; CPU, "
        f"{args.threads} thread(s), EMA off, best of {args.repeats}"
    )
    for net_name, (net, steps) in NETS.items():
        data = load_builtin(net["dataset"]["builtin"], net["dataset"].get("resize"))
        for loss in LOSSES:
            n = max(2, round(steps * args.scale / (5 if loss == "wgan-gp" else 1)))
            spec = spec_for(net, loss, n)
            bare, served = 0.0, 0.0
            for _ in range(args.repeats):
                bare = max(bare, bare_steps_per_sec(spec, data))
                with tempfile.TemporaryDirectory() as tmp:
                    served = max(served, trainer_steps_per_sec(spec, data, Path(tmp)))
            print(
                f"  {net_name:32s} {loss:8s} {n:5d} steps: bare {bare:8.2f} steps/s, trainer {served:8.2f} steps/s, "
                f"ratio {served / bare:.3f}",
                flush=True,
            )
    if args.latency:
        latency(args.jobs)


if __name__ == "__main__":
    main()
