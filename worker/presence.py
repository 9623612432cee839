"""A training worker process's share of the machine and its presence in the store.

Threads: torch's default intra-op pool is one thread per core in every process, so N workers on one machine
oversubscribe it N times (measured: a job at 12 steps/s fell to 1 step/s beside one busy process). Each pool
process sets its own: GANFORGE_WORKER_THREADS (`ganforge worker --threads`; `ganforge up --workers N` gives each
of its workers cores ÷ N), else torch's default when OMP_NUM_THREADS is set, else all cores.

Presence: the process upserts its row in the store's `workers` table (models/store/workers.py: the named queues
it consumes, its threads, the GPUs it sees: worker/devices.py visible_gpus, 0 on CPU) now and every
GANFORGE_WORKER_HEARTBEAT_SECONDS from a daemon thread, so the API can say when a job's queue has no live worker, or
none that sees the GPUs the job asks for. A killed process stops renewing and expires after two heartbeats.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Collection

import torch

from models.settings import Settings
from models.store import JobStore
from worker.devices import visible_gpus

log = logging.getLogger(__name__)

# Generate workers consume `<queue>.generate` (models/queue.py generate_queue): never a training queue.
_GENERATE_SUFFIX = ".generate"


def machine_cores() -> int:
    """The CPU cores this process may run on (its affinity mask; os.cpu_count() where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def worker_threads(settings: Settings, environ: dict[str, str] | None = None) -> int:
    """The intra-op threads a training worker process uses: GANFORGE_WORKER_THREADS when set (>0); else torch's
    own default when OMP_NUM_THREADS is set in `environ` (default os.environ); else all cores."""
    environ = dict(os.environ) if environ is None else environ
    if settings.worker_threads > 0:
        return settings.worker_threads
    if environ.get("OMP_NUM_THREADS", "").strip():
        return torch.get_num_threads()
    return machine_cores()


def share_of_cores(workers: int) -> int:
    """Each of `workers` processes' share of this machine's cores: cores ÷ workers, at least 1."""
    return max(1, machine_cores() // max(1, workers))


def training_queues(consumed: Collection[str]) -> list[str]:
    """The training queues among the Celery queues a worker consumes (its generate queue left out), sorted."""
    return sorted(name for name in consumed if not name.endswith(_GENERATE_SUFFIX))


class Presence:
    """Keeps this process's `workers` row fresh every `settings.worker_heartbeat_seconds` until `stop`."""

    def __init__(
        self, store: JobStore, worker: str, queues: list[str], threads: int, settings: Settings, gpus: int = 0
    ) -> None:
        self.store, self.worker, self.queues, self.threads, self.gpus = store, worker, queues, threads, gpus
        self.interval = settings.worker_heartbeat_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worker-presence", daemon=True)

    def beat(self) -> bool:
        """Upsert the row once; False (logged) when the store is away: the next beat tries again."""
        try:
            self.store.register_worker(worker=self.worker, queues=self.queues, threads=self.threads, gpus=self.gpus)
            return True
        except Exception:
            log.warning("could not tell the store that worker %s is alive", self.worker, exc_info=True)
            return False

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()


def start(store: JobStore, worker: str, consumed: Collection[str], settings: Settings) -> Presence | None:
    """In a new pool process: set torch's threads to this worker's share, and start its presence (with the GPUs it
    sees) when it consumes a training queue (a generate worker has none). Returns the Presence (None for a generate
    worker)."""
    threads = worker_threads(settings)
    torch.set_num_threads(threads)
    queues = training_queues(consumed)
    if not queues:
        log.info("worker %s serves no training queue, with %d torch threads", worker, threads)
        return None
    gpus = visible_gpus()
    log.info("worker %s serves queues %s with %d torch threads and %d GPUs", worker, ", ".join(queues), threads, gpus)
    presence = Presence(store, worker, queues, threads, settings, gpus)
    presence.start()
    return presence
