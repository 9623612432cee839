"""The training task: claim the job in the store, train it, record how it ended.

The broker message is a wake-up: the store picks which queued job to claim (LeaseStore.claim_next:
fair share between owners, priority, the running-jobs quota), so a duplicate message claims the next
job or nothing; a job that ends wakes the queue again. A job re-queued after a worker died resumes from
its latest complete checkpoint (worker/checkpoints.py). While it trains, the
lease keeper (worker/lease.py) holds the lease and the sink (worker/sink.py)
writes what the trainer produces.

How a run ends:
  trained all steps         -> succeeded
  diverged                  -> failed, with the first non-finite step
  data set gone or damaged  -> failed, saying so
  raised anything else      -> failed, "training raised an unexpected <builtin class> (ref <6 hex>)": the message
                               (it may hold paths, hosts, SQL) goes only to the worker's log, under that ref
  out of memory             -> failed, "out of memory: ..." (a final failure: the same spec would run out again);
                               GANFORGE_WORKER_ADDRESS_SPACE_BYTES makes an allocation past it a MemoryError here
                               rather than the kernel's OOM killer ending the process, which cannot be told apart
                               from any other death of the process and re-queues the job
  training.watch, stop      -> failed, naming the alert (a final failure: no retry)
  cancelled by the user     -> cancelled, last checkpoint kept
  SIGTERM (deploy, scale)   -> checkpointed and handed back: queued again, no attempt used up
  store away past the grace -> checkpointed locally, marked as a hand-back: the reconciler
                               re-queues the job when its lease expires, and the worker that
                               resumes it gives back the attempt that expiry used up
  lease lost                -> nothing (another worker has the job)
"""

from __future__ import annotations

import gc
import hashlib
import hmac
import logging
import os
import re
import resource
import secrets
import signal
import socket
import threading
import time
import traceback
from functools import lru_cache
from typing import Any

import torch
from celery.signals import worker_process_init

from models.artifacts import ArtifactStore
from models.db import make_engine
from models.logs import job_context, set_process_fields
from models.queue import TRAIN_TASK, generate_queue, send_train
from models.records import JobStatus
from models.retention import retention_of
from models.settings import Settings, get_settings
from models.spec import STORED_SPEC, JobSpec
from models.store import JobStore
from worker import presence, telemetry
from worker.celery_app import app
from worker.checkpoints import LoadedCheckpoint, latest_complete, load_checkpoint, load_weights
from worker.devices import visible_gpus
from worker.gan import LoadedData, load_builtin
from worker.lease import LeaseKeeper, StoreLost
from worker.mlflow_mirror import OFF, Mirror, open_mirror
from worker.sink import StoreSink
from worker.trainer import DeviceUnavailable, Diverged, WatchStop, resolve_device, train
from worker.uploaded import DatasetUnavailable, load_uploaded

log = logging.getLogger(__name__)


@lru_cache(maxsize=4)
def _stores(pid: int) -> tuple[JobStore, ArtifactStore]:  # noqa: ARG001 - the cache key
    # Keyed by pid: engines must be created after the pool forks.
    settings = get_settings()
    artifacts = ArtifactStore(settings.artifacts_url, settings.artifacts_options)
    return JobStore(make_engine(settings.database_url)), artifacts


def stores() -> tuple[JobStore, ArtifactStore]:
    """This process's job store and artifact store."""
    return _stores(os.getpid())


# Keys this process tree's worker ids: without it a host:pid could be recovered by hashing guesses.
_WORKER_ID_KEY = secrets.token_bytes(16)


@lru_cache(maxsize=4)
def _worker_id(pid: int) -> str:
    real = f"{socket.gethostname()}:{pid}"
    opaque = "w-" + hmac.new(_WORKER_ID_KEY, real.encode(), hashlib.sha256).hexdigest()[:8]
    log.info("worker %s is %s", opaque, real)  # the one place that ties the id users see to a host and process
    return opaque


def worker_name() -> str:
    """This process's opaque worker id ("w-" and 8 hex digits), the name a claim records and users read.

    Stable for the process; it names no host or pid. The worker's log says once which host:pid it is.
    """
    return _worker_id(os.getpid())


def serving() -> list[str]:
    """The named training queues this worker consumes (`ganforge worker --queue`; its Celery -Q), which it claims
    jobs from."""
    return presence.training_queues(app.amqp.queues.consume_from)


def _start_process(**_kwargs: Any) -> None:
    # Each pool process says which host:pid its worker id is as it starts, before it claims anything; then takes
    # its share of the cores and says which queues it serves (worker/presence.py).
    presence.start(stores()[0], worker_name(), app.amqp.queues.consume_from, get_settings())
    # Its lines carry its worker id, and it serves its metrics when GANFORGE_WORKER_METRICS_PORT is set.
    set_process_fields(worker=worker_name())
    telemetry.serve(get_settings(), app.amqp.queues.consume_from, generate_queue(get_settings()))


worker_process_init.connect(_start_process, weak=False)


def failure_category(exc: BaseException) -> str:
    """The name of the nearest builtin class of `exc` (RuntimeError, FileNotFoundError, ...): a stable category
    that users may read; an exception's message and a library's class names stay in the worker's log."""
    return next(cls.__name__ for cls in type(exc).__mro__ if cls.__module__ == "builtins")


def failure_ref() -> str:
    """A short reference (6 hex digits) that a user's error text and the worker's log line both carry."""
    return secrets.token_hex(3)


def load_data(spec: JobSpec, store: JobStore, artifacts: ArtifactStore) -> LoadedData:
    """The spec's data set: built-in, or an uploaded one through its canonical reader."""
    if spec.dataset.builtin is not None:
        return load_builtin(spec.dataset.builtin, spec.dataset.resize)
    return load_uploaded(spec.dataset, store=store, artifacts=artifacts)


def resume_from(keeper: LeaseKeeper, store: JobStore, artifacts: ArtifactStore, job_id: str) -> LoadedCheckpoint | None:
    """The job's newest complete checkpoint, settled with the store; None for a fresh start.

    A checkpoint its writer could not register (the store was away) is registered
    now, its unwritten metrics go into the keeper's buffer, and when it was written
    as a hand-back the attempt its writer's expired lease used up is given back.
    Registering comes first, so a crash in between never gives an attempt back twice.
    """
    keys = latest_complete(artifacts, job_id)
    if keys is None:
        return None
    loaded = load_checkpoint(artifacts, keys)
    log.info("resuming job %s from step %d", job_id, keys.step)
    if store.get_checkpoint(job_id=job_id, step=keys.step) is None:
        size = artifacts.size(keys.weights)
        store.add_checkpoint(
            job_id=job_id, step=keys.step, weights_key=keys.weights, state_key=keys.state, size_bytes=size
        )
        if loaded.handed_back is not None:
            store.forgive_attempt(
                job_id=job_id,
                worker=keeper.worker,
                token=keeper.token,
                reason=f"resumed from the checkpoint at step {keys.step} that the previous worker wrote "
                f"while handing the job back ({loaded.handed_back})",
            )
    keeper.add_points(loaded.pending_metrics)
    return loaded


class WarmStartUnavailable(LookupError):
    """The checkpoint a warm start names is gone (deleted after submission); the message is for users."""


def load_init_weights(store: JobStore, artifacts: ArtifactStore, spec: JobSpec) -> dict[str, torch.Tensor] | None:
    """The weights a warm-started job begins from (checked at submission to exist and fit); WarmStartUnavailable
    when its checkpoint went since."""
    if spec.init_from is None:
        return None
    step = None if spec.init_from.step == "latest" else spec.init_from.step
    checkpoint = store.get_checkpoint(job_id=spec.init_from.job, step=step)
    if checkpoint is None:
        raise WarmStartUnavailable(
            f"init_from: job {spec.init_from.job} has no checkpoint at step {spec.init_from.step}"
        )
    return load_weights(artifacts, checkpoint.weights_key)


def limit_address_space(limit_bytes: int) -> None:
    """Lower this process's soft RLIMIT_AS to `limit_bytes` (0: leave it), never above the hard limit.

    An allocation past it then fails in the process (MemoryError, or torch's allocator error) instead of
    the kernel's OOM killer ending it. Raises OSError when the limit cannot be set.
    """
    if not limit_bytes:
        return
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    soft = limit_bytes if hard == resource.RLIM_INFINITY else min(limit_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def out_of_memory(exc: BaseException) -> bool:
    """Whether `exc`, or an exception it was raised from, is a failed allocation: MemoryError,
    torch.OutOfMemoryError (CUDA), or the RuntimeError of torch's CPU allocator ("DefaultCPUAllocator: ...")."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, MemoryError | torch.OutOfMemoryError):
            return True
        if isinstance(current, RuntimeError) and "DefaultCPUAllocator" in str(current):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


_TRIED = re.compile(r"tried to allocate ([0-9.]+) ?(bytes|[KMGT]iB)", re.IGNORECASE)
_UNITS = {"bytes": 1, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


def allocation(detail: str) -> str:
    """ "an allocation of 2.0 GiB" from an allocator's message that says how much it tried to allocate (torch's
    CPU and CUDA allocators do); "an allocation" when it does not say."""
    found = _TRIED.search(detail)
    if found is None:
        return "an allocation"
    size = float(found[1]) * _UNITS[found[2].lower()]
    return f"an allocation of {size / 1024**3:.1f} GiB"


def _release_memory(exc: BaseException) -> None:
    """Free what the failed job held: its frames' locals (the networks, the batch) stay alive through the
    traceback until cleared; the job's end is recorded after this, so it does not run short itself."""
    traceback.clear_frames(exc.__traceback__)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# Set once this pool process was told to shut down: it takes no new job after that.
_shutting_down = threading.Event()


def _shut_down(keeper: LeaseKeeper) -> None:
    _shutting_down.set()
    keeper.request_stop("shutdown")


@app.task(name=TRAIN_TASK, ignore_result=True)  # type: ignore[untyped-decorator]  # Celery ships no types
def train_job(job_id: str) -> str:
    """Run one job to its end; returns what happened (for logs)."""
    store, artifacts = stores()
    store = telemetry.timed_store(store)  # ganforge_worker_store_write_seconds
    if _shutting_down.is_set():
        # Some brokers still deliver during a warm shutdown: pass the message on.
        send_train(app, job_id, store.queues_of(job_ids=[job_id]).get(job_id))
        return "worker shutting down: message passed on"
    worker = worker_name()
    settings = get_settings()
    # The message is a wake-up: the store picks the job (fair share, priority, running-jobs quota), and
    # `job_id` is only the job whose submission or end sent it.
    # A job this worker's GPUs cannot run stays queued (its queue_reason says why) for a worker that can.
    job = store.claim_next(worker=worker, quotas_of=settings.quotas, queues=serving(), gpus=visible_gpus())
    if job is None:
        log.info("woken for job %s: no queued job may start now (none queued, or their owners at quota)", job_id)
        return "nothing to claim"
    keeper = LeaseKeeper(
        store=store,
        job_id=job.id,
        worker=worker,
        token=job.lease_token,
        flush_seconds=settings.metrics_flush_seconds,
        grace_seconds=settings.lease_timeout_seconds,
    )
    telemetry.job_started(job.id, job.attempt)
    # Every line logged while the job runs here (the lease keeper's thread too) carries job_id, attempt and worker.
    with job_context(job_id=job.id, attempt=job.attempt, worker=worker, process=True):
        log.info("job %s: claimed by %s, attempt %d", job.id, worker, job.attempt)
        with open_mirror(job, settings, store, artifacts) as mirror, keeper:  # MLflow: closes after the keeper
            ended = _run(keeper, store, artifacts, job.spec, settings, mirror)
        telemetry.job_ended(ended)
        log.info("job %s: %s", job.id, ended)
    _wake_queue(store)
    return ended


def _wake_queue(store: JobStore) -> None:
    """After a job ends or is handed back, wake a worker if jobs still wait: one held back by its owner's
    running-jobs quota may start now. A lost wake-up is the reconciler's to send again."""
    try:
        hint = store.next_queued()
        if hint is not None:
            send_train(app, hint, store.queues_of(job_ids=[hint]).get(hint))
    except Exception:
        log.warning("could not wake the queue after a job ended; the reconciler will", exc_info=True)


def _add_compute_seconds(keeper: LeaseKeeper, store: JobStore, cpu: float, on_gpu: bool, wall_started: float) -> None:
    """Add this attempt's process CPU seconds, and its wall seconds when it trained on a GPU, to the job."""
    gpu = time.monotonic() - wall_started if on_gpu else 0.0
    if keeper.store_lost:
        return
    try:
        keeper.retrying(
            lambda: store.add_compute_seconds(
                job_id=keeper.job_id, worker=keeper.worker, token=keeper.token, cpu=max(cpu, 0.0), gpu=gpu
            )
        )
    except StoreLost:
        log.warning("job %s: could not record its CPU/GPU seconds: the store stayed away", keeper.job_id)


def _run(
    keeper: LeaseKeeper,
    store: JobStore,
    artifacts: ArtifactStore,
    spec_json: dict[str, Any],
    settings: Settings,
    mirror: Mirror = OFF,
) -> str:
    job_id, worker = keeper.job_id, keeper.worker

    def end(status: str, reason: str, error: str | None = None) -> str:
        keeper.close()  # progress and metrics first, then the final status
        try:
            keeper.retrying(
                lambda: store.finish(
                    job_id=job_id, worker=worker, token=keeper.token, status=status, reason=reason, error=error
                )
            )
        except StoreLost:
            log.error("job %s: could not record %s: the store stayed away", job_id, status)
        return status

    # The lease is held from here on, through data loading too, and SIGTERM hands the job back at any point.
    keeper.start()
    limit_address_space(settings.worker_address_space_bytes)
    previous = signal.signal(signal.SIGTERM, lambda _sig, _frame: _shut_down(keeper))
    try:
        spec = JobSpec.model_validate(spec_json, context=STORED_SPEC)  # as admitted, maybe before today's bounds
        data = load_data(spec, store, artifacts)
        resume = resume_from(keeper, store, artifacts, job_id)
        sink = StoreSink(
            keeper=keeper,
            store=store,
            artifacts=artifacts,
            job_id=job_id,
            spec_json=spec_json,
            real_points=data.x[:2500].numpy() if data.info.kind == "points" else None,
            scratch_dir=str(settings.data_dir / "tmp"),
            class_names=data.info.class_names,
            dataset=data.info,
            mirror=mirror,
            retention=retention_of(
                spec_json, keep_last=settings.checkpoint_keep_last, keep_every=settings.checkpoint_keep_every
            ),
        )
        cpu_started, wall_started, device = time.process_time(), time.monotonic(), None
        try:
            device = resolve_device(spec.training.device)
            init = load_init_weights(store, artifacts, spec)
            result = train(spec, data, sink, device, resume.state if resume else None, init)
        finally:
            sink.close()
            on_gpu = device is not None and device.type == "cuda"
            _add_compute_seconds(keeper, store, time.process_time() - cpu_started, on_gpu, wall_started)
    except Diverged as exc:
        try:
            latest = keeper.retrying(lambda: store.get_checkpoint(job_id=job_id, step=None))
        except StoreLost:
            latest = None
        kept = f"; last good checkpoint at step {latest.step}" if latest else "; no checkpoint was written"
        return end(JobStatus.FAILED, f"training diverged: {exc}{kept}", error=f"{exc}{kept}")
    except (WatchStop, DatasetUnavailable, DeviceUnavailable, WarmStartUnavailable) as exc:  # ours, for users
        return end(JobStatus.FAILED, str(exc), error=str(exc))
    except Exception as exc:
        ref = failure_ref()
        if out_of_memory(exc):
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            log.error("job %s ran out of memory (ref %s): %s", job_id, ref, detail)
            _release_memory(exc)
            limit = settings.worker_address_space_bytes
            where = f" (GANFORGE_WORKER_ADDRESS_SPACE_BYTES: {limit / 1024**3:.1f} GiB)" if limit else ""
            # The allocator's message can name the process (CUDA: "Process 1234 has ..."): only its size is shown.
            ended = (
                f"out of memory{where}: {allocation(detail)} failed (ref {ref}); a smaller batch or network needs less"
            )
            return end(JobStatus.FAILED, ended, error=ended)
        log.exception("job %s failed (ref %s)", job_id, ref)
        error = f"training raised an unexpected {failure_category(exc)} (ref {ref}); the worker's log has the details"
        return end(JobStatus.FAILED, error, error=error)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not result.stopped:
        return end(JobStatus.SUCCEEDED, f"trained {result.step} steps in {result.seconds:.1f} s")
    reason = keeper.stop_reason
    if reason == "cancel":
        return end(JobStatus.CANCELLED, f"cancelled by the user at step {result.step}; checkpoint kept")
    if reason == "shutdown":
        keeper.close()
        why = f"worker {worker} shut down at step {result.step}; checkpointed and handed back"
        try:
            handed = keeper.retrying(
                lambda: store.hand_back(job_id=job_id, worker=worker, token=keeper.token, reason=why)
            )
        except StoreLost:
            handed = False  # the lease expires; the reconciler re-queues it
        if handed:
            return "handed back"  # train_job wakes the queue
        return "lease lost while handing back"
    if reason == "store lost":
        log.warning(
            "job %s: the store is away; checkpointed locally at step %d for the next worker", job_id, result.step
        )
        return "store lost: checkpointed locally"
    return "lease lost"
