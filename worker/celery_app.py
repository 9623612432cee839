"""The Celery worker: `celery -A worker.celery_app worker` (or `ganforge worker`).

One training job per worker process: prefork pool, prefetch 1, late acks (models/queue.py).

Graceful shutdown: Celery's warm shutdown would wait for a training job to
finish, which can take hours. On SIGTERM or SIGINT the main process forwards
SIGTERM to the pool processes that run a job; the running task checkpoints and
hands its job back to the queue (worker/tasks.py), then the worker exits. An idle
pool process is left alone: Celery closes it, and a signal would only make Celery
report it as killed.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

from celery.signals import setup_logging, worker_shutting_down
from celery.worker import state as worker_state

from models.logs import configure_logging
from models.queue import TRAIN_TASK, make_celery
from models.settings import get_settings
from worker.devices import select_gpus

log = logging.getLogger(__name__)

select_gpus(get_settings().worker_gpu)  # before any task module initialises CUDA; the pool inherits it
app = make_celery(get_settings())
app.conf.update(include=["worker.tasks", "worker.generate"], worker_concurrency=1)


def running_jobs() -> dict[int, str]:
    """Pool process id → id of the job it runs, for the training tasks this worker's pool has started."""
    running: dict[int, str] = {}
    for request in list(worker_state.active_requests):
        pid, args = getattr(request, "worker_pid", None), getattr(request, "args", None) or ["?"]
        # A generate request (worker/generate.py) lasts seconds: it is left to finish, not signalled.
        if pid and pid != os.getpid() and getattr(request, "name", TRAIN_TASK) == TRAIN_TASK:
            running[int(pid)] = str(args[0])
    return running


def _hand_back_running_jobs(**_kwargs: Any) -> None:
    running = running_jobs()
    if not running:
        log.info("no training job is running; the worker stops now")
    for pid, job_id in running.items():
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        log.info("asked pool process %s to checkpoint job %s and put it back in the queue", pid, job_id)


# weak=False: the receiver lives as long as the app.
worker_shutting_down.connect(_hand_back_running_jobs, weak=False)


def _configure_logging(loglevel: int | str | None = None, **_kwargs: Any) -> None:
    # Connected, Celery leaves logging to us (its own format, and its root-logger takeover, would bypass
    # GANFORGE_LOG_FORMAT); the pool processes call this again as they start.
    configure_logging(get_settings().log_format, loglevel or logging.INFO)


setup_logging.connect(_configure_logging, weak=False)
