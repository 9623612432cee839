"""The reconciler: the store is the truth, so the API re-sends what the broker may have lost.

Every `reconcile_seconds` it (1) re-queues running jobs whose worker stopped renewing
its lease (or fails them after max_attempts), (2) wakes workers, on each job's named queue, for queued jobs of
queues a live worker serves that may start and waited
past `redeliver_seconds` since their last message: at most WAKE_UPS_PER_PASS (8) per pass and at most each
owner's free running-jobs slots, whatever the queue's length (a worker claims by fair share whichever job is
next, models/store/lease.py claim_next), (3) fails generate requests no generate worker took or finished within
`generate_expire_seconds`, and (4) deletes generate results older than `generate_result_ttl_seconds` or past an
owner's `generate_max_results_per_owner` (the requests read as expired). A duplicate message is harmless: the
worker's claim is conditional, and a worker that finds no job it may start returns.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from celery import Celery

from models.artifacts import ArtifactStore
from models.queue import send_train
from models.settings import Settings
from models.store import JobStore
from models.store.generations import delete_generation_results

log = logging.getLogger(__name__)

# The most wake-ups one pass sends for jobs that waited past redeliver_seconds: 1,000 queued jobs cost at most
# this many messages a pass (and none while their owners are at quota), not one each; each claims one job.
WAKE_UPS_PER_PASS = 8


def reconcile_once(
    store: JobStore, broker: Celery, settings: Settings, artifacts: ArtifactStore | None = None
) -> list[str]:
    """One pass; returns the job ids sent to the broker. `artifacts`: where generate results are deleted from
    (default: the settings' artifact store)."""
    ids = store.requeue_silent_jobs(lease_timeout=timedelta(seconds=settings.lease_timeout_seconds))
    # Wake-ups only for queues a live worker serves: one for a queue nobody consumes would pile up in the broker.
    heartbeat = timedelta(seconds=settings.worker_heartbeat_seconds)
    ids += store.wake_ups(
        older_than=timedelta(seconds=settings.redeliver_seconds),
        quotas_of=settings.quotas,
        limit=WAKE_UPS_PER_PASS,
        queues=store.served_queues(within=2 * heartbeat),
    )
    queues = store.queues_of(job_ids=ids)
    for job_id in ids:
        send_train(broker, job_id, queues.get(job_id))
    store.forget_silent_workers(older_than=10 * heartbeat)
    if ids:
        log.info("reconciler sent %d wake-up(s) for job(s): %s", len(ids), ", ".join(ids))
    # A generate request is short: one no worker took (or finished) in time is failed with the reason, not re-sent.
    expire = timedelta(seconds=settings.generate_expire_seconds)
    expired = store.expire_generations(queued_for=expire, running_for=expire)
    if expired:
        log.info("reconciler failed %d stale generate request(s): %s", len(expired), ", ".join(expired))
    delete_generation_results(
        store, artifacts or ArtifactStore(settings.artifacts_url, settings.artifacts_options), settings
    )
    return ids


class Reconciler:
    def __init__(
        self, store: JobStore, broker: Celery, settings: Settings, artifacts: ArtifactStore | None = None
    ) -> None:
        self.store, self.broker, self.settings = store, broker, settings
        self.artifacts = artifacts or ArtifactStore(settings.artifacts_url, settings.artifacts_options)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reconciler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.settings.reconcile_seconds):
            try:
                reconcile_once(self.store, self.broker, self.settings, self.artifacts)
            except Exception:  # store or broker away: try again next round
                log.warning("reconciler pass failed", exc_info=True)
