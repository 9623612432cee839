"""What a job produced: metric series, sample snapshots, checkpoints."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, BinaryIO, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse

from api.deps import ArtifactsDep, OwnedJob, QueryText, StoreDep, StoreInt
from api.errors import ApiError
from api.schemas import CheckpointOut, MetricsOut, SampleOut, Series
from models.artifacts import CHUNK, ArtifactMissing, ArtifactStore

router = APIRouter(prefix="/v1/jobs/{job_id}", tags=["results"])

# A step (at most 12 digits: far below the store's integer bound) or "latest", the newest.
STEP_OR_LATEST = r"^(latest|[0-9]{1,12})$"


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
    since_step: Annotated[StoreInt, Query()] = 0,
    max_points: Annotated[int, Query(ge=2, le=100_000)] = 2000,
) -> MetricsOut:
    """Series by name; a series longer than max_points comes back as per-bucket min and max."""
    wanted = [n for n in names.split(",") if n] if names else store.metric_names(job_id=job.id)
    series = {}
    for name in wanted:
        steps, values, downsampled = store.metric_series(
            job_id=job.id, name=name, since_step=since_step, max_points=max_points
        )
        series[name] = Series(steps=steps, values=values, downsampled=downsampled)
    return MetricsOut(job_id=job.id, series=series)


@router.get("/samples", response_model=list[SampleOut])
def list_samples(job: OwnedJob, store: StoreDep) -> list[SampleOut]:
    return [SampleOut.of(sample) for sample in store.list_samples(job_id=job.id)]


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
        raise ApiError(404, "not_found", f"no sample at step {step}")
    what = f"the sample at step {sample.step}"
    if extension == "png":
        return stream(artifacts, sample.png_key, "image/png", f"{job.id}-{sample.step}.png", what)
    return stream(artifacts, sample.npy_key, "application/octet-stream", f"{job.id}-{sample.step}.npy", what)


@router.get("/checkpoints", response_model=list[CheckpointOut])
def list_checkpoints(job: OwnedJob, store: StoreDep) -> list[CheckpointOut]:
    return [CheckpointOut.of(checkpoint) for checkpoint in store.list_checkpoints(job_id=job.id)]


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
        raise ApiError(404, "not_found", f"no checkpoint at step {step}")
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
