"""A training worker's own Prometheus metrics, served by its pool process on GANFORGE_WORKER_METRICS_PORT.

    ganforge worker --metrics-port 9101        # then: curl http://127.0.0.1:9101/metrics

The pool process that trains serves them (one job at a time per process, so its figures are the job's); a
generate worker (`ganforge worker --generate`) serves none. Off unless the port is set, and then nothing is recorded
(a step costs no telemetry call beyond one flag check).

| name | type | what |
|---|---|---|
| ganforge_worker_steps_per_second{job_id} | gauge | the job's rate over its last STEPS_WINDOW steps; kept after it ends until the next job |
| ganforge_worker_job{job_id,attempt} | gauge | 1 while the job trains here, 0 after it ended (until the next job) |
| ganforge_worker_step_seconds | histogram | wall seconds between two training steps (metrics, snapshots and checkpoints included) |
| ganforge_worker_checkpoint_write_seconds | histogram | seconds to write one checkpoint's files |
| ganforge_worker_store_write_seconds{operation} | histogram | seconds of each job-store write (record_progress, add_checkpoint, ...) |
| ganforge_worker_jobs_total{outcome} | counter | jobs this process ended, by how (succeeded, failed, cancelled, handed back, ...) |
| ganforge_worker_gpu_max_memory_allocated_bytes{device} | gauge | torch.cuda.max_memory_allocated, on a CUDA worker |
| process_* | | the pool process's CPU, memory, open files (prometheus_client's process collector) |
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, cast

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from models.settings import Settings
from models.store import JobStore

log = logging.getLogger(__name__)

STEPS_WINDOW = 100
# The job-store writes a worker makes (models/store/lease.py, results.py, alerts.py): each one is timed.
TIMED_WRITES = frozenset(
    {
        "claim_next",
        "record_progress",
        "add_sample",
        "add_checkpoint",
        "add_alert",
        "finish",
        "hand_back",
        "forgive_attempt",
        "add_compute_seconds",
    }
)
BIND_ATTEMPTS = 20  # a pool process replacing a dead one may find the port still held for a moment

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
STEP_SECONDS = Histogram(
    "ganforge_worker_step_seconds",
    "wall seconds between two training steps (metrics, snapshots and checkpoints included)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
CHECKPOINT_SECONDS = Histogram(
    "ganforge_worker_checkpoint_write_seconds",
    "seconds to write one checkpoint's files (weights and resume state)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
    registry=REGISTRY,
)
STORE_SECONDS = Histogram(
    "ganforge_worker_store_write_seconds",
    "seconds of each job-store write this worker made, failed ones included",
    ["operation"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
JOBS = Counter("ganforge_worker_jobs", "jobs this worker process ended, by outcome", ["outcome"], registry=REGISTRY)


class _Job:
    """The job this process trains (or trained last): its id, attempt and step clock."""

    def __init__(self, job_id: str, attempt: int) -> None:
        self.job_id, self.attempt = job_id, attempt
        self.running = True
        self.ticks: deque[float] = deque(maxlen=STEPS_WINDOW)

    def steps_per_second(self) -> float | None:
        ticks = list(self.ticks)  # a copy: the training thread appends meanwhile
        if len(ticks) < 2 or ticks[-1] <= ticks[0]:
            return None
        return (len(ticks) - 1) / (ticks[-1] - ticks[0])


_job: _Job | None = None
# Set once this process serves its metrics: until then (the default, no port) step() and timed_store() cost nothing.
_enabled = False


def job_started(job_id: str, attempt: int) -> None:
    """This process starts training `job_id` (its previous job's series go)."""
    global _job
    _job = _Job(job_id, attempt)


def job_ended(outcome: str) -> None:
    """The current job ended (`outcome`: a status or how it stopped); its series stay until the next job."""
    if _job is not None:
        _job.running = False
    JOBS.labels(outcome=outcome).inc()


def step() -> None:
    """One training step was taken (the sink's per-step call): times it and feeds the job's rate."""
    job = _job
    if job is None or not _enabled:
        return
    now = time.perf_counter()
    if job.ticks:
        STEP_SECONDS.observe(now - job.ticks[-1])
    job.ticks.append(now)


@contextmanager
def timed_checkpoint() -> Iterator[None]:
    """Time the checkpoint write inside (ganforge_worker_checkpoint_write_seconds)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        CHECKPOINT_SECONDS.observe(time.perf_counter() - started)


class _TimedStore:
    """`store` with each of TIMED_WRITES timed into ganforge_worker_store_write_seconds{operation}."""

    def __init__(self, store: JobStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if name not in TIMED_WRITES:
            return attribute
        histogram = STORE_SECONDS.labels(operation=name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return attribute(*args, **kwargs)
            finally:
                histogram.observe(time.perf_counter() - started)

        return timed


def timed_store(store: JobStore) -> JobStore:
    """`store`, its writes timed (reads pass through untouched); `store` itself while no metrics are served."""
    return cast(JobStore, _TimedStore(store)) if _enabled else store


class _JobAndDevice(Collector):
    """The current job's rate and identity, and the CUDA allocator's peak, read when Prometheus scrapes."""

    def collect(self) -> Iterable[Metric]:
        job = _job
        rate = GaugeMetricFamily(
            "ganforge_worker_steps_per_second",
            "training steps per second of the job, last 100 steps",
            labels=["job_id"],
        )
        current = GaugeMetricFamily(
            "ganforge_worker_job",
            "1 while the job trains on this process, 0 once it ended",
            labels=["job_id", "attempt"],
        )
        if job is not None:
            per_second = job.steps_per_second()
            if per_second is not None:
                rate.add_metric([job.job_id], per_second)
            current.add_metric([job.job_id, str(job.attempt)], 1.0 if job.running else 0.0)
        yield from (rate, current)
        memory = GaugeMetricFamily(
            "ganforge_worker_gpu_max_memory_allocated_bytes",
            "peak bytes of GPU memory allocated by this process's tensors (torch.cuda.max_memory_allocated)",
            labels=["device"],
        )
        for device, peak in _gpu_peaks():
            memory.add_metric([device], peak)
        yield memory


def _gpu_peaks() -> list[tuple[str, float]]:
    """(cuda:i, peak bytes) of each GPU this process allocated on; none before CUDA was used (never initialises it)."""
    import torch

    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return []
    peaks = [(f"cuda:{i}", float(torch.cuda.max_memory_allocated(i))) for i in range(torch.cuda.device_count())]
    return [(device, peak) for device, peak in peaks if peak > 0]


REGISTRY.register(_JobAndDevice())


def serve(settings: Settings, queues: Iterable[str], generate_queue: str) -> threading.Thread | None:
    """Serve REGISTRY on settings.worker_metrics_host:worker_metrics_port from a background thread, unless the port
    is unset or this worker consumes only `generate_queue`. A port in use is tried again for a few seconds (the pool
    process this one replaces may still hold it), then given up with an error in the log, never a dead worker."""
    global _enabled
    port, host = settings.worker_metrics_port, settings.worker_metrics_host
    if port is None or set(queues) <= {generate_queue}:
        return None
    _enabled = True

    def bind() -> None:
        for attempt in range(BIND_ATTEMPTS):
            try:
                start_http_server(port, addr=host, registry=REGISTRY)
            except OSError as exc:
                if attempt == BIND_ATTEMPTS - 1:
                    log.error("worker metrics: cannot listen on %s:%d (%s): not served", host, port, exc)
                    return
                time.sleep(0.5)
                continue
            log.info("worker metrics at http://%s:%d/metrics", host, port)
            return

    thread = threading.Thread(target=bind, name="metrics-bind", daemon=True)
    thread.start()
    return thread
