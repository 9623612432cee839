"""Disk kept per job: the default checkpoint retention against keeping every checkpoint (the baseline), same run.

    python bench/retention.py [--steps 6000] [--scale 100] [--hidden 256]

The job is the toy job of issue 14: the spec's defaults (mlp on ring8, nsgan; every.samples 500, every.checkpoint
1000) trained for --steps steps. It runs twice through the worker's real write path (worker.trainer.train into
worker/sink.py StoreSink: a SQLite job store, a local artifact store, the lease thread): once keeping every
checkpoint (the baseline, every.keep_last 0, what ganforge did before retention) and once with the service's
default retention (GANFORGE_CHECKPOINT_KEEP_LAST / _KEEP_EVERY). Disk is summed from the files left in each job's
artifact folder.

--scale K trains steps/K steps with every interval divided by K too: the same checkpoints and snapshots (count and
file sizes: they depend on the networks, not on the step), K times sooner. --scale 1 trains the whole job.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from migrations import upgrade  # noqa: E402
from models.artifacts import ArtifactStore, job_prefix  # noqa: E402
from models.db import make_engine  # noqa: E402
from models.quotas import Quotas  # noqa: E402
from models.retention import Retention, retention_of  # noqa: E402
from models.settings import Settings  # noqa: E402
from models.spec import JobSpec  # noqa: E402
from models.store import JobStore  # noqa: E402
from worker.gan import load_builtin  # noqa: E402
from worker.lease import LeaseKeeper  # noqa: E402
from worker.sink import StoreSink  # noqa: E402
from worker.trainer import train  # noqa: E402

MIB = 1024**2


def toy_spec(steps: int, scale: int, hidden: int, keep_last: int | None) -> dict[str, Any]:
    """The toy job's spec, `scale` times shorter (every interval too); keep_last None: the service default."""
    every = {"metrics": max(1, 10 // scale), "samples": max(1, 500 // scale), "checkpoint": max(1, 1000 // scale)}
    if keep_last is not None:
        every["keep_last"] = keep_last
    return {
        "dataset": {"builtin": "ring8"},
        "architecture": {"name": "mlp", "hidden": hidden},
        "loss": {"name": "nsgan"},
        "training": {"steps": math.ceil(steps / scale), "batch_size": 256},
        "every": every,
    }


def run_job(spec_json: dict[str, Any], retention: Retention, folder: Path) -> dict[str, int]:
    """Train the job through the real sink; bytes and files left in its checkpoints and samples folders."""
    url = f"sqlite:///{folder / 'bench.db'}"
    upgrade(url)
    store = JobStore(make_engine(url))
    artifacts = ArtifactStore(str(folder / "artifacts"))
    spec = JobSpec.model_validate(spec_json)
    job, _ = store.create_job(owner="bench", spec=spec, idempotency_key=None)
    claimed = store.claim_next(worker="bench", quotas_of=lambda _owner: Quotas())
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
        dataset=data.info,
        retention=retention,
    )
    keeper.start()
    torch.manual_seed(0)
    train(spec, data, sink, torch.device("cpu"))
    keeper.close()
    sizes: dict[str, int] = {}
    root = folder / "artifacts" / job_prefix(job.id)
    for kind in ("checkpoints", "samples"):
        files = [p for p in (root / kind).iterdir() if p.is_file()] if (root / kind).exists() else []
        sizes[f"{kind}_bytes"] = sum(p.stat().st_size for p in files)
        sizes[f"{kind}_files"] = len(files)
    sizes["checkpoint_rows"] = len(store.list_checkpoints(job_id=job.id))
    store.engine.dispose()
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6000, help="the toy job's training.steps (default 6000)")
    parser.add_argument("--scale", type=int, default=100, help="train steps/K steps, every interval /K (1: all)")
    parser.add_argument("--hidden", type=int, default=256, help="the MLP's hidden units (the spec default: 256)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    defaults = Settings.model_fields
    keep_last, keep_every = defaults["checkpoint_keep_last"].default, defaults["checkpoint_keep_every"].default
    baseline_spec = toy_spec(args.steps, args.scale, args.hidden, keep_last=0)
    default_spec = toy_spec(args.steps, args.scale, args.hidden, keep_last=None)
    print(
        f"toy job: mlp (hidden {args.hidden}) on ring8, nsgan, {args.steps} steps, samples every 500, checkpoint every "
        f"1000; run at 1/{args.scale} scale: {baseline_spec['training']['steps']} steps, every {baseline_spec['every']}"
    )
    results = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ganforge-retention-") as tmp:
        for name, spec_json in (("keep all (baseline)", baseline_spec), ("default retention", default_spec)):
            retention = retention_of(spec_json, keep_last=keep_last, keep_every=keep_every)
            folder = Path(tmp) / name.split()[0]
            folder.mkdir()
            results[name] = (retention, run_job(spec_json, retention, folder))
    print(f"(both runs took {time.perf_counter() - started:.0f} s)")
    print(f"{'':22} {'retention':28} {'checkpoints':>20} {'samples':>18} {'disk per job':>14}")
    for name, (retention, sizes) in results.items():
        total = sizes["checkpoints_bytes"] + sizes["samples_bytes"]
        print(
            f"{name:22} {retention.describe():28} "
            f"{sizes['checkpoint_rows']:3d} ({sizes['checkpoints_bytes'] / MIB:8.2f} MiB) "
            f"{sizes['samples_files'] // 2:3d} ({sizes['samples_bytes'] / MIB:6.2f} MiB) {total / MIB:10.2f} MiB"
        )
    base, kept = (r[1] for r in results.values())
    ratio = (kept["checkpoints_bytes"] + kept["samples_bytes"]) / (base["checkpoints_bytes"] + base["samples_bytes"])
    ck_ratio = kept["checkpoints_bytes"] / base["checkpoints_bytes"]
    per_checkpoint = base["checkpoints_bytes"] / max(1, base["checkpoint_rows"])
    print(f"disk per job, default / keep-all: {ratio:.2f} (checkpoints alone: {ck_ratio:.2f})")
    print(
        f"bound with the default: at most {keep_last} checkpoints ({keep_last * per_checkpoint / MIB:.2f} MiB of them) "
        "whatever the job's length; keep-all grows with training.steps / every.checkpoint"
    )


if __name__ == "__main__":
    main()
