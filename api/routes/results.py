"""What a job produced: metric series, sample snapshots, checkpoints."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Annotated, BinaryIO, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, BeforeValidator

from api.deps import ArtifactsDep, OwnedJob, QueryText, StoreDep, StoreInt, plain_decimal
from api.errors import ApiError
from api.routes.jobs import PageCursor, PageLimit, QueryInt
from api.schemas import CheckpointOut, MetricsOut, SampleOut, Series
from models.artifacts import CHUNK, ArtifactMissing, ArtifactStore
from models.records import JobStatus

router = APIRouter(prefix="/v1/jobs/{job_id}", tags=["results"])

# A step (at most 12 digits: far below the store's integer bound) or "latest", the newest.
STEP_OR_LATEST = r"^(latest|[0-9]{1,12})$"
# Series one metrics request reads at most (after deduplication): each is a query of its own.
METRIC_NAMES_MAX = 64
# Samples or checkpoints per page when the client gives no limit (a job writes a few hundred at most).
RESULTS_PAGE_DEFAULT = 100
# A 404 for a missing step lists the steps that exist: the first and last this many when there are more.
STEPS_LISTED = 20
# The series names the worker records (worker/gan/gan.py's step metrics, worker/gan/evaluation.py's scores): while
# a job can still write one of them, asking for it is an empty series, not a 404; any other unwritten name is a 404.
RECORDED_METRICS = frozenset(
    {
        "loss_d", "loss_g", "d_real", "d_fake", "grad_norm_d", "grad_norm_g", "wasserstein", "gradient_penalty",
        "r1", "m_global", "k_t", "mutual_info", "modes_covered", "hq_fraction", "reverse_kl", "reverse_kl_all",
        "fd", "class_accuracy", "code_purity", "code_nmi", "fid", "kid",  # worker/quality.py's image figures
    }
)  # fmt: skip


def steps_listed(steps: Sequence[int]) -> str:
    """ "steps 5, 10, 15" (the first and last STEPS_LISTED when longer), or "none yet"."""
    if not steps:
        return "none yet"
    if len(steps) <= 2 * STEPS_LISTED:
        return "steps " + ", ".join(map(str, steps))
    head, tail = steps[:STEPS_LISTED], steps[-STEPS_LISTED:]
    omitted = len(steps) - 2 * STEPS_LISTED
    return f"steps {', '.join(map(str, head))}, … ({omitted} more) …, {', '.join(map(str, tail))}"


def missing_step(what: str, step: str, steps: Sequence[int]) -> ApiError:
    """404 on path.step for a `what` ("sample", "checkpoint") at `step` that does not exist, listing those that do."""
    if step == "latest" and not steps:
        message = f"no {what} yet: this job has written none so far"
    else:
        message = f"no {what} at step {step}; this job's {what}s: {steps_listed(steps)}"
        message += " (or 'latest')" if steps else ""
    return ApiError(404, "not_found", message, [{"field": "path.step", "message": message}])


def stream(artifacts: ArtifactStore, key: str, media_type: str, filename: str, what: str) -> StreamingResponse:
    """Stream the object at `key`; 404 naming `what` (e.g. "the sample at step 5") when its file is missing."""
    try:
        handle, size = artifacts.open_sized(key)
    except ArtifactMissing:
        raise missing_file(what) from None
    headers = {"Content-Length": str(size), "Content-Disposition": f'attachment; filename="{filename}"'}
    return StreamingResponse(_chunks(handle), media_type=media_type, headers=headers)


def missing_file(what: str) -> ApiError:
    """404 for a record whose file is gone from the artifact store."""
    return ApiError(404, "artifact_missing", f"the file of {what} is missing from the artifact store (deleted?)")


def _chunks(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(CHUNK):
            yield chunk


@router.get("/metrics", response_model=MetricsOut)
def get_metrics(
    job: OwnedJob,
    store: StoreDep,
    names: Annotated[
        QueryText | None, Query(description="comma-separated series names; default all", max_length=2000)
    ] = None,
    since_step: Annotated[StoreInt, BeforeValidator(plain_decimal), Query()] = 0,
    max_points: Annotated[QueryInt, Query(ge=2, le=100_000)] = 2000,
) -> MetricsOut:
    """Series by name; a series longer than max_points comes back as per-bucket min and max.

    `names` is deduplicated; an empty name in it, or more than METRIC_NAMES_MAX (64) names, is a 422 on
    query.names. A name the job has no series of is a
    404 listing the names it has, except a name the worker records while the job can still write it (empty).
    """
    existing = store.metric_names(job_id=job.id)
    if names is None:
        wanted = existing
    else:
        wanted = list(dict.fromkeys(name.strip() for name in names.split(",")))
        if "" in wanted:
            message = "an empty series name: give comma-separated names without empty ones, or omit names for all"
            raise ApiError(422, "validation_error", message, [{"field": "query.names", "message": message}])
        if len(wanted) > METRIC_NAMES_MAX:
            message = f"{len(wanted)} series names: ask for at most {METRIC_NAMES_MAX} at once, or omit names for all"
            raise ApiError(422, "validation_error", message, [{"field": "query.names", "message": message}])
        can_write = job.status not in JobStatus.FINAL
        unknown = [n for n in wanted if n not in existing and not (can_write and n in RECORDED_METRICS)]
        if unknown:
            has = ", ".join(existing) if existing else "none yet"
            message = f"no metric series {', '.join(map(repr, unknown))} for this job; its series: {has}"
            raise ApiError(404, "not_found", message, [{"field": "query.names", "message": message}])
    series = {}
    for name in wanted:
        steps, values, downsampled = store.metric_series(
            job_id=job.id, name=name, since_step=since_step, max_points=max_points
        )
        series[name] = Series(steps=steps, values=values, downsampled=downsampled)
    return MetricsOut(job_id=job.id, series=series)


class SamplePage(BaseModel):
    """One page of a job's sample snapshots in step order; `next_cursor` (None on the last page) fetches the next."""

    samples: list[SampleOut]
    next_cursor: str | None


class CheckpointPage(BaseModel):
    """One page of a job's checkpoints in step order; `next_cursor` (None on the last page) fetches the next."""

    checkpoints: list[CheckpointOut]
    next_cursor: str | None


@router.get("/samples", response_model=SamplePage)
def list_samples(
    job: OwnedJob, store: StoreDep, limit: PageLimit = RESULTS_PAGE_DEFAULT, cursor: PageCursor = None
) -> SamplePage:
    """The job's sample snapshots, oldest step first; pass `next_cursor` back as `cursor` for the next page."""
    samples, next_cursor = store.page_samples(job_id=job.id, limit=limit, cursor=cursor)
    return SamplePage(samples=[SampleOut.of(sample) for sample in samples], next_cursor=next_cursor)


@router.get("/samples/{step}.{extension}")
def get_sample(
    job: OwnedJob,
    store: StoreDep,
    artifacts: ArtifactsDep,
    step: Annotated[str, Path(pattern=STEP_OR_LATEST, description="a step, or latest")],
    extension: Literal["png", "npy"],
) -> StreamingResponse:
    """The snapshot at `step` (or the newest: latest) as a PNG (grid or scatter plot) or the raw batch (.npy)."""
    sample = store.get_sample(job_id=job.id, step=None if step == "latest" else int(step))
    if sample is None:
        raise missing_step("sample", step, [s.step for s in store.list_samples(job_id=job.id)])
    what = f"the sample at step {sample.step}"
    if extension == "png":
        return stream(artifacts, sample.png_key, "image/png", f"{job.id}-{sample.step}.png", what)
    return stream(artifacts, sample.npy_key, "application/octet-stream", f"{job.id}-{sample.step}.npy", what)


@router.get("/checkpoints", response_model=CheckpointPage)
def list_checkpoints(
    job: OwnedJob, store: StoreDep, limit: PageLimit = RESULTS_PAGE_DEFAULT, cursor: PageCursor = None
) -> CheckpointPage:
    """The job's checkpoints, oldest step first; pass `next_cursor` back as `cursor` for the next page."""
    checkpoints, next_cursor = store.page_checkpoints(job_id=job.id, limit=limit, cursor=cursor)
    return CheckpointPage(checkpoints=[CheckpointOut.of(c) for c in checkpoints], next_cursor=next_cursor)


@router.get("/checkpoints/{step}")
def get_checkpoint(
    job: OwnedJob,
    store: StoreDep,
    artifacts: ArtifactsDep,
    step: Annotated[str, Path(pattern=STEP_OR_LATEST, description="a step, or latest")],
    file: Annotated[
        Literal["weights", "state"], Query(description="weights: safetensors; state: resume state (torch)")
    ] = "weights",
) -> StreamingResponse:
    """Download a checkpoint (streamed): safetensors weights with the spec in its metadata, or the resume state."""
    checkpoint = store.get_checkpoint(job_id=job.id, step=None if step == "latest" else int(step))
    if checkpoint is None:
        raise missing_step("checkpoint", step, [c.step for c in store.list_checkpoints(job_id=job.id)])
    what = f"the checkpoint at step {checkpoint.step} ({file})"
    if file == "state":
        return stream(
            artifacts, checkpoint.state_key, "application/octet-stream", f"{job.id}-{checkpoint.step}.state.pt", what
        )
    return stream(
        artifacts,
        checkpoint.weights_key,
        "application/octet-stream",
        f"{job.id}-{checkpoint.step}.safetensors",
        what,
    )
