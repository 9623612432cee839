"""The service's sink: the trainer's output goes to the job store and the artifact store.

A background thread holds the job's lease: every `metrics_flush_seconds` it writes
the buffered metrics and the progress in one commit (which renews the heartbeat)
and reads back the job's status, so a cancel is seen within about a second and
the training loop itself never waits on the database. If the store is
unreachable the buffer is kept and written when it answers again.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch
from safetensors.torch import save_file
from sqlalchemy.exc import InterfaceError, OperationalError

from models.artifacts import ArtifactStore
from models.pictures import image_grid, npy_bytes, scatter
from models.records import JobStatus
from models.store import JobStore, MetricPoint

log = logging.getLogger(__name__)
T = TypeVar("T")
# Connection-level failures: the store is away (restarting, unreachable), not a bug in the write.
STORE_ERRORS = (OperationalError, InterfaceError)


class StoreLost(Exception):
    """The job store stayed away longer than the grace period."""


def job_prefix(job_id: str) -> str:
    return f"jobs/{job_id}"


class StoreSink:
    def __init__(
        self,
        *,
        store: JobStore,
        artifacts: ArtifactStore,
        job_id: str,
        worker: str,
        attempt: int,
        spec_json: dict[str, Any],
        real_points: np.ndarray | None,
        flush_seconds: float,
        scratch_dir: str,
        store_grace_seconds: float = 300.0,
    ) -> None:
        self.store, self.artifacts = store, artifacts
        self.job_id, self.worker, self.attempt = job_id, worker, attempt
        self.spec_json = spec_json
        self.real_points = real_points
        self.flush_seconds = flush_seconds
        self.scratch_dir = scratch_dir
        self._buffer: list[MetricPoint] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._step = 0
        self._rate: deque[tuple[float, int]] = deque(maxlen=30)
        self.stop_reason: str | None = None  # "cancel", "lost", "shutdown", "store lost"
        self.store_grace_seconds = store_grace_seconds
        self._failing_since: float | None = None
        self._stop = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job_id}", daemon=True)

    # ------------------------------------------------------------------ lease thread

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop the lease thread after writing everything still buffered."""
        self._closed.set()
        self._thread.join()
        if self.stop_reason != "store lost":
            try:
                self._retrying(self.flush)
            except StoreLost:
                pass  # the job stays `running`; the reconciler re-queues it and it resumes from its checkpoint

    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stop.set()

    def _run(self) -> None:
        while not self._closed.wait(self.flush_seconds):
            try:
                self.flush()
            except STORE_ERRORS:  # the store is away: the buffer is kept, the next tick tries again
                self._store_failed()

    def _store_failed(self) -> None:
        """Note a failed store write; past the grace period, stop the job with a local checkpoint."""
        now = time.monotonic()
        self._failing_since = self._failing_since or now
        away = now - self._failing_since
        log.warning("job %s: the job store has not answered for %.1f s", self.job_id, away)
        if away > self.store_grace_seconds:
            self.request_stop("store lost")
            raise StoreLost(f"the job store has not answered for {away:.0f} s")

    def _retrying(self, write: Callable[[], T]) -> T:
        """A store write, retried while the store is away (raises StoreLost after the grace period)."""
        delay = 0.2
        while True:
            try:
                return write()
            except STORE_ERRORS:
                self._store_failed()
                time.sleep(delay)
                delay = min(2 * delay, 2.0)

    def flush(self) -> None:
        """Write the buffered metrics and the progress in one commit; the buffer is kept if it fails."""
        with self._flush_lock:
            with self._lock:
                points, self._buffer = self._buffer, []
                step = self._step
            try:
                status = self.store.record_progress(
                    job_id=self.job_id,
                    worker=self.worker,
                    attempt=self.attempt,
                    step=step,
                    steps_per_sec=self._steps_per_sec(),
                    points=points,
                )
            except Exception:
                with self._lock:
                    self._buffer = points + self._buffer
                raise
            self._failing_since = None
        if status is None:
            self.request_stop("lost")
        elif status == JobStatus.CANCELLING:
            self.request_stop("cancel")

    def _steps_per_sec(self) -> float | None:
        with self._lock:
            if len(self._rate) < 2:
                return None
            (t0, s0), (t1, s1) = self._rate[0], self._rate[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 else None

    # ------------------------------------------------------------------ Sink

    def metrics(self, step: int, values: dict[str, float]) -> None:
        with self._lock:
            self._buffer.extend(MetricPoint(name, step, value) for name, value in values.items())
            self._step = step
            self._rate.append((time.monotonic(), step))

    def should_stop(self) -> bool:
        return self._stop.is_set()

    def sample(
        self, step: int, samples: np.ndarray, labels: np.ndarray | None, evaluation: dict[str, float] | None
    ) -> None:
        prefix = f"{job_prefix(self.job_id)}/samples/{step:09d}"
        if samples.ndim == 4:
            png = image_grid(samples)
        else:
            assert self.real_points is not None
            png = scatter(samples, self.real_points)
        self.artifacts.put_bytes(f"{prefix}.npy", npy_bytes(samples.astype(np.float32)))
        self.artifacts.put_bytes(f"{prefix}.png", png)
        try:
            self._retrying(
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

    def checkpoint(self, step: int, weights: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        try:
            if self.stop_reason == "store lost":
                raise StoreLost("the job store is away")
            # Metrics up to this step are committed before the checkpoint is, so a resume never skips any.
            self._retrying(self.flush)
        except StoreLost:
            # No store to record it in: keep the unwritten metrics inside the checkpoint;
            # the worker that resumes it writes them first (see worker/tasks.py).
            with self._lock:
                state = {**state, "pending_metrics": [[p.name, p.step, p.value] for p in self._buffer]}
                self._buffer = []
            self._write_checkpoint(step, weights, state)
            return
        weights_key, state_key, size = self._write_checkpoint(step, weights, state)
        try:
            self._retrying(
                lambda: self.store.add_checkpoint(
                    job_id=self.job_id, step=step, weights_key=weights_key, state_key=state_key, size_bytes=size
                )
            )
        except StoreLost:
            pass  # the files are complete; the worker that resumes the job registers them

    def _write_checkpoint(
        self, step: int, weights: dict[str, torch.Tensor], state: dict[str, Any]
    ) -> tuple[str, str, int]:
        prefix = f"{job_prefix(self.job_id)}/checkpoints/{step:09d}"
        os.makedirs(self.scratch_dir, exist_ok=True)
        metadata = {"format": "ganforge", "job_id": self.job_id, "step": str(step), "spec": json.dumps(self.spec_json)}
        with tempfile.NamedTemporaryFile(dir=self.scratch_dir, suffix=".safetensors", delete=False) as handle:
            weights_path = handle.name
        save_file(weights, weights_path, metadata=metadata)
        size = os.path.getsize(weights_path)
        self.artifacts.put_file(f"{prefix}.safetensors", weights_path)
        buffer = io.BytesIO()
        torch.save(state, buffer)
        # The state file is written last: its presence marks a complete checkpoint.
        self.artifacts.put_bytes(f"{prefix}.state.pt", buffer.getvalue())
        return f"{prefix}.safetensors", f"{prefix}.state.pt", size + buffer.tell()
