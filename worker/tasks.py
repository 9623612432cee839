"""The training task: claim the job in the store, train it, record how it ended.

The broker message only names the job. The claim is a conditional UPDATE, so a
duplicate message is a no-op; a job re-queued after a worker died resumes from
its latest checkpoint.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import socket
import threading
import traceback
from functools import lru_cache
from typing import Any

import torch
from safetensors.torch import load as safetensors_load

from models.artifacts import ArtifactStore
from models.db import make_engine
from models.queue import TRAIN_TASK, send_train
from models.records import JobStatus
from models.settings import get_settings
from models.spec import JobSpec
from models.store import JobStore
from worker.celery_app import app
from worker.gan import LoadedData, load_builtin
from worker.sink import StoreSink, job_prefix
from worker.trainer import NonFiniteLoss, resolve_device, train
from worker.uploaded import load_uploaded

log = logging.getLogger(__name__)


@lru_cache(maxsize=4)
def _stores(pid: int) -> tuple[JobStore, ArtifactStore]:
    # Keyed by pid: engines must be created after the pool forks.
    settings = get_settings()
    return JobStore(make_engine(settings.database_url)), ArtifactStore(settings.artifacts_url)


def stores() -> tuple[JobStore, ArtifactStore]:
    return _stores(os.getpid())


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def load_data(spec: JobSpec, store: JobStore, artifacts: ArtifactStore) -> LoadedData:
    if spec.dataset.builtin is not None:
        return load_builtin(spec.dataset.builtin, spec.dataset.resize)
    return load_uploaded(spec.dataset, store=store, artifacts=artifacts)


def load_resume_state(store: JobStore, artifacts: ArtifactStore, job_id: str) -> dict[str, Any] | None:
    """The newest complete checkpoint of the job, from the artifact store.

    A worker that lost the store wrote its last checkpoint without a row: register
    it now and write the metrics it could not.
    """
    states = [key for key in artifacts.list(f"{job_prefix(job_id)}/checkpoints") if key.endswith(".state.pt")]
    if not states:
        return None
    state_key = states[-1]  # zero-padded step numbers sort in step order
    with artifacts.open(state_key) as handle:
        state: dict[str, Any] = torch.load(io.BytesIO(handle.read()), weights_only=True, map_location="cpu")
    step = int(state["step"])
    log.info("resuming job %s from step %d", job_id, step)
    if store.get_checkpoint(job_id=job_id, step=step) is None:
        weights_key = state_key.removesuffix(".state.pt") + ".safetensors"
        size = artifacts.size(weights_key) + artifacts.size(state_key)
        store.add_checkpoint(job_id=job_id, step=step, weights_key=weights_key, state_key=state_key, size_bytes=size)
    return state


def load_init_weights(store: JobStore, artifacts: ArtifactStore, spec: JobSpec) -> dict[str, torch.Tensor] | None:
    """The weights a warm-started job begins from (checked at submission to exist and fit)."""
    if spec.init_from is None:
        return None
    step = None if spec.init_from.step == "latest" else spec.init_from.step
    checkpoint = store.get_checkpoint(job_id=spec.init_from.job, step=step)
    if checkpoint is None:
        raise LookupError(f"init_from: job {spec.init_from.job} has no checkpoint at step {spec.init_from.step}")
    return safetensors_load(artifacts.read_bytes(checkpoint.weights_key))


# Set once this pool process was told to shut down: it takes no new job after that.
_shutting_down = threading.Event()


def _shut_down(sink: StoreSink | None) -> None:
    _shutting_down.set()
    if sink is not None:
        sink.request_stop("shutdown")


@app.task(name=TRAIN_TASK, ignore_result=True)
def train_job(job_id: str) -> str:
    """Run one job to its end; returns what happened (for logs)."""
    store, artifacts = stores()
    if _shutting_down.is_set():
        # Some brokers still deliver during a warm shutdown: pass the message on.
        send_train(app, job_id)
        return "worker shutting down: message passed on"
    worker = worker_name()
    job = store.claim(job_id=job_id, worker=worker)
    if job is None:
        log.info("job %s not claimable (already taken, finished or unknown): message dropped", job_id)
        return "not claimed"
    settings = get_settings()
    spec = JobSpec.model_validate(job.spec)
    sink: StoreSink | None = None

    def end(status: str, reason: str, error: str | None = None) -> str:
        store.finish(job_id=job_id, worker=worker, attempt=job.attempt, status=status, reason=reason, error=error)
        return status

    try:
        data = load_data(spec, store, artifacts)
        resume = load_resume_state(store, artifacts, job_id)
        sink = StoreSink(
            store=store,
            artifacts=artifacts,
            job_id=job_id,
            worker=worker,
            attempt=job.attempt,
            spec_json=job.spec,
            real_points=data.x[:2500].numpy() if data.info.kind == "points" else None,
            flush_seconds=settings.metrics_flush_seconds,
            scratch_dir=str(settings.data_dir / "tmp"),
            store_grace_seconds=settings.lease_timeout_seconds,
        )
        for name, step, value in resume.pop("pending_metrics", []) if resume else []:
            sink.metrics(int(step), {name: float(value)})
        sink.start()
        previous = signal.signal(signal.SIGTERM, lambda _sig, _frame: _shut_down(sink))
        try:
            device = resolve_device(spec.training.device)
            result = train(spec, data, sink, device, resume, load_init_weights(store, artifacts, spec))
        finally:
            signal.signal(signal.SIGTERM, previous)
        sink.close()
    except NonFiniteLoss as exc:
        if sink is not None:
            sink.close()
        latest = store.get_checkpoint(job_id=job_id, step=None)
        kept = f"; last good checkpoint at step {latest.step}" if latest else "; no checkpoint was written"
        return end(JobStatus.FAILED, f"training diverged: {exc}{kept}", error=f"{exc}{kept}")
    except Exception as exc:
        if sink is not None:
            sink.close()
        log.exception("job %s failed", job_id)
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return end(JobStatus.FAILED, f"worker error: {detail}", error=detail)
    if not result.stopped:
        return end(JobStatus.SUCCEEDED, f"trained {result.step} steps in {result.seconds:.1f} s")
    if sink.stop_reason == "cancel":
        return end(JobStatus.CANCELLED, f"cancelled by the user at step {result.step}; checkpoint kept")
    if sink.stop_reason == "shutdown":
        end(JobStatus.QUEUED, f"worker {worker} shut down at step {result.step}; checkpointed and re-queued")
        send_train(app, job_id)
        return "handed back"
    return "lease lost"
