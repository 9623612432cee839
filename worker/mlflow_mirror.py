"""Mirror a training job to an MLflow tracking server, without ever failing or slowing the job.

    with open_mirror(job, settings, store, artifacts) as mirror:   # a no-op Mirror when the job is not mirrored
        mirror.metrics(step, {"loss_d": 0.7})                      # from the sink, in the training loop
        mirror.sample(step, png_bytes)

Where: models/tracking.py (the spec's `mlflow` block, GANFORGE_MLFLOW_TRACKING_URI). What goes to the run
(MLflow's client library, MlflowClient, over its REST API):

- params: the job's stored spec, defaults resolved, flattened to dotted keys (`training.steps`); lists and
  objects as JSON; values cut to MLflow's MAX_PARAM_VAL_LENGTH, keys to its allowed characters;
- metrics with their steps and wall-clock times, in log_batch calls of up to MAX_METRICS_PER_BATCH;
- each sample picture as `samples/<step, 9 digits>.png`, and when the job ends the latest checkpoint's weights as
  `checkpoint/<step, 9 digits>.safetensors`;
- tags ganforge.job_id, ganforge.owner, ganforge.loss, ganforge.attempt; the run's name is the job's name (or id);
- the job's final status, read from the job store when the attempt ends: succeeded → FINISHED, failed → FAILED,
  cancelled → KILLED. An attempt that hands the job back leaves the run RUNNING: the next attempt continues the
  same run, found through the job's `integration` event that recorded its run id.

How it stays out of the job's way: the training loop only appends to a bounded buffer (GANFORGE_MLFLOW_BUFFER_POINTS;
when full the oldest entry is dropped and counted); one background thread sends it about once a second. A request
that fails is retried with exponential backoff (0.5 s doubling to 30 s, jittered) while the buffer keeps filling;
MLflow's own retries are off (MLFLOW_HTTP_REQUEST_MAX_RETRIES=0 unless set) and each request is bounded by
GANFORGE_MLFLOW_TIMEOUT_SECONDS. A request the server refuses as invalid (a 4xx other than 429) is dropped, not
retried. When the attempt ends, its worker waits at most GANFORGE_MLFLOW_DRAIN_SECONDS for the rest, and not at
all when the server was failing already. Trouble is reported in the job's events, kind `integration`, at most
twice an attempt: once when the server first fails, once at the end with what was dropped or never sent.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import tempfile
import threading
import time
from collections import Counter, deque
from types import TracebackType
from typing import Any

from models.artifacts import ArtifactStore
from models.records import Job, JobStatus
from models.settings import Settings
from models.store import JobStore
from models.tracking import TrackingTarget, tracking_problems, tracking_target

log = logging.getLogger(__name__)

INTEGRATION = "mlflow"
SEND_SECONDS = 1.0  # how often a healthy mirror sends what it buffered
BACKOFF_MIN_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0
CLOSING_TRIES = 3  # a server that fails this often in a row once the attempt ended is given up
RUN_STATUS = {JobStatus.SUCCEEDED: "FINISHED", JobStatus.FAILED: "FAILED", JobStatus.CANCELLED: "KILLED"}
# MLflow's limits (mlflow.utils.validation), repeated so the module imports without MLflow.
MAX_PARAM_VAL_LENGTH = 6000
MAX_KEY_LENGTH = 250
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
_NOT_A_NAME = re.compile(r"[^\w.\- :]")  # MLflow's param and metric names: ^[/\w.\- :]*$ ('/' taken out: paths)


class NoClient(RuntimeError):
    """The worker lacks the MLflow client library (the `mlflow` extra); the message says what to install."""


class Mirror:
    """A job that is not mirrored: every call does nothing. `open_mirror` returns this or an MlflowMirror."""

    def metrics(self, step: int, values: dict[str, float]) -> None:
        """Buffer the metric values at `step` (MLflow's step)."""

    def sample(self, step: int, png: bytes) -> None:
        """Buffer the sample picture (PNG bytes) taken at `step`."""

    def close(self) -> None:
        """End the attempt: send the rest, the final checkpoint and the status, waiting a bounded time."""

    def __enter__(self) -> Mirror:
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()


OFF = Mirror()


def open_mirror(job: Job, settings: Settings, store: JobStore, artifacts: ArtifactStore) -> Mirror:
    """The mirror of `job`'s attempt (its thread started), or OFF when the job is not mirrored. Never raises: a
    mirror that cannot start is logged and reported in the job's events, and the job trains unmirrored."""
    block = (job.spec or {}).get("mlflow")
    try:
        target = tracking_target(block, settings)
        if target is None:
            if block is not None:  # allowed at submission, not any more
                why = "; ".join(message for _loc, message in tracking_problems(block, settings))
                _report(store, job.id, {"problem": f"not mirrored: {why}"})
            return OFF
        mirror = MlflowMirror(job=job, target=target, settings=settings, store=store, artifacts=artifacts)
        mirror.start()
        return mirror
    except Exception:
        log.exception("job %s: the MLflow mirror did not start; the job trains unmirrored", job.id)
        return OFF


def _report(store: JobStore, job_id: str, data: dict[str, Any]) -> None:
    """Write an `integration` event for the mirror; a store that is away only costs the event (logged)."""
    try:
        store.add_integration_event(job_id=job_id, data={"integration": INTEGRATION, **data})
    except Exception:
        log.warning("job %s: could not record an MLflow event %s", job_id, data, exc_info=True)


def flat_params(spec: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """The spec as MLflow params: {"training.steps": "5000", "loss.betas": "[0.5, 0.999]", ...}.

    Nested objects become dotted keys; strings stay as they are, anything else is JSON; an empty object is "{}".
    Keys keep MLflow's allowed characters (others become '_') and at most MAX_KEY_LENGTH characters; values are cut
    to MAX_PARAM_VAL_LENGTH characters.
    """
    flat: dict[str, str] = {}
    for key, value in spec.items():
        name = f"{prefix}{_NOT_A_NAME.sub('_', str(key))}"
        if isinstance(value, dict) and value:
            flat.update(flat_params(value, f"{name}."))
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        flat[name[:MAX_KEY_LENGTH]] = text[:MAX_PARAM_VAL_LENGTH]
    return flat


def _permanent(exc: BaseException) -> bool:
    """Whether the server answered that the request itself is wrong (a 4xx other than 408 and 429): no retry helps."""
    status = getattr(exc, "get_http_status_code", None)
    code = status() if callable(status) else None
    return isinstance(code, int) and 400 <= code < 500 and code not in (408, 429)


def _what(exc: BaseException) -> str:
    """A short, credential-free account of a failed request: the HTTP status the server gave, or the kind of error."""
    status = getattr(exc, "get_http_status_code", None)
    code = status() if callable(status) else None
    if isinstance(code, int) and code != 500:
        return f"HTTP {code}"
    text = str(exc)
    for kind in ("Connection refused", "timed out", "Name or service not known", "Max retries exceeded"):
        if kind in text:
            return kind.lower()
    return type(exc).__name__


class MlflowMirror(Mirror):
    """One attempt of one job mirrored to `target`; see the module docstring."""

    def __init__(
        self, *, job: Job, target: TrackingTarget, settings: Settings, store: JobStore, artifacts: ArtifactStore
    ) -> None:
        self.job_id, self.owner, self.attempt = job.id, job.owner, job.attempt
        self.spec: dict[str, Any] = dict(job.spec or {})
        self.target, self.store, self.artifacts = target, store, artifacts
        self.limit = settings.mlflow_buffer_points
        self.timeout = settings.mlflow_timeout_seconds
        self.drain_seconds = settings.mlflow_drain_seconds
        self.run_id: str | None = None
        self.sent: Counter[str] = Counter()  # what reached the server: metric points, samples, checkpoint
        self.dropped: Counter[str] = Counter()  # the buffer's oldest, dropped when full
        self.rejected: Counter[str] = Counter()  # refused by the server as invalid
        self._items: deque[tuple[Any, ...]] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing_at: float | None = None
        self._healthy = True
        self._reported = False
        self._scratch = tempfile.mkdtemp(prefix="ganforge-mlflow-")
        self._metric: Any = None  # MLflow's Metric, Param and RunTag classes, once imported (_client)
        self._param: Any = None
        self._tag: Any = None
        self._thread = threading.Thread(target=self._main, name=f"mlflow-{self.job_id[:8]}", daemon=True)

    # ----------------------------------------------------------------- the training loop's side: buffer only

    def metrics(self, step: int, values: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        with self._lock:
            for key, value in values.items():
                self._push(("metric", key, float(value), now, step))

    def sample(self, step: int, png: bytes) -> None:
        with self._lock:
            self._push(("sample", step, png))

    def _push(self, item: tuple[Any, ...]) -> None:
        if len(self._items) >= self.limit:
            self.dropped[self._items.popleft()[0]] += 1
        self._items.append(item)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Ask the thread to finish (send the rest, the checkpoint, the status) and wait for it, at most
        GANFORGE_MLFLOW_DRAIN_SECONDS (plus one request's timeout); a thread still going after that is left to
        finish on its own (a daemon)."""
        if self._closing_at is None:
            self._closing_at = time.monotonic()
            self._wake.set()
        self._thread.join(timeout=self.drain_seconds + self.timeout + 1)

    # ----------------------------------------------------------------- the background thread

    def _main(self) -> None:
        try:
            client = self._client()
        except NoClient as exc:
            _report(self.store, self.job_id, {"problem": f"not mirrored: {exc}"})
            self._cleanup()
            return
        backoff, failed_closing = BACKOFF_MIN_SECONDS, 0
        while True:
            closing = self._closing_at is not None
            was_healthy = self._healthy
            try:
                if self.run_id is None:
                    self._open_run(client)
                self._send(client)
                if closing:
                    self._finish(client)
                    break
                self._healthy, backoff = True, BACKOFF_MIN_SECONDS
            except Exception as exc:
                self._healthy = False
                first = not self._reported  # the traceback once; then a line a try
                log.warning("job %s: MLflow request failed (%s)", self.job_id, _what(exc), exc_info=first)
                self._trouble(exc)
                failed_closing += closing
                spent = closing and time.monotonic() - (self._closing_at or 0.0) > self.drain_seconds
                if closing and (not was_healthy or failed_closing >= CLOSING_TRIES or spent):
                    break  # give up: the server was away already, is away now, or the drain time is spent
            wait = SEND_SECONDS if self._healthy else backoff * random.uniform(0.8, 1.2)
            if not self._healthy:
                backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)
            self._wake.wait(wait)
            self._wake.clear()
        self._summary()
        self._cleanup()

    def _client(self) -> Any:
        """An MlflowClient for the target (MLflow's entity classes kept for later); NoClient without MLflow."""
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # we retry, with the buffer between
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(self.timeout)
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # the run's URL is in the events
        try:
            from mlflow.entities import Metric, Param, RunTag
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise NoClient("this worker has no MLflow client library (pip install 'ganforge[mlflow]')") from exc
        self._metric, self._param, self._tag = Metric, Param, RunTag
        return MlflowClient(tracking_uri=self.target.uri)

    def _tags(self) -> dict[str, str]:
        loss = (self.spec.get("loss") or {}).get("name", "")
        return {
            "ganforge.job_id": self.job_id,
            "ganforge.owner": self.owner,
            "ganforge.loss": str(loss),
            "ganforge.attempt": str(self.attempt),
        }

    def _previous_run(self) -> str | None:
        """The run id an earlier attempt of this job recorded for this tracking server, if any."""
        runs = [
            event["run_id"]
            for event in self.store.integration_events(job_id=self.job_id, integration=INTEGRATION)
            if event.get("run_id") and event.get("tracking_uri") == self.target.shown_uri
        ]
        return runs[-1] if runs else None

    def _open_run(self, client: Any) -> None:
        Param, RunTag = self._param, self._tag  # noqa: N806 - MLflow's classes
        previous = self._previous_run()
        if previous is not None:
            try:
                run = client.get_run(previous)
                if run.info.lifecycle_stage == "active":
                    client.update_run(previous, status="RUNNING")
                    client.log_batch(previous, tags=[RunTag(k, v) for k, v in self._tags().items()])
                    self.run_id = previous
                    return
            except Exception as exc:
                if not _permanent(exc):  # a run deleted on the server is a 404: start a new one
                    raise
        experiment = client.get_experiment_by_name(self.target.experiment)
        if experiment is not None and experiment.lifecycle_stage == "active":
            experiment_id = experiment.experiment_id
        else:
            try:
                experiment_id = client.create_experiment(self.target.experiment)
            except Exception:  # made meanwhile by another worker
                experiment = client.get_experiment_by_name(self.target.experiment)
                if experiment is None:
                    raise
                experiment_id = experiment.experiment_id
        run = client.create_run(experiment_id, tags=self._tags(), run_name=self.spec.get("name") or self.job_id)
        self.run_id = run.info.run_id
        shown = self.target.shown_uri
        event: dict[str, Any] = {"run_id": self.run_id, "experiment_id": experiment_id, "tracking_uri": shown}
        if shown.startswith(("http://", "https://")):
            event["run_url"] = f"{shown}/#/experiments/{experiment_id}/runs/{self.run_id}"
        _report(self.store, self.job_id, event)
        params = flat_params(self._shown_spec())
        items = list(params.items())
        for start in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            batch = items[start : start + MAX_PARAMS_TAGS_PER_BATCH]
            client.log_batch(self.run_id, params=[Param(k, v) for k, v in batch])

    def _shown_spec(self) -> dict[str, Any]:
        spec = dict(self.spec)
        block = spec.get("mlflow")
        if isinstance(block, dict) and block.get("tracking_uri"):
            from models.tracking import without_credentials

            spec["mlflow"] = {**block, "tracking_uri": without_credentials(block["tracking_uri"])}
        return spec

    def _take(self) -> list[tuple[Any, ...]]:
        """The next batch: up to MAX_METRICS_PER_BATCH metric points, or one sample picture."""
        with self._lock:
            if not self._items:
                return []
            if self._items[0][0] == "sample":
                return [self._items.popleft()]
            batch: list[tuple[Any, ...]] = []
            while self._items and self._items[0][0] == "metric" and len(batch) < MAX_METRICS_PER_BATCH:
                batch.append(self._items.popleft())
            return batch

    def _put_back(self, batch: list[tuple[Any, ...]]) -> None:
        """Return an unsent batch to the front of the buffer; what no longer fits (the oldest) is dropped."""
        with self._lock:
            for item in reversed(batch):
                if len(self._items) >= self.limit:
                    self.dropped[item[0]] += 1
                else:
                    self._items.appendleft(item)

    def _send(self, client: Any) -> None:
        """Send everything buffered now, batch by batch; a failed batch goes back and the error is raised."""
        assert self.run_id is not None
        while batch := self._take():
            try:
                if batch[0][0] == "sample":
                    _kind, step, png = batch[0]
                    path = os.path.join(self._scratch, f"{step:09d}.png")
                    with open(path, "wb") as file:
                        file.write(png)
                    try:
                        client.log_artifact(self.run_id, path, "samples")
                    finally:
                        os.unlink(path)
                else:
                    metrics = [self._metric(key, value, ms, step) for _kind, key, value, ms, step in batch]
                    client.log_batch(self.run_id, metrics=metrics)
            except Exception as exc:
                if _permanent(exc):
                    self.rejected[batch[0][0]] += len(batch)
                    log.warning("job %s: MLflow refused %d %s(s): %s", self.job_id, len(batch), batch[0][0], exc)
                    continue
                self._put_back(batch)
                raise
            self.sent[batch[0][0]] += len(batch)

    def _finish(self, client: Any) -> None:
        """The attempt ended: the latest checkpoint and the final status when the job is final in the store."""
        assert self.run_id is not None
        try:
            job = self.store.get_job(job_id=self.job_id)
            checkpoint = self.store.get_checkpoint(job_id=self.job_id, step=None)
        except Exception:
            log.warning("job %s: the store is away: the MLflow run keeps its status", self.job_id, exc_info=True)
            return
        status = RUN_STATUS.get(job.status) if job is not None else None
        if status is None:
            return  # handed back or taken over: the next attempt continues the run
        if checkpoint is not None and not self.sent["checkpoint"]:
            self._log_checkpoint(client, checkpoint.step, checkpoint.weights_key)
        client.set_terminated(self.run_id, status)

    def _log_checkpoint(self, client: Any, step: int, key: str) -> None:
        path = os.path.join(self._scratch, f"{step:09d}.safetensors")
        local = self.artifacts.local_path(key)
        if local is not None:
            os.symlink(local, path)
        else:
            with self.artifacts.open(key) as source, open(path, "wb") as target:
                shutil.copyfileobj(source, target)
        try:
            client.log_artifact(self.run_id, path, "checkpoint")
        finally:
            os.unlink(path)
        self.sent["checkpoint"] += 1

    def _trouble(self, exc: BaseException) -> None:
        if self._reported:
            return
        self._reported = True
        _report(
            self.store,
            self.job_id,
            {
                "problem": f"the MLflow tracking server {self.target.shown_uri} failed a request ({_what(exc)}); "
                f"retrying with backoff, holding up to {self.limit:,} points (the oldest dropped past that)",
                "run_id": self.run_id,
                "tracking_uri": self.target.shown_uri,
            },
        )

    def _summary(self) -> None:
        """At the end: one event when anything was dropped, refused or left unsent."""
        with self._lock:
            unsent = Counter(item[0] for item in self._items)
            self._items.clear()
        if not (self.dropped or self.rejected or unsent or not self._healthy):
            return
        _report(
            self.store,
            self.job_id,
            {
                "problem": "the MLflow run is incomplete" if self.run_id else "the MLflow run was never made",
                "run_id": self.run_id,
                "tracking_uri": self.target.shown_uri,
                "sent": dict(self.sent),
                "dropped": dict(self.dropped),
                "rejected": dict(self.rejected),
                "unsent": dict(unsent),
            },
        )

    def _cleanup(self) -> None:
        shutil.rmtree(self._scratch, ignore_errors=True)
