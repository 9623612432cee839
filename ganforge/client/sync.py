"""`Client`: the blocking SDK (an `httpx.Client` inside). `AsyncClient` (aio.py) has the same methods."""

from __future__ import annotations

import builtins
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from httpx_sse import EventSource

from ganforge.client import calls
from ganforge.client.config import Config
from ganforge.client.errors import Conflict, ConnectionFailed, GanforgeError
from ganforge.client.files import (
    HEAD_BYTES,
    Progress,
    ProgressReader,
    check_signature,
    checked,
    target_path,
    total_bytes,
    write,
)
from ganforge.client.specs import SpecLike
from ganforge.client.sse import Cursor, Reconnects
from ganforge.client.transport import OnRetry, RetryPolicy, not_an_answer, send
from ganforge.client.types import (
    ApiKey,
    ApiKeyCreated,
    ApiKeyRevoked,
    Checkpoint,
    CheckpointPage,
    Dataset,
    DatasetPage,
    Event,
    Generation,
    Job,
    JobPage,
    KeyList,
    Metrics,
    P,
    Quota,
    Sample,
    SamplePage,
    Study,
    StudyCurves,
    StudyPage,
    StudySummary,
    StudyValidated,
    T,
    Validated,
    WhoAmI,
    parse,
)
from ganforge.client.webhooks import Webhooks

POLL_START, POLL_MAX = 0.2, 2.0  # seconds between the polls of `wait`, growing


class Client:
    """A ganforge API client.

    base_url: default GANFORGE_URL, else http://127.0.0.1:8000; api_key: default GANFORGE_API_KEY (sent as
    `Authorization: Bearer <key>`); timeout: seconds per request (connect, read, write; an SSE stream reads for at
    least 60 s, spanning the API's pings); retries: how many times a safe request is sent again (see
    `ganforge.client.transport`), with exponential backoff from `backoff` seconds; on_retry: called with one line
    before each wait ("retrying GET /v1/jobs/j1 in 2.0 s (503)", "rate limited: waiting 5 s (GET /v1/catalog)",
    "the event stream of job j1 ended: reconnecting in 1.0 s"), default silent; max_retry_after: the longest
    Retry-After (s) of a 429 or 503 that is waited out: a longer one (an hourly quota's) raises `RateLimited` at once,
    with the service's message. Connecting times out after 5 s.

    Construction raises ValueError (naming the setting, never echoing the key or a password) for a base URL that
    is not http(s) with a host or does not parse, an API key with characters a header cannot carry, timeout <= 0,
    retries < 0, max_retry_after < 0. Methods raise ValueError before sending for an id over 200 characters or with a control
    character, a bad step, or arguments that make the URL invalid.

    Every method raises a `GanforgeError` subclass on failure: `ValidationFailed` (with `.fields`), `NotFound`,
    `Conflict`, `Unauthorized`, `RateLimited`, `ServerError`, `ConnectionFailed`, `UnexpectedResponse` (a
    redirect, or an answer that is not the API's). Use it as a context manager or
    call `close()`.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        on_retry: OnRetry | None = None,
        max_retry_after: float = 60.0,
    ) -> None:
        self.config = Config.resolve(base_url, api_key, timeout, retries)
        self.policy = RetryPolicy(retries=retries, backoff=backoff, on_retry=on_retry, max_retry_after=max_retry_after)
        self._http = httpx.Client(
            base_url=self.config.base_url, headers=self.config.headers(), timeout=self.config.request_timeout()
        )
        self.datasets = Datasets(self)
        self.studies = Studies(self)
        self.keys = Keys(self)
        self.webhooks = Webhooks(self)

    @property
    def base_url(self) -> str:
        return self.config.base_url

    def __repr__(self) -> str:
        return f"Client({self.config.shown_url!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # ------------------------------------------------------------------ plumbing

    def _send(self, call: calls.Call, *, stream: bool = False, **request: Any) -> httpx.Response:
        headers = {"Accept": call.expect, **call.headers} if call.expect else call.headers
        try:
            built = self._http.build_request(
                call.method, call.path, params=call.params or None, json=call.json, headers=headers, **request
            )
        except httpx.InvalidURL as exc:  # e.g. a query value so long the URL passes httpx's limit
            raise ValueError(f"the arguments make an invalid URL for {call.method} {call.path[:100]}: {exc}") from None
        return send(self._http, built, self.policy, idempotent=call.idempotent, stream=stream, expect=call.expect)

    def _file(self, call: calls.Call, kind: str) -> bytes:
        """The file `call` fetches, in memory; UnexpectedResponse when it is not a `kind` file."""
        response = self._send(call)
        check_signature(kind, response.content[:HEAD_BYTES], f"the answer to {call.method} {call.path}")
        return response.content

    def _answer(self, call: calls.Call, kind: type[T]) -> T:
        """The answer to `call` as `kind`; raises UnexpectedResponse when it is not that."""
        return parse(kind, self._send(call))

    def _pages(self, call_at: Callable[[str | None], calls.Call], kind: type[P]) -> Iterator[P]:
        """Every page of a keyset-paged list, lazily: `call_at(cursor)` is one page's call (None: the first)."""
        cursor: str | None = None
        while True:
            page = self._answer(call_at(cursor), kind)
            yield page
            if not (cursor := page.next_cursor):
                return

    # ------------------------------------------------------------------ jobs

    def submit(self, spec: SpecLike, *, idempotency_key: str | None = None) -> Job:
        """Submit a training job; returns it (status queued).

        spec: a dict, a `models.spec.JobSpec`, or the path of a .yaml/.yml/.json file. Each call sends a fresh
        Idempotency-Key (uuid4) unless `idempotency_key` is given, so a retried request never creates a second
        job; the same key with the same spec returns the first job, with another spec raises `Conflict`.
        Raises ValidationFailed (the spec's invalid field paths), NotFound (a data set id that is not yours).
        """
        return self._answer(calls.submit(spec, idempotency_key), Job)

    def validate(self, spec: SpecLike) -> dict[str, Any]:
        """The spec as it would run, with every default filled in; creates nothing. Raises ValidationFailed."""
        return (self._answer(calls.validate(spec), Validated)).spec

    def get(self, job_id: str) -> Job:
        """The job now. Raises NotFound."""
        return self._answer(calls.get_job(job_id), Job)

    def list(self, *, status: str | None = None, tag: str | None = None, limit: int = 50) -> Iterator[Job]:
        """Your jobs, newest first, page after page until the last (lazily: a page is fetched when needed).

        status: queued, running, cancelling, succeeded, failed or cancelled; tag: "key:value"; limit: the page
        size (1-500), not a cap on the total (use itertools.islice for that). Raises ValidationFailed.
        """
        for page in self._pages(lambda cursor: calls.list_jobs(status, tag, limit, cursor), JobPage):
            yield from page.jobs

    def cancel(self, job_id: str) -> Job:
        """Ask the job to stop: a queued job is cancelled at once, a running one at its next step (status
        cancelling, then cancelled; its last checkpoint is kept). Idempotent: cancelling a job that is already
        cancelled returns it. Raises Conflict when the job already succeeded or failed, NotFound.
        """
        try:
            return self._answer(calls.cancel(job_id), Job)
        except Conflict as exc:
            if exc.code != "already_finished":
                raise
            job = self.get(job_id)
            if job.status != "cancelled":
                raise
            return job

    def delete(self, job_id: str) -> None:
        """Delete an ended job and everything it produced (record, events, metrics, samples, checkpoints, generate
        results, their files); its checkpoints' bytes leave your stored_bytes. Raises Conflict (`job_not_final`)
        while it is queued or running (cancel it first), or (`job_in_use`) while a queued or running job's init_from
        names it; NotFound.
        """
        self._send(calls.delete_job(job_id))

    def delete_checkpoint(self, job_id: str, step: int) -> None:
        """Delete one checkpoint (weights and resume state); its bytes leave your stored_bytes. Raises Conflict
        (`checkpoint_in_use`) for the latest checkpoint of a job that has not ended, or one a queued or running
        job's init_from or a pending generate request needs; NotFound (no such job, or no checkpoint at `step`:
        pruned by the job's retention, every.keep_last / every.keep_every, or deleted).
        """
        self._send(calls.delete_checkpoint(job_id, step))

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Poll until the job succeeded, failed or was cancelled, and return it (it does not raise for a failed
        job: look at `.status` and `.error`). timeout: seconds, None for no limit; raises TimeoutError past it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = POLL_START
        while True:
            job = self.get(job_id)
            if job.finished:
                return job
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"job {job_id} is still {job.status} after {timeout} s")
                pause = min(pause, left)
            time.sleep(pause)
            pause = min(pause * 2, POLL_MAX)

    def follow(self, job_id: str, *, after: int | None = None) -> Iterator[Event]:
        """The job's events as they happen (SSE), from the start of its log or after event id `after`.

        Ends with the stream that brought the status event moving the job to succeeded, failed or cancelled (a live
        stream ends there; a finished job's replay goes on to the end of its log, events written after the final
        status included). A dropped connection is resumed with Last-Event-ID; no event is yielded twice, ids
        increase. A stream that drops is resumed (backing off; the server's `retry` clamped to 0.1-30 s); raises
        ConnectionFailed once `retries` attempts to connect failed in a row, or `retries` connections in a row
        brought no new event; UnexpectedResponse for an answer that is not an event stream or an event over 8 MiB;
        NotFound.
        """
        cursor = Cursor(last=after or 0)
        reconnects = Reconnects(job_id, self.policy, cursor)
        while not cursor.done:
            # Connecting is retried by the transport (a GET); ConnectionFailed once it gives up.
            response = self._send(
                calls.events(job_id, cursor.headers()), stream=True, timeout=self.config.stream_timeout()
            )
            broke: httpx.TransportError | None = None
            with closing(response):
                if response.status_code == 204:  # finished, and we have every event
                    return
                reconnects.opened(response)
                try:
                    for sse in EventSource(response).iter_sse():
                        event = cursor.accept(sse)
                        if event is not None:
                            yield event  # after the final status, on to the stream's end: the server ends it there
                except httpx.TransportError as exc:  # the connection dropped mid-stream: resume after the last event
                    broke = exc
            if cursor.done:
                return
            time.sleep(reconnects.ended(broke))  # or the server ended the stream early: reconnect as EventSource does

    def events(self, job_id: str, *, after: int | None = None) -> Iterator[Event]:
        """The same as `follow`."""
        return self.follow(job_id, after=after)

    def metrics(
        self,
        job_id: str,
        names: Iterable[str] | str | None = None,
        *,
        since_step: int | None = None,
        max_points: int | None = None,
    ) -> Metrics:
        """Metric series (steps and values per name; all series when `names` is None).

        since_step: only points at or after this step; max_points (2-100,000, API default 2,000): a longer
        series comes back as per-bucket min and max (`downsampled`). `.to_pandas()` for a DataFrame.
        Raises NotFound, ValidationFailed.
        """
        return self._answer(calls.metrics(job_id, names, since_step, max_points), Metrics)

    def samples(self, job_id: str) -> builtins.list[Sample]:
        """The job's sample snapshots, oldest first (every page of the list). Raises NotFound."""
        pages = self._pages(lambda cursor: calls.samples(job_id, cursor), SamplePage)
        return [sample for page in pages for sample in page.samples]

    def sample_png(self, job_id: str, step: calls.Step = "latest") -> bytes:
        """The snapshot at `step` ("latest": the newest) as a PNG (an image grid, or a scatter plot over the real
        data for 2-D points). Raises NotFound (no sample at that step)."""
        return self._file(calls.sample_file(job_id, step, "png"), "png")

    def sample_npy(self, job_id: str, step: calls.Step = "latest") -> bytes:
        """The raw generated batch at `step` as .npy bytes (`numpy.load(io.BytesIO(...))`). Raises NotFound."""
        return self._file(calls.sample_file(job_id, step, "npy"), "npy")

    def checkpoints(self, job_id: str) -> builtins.list[Checkpoint]:
        """The job's checkpoints, oldest first (every page of the list). Raises NotFound."""
        pages = self._pages(lambda cursor: calls.checkpoints(job_id, cursor), CheckpointPage)
        return [checkpoint for page in pages for checkpoint in page.checkpoints]

    def download_checkpoint(
        self,
        job_id: str,
        step: calls.Step = "latest",
        path: str | os.PathLike[str] | None = None,
        *,
        progress: Progress | None = None,
        file: str = "weights",
    ) -> Path:
        """Download a checkpoint, streamed to disk; returns the file's path.

        step: a step or "latest"; path: the file to write, or a directory (default: the current one) to put
        `<job>-<step>.safetensors` in; progress: `progress(done_bytes, total_bytes)` after each chunk;
        file: "weights" (safetensors, the spec and step in its metadata) or "state" (the resume state, torch).
        Raises NotFound (no such job or checkpoint: no file is created); a failure mid-way leaves no file.
        """
        response = self._send(calls.checkpoint_file(job_id, step, file), stream=True)
        with closing(response):
            suffix = "safetensors" if file == "weights" else "state.pt"
            target = target_path(path, response, f"{job_id}-{step}.{suffix}")
            try:
                chunks = checked(response.iter_bytes(), suffix, f"the answer to GET {response.request.url.path}")
                return write(chunks, target, total_bytes(response), progress)
            except httpx.TransportError as exc:
                raise ConnectionFailed(f"the download of {target.name} broke off: {exc or type(exc).__name__}") from exc

    def generate(
        self,
        job_id: str,
        count: int,
        *,
        seed: int = 0,
        step: calls.Step = "latest",
        labels: int | Iterable[int] | None = None,
        codes: dict[str, Any] | None = None,
        format: str = "npy",
        ema: bool | None = None,
        wait: float | None = 120.0,
    ) -> bytes:
        """`count` samples of the job's generator at checkpoint `step`, run by a generate worker: .npy bytes (float32,
        count×D points or count×C×H×W images in [-1, 1]; `numpy.load(io.BytesIO(...))`) or, format="png", a PNG.

        seed: the same seed gives the same samples; labels (cgan): one class for all or one per sample; codes
        (infogan): {"categorical": ..., "continuous": ...}; ema: the EMA copy of G (default: when the job kept one).
        The API answers within a few seconds or gives a URL to poll: this polls it until done, for at most `wait`
        seconds (None: no limit), then raises TimeoutError. Raises ValidationFailed (a count over the bound, labels
        on a job that is not cgan, ...: `.fields` names them), NotFound (no such job, or no checkpoint at `step`),
        Conflict (no checkpoint yet; code generation_failed when the worker failed, with its reason).
        """
        deadline = None if wait is None else time.monotonic() + wait
        call = calls.generate(job_id, count, seed=seed, step=step, labels=labels, codes=codes, format=format, ema=ema)
        response = self._send(call)
        if response.status_code != 202:
            return _generated(response, format, call)
        generation_id = str(response.json().get("id", ""))
        pause = POLL_START
        while True:
            generation = self._answer(calls.generation(generation_id), Generation)
            if generation.status == "succeeded":
                return self._file(calls.generation_result(generation_id, format), format)
            if generation.status == "failed":
                raise Conflict(f"the generation failed: {generation.error}", 409, "generation_failed")
            if generation.status == "expired":  # its result was deleted before this poll (the TTL, or the cap)
                raise GanforgeError(f"the generation expired: {generation.error}", 410, "expired")
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"generation {generation_id} is still {generation.status} after {wait} s")
                pause = min(pause, left)
            time.sleep(pause)
            pause = min(pause * 2, POLL_MAX)

    def catalog(self) -> dict[str, Any]:
        """Every loss, architecture and built-in data set with its parameters, defaults and paper."""
        return self._answer(calls.catalog(), dict[str, Any])

    def whoami(self) -> WhoAmI:
        """Who this client's key is: owner, key id (prefix or env:<owner>), scopes, expiry. Raises Unauthorized."""
        return self._answer(calls.whoami(), WhoAmI)

    def quota(self) -> Quota:
        """Your owner's quotas and current usage (running and queued jobs, stored bytes, uploads in the last hour)."""
        return self._answer(calls.quota(), Quota)


def _generated(response: httpx.Response, format: str, call: calls.Call) -> bytes:
    """The bytes of a 200 answer to POST .../generate, checked to be the `format` file asked for."""
    wrong = not_an_answer(response, calls.GENERATED_TYPES[format])
    if wrong is not None:
        raise wrong
    check_signature(format, response.content[:HEAD_BYTES], f"the answer to {call.method} {call.path}")
    return response.content


class Datasets:
    """`client.datasets`: upload once, then refer to a data set by id in any number of jobs."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def upload(
        self,
        path: str | os.PathLike[str],
        name: str | None = None,
        *,
        resize: int | None = None,
        progress: Progress | None = None,
        value_range: tuple[float, float] | None = None,
    ) -> Dataset:
        """Upload a .npz (x: N×D rows or N×[C×]H×W images, optional integer y) or a .zip of class folders of
        PNG/JPEG images, streamed from disk (multipart/form-data).

        name: default the file name without its extension; resize: resample every image to this square size
        (px); value_range: for .npz images, the source values of black and white. progress:
        `progress(sent_bytes, file_bytes)`. The same content uploaded again returns the earlier data set.
        Sent again only after a 429 (a rate limit: the API refused it unread), after its Retry-After. Raises
        ValidationFailed (the field at fault: file, resize, ...; also 413 for an upload over the size limits),
        FileNotFoundError.
        """
        source = Path(path)
        fields = calls.upload_fields(name, resize, value_range)
        with source.open("rb") as handle:
            reader = ProgressReader(handle, os.fstat(handle.fileno()).st_size, progress)
            files = {"file": (source.name, reader, "application/octet-stream")}
            request = self._client._http.build_request("POST", "/v1/datasets", data=fields, files=files)  # type: ignore[arg-type]
            response = send(self._client._http, request, self._client.policy, idempotent=False)
        return parse(Dataset, response)

    def list(self, *, limit: int = 50) -> Iterator[Dataset]:
        """Your data sets, newest first, page after page (limit: the page size, 1-500)."""
        for page in self._client._pages(lambda cursor: calls.list_datasets(limit, cursor), DatasetPage):
            yield from page.datasets

    def get(self, dataset_id: str) -> Dataset:
        """One data set. Raises NotFound."""
        return self._client._answer(calls.get_dataset(dataset_id), Dataset)

    def delete(self, dataset_id: str) -> None:
        """Delete a data set and its files. Raises Conflict while a queued or running job uses it, NotFound."""
        self._client._send(calls.delete_dataset(dataset_id))

    def preview_png(self, dataset_id: str) -> bytes:
        """A PNG of real examples (an image grid, or a scatter plot of the first two dimensions of rows)."""
        return self._client._file(calls.dataset_preview(dataset_id), "png")


class Studies:
    """`client.studies`: one request trains the same data and architecture with several losses, seeds and grid
    points (ordinary jobs, tagged `study:<id>`), and returns the comparison (api/routes/studies.py)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def submit(self, spec: SpecLike, *, idempotency_key: str | None = None) -> Study:
        """Submit a study; returns it (status queued) with its jobs.

        spec: a dict, a `models.study.StudySpec`, or the path of a .yaml/.yml/.json file (read as a job spec file
        is). Each call sends a fresh Idempotency-Key unless `idempotency_key` is given, so a retry never fans out a
        second study; the same key with the same spec returns the first study, with another spec raises `Conflict`.
        Raises ValidationFailed (field paths such as `body.losses[1]`, `body.grid[0].values[2]`; also over 200
        jobs), NotFound (a data set id that is not yours).
        """
        return self._client._answer(calls.submit_study(spec, idempotency_key), Study)

    def validate(self, spec: SpecLike) -> StudyValidated:
        """The study's spec as it would run (`.spec`) and the number of jobs it would make (`.job_count`); creates
        nothing. Raises ValidationFailed."""
        return self._client._answer(calls.validate_study(spec), StudyValidated)

    def get(self, study_id: str) -> Study:
        """The study now: status, progress, its jobs and the comparison table. Raises NotFound."""
        return self._client._answer(calls.get_study(study_id), Study)

    def list(self, *, limit: int = 50) -> Iterator[StudySummary]:
        """Your studies, newest first, page after page (lazily; limit: the page size, not a cap on the total)."""
        for page in self._client._pages(lambda cursor: calls.list_studies(limit, cursor), StudyPage):
            yield from page.studies

    def cancel(self, study_id: str) -> Study:
        """Cancel every queued or running job of the study (each as `client.cancel` does): it reads `cancelling`
        until every job stopped, then `cancelled`. Idempotent; a finished job keeps its result. Raises Conflict
        (code already_finished) when every job had finished (the study keeps its status), NotFound."""
        return self._client._answer(calls.cancel_study(study_id), Study)

    def wait(self, study_id: str, timeout: float | None = None) -> Study:
        """Poll until the study succeeded, failed or was cancelled, and return it (with its comparison). timeout:
        seconds, None for no limit; raises TimeoutError past it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = POLL_START
        while True:
            study = self.get(study_id)
            if study.finished:
                return study
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"study {study_id} is still {study.status} after {timeout} s")
                pause = min(pause, left)
            time.sleep(pause)
            pause = min(pause * 2, POLL_MAX)

    def curves(self, study_id: str, names: Iterable[str] | str | None = None, *, points: int = 200) -> StudyCurves:
        """The overlaid series per (loss, grid point): mean, std, min and max over seeds on a common step grid of at
        most `points` steps. names: series names (modes_covered, loss_g, fd, ...); None: what the comparison reads (loss_g,
        grad_norm_g and the measures).
        Raises NotFound, ValidationFailed."""
        return self._client._answer(calls.study_curves(study_id, names, points), StudyCurves)

    def jobs(self, study_id: str) -> builtins.list[Job]:
        """The study's jobs in full (alerts, latest metrics, ...), newest first: the jobs tagged `study:<id>`.
        Raises NotFound (no such study of yours)."""
        calls.check_id(study_id, "study_id")
        found = builtins.list(self._client.list(tag=f"study:{study_id}", limit=200))
        if not found:
            self.get(study_id)  # every study has a job: none means not yours (NotFound)
        return found


class Keys:
    """`client.keys`: API keys of your own owner, made, listed and revoked with an admin key (api/routes/keys.py).
    The operator makes the first one on the service's store (`ganforge up --auth`, `ganforge keys create`)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        scopes: Iterable[str] | str = ("read", "submit"),
        *,
        name: str = "",
        ttl: str | None = None,
        expires_at: datetime | str | None = None,
    ) -> ApiKeyCreated:
        """Create a key for your own owner (needs an admin key); the answer's `key` is the key itself, shown this once.

        scopes: of "read", "submit", "admin" (each includes the ones before); ttl: how long it works ("3600s",
        "90m", "12h", "30d", "2w") or expires_at (a datetime with a zone, or ISO 8601 text), not both; neither: it
        works until revoked or until the key that made it expires. Revoking the key that made it revokes it too.
        Never retried (a lost answer's key could not be shown again). Raises ValidationFailed naming the field,
        Unauthorized (also for a key lacking the admin scope).
        """
        return self._client._answer(calls.create_key(scopes, name, ttl, expires_at), ApiKeyCreated)

    def list(self) -> builtins.list[ApiKey]:
        """Your owner's keys, newest first, revoked and expired ones too (never a key itself)."""
        return (self._client._answer(calls.list_keys(), KeyList)).keys

    def revoke(self, prefix: str) -> ApiKeyRevoked:
        """Revoke the key `prefix` (gf_ and 8 letters or digits) and every key made through it; revoking again
        answers the same. Raises NotFound (another owner's key too)."""
        return self._client._answer(calls.revoke_key(prefix), ApiKeyRevoked)
