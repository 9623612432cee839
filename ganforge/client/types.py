"""What the API answers, as pydantic models (fields mirror api/schemas.py; fields the API adds later are kept).

Times are timezone-aware UTC datetimes; steps are training steps (generator updates); sizes are bytes.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeVar, cast

import httpx
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from ganforge.client.errors import UnexpectedResponse, shown

if TYPE_CHECKING:  # pandas is optional: imported only by Metrics.to_pandas
    import pandas

FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
"""A job in one of these statuses has stopped for good."""


class ApiModel(BaseModel):
    """Extra fields the API sends are kept (as attributes), so a newer API does not break an older SDK."""

    model_config = ConfigDict(extra="allow")


class Progress(ApiModel):
    """step: steps done; total_steps: the spec's training.steps; steps_per_sec and eta_seconds (s): None until known
    (the ETA only while running)."""

    step: int
    total_steps: int
    steps_per_sec: float | None = None
    eta_seconds: float | None = None


class Job(ApiModel):
    """A training job as `GET /v1/jobs/{id}` shows it.

    status: queued, running, cancelling, succeeded, failed or cancelled; spec: the admitted spec with every default
    filled in; tags: the spec's tags; latest_metrics: series name → latest value; attempt: the attempt running or
    next to run (from 1) of max_attempts; error: why it failed (None otherwise); study_id: the study that fanned it
    out; alerts: what training.watch found ({kind, step, evidence, action}); cpu_seconds / gpu_seconds: training time.
    priority: 0-100, higher first among the owner's waiting jobs; queue_reason: why a queued job still waits (set by
    `get` and `submit`; None in lists and once it runs).
    """

    id: str
    name: str
    status: str
    owner: str
    spec: dict[str, Any]
    tags: dict[str, Any] = {}
    progress: Progress
    latest_metrics: dict[str, float] = {}
    attempt: int = 1
    max_attempts: int = 1
    error: str | None = None
    study_id: str | None = None
    priority: int = 50
    queue_reason: str | None = None
    alerts: list[dict[str, Any]] = []
    cpu_seconds: float | None = None
    gpu_seconds: float | None = None
    created_at: datetime
    updated_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def finished(self) -> bool:
        """True once the job succeeded, failed or was cancelled (it will not change again)."""
        return self.status in FINAL_STATUSES


class Event(ApiModel):
    """One entry of a job's event log, as the SSE stream carries it.

    id: its number in the job's log (1, 2, ...; strictly increasing); type: the SSE event name — `status`
    (data: from, to, reason, attempt), `metrics` (first_step, last_step, latest: name → value, points:
    [name, step, value] rows), `sample` (step, count, evaluation, png_url, npy_url), `checkpoint` (step,
    size_bytes, url, state_url), `attempt` (attempt, reason), `alert` (what training.watch found: kind, collapse or
    divergence; step; evidence, name → number; action, reported or stopped); the URLs are paths on the API. data: the
    event's JSON payload, `time` (ISO 8601) included; time: the same as a datetime.
    """

    id: int
    type: str
    data: dict[str, Any]
    time: datetime | None = None

    @property
    def final(self) -> bool:
        """True for the status event that moved the job to succeeded, failed or cancelled: the stream's last."""
        return self.type == "status" and self.data.get("to") in FINAL_STATUSES


class Series(ApiModel):
    """One metric series: steps[i] → values[i]; downsampled: True when the API returned per-bucket min and max
    (a series longer than max_points)."""

    steps: list[int]
    values: list[float]
    downsampled: bool = False


class Metrics(ApiModel):
    """A job's metric series by name (loss_d, loss_g, d_real, d_fake, grad_norm_d, modes_covered, ...)."""

    job_id: str
    series: dict[str, Series]

    def __getitem__(self, name: str) -> Series:
        return self.series[name]

    def to_pandas(self, *, wide: bool = False) -> pandas.DataFrame:
        """The series as a pandas DataFrame.

        Long (default): one row per point, columns `series` (str), `step` (int), `value` (float), ordered by
        series then step — every series keeps its own steps. `wide=True`: one row per step (the index, `step`),
        one column per series, NaN where a series has no point at that step.
        Raises ImportError when pandas is not installed (`pip install pandas`).
        """
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError(
                "Metrics.to_pandas needs pandas, which is not installed: `pip install pandas` "
                "(or use .series, plain lists)"
            ) from exc
        rows = [
            (name, s, v)
            for name, series in self.series.items()
            for s, v in zip(series.steps, series.values, strict=True)
        ]
        long = pd.DataFrame(rows, columns=["series", "step", "value"]).astype(
            {"series": "str", "step": "int64", "value": "float64"}
        )
        if not wide:
            return long
        # Downsampled series hold a min and a max at one step: the pivot keeps the last of them.
        table = long.pivot_table(index="step", columns="series", values="value", aggfunc="last")
        table.columns.name = None
        return table.reindex(columns=list(self.series))


class Sample(ApiModel):
    """A sample snapshot: step, count (samples in the batch), png_url and npy_url (paths on the API), labels
    (the class asked for each sample, conditional models only), evaluation (modes_covered, hq_fraction,
    reverse_kl on ring8/grid25; None elsewhere)."""

    step: int
    count: int
    png_url: str
    npy_url: str
    labels: list[int] | None = None
    evaluation: dict[str, float] | None = None
    created_at: datetime


class Checkpoint(ApiModel):
    """A checkpoint: step, size_bytes (the safetensors weights), url (the weights), state_url (the resume state)."""

    step: int
    size_bytes: int
    url: str
    state_url: str
    created_at: datetime


class Dataset(ApiModel):
    """An uploaded data set: id (use it as `{"dataset": {"id": ...}}` in a spec), name, format, info (kind, shape,
    classes, ...), content_hash, size_bytes (normalised), preview_url."""

    id: str
    name: str
    format: str
    info: dict[str, Any]
    content_hash: str
    size_bytes: int
    created_at: datetime
    preview_url: str
    key: str | None = None  # the key that uploaded it: a store key's prefix, env:<owner>, None with auth off


class Page(ApiModel):
    """One page of a keyset-paged list: its items (a field per list) and the cursor of the next page (None on the
    last)."""

    next_cursor: str | None = None


class JobPage(Page):
    """One page of `GET /v1/jobs`: the jobs, and the cursor of the next page (None on the last)."""

    jobs: list[Job]


class SamplePage(Page):
    """One page of `GET /v1/jobs/{id}/samples`: oldest step first, and the cursor of the next page (None on the last)."""

    samples: list[Sample]


class CheckpointPage(Page):
    """One page of `GET /v1/jobs/{id}/checkpoints`: oldest step first, and the cursor of the next page."""

    checkpoints: list[Checkpoint]


class DatasetPage(Page):
    """One page of `GET /v1/datasets`."""

    datasets: list[Dataset]


class Validated(ApiModel):
    """The answer of `POST /v1/jobs?validate_only=true`: the spec with every default filled in."""

    spec: dict[str, Any]


class StudyJob(ApiModel):
    """One job of a study as `GET /v1/studies/{id}` lists it: id, loss, point (the grid values, {} without a grid),
    seed, status, step and total_steps."""

    id: str
    loss: str
    point: dict[str, Any] = {}
    seed: int
    status: str
    step: int = 0
    total_steps: int = 0


class StudyProgress(ApiModel):
    """steps_done (steps actually trained: a succeeded job whole, any other the steps it reached) and steps_total
    (as planned) summed over the study's jobs; fraction = steps_done / steps_total (0-1, below 1 when jobs failed or
    were cancelled); jobs_final of jobs_total have finished."""

    steps_done: int
    steps_total: int
    fraction: float
    jobs_final: int | None = None
    jobs_total: int | None = None


class StudySummary(ApiModel):
    """A study as `GET /v1/studies` lists it (no comparison: `client.studies.get` for that).

    status: queued, running (while any job is active), cancelling (cancelled, a job not yet stopped), succeeded (all
    jobs did), failed (all final, some failed) or cancelled; counts: job status → number of jobs.
    """

    id: str
    name: str
    status: str
    job_count: int
    counts: dict[str, int] = {}
    progress: StudyProgress | None = None
    created_at: datetime
    updated_at: datetime | None = None

    @property
    def finished(self) -> bool:
        """True once the study succeeded, failed or was cancelled (no job of it will run again)."""
        return self.status in FINAL_STATUSES


class Study(StudySummary):
    """A study as `GET /v1/studies/{id}` shows it: the summary, plus

    spec: the study's spec with every default filled in; jobs: one `StudyJob` per (loss, grid point, seed);
    data_kind: "points" or "images"; measures: the quality figures compared, primary first (points: modes_covered,
    hq_fraction, reverse_kl; images: fd, plus class_accuracy for cgan, code_purity for infogan); comparison: one row
    per (loss, grid point), as models.comparison.compare makes it, kept as dicts: {"loss", "point", "runs",
    "finished", "failed" (failed or cancelled runs, left out of every mean ± std), "quality": {measure: {"mean",
    "std", "n"}}, "steps_to_threshold": {measure: {"mean", "std", "reached", "n", "threshold"}},
    "wall_seconds"/"cpu_seconds"/"gpu_seconds": {"mean", "std", "n"}, "stability": {...}} (std is the sample std over seeds, None with one seed; a mean is None when no run has data).
    """

    spec: dict[str, Any] = {}
    jobs: list[StudyJob] = []
    data_kind: str | None = None
    measures: list[str] = []
    comparison: list[dict[str, Any]] = []


class StudyPage(Page):
    """One page of `GET /v1/studies`: newest first, and the cursor of the next page (None on the last)."""

    studies: list[StudySummary]


class StudyValidated(ApiModel):
    """The answer of `POST /v1/studies?validate_only=true`: the spec with every default, and how many jobs it makes."""

    valid: bool = True
    spec: dict[str, Any]
    job_count: int


class Curve(ApiModel):
    """The overlaid series of one (loss, grid point) over its seeds, on a common step grid: at steps[i], the mean,
    std (sample std; None where fewer than 2 runs have a value), min and max over the runs that have a value there
    (None where none has); runs: the number of runs (seeds) it summarises."""

    loss: str
    point: dict[str, Any] = {}
    steps: list[int]
    mean: list[float | None]
    std: list[float | None] = []
    min: list[float | None] = []
    max: list[float | None] = []
    runs: int


class StudyCurves(ApiModel):
    """`GET /v1/studies/{id}/curves`: names (the series asked for) and curves: name → one `Curve` per (loss, point)."""

    names: list[str]
    curves: dict[str, list[Curve]]

    def __getitem__(self, name: str) -> list[Curve]:
        return self.curves[name]


T = TypeVar("T")
P = TypeVar("P", bound=Page)


@lru_cache(maxsize=64)
def _adapter(kind: Any) -> TypeAdapter[Any]:
    return TypeAdapter(kind)


def parse(kind: type[T], response: httpx.Response) -> T:
    """The answer's JSON body as `kind` (a model, or e.g. `list[Sample]`).

    Raises UnexpectedResponse when the body is not JSON or not that shape (another service at the URL).
    """
    try:
        value: T = _adapter(cast(Any, kind)).validate_json(response.content)
    except ValidationError as exc:
        request = response.request
        raise UnexpectedResponse(
            f"the answer to {request.method} {request.url.path} is not a ganforge answer "
            f"({response.status_code}, {shown(response.headers.get('content-type', 'no content type'), 100)}): "
            f"{exc.errors(include_url=False)[0]['msg']}",
            response.status_code,
        ) from None
    return value


class Generation(ApiModel):
    """A generate request (`POST /v1/jobs/{id}/generate`) as `GET /v1/generations/{id}` shows it.

    status: queued, running, succeeded, failed or expired (its result was deleted: the TTL, or the owner's cap);
    params: the request as it runs (step resolved, ema decided); error: why it failed or expired; result_url: where
    its samples are once it succeeded, until expires_at.
    """

    id: str
    job_id: str
    status: str
    params: dict[str, Any] = {}
    key: str | None = None  # the key that asked: a store key's prefix, env:<owner>, None with auth off
    error: str | None = None
    media_type: str | None = None
    result_url: str | None = None
    expires_at: datetime | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None


class ApiKey(ApiModel):
    """A store API key as `/v1/keys` lists it: never the key itself.

    prefix: its id (`gf_` and 8 letters or digits); scopes: of read, submit, admin (each includes the ones before);
    active: neither revoked nor expired; parent_prefix: the key that made it (revoking that one revokes this one).
    """

    prefix: str
    owner: str
    name: str = ""
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
    revoked: bool = False
    active: bool = True
    parent_prefix: str | None = None


class ApiKeyCreated(ApiKey):
    """The answer to `keys.create`: `key` is the key itself, shown this once (send it as the client's api_key)."""

    key: str


class ApiKeyRevoked(ApiKey):
    """The answer to `keys.revoke`: the key, and the prefixes of the keys made through it, revoked with it."""

    also_revoked: list[str] = []


class KeyList(ApiModel):
    keys: list[ApiKey]


class QuotaLimits(ApiModel):
    """One owner's quotas: running_jobs, queued_jobs (jobs), steps_per_job (training.steps), stored_bytes (bytes),
    uploads_per_hour (data sets), max_priority (0-100)."""

    running_jobs: int
    queued_jobs: int
    steps_per_job: int
    stored_bytes: int
    uploads_per_hour: int
    max_priority: int


class QuotaUsage(ApiModel):
    """What the owner uses now: running_jobs (running or cancelling), queued_jobs, stored_bytes (data sets and
    checkpoint weights, bytes), uploads_last_hour; upload_retry_after_seconds: at the uploads_per_hour quota, the
    seconds until the next upload fits (None when one fits now)."""

    running_jobs: int
    queued_jobs: int
    stored_bytes: int
    uploads_last_hour: int
    upload_retry_after_seconds: int | None = None


class Quota(ApiModel):
    """The client's owner's quotas and usage (`GET /v1/quota`). A submission past queued_jobs or while stored_bytes
    is reached raises a GanforgeError with status 403 and code "quota_exceeded"; an upload past uploads_per_hour
    RateLimited (429, `.retry_after`)."""

    owner: str
    quotas: QuotaLimits
    usage: QuotaUsage


class WhoAmI(ApiModel):
    """Who the client's key is (`GET /v1/whoami`).

    owner: the team it acts for ("anonymous" with auth off); key: its id as events record it (a store key's prefix,
    "env:<owner>" for an environment key, None with auth off); prefix: the store key's prefix; scopes; expires_at:
    when the store key stops working (None: never); auth: whether the service asks for a key at all.
    """

    owner: str
    key: str | None = None
    prefix: str | None = None
    scopes: list[str]
    expires_at: datetime | None = None
    auth: bool = True
