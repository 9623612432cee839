"""Request dependencies: the store, the caller, and the caller's job (so no route can forget ownership).

Also the integer types every path, query and header parameter uses, bounded by what the store holds, and the
text types: a path id outside the id alphabet is a 404, query and header text with control characters a 422;
no such string reaches SQL.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from typing import Annotated

from celery import Celery
from fastapi import Depends, Header, Path, Request
from pydantic import AfterValidator, BeforeValidator, Field

from api.errors import ApiError
from models.artifacts import ArtifactStore
from models.records import DB_INT_MAX, Job
from models.settings import Settings
from models.spec import is_id, plain_text
from models.store import JobStore


def get_settings(request: Request) -> Settings:
    """The app's settings."""
    return request.app.state.settings  # type: ignore[no-any-return]


def get_store(request: Request) -> JobStore:
    """The app's job store."""
    return request.app.state.store  # type: ignore[no-any-return]


def get_artifacts(request: Request) -> ArtifactStore:
    """The app's artifact store."""
    return request.app.state.artifacts  # type: ignore[no-any-return]


def get_broker(request: Request) -> Celery:
    """The app's Celery app (sends wake-ups to workers)."""
    return request.app.state.celery


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[JobStore, Depends(get_store)]
ArtifactsDep = Annotated[ArtifactStore, Depends(get_artifacts)]
BrokerDep = Annotated[Celery, Depends(get_broker)]


ANONYMOUS = "anonymous"
UNAUTHORIZED_MESSAGE = "missing or unknown API key: send 'Authorization: Bearer <key>'"


def owner_for(keys: Mapping[str, str], authorization: str | None) -> str | None:
    """The owner of the bearer token in an Authorization header value; 'anonymous' when `keys` is empty (auth off).

    The one key lookup: the request gate (before the body is read) and the `CurrentOwner` dependency both use it.
    None means unauthorized: no header, another scheme, an empty or unknown token. Every known token is compared
    in constant time, so the answer's timing does not tell how much of a token matched.
    """
    if not keys:
        return ANONYMOUS
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    found = None
    for known, owner in keys.items():
        if secrets.compare_digest(known.encode(), token.encode()):
            found = owner
    return found


def current_owner(settings: SettingsDep, authorization: Annotated[str | None, Header()] = None) -> str:
    """The caller's owner name from `Authorization: Bearer <token>`; 'anonymous' when auth is off; else 401."""
    owner = owner_for(settings.api_keys, authorization)
    if owner is None:
        raise ApiError(401, "unauthorized", UNAUTHORIZED_MESSAGE)
    return owner


CurrentOwner = Annotated[str, Depends(current_owner)]


def not_found(what: str, given: str) -> ApiError:
    """404 for `what` (e.g. "job") named `given`; a string that is no id is not echoed back."""
    return ApiError(404, "not_found", f"no {what} {given!r}" if is_id(given) else f"no {what} with this id")


def owned_job(store: StoreDep, owner: CurrentOwner, job_id: Annotated[str, Path()]) -> Job:
    """The caller's job; another owner's job and a string that is no job id are as missing as a missing one (404)."""
    job = store.get_job(job_id=job_id, owner=owner) if is_id(job_id) else None
    if job is None:
        raise not_found("job", job_id)
    return job


OwnedJob = Annotated[Job, Depends(owned_job)]


def plain_decimal(value: object) -> object:
    """A header's or path's text as an int only when it is plain ASCII decimal digits ("²", "-1", "1e3" are not)."""
    if isinstance(value, str):
        if not _DECIMAL.fullmatch(value):
            raise ValueError("must be a plain decimal integer (ASCII digits 0-9 only)")
        return int(value)
    return value


def printable_ascii(value: str) -> str:
    """`value` when it is 1 or more printable ASCII characters (space to '~'); else ValueError (422)."""
    if not value or not all(" " <= c <= "~" for c in value):
        raise ValueError("must be 1 to 255 printable ASCII characters (space to '~')")
    return value


_DECIMAL = re.compile(r"[0-9]{1,40}")
# Client text for a query or header: no control characters or lone surrogates (422 naming the parameter).
QueryText = Annotated[str, AfterValidator(plain_text)]
# An Idempotency-Key as the IETF draft's clients send it: a short printable ASCII string, never empty.
IdempotencyKey = Annotated[str, Field(max_length=255), AfterValidator(printable_ascii)]
# Every integer a client sends is one the store can hold (a BIGINT); beyond that, a 422 naming the field.
StoreInt = Annotated[int, Field(ge=0, le=DB_INT_MAX)]
# An event id as EventSource sends it in Last-Event-ID (or in ?after=): digits only, within the store's range.
EventId = Annotated[int, Field(ge=0, le=DB_INT_MAX), BeforeValidator(plain_decimal)]
