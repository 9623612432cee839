"""Request dependencies: the store, the caller, and the caller's job (so no route can forget ownership)."""

from __future__ import annotations

import secrets
from typing import Annotated

from celery import Celery
from fastapi import Depends, Header, Path, Request

from api.errors import ApiError
from models.artifacts import ArtifactStore
from models.records import Job
from models.settings import Settings
from models.store import JobStore


def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_store(request: Request) -> JobStore:
    return request.app.state.store  # type: ignore[no-any-return]


def get_artifacts(request: Request) -> ArtifactStore:
    return request.app.state.artifacts  # type: ignore[no-any-return]


def get_broker(request: Request) -> Celery:
    return request.app.state.celery  # type: ignore[no-any-return]


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[JobStore, Depends(get_store)]
ArtifactsDep = Annotated[ArtifactStore, Depends(get_artifacts)]
BrokerDep = Annotated[Celery, Depends(get_broker)]


def current_owner(settings: SettingsDep, authorization: Annotated[str | None, Header()] = None) -> str:
    """The caller's owner name from `Authorization: Bearer <token>`; 'anonymous' when auth is off."""
    owners = settings.owners_by_token()
    if not owners:
        return "anonymous"
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() == "bearer":
        for known, owner in owners.items():
            if secrets.compare_digest(known.encode(), token.strip().encode()):
                return owner
    raise ApiError(401, "unauthorized", "missing or unknown API key: send 'Authorization: Bearer <key>'")


CurrentOwner = Annotated[str, Depends(current_owner)]


def owned_job(store: StoreDep, owner: CurrentOwner, job_id: Annotated[str, Path(max_length=64)]) -> Job:
    """The caller's job; another owner's job is indistinguishable from a missing one (404)."""
    job = store.get_job(job_id=job_id, owner=owner)
    if job is None:
        raise ApiError(404, "not_found", f"no job {job_id!r}")
    return job


OwnedJob = Annotated[Job, Depends(owned_job)]
