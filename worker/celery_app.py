"""The Celery worker: `celery -A worker.celery_app worker` (or `ganforge worker`).

One training job per worker process: prefork pool, prefetch 1, late acks (models/queue.py).

Graceful shutdown: Celery's warm shutdown would wait for a training job to
finish, which can take hours. On SIGTERM the main process forwards the signal to
its pool processes; the running task checkpoints and hands its job back to the
queue (worker/tasks.py), then the worker exits.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

from celery.signals import worker_init, worker_shutting_down

from models.queue import make_celery
from models.settings import get_settings

log = logging.getLogger(__name__)

app = make_celery(get_settings())
app.conf.update(include=["worker.tasks"], worker_concurrency=1)

_controller: list[Any] = []


@worker_init.connect
def _remember_controller(sender: Any = None, **_kwargs: Any) -> None:
    _controller[:] = [sender]


@worker_shutting_down.connect
def _hand_back_running_jobs(**_kwargs: Any) -> None:
    pool = getattr(_controller[0], "pool", None) if _controller else None
    processes = getattr(getattr(pool, "_pool", None), "_pool", None) or []
    for process in processes:
        pid = getattr(process, "pid", None)
        if pid and pid != os.getpid():
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            log.info("asked pool process %s to checkpoint and hand its job back", pid)
