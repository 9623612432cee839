"""The service's sink: the trainer's output goes to the lease keeper, the artifact store and the job store.

Metrics go into the lease keeper's buffer (worker/lease.py writes them in the
background); sample snapshots and checkpoints are written to the artifact store
and registered in the job store here. The checkpoint layout is worker/checkpoints.py's.

Order at a checkpoint: progress advanced to the checkpoint's step, metrics and
progress flushed, files written (weights, then state), row added (which also
advances the job's step). So a resume never skips a metric and the job never
shows a step behind its latest checkpoint. With the store away past the grace
period, the checkpoint is written locally with the unwritten metrics inside and
marked as a hand-back; the worker that resumes it registers it. Once a checkpoint is recorded, the job's
retention prunes the older ones (worker/checkpoints.py prune_checkpoints).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from models.artifacts import ArtifactStore, job_prefix
from models.datasets import DatasetInfo
from models.pictures import image_grid, npy_bytes, scatter
from models.retention import Retention
from models.store import JobStore
from worker import telemetry
from worker.checkpoints import WrittenCheckpoint, prune_checkpoints, write_checkpoint
from worker.lease import LeaseKeeper, StoreLost
from worker.mlflow_mirror import OFF, Mirror

log = logging.getLogger(__name__)


class StoreSink:
    """The trainer's `Sink` in the service; see the module docstring for what goes where."""

    def __init__(
        self,
        *,
        keeper: LeaseKeeper,
        store: JobStore,
        artifacts: ArtifactStore,
        job_id: str,
        spec_json: dict[str, Any],
        real_points: np.ndarray | None,
        scratch_dir: str,
        class_names: tuple[str, ...] = (),
        dataset: DatasetInfo | None = None,
        mirror: Mirror = OFF,
        retention: Retention | None = None,
    ) -> None:
        self.keeper, self.store, self.artifacts = keeper, store, artifacts
        self.retention = retention  # None: every checkpoint is kept
        self.job_id = job_id
        self.spec_json = spec_json
        self.real_points = real_points
        self.scratch_dir = scratch_dir
        self.class_names = class_names
        self.dataset = dataset  # written into each checkpoint's metadata
        self.mirror = mirror  # MLflow (worker/mlflow_mirror.py): buffers only, never blocks
        self.last_checkpoint: WrittenCheckpoint | None = None
        self._closed = False

    def metrics(self, step: int, values: dict[str, float]) -> None:
        """Buffer the values; the keeper writes them within a flush interval."""
        self._check_open()
        self.keeper.record(step, values)
        self.mirror.metrics(step, values)

    def should_stop(self) -> bool:
        """True when the keeper saw a cancel, a lost lease, a lost store, or a shutdown was asked for.

        The loop asks once per step: each call is also a tick of the step clock that gives the job a rate (and an
        ETA) within a flush of its first steps, before two metrics intervals have passed.
        """
        self.keeper.tick()
        telemetry.step()  # the worker's steps/s and step-time histogram (GANFORGE_WORKER_METRICS_PORT)
        return self.keeper.should_stop()

    def alert(self, alert: dict[str, Any]) -> None:
        """Record a training.watch alert on the job (jobs.alerts and an `alert` event), fenced by the lease token.

        Written at once (an alert is rare), retried while the store is away; past the grace period it is not
        recorded (the loop stops at this step and the job is handed back).
        """
        self._check_open()
        try:
            self.keeper.retrying(
                lambda: self.store.add_alert(
                    job_id=self.job_id, worker=self.keeper.worker, token=self.keeper.token, alert=alert
                )
            )
        except StoreLost:
            pass  # the loop stops at this step

    def sample(
        self, step: int, samples: np.ndarray, labels: np.ndarray | None, evaluation: dict[str, float] | None
    ) -> None:
        """Write a snapshot (.npy and a .png picture) and register it; finite values only (the trainer checks)."""
        self._check_open()
        prefix = f"{job_prefix(self.job_id)}/samples/{step:09d}"
        if samples.ndim == 4:
            png = image_grid(samples, title=f"step {step}", **self._captions(labels))
        else:
            assert self.real_points is not None, "a points snapshot is drawn over the real points"
            png = scatter(samples, self.real_points, title=f"step {step}")
        self.artifacts.put_bytes(f"{prefix}.npy", npy_bytes(samples.astype(np.float32)))
        self.artifacts.put_bytes(f"{prefix}.png", png)
        self.mirror.sample(step, png)
        try:
            self.keeper.retrying(
                lambda: self.store.add_sample(
                    job_id=self.job_id,
                    step=step,
                    count=len(samples),
                    png_key=f"{prefix}.png",
                    npy_key=f"{prefix}.npy",
                    labels=labels.astype(int).tolist() if labels is not None else None,
                    evaluation=evaluation,
                )
            )
        except StoreLost:
            pass  # the loop stops at this step and checkpoints locally

    def _captions(self, labels: np.ndarray | None) -> dict[str, Any]:
        """image_grid's captions: cgan's class names, InfoGAN's first categorical code (no class of the data)."""
        if labels is None:
            return {}
        indices = [int(label) for label in labels]
        if self.spec_json.get("loss", {}).get("name") == "infogan":
            return {"labels": indices, "class_names": [f"code {i}" for i in range(max(indices) + 1)]}
        return {"labels": indices, "class_names": self.class_names}

    def checkpoint(self, step: int, weights: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        """Write and register the checkpoint at `step`, with the progress and metrics up to it committed first."""
        self._check_open()
        self.keeper.advance(step)
        try:
            if self.keeper.store_lost:
                raise StoreLost("the job store is away")
            self.keeper.retrying(self.keeper.flush)
        except StoreLost:
            # No store to record it in: the unwritten metrics and the hand-back go inside the checkpoint.
            self.last_checkpoint = self._write(step, weights, state, handed_back="store lost", pending=True)
            return
        with telemetry.timed_checkpoint():
            written = self._write(step, weights, state)
        self.last_checkpoint = written
        try:
            self.keeper.retrying(
                lambda: self.store.add_checkpoint(
                    job_id=self.job_id,
                    step=step,
                    weights_key=written.keys.weights,
                    state_key=written.keys.state,
                    size_bytes=written.size_bytes,
                )
            )
        except StoreLost:
            return  # the files are complete; the worker that resumes the job registers them
        self._prune()

    def _prune(self) -> None:
        """Apply the job's retention; a failure only delays it to the next checkpoint (training goes on)."""
        if self.retention is None:
            return
        try:
            prune_checkpoints(self.store, self.artifacts, job_id=self.job_id, retention=self.retention)
        except Exception:
            log.warning(
                "job %s: pruning checkpoints failed; the next checkpoint tries again", self.job_id, exc_info=True
            )

    def _write(
        self,
        step: int,
        weights: dict[str, torch.Tensor],
        state: dict[str, Any],
        handed_back: str | None = None,
        pending: bool = False,
    ) -> WrittenCheckpoint:
        return write_checkpoint(
            self.artifacts,
            job_id=self.job_id,
            step=step,
            weights=weights,
            state=state,
            spec_json=self.spec_json,
            scratch_dir=self.scratch_dir,
            pending_metrics=self.keeper.take_pending() if pending else None,
            handed_back=handed_back,
            dataset=self.dataset,
        )

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"job {self.job_id}: the sink was closed")

    def close(self) -> None:
        """Refuse further writes (idempotent); the keeper is closed by its owner."""
        self._closed = True
