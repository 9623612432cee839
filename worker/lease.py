"""The lease keeper: the background thread that holds a running job's lease in the job store.

Every `flush_seconds` it writes the buffered metric points and the progress in one
`record_progress` commit (which renews the lease) and reads back the job's status,
so a cancel is seen within about a flush interval and the training loop never
waits on the database. While the store is away the buffer is kept and written when
it answers again; past `grace_seconds` of silence the keeper asks the loop to stop
("store lost"), because the reconciler will by then have given the lease away.

    keeper = LeaseKeeper(store=store, job_id=job.id, worker=name, token=job.lease_token,
                         flush_seconds=1.0, grace_seconds=60.0)
    keeper.start()
    keeper.record(step, {"loss_d": 0.7})    # from the sink, never blocks on the store
    keeper.close()                          # writes what is left; safe to call twice
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Literal, TypeVar

from sqlalchemy.exc import InterfaceError, OperationalError

from models.records import JobStatus
from models.store import JobStore, MetricPoint

log = logging.getLogger(__name__)
T = TypeVar("T")
# Connection-level failures: the store is away (restarting, unreachable), not a bug in the write.
STORE_ERRORS = (OperationalError, InterfaceError)
StopReason = Literal["cancel", "lost", "shutdown", "store lost"]
TICKS_KEPT = 1000  # the step clock's window: the rate over the last this many steps
GIL_SWITCH_SECONDS = 0.001  # LeaseKeeper.start: the longest the flush thread holds the GIL before the trainer may run


class StoreLost(Exception):
    """The job store stayed away longer than the grace period."""


class LeaseKeeper:
    """Holds one claimed job's lease: buffers metrics and progress, flushes them, notices cancel and loss."""

    def __init__(
        self,
        *,
        store: JobStore,
        job_id: str,
        worker: str,
        token: int,
        flush_seconds: float,
        grace_seconds: float,
    ) -> None:
        self.store = store
        self.job_id, self.worker, self.token = job_id, worker, token
        self.flush_seconds, self.grace_seconds = flush_seconds, grace_seconds
        self.stop_reason: StopReason | None = None
        self._buffer: list[MetricPoint] = []
        self._step = 0
        self._rate: deque[tuple[float, int]] = deque(maxlen=30)
        # The loop's per-step clock (tick): a rate before two progress points exist (the first metrics interval).
        self._ticks: deque[float] = deque(maxlen=TICKS_KEPT)
        self._lock = threading.Lock()  # guards the buffer, the step and the rate window
        self._flush_lock = threading.Lock()  # one record_progress at a time, so progress never goes back
        self._failing_since: float | None = None
        self._stop = threading.Event()
        self._closing = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"lease-{job_id}", daemon=True)

    # ------------------------------------------------------------------ what the sink calls

    def record(self, step: int, values: dict[str, float]) -> None:
        """Buffer one step's metric values and advance the progress to `step` (no store access)."""
        with self._lock:
            self._buffer.extend(MetricPoint(name, step, value) for name, value in values.items())
            self._advance(step)

    def tick(self) -> None:
        """One training step was taken (no store access): the rate shown until two progress points exist."""
        with self._lock:
            self._ticks.append(time.monotonic())

    def add_points(self, points: Iterable[MetricPoint]) -> None:
        """Buffer points written by someone else (a predecessor's unwritten metrics); progress unchanged."""
        with self._lock:
            self._buffer.extend(points)

    def advance(self, step: int) -> None:
        """Move the progress to `step` (it never goes back)."""
        with self._lock:
            self._advance(step)

    def _advance(self, step: int) -> None:
        if step > self._step:
            self._step = step
            self._rate.append((time.monotonic(), step))

    def take_pending(self) -> list[MetricPoint]:
        """Empty the buffer and return it (to keep inside a local checkpoint when the store is away)."""
        with self._lock:
            points, self._buffer = self._buffer, []
        return points

    def should_stop(self) -> bool:
        """True once the job was cancelled, the lease lost, the store lost, or a shutdown asked for."""
        return self._stop.is_set()

    def request_stop(self, reason: StopReason) -> None:
        """Ask the loop to stop; the first reason given is the one kept."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stop.set()

    @property
    def store_lost(self) -> bool:
        return self.stop_reason == "store lost"

    # ------------------------------------------------------------------ writing

    def flush(self) -> None:
        """Write the buffered points and the progress in one commit; the buffer is kept if it fails.

        Raises the store's connection errors (STORE_ERRORS) when it is away.
        """
        with self._flush_lock:
            with self._lock:
                points, self._buffer = self._buffer, []
                step = self._step
            try:
                status = self.store.record_progress(
                    job_id=self.job_id,
                    worker=self.worker,
                    token=self.token,
                    step=step,
                    steps_per_sec=self._steps_per_sec(),
                    points=points,
                )
            except BaseException:
                with self._lock:
                    self._buffer = points + self._buffer
                raise
            self._failing_since = None
        if status is None:
            self.request_stop("lost")
        elif status == JobStatus.CANCELLING:
            self.request_stop("cancel")

    def retrying(self, write: Callable[[], T]) -> T:
        """Run a store write, retried while the store is away; raises StoreLost past the grace period."""
        delay = 0.2
        while True:
            try:
                return write()
            except STORE_ERRORS:
                self._store_failed()
                time.sleep(delay)
                delay = min(2 * delay, 2.0)

    def _store_failed(self) -> None:
        """Note a failed store write; past the grace period, stop the job (raises StoreLost)."""
        now = time.monotonic()
        self._failing_since = self._failing_since or now
        away = now - self._failing_since
        log.warning("job %s: the job store has not answered for %.1f s", self.job_id, away)
        if away > self.grace_seconds:
            self.request_stop("store lost")
            raise StoreLost(f"the job store has not answered for {away:.0f} s")

    def _steps_per_sec(self) -> float | None:
        with self._lock:
            if len(self._rate) < 2:
                # Early in a run (a slow step, a long metrics interval) the step clock gives the rate at once.
                if len(self._ticks) < 2:
                    return None
                t0, t1 = self._ticks[0], self._ticks[-1]
                return (len(self._ticks) - 1) / (t1 - t0) if t1 > t0 else None
            (t0, s0), (t1, s1) = self._rate[0], self._rate[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 else None

    # ------------------------------------------------------------------ the thread

    def start(self) -> None:
        """Start flushing every `flush_seconds` in the background; the process's GIL switch interval is lowered to
        GIL_SWITCH_SECONDS at most (sys.setswitchinterval)."""
        # A flush is 5-15 ms of Python (SQLAlchemy, the chunk merge) holding the GIL: at CPython's default 5 ms
        # interval the training thread, which needs the GIL between its torch calls, waited up to 5 ms per call
        # while it ran (bench/ingest.py's fleet: overlapping steps p50 7.3 against 5.4 ms; a flush-like CPU burn
        # beside a 5 ms step: 10.2 ms at 5 ms, 6.4 ms at 1 ms).
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_SECONDS))
        self._thread.start()

    def _run(self) -> None:
        while not self._closing.wait(self.flush_seconds):
            try:
                self.flush()
            except STORE_ERRORS:  # the store is away: the buffer is kept, the next tick tries again
                try:
                    self._store_failed()
                except StoreLost:
                    return

    def close(self) -> None:
        """Stop the thread, then write what is still buffered (retried up to the grace period).

        Idempotent. When the store is lost the buffer is left for a local checkpoint: the
        job stays `running`, the reconciler re-queues it and it resumes from that checkpoint.
        """
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        if self._thread.is_alive():
            self._thread.join()
        if self.store_lost:
            return
        try:
            self.retrying(self.flush)
        except StoreLost:
            log.warning("job %s: closing without writing %d metric points", self.job_id, len(self._buffer))

    def __enter__(self) -> LeaseKeeper:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
