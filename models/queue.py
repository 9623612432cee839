"""The Celery app both sides share: the API sends with it, the worker consumes with it.

A training message is only a wake-up call: the worker claims whichever queued job the store's scheduler
picks (fair share, priority, running-jobs quota), and the job id it carries is a hint for logs. The job
store is the record of what runs (see DESIGN.md), so a lost message is re-sent by the reconciler and a
duplicate claims the next job or nothing.
"""

from __future__ import annotations

from celery import Celery
from kombu.transport import TRANSPORT_ALIASES

from models.artifacts import keep_files_private
from models.settings import Settings

# `filesystem://` means our atomic-write subclass of kombu's transport (models/fs_transport.py).
TRANSPORT_ALIASES["filesystem"] = "models.fs_transport:Transport"

TRAIN_TASK = "ganforge.train"
GENERATE_TASK = "ganforge.generate"
VISIBILITY_TIMEOUT_SECONDS = 24 * 3600


def make_celery(settings: Settings) -> Celery:
    """The Celery app for `settings.broker_url` (file-system folders are created; nothing connects yet).

    Makes this process's files private (models.artifacts.keep_files_private): a worker starts here.
    """
    keep_files_private()
    app = Celery("ganforge", broker=settings.broker_url)
    transport_options: dict[str, object] = {}
    if settings.broker_url.startswith("filesystem"):
        # kombu's file-system transport: processes on one machine share a folder, no server needed.
        folder = settings.broker_dir
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        transport_options = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
            # The default 1 s poll would add up to a second between POST and running.
            "polling_interval": 0.1,
        }
    elif settings.broker_url.startswith(("redis://", "rediss://")):
        # The job row's lease decides what runs, not the broker: a day (as Airflow), not Redis's hour, so a training job is not re-delivered mid-run; a lost one the reconciler re-sends, a duplicate is a no-op claim.
        transport_options = {"visibility_timeout": VISIBILITY_TIMEOUT_SECONDS}
    app.conf.update(
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        task_default_queue=settings.queue,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        # One long training job per worker process: fetch one message at a time,
        # acknowledge it after the task ends, and give it back if the process dies.
        worker_prefetch_multiplier=1,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
    )
    return app


def send_train(app: Celery, job_id: str, queue: str | None = None) -> None:
    """Wake a worker of the named `queue` (the job's; None: the default queue, GANFORGE_QUEUE) to claim the next
    queued job of its queues; `job_id` (the job whose submission or end sent it) is a hint."""
    app.send_task(
        TRAIN_TASK, args=[job_id], queue=queue, retry=True, retry_policy={"max_retries": 3, "interval_start": 0.2}
    )


def worker_queues(settings: Settings) -> list[str]:
    """The named queues a training worker serves: GANFORGE_WORKER_QUEUES (comma-separated, set by `ganforge worker
    --queue`), else the default queue GANFORGE_QUEUE."""
    named = [name.strip() for name in settings.worker_queues.split(",") if name.strip()]
    return list(dict.fromkeys(named)) or [settings.queue]


def generate_queue(settings: Settings) -> str:
    """The queue of generate requests: a short one of its own, so a request never waits behind training jobs."""
    return f"{settings.queue}.generate"


def send_generate(app: Celery, generation_id: str, queue: str) -> None:
    """Wake a generate worker (`ganforge worker --generate`) for `generation_id` on `queue` (generate_queue)."""
    app.send_task(
        GENERATE_TASK,
        args=[generation_id],
        queue=queue,
        retry=True,
        retry_policy={"max_retries": 3, "interval_start": 0.2},
    )
