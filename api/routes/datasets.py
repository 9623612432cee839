"""/v1/datasets: upload once, list, read, preview, delete; a job refers to one by `{"id": ...}`."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.deps import ArtifactsDep, CurrentKey, CurrentOwner, SettingsDep, StoreDep, not_found
from api.errors import ApiError
from api.multipart import receive
from api.routes.jobs import PageCursor, PageLimit
from api.routes.quota import QUOTA_403, UPLOAD_429, check_upload, quota_error
from api.slots import OwnerSlots
from models.artifacts import ArtifactMissing
from models.datasets import DatasetInfo
from models.ingest import RESIZE_RANGE, Limits
from models.ingest.publish import ingest_upload
from models.records import Dataset
from models.spec import is_id
from models.store import DatasetInUse, as_utc
from models.store.quota import QuotaExceeded

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])
log = logging.getLogger("ganforge.api")

# Retry-After of an upload refused because the owner has max_uploads_in_flight_per_owner in progress: a small
# upload's ingest takes about a second.
IN_FLIGHT_RETRY_AFTER_SECONDS = 2
UPLOAD_429_ALL = (
    f"{UPLOAD_429}; or the owner already has GANFORGE_MAX_UPLOADS_IN_FLIGHT_PER_OWNER uploads in progress on this "
    "API process (uploads_in_flight), with Retry-After"
)


class UploadsInFlight:
    """Each owner's uploads in progress in this API process (api/slots.py).

    Per process, not shared through Redis: it bounds the disk and CPU one owner's concurrent ingests take on one
    API process; the stored_bytes and uploads_per_hour quotas hold across processes anyway (checked again in the
    transaction that inserts the data set)."""

    def __init__(self) -> None:
        self.slots = OwnerSlots()

    @contextmanager
    def slot(self, owner: str, cap: int) -> Iterator[None]:
        """Hold one of `owner`'s `cap` places for the block; ApiError 429 (with Retry-After) when all are taken."""
        if not self.slots.take(owner, cap):
            message = (
                f"{self.slots.held(owner)} uploads of this owner are in progress on this API process, the most "
                f"allowed (GANFORGE_MAX_UPLOADS_IN_FLIGHT_PER_OWNER={cap}); retry when one has finished"
            )
            headers = {"Retry-After": str(IN_FLIGHT_RETRY_AFTER_SECONDS)}
            extra = {"limit": cap, "setting": "GANFORGE_MAX_UPLOADS_IN_FLIGHT_PER_OWNER"}
            raise ApiError(429, "uploads_in_flight", message, headers=headers, extra=extra)
        try:
            yield
        finally:
            self.slots.give_back(owner)


def uploads_in_flight(request: Request) -> UploadsInFlight:
    """This app's UploadsInFlight (made on first use)."""
    state = request.app.state
    if not hasattr(state, "uploads_in_flight"):
        state.uploads_in_flight = UploadsInFlight()
    tracker: UploadsInFlight = state.uploads_in_flight
    return tracker


class DatasetOut(BaseModel):
    id: str
    name: str
    format: str
    info: DatasetInfo
    content_hash: str
    size_bytes: int
    created_at: datetime
    preview_url: str
    key: str | None = Field(
        description="the key that uploaded it: a store key's prefix, env:<owner> for an environment key, "
        "null with auth off"
    )

    @classmethod
    def of(cls, record: Dataset) -> DatasetOut:
        return cls(
            id=record.id,
            name=record.name,
            format=record.format,
            info=DatasetInfo.model_validate(record.info),
            content_hash=record.content_hash,
            size_bytes=record.size_bytes,
            created_at=as_utc(record.created_at),
            preview_url=f"/v1/datasets/{record.id}/preview.png",
            key=record.key_id,
        )


class DatasetPage(BaseModel):
    datasets: list[DatasetOut]
    next_cursor: str | None


def owned_dataset(store: StoreDep, owner: CurrentOwner, dataset_id: Annotated[str, Path()]) -> Dataset:
    """The caller's data set; another owner's and a string that is no data set id are as missing as a missing one (404)."""
    record = store.get_dataset(dataset_id=dataset_id, owner=owner) if is_id(dataset_id) else None
    if record is None:
        raise not_found("data set", dataset_id)
    return record


OwnedDataset = Annotated[Dataset, Depends(owned_dataset)]

_UPLOAD_FORM: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": ".npz (x: N×D rows or N×[C×]H×W images, optional integer y) "
                            "or .zip of class folders of PNG/JPEG images",
                        },
                        "name": {
                            "type": "string",
                            "maxLength": 200,
                            "description": "default: the file name without its extension",
                        },
                        "resize": {
                            "type": "integer",
                            "minimum": RESIZE_RANGE[0],
                            "maximum": RESIZE_RANGE[1],
                            "description": "resample every image to this square size (px)",
                        },
                        "value_range": {
                            "type": "string",
                            "pattern": r"^\s*-?[0-9.eE+-]+\s*,\s*-?[0-9.eE+-]+\s*$",
                            "description": ".npz images: the source values that mean black and white, 'low,high' "
                            "(default: the dtype's range for integers, [0, 1], [-1, 1] or [0, 255] for floats)",
                        },
                    },
                }
            }
        },
    }
}


@router.post(
    "",
    status_code=201,
    response_model=DatasetOut,
    responses={
        200: {"model": DatasetOut, "description": "the same content was uploaded before: that data set"},
        400: {"description": "malformed or truncated multipart body"},
        403: {"description": QUOTA_403},
        413: {"description": "over GANFORGE_MAX_UPLOAD_BYTES or an archive/data set limit"},
        415: {"description": "not multipart/form-data"},
        422: {"description": "content that cannot become a data set; details name the field"},
        429: {"description": UPLOAD_429_ALL},
    },
    openapi_extra=_UPLOAD_FORM,
)
async def upload_dataset(
    request: Request,
    response: Response,
    settings: SettingsDep,
    store: StoreDep,
    artifacts: ArtifactsDep,
    owner: CurrentOwner,
    key: CurrentKey,
) -> DatasetOut:
    """Upload a data set (streamed); the same content uploaded again returns the earlier data set (200).

    Normalisation runs in a bounded subprocess (models/ingest/isolated.py), waited on from the threadpool.
    Refused before the body is read when the owner already has max_uploads_in_flight_per_owner uploads in progress
    on this API process (429 `uploads_in_flight` with Retry-After), holds its stored_bytes quota (403
    `quota_exceeded`) or made uploads_per_hour uploads in the last hour (429 `quota_exceeded` with Retry-After).
    Both quotas are checked again where the data set is inserted, under the owner's lock, counting the uploads that
    finished meanwhile: the same answers, and the ingested files are deleted.
    """
    with uploads_in_flight(request).slot(owner, settings.max_uploads_in_flight_per_owner):
        quotas = settings.quotas(owner)
        await run_in_threadpool(check_upload, store, owner, quotas)
        upload = await receive(request, settings=settings)
        try:
            dataset, created = await run_in_threadpool(
                ingest_upload,
                upload.path,
                upload.filename,
                upload.fields,
                owner=owner,
                limits=Limits.of(settings),
                store=store,
                artifacts=artifacts,
                key_id=key,
                quotas=quotas,
            )
        except QuotaExceeded as exc:
            if exc.quota != "uploads_per_hour":
                raise quota_error(exc) from None
            raise quota_error(exc, status=429, headers={"Retry-After": str(exc.retry_after or 1)}) from None
        finally:
            await run_in_threadpool(upload.discard)
    if not created:
        response.status_code = 200
    return DatasetOut.of(dataset)


@router.get("", response_model=DatasetPage)
def list_datasets(
    store: StoreDep,
    owner: CurrentOwner,
    limit: PageLimit = 50,
    cursor: PageCursor = None,
) -> DatasetPage:
    """The caller's data sets, newest first; pass `next_cursor` back as `cursor` for the next page."""
    records, next_cursor = store.list_datasets(owner=owner, limit=limit, cursor=cursor)
    return DatasetPage(datasets=[DatasetOut.of(record) for record in records], next_cursor=next_cursor)


@router.get("/{dataset_id}", response_model=DatasetOut)
def get_dataset(dataset: OwnedDataset) -> DatasetOut:
    return DatasetOut.of(dataset)


@router.get("/{dataset_id}/preview.png", response_class=Response, responses={200: {"content": {"image/png": {}}}})
def get_preview(dataset: OwnedDataset, artifacts: ArtifactsDep) -> Response:
    """A grid of real examples (images) or a scatter plot of the first two dimensions (rows)."""
    if dataset.preview_key is None:
        raise ApiError(404, "not_found", "this data set has no preview")
    try:
        return Response(artifacts.read_bytes(dataset.preview_key), media_type="image/png")
    except ArtifactMissing:
        message = "the file of this data set's preview is missing from the artifact store (deleted?)"
        raise ApiError(404, "artifact_missing", message) from None


@router.delete(
    "/{dataset_id}",
    status_code=204,
    response_class=Response,
    responses={409: {"description": "a queued or running job uses the data set"}},
)
def delete_dataset(
    dataset: OwnedDataset, store: StoreDep, artifacts: ArtifactsDep, owner: CurrentOwner, key: CurrentKey
) -> Response:
    """Delete a data set and its files; refused (409) while a queued or running job uses it. The API's log
    records the deleting key's id (the row is gone)."""
    try:
        deleted = store.delete_dataset(dataset_id=dataset.id, owner=owner)
    except DatasetInUse as exc:
        message = f"used by {len(exc.job_ids)} queued or running job(s): {', '.join(exc.job_ids)}; cancel them first"
        raise ApiError(409, "dataset_in_use", message, [{"field": "dataset_id", "message": message}]) from None
    if deleted is None:
        raise ApiError(404, "not_found", f"no data set {dataset.id!r}")
    artifacts.delete(deleted.data_key)
    log.info("data set %s of %s deleted by key %s", deleted.id, owner, key)
    return Response(status_code=204)
