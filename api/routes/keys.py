"""/v1/keys: an admin key creates, lists and revokes its own owner's API keys (models/store/keys.py).

The key itself is in the 201 of its creation and nowhere else: a list shows each key's prefix (its id), owner,
scopes and times, never the key or its hash. Another owner's key is as missing as a missing one (404). The gate
(api/gate.py) lets only a key with the admin scope reach these routes; `AdminCaller` checks again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Request
from pydantic import AfterValidator, BaseModel, Field, field_validator, model_validator
from starlette.concurrency import run_in_threadpool

from api.deps import UNAUTHORIZED_MESSAGE, AdminCaller, CurrentCaller, SettingsDep, StoreDep, authenticator_of
from api.errors import ApiError
from models.records import ApiKey
from models.settings import OWNER_MAX_LENGTH
from models.spec import StrictModel, plain_text
from models.store import as_utc, utcnow
from models.store.keys import (
    SCOPES,
    TTL_MAX,
    ParentRevoked,
    TooManyKeys,
    is_active,
    is_prefix,
    normalize_scopes,
    parse_ttl,
)

router = APIRouter(prefix="/v1/keys", tags=["keys"])
# GET /v1/keys lists at most this many (newest first): active keys are capped (GANFORGE_MAX_KEYS_PER_OWNER), but
# revoked and expired ones stay in the store.
LIST_MAX = 1000

Text = Annotated[str, AfterValidator(plain_text)]


class KeyCreate(StrictModel):
    """POST /v1/keys: scopes, and at most one of expires_at and ttl (neither: the key does not expire)."""

    owner: Annotated[Text, Field(min_length=1, max_length=OWNER_MAX_LENGTH)] | None = Field(
        default=None, description="the team the key acts for; default and only choice: the admin key's own owner"
    )
    scopes: list[str] = Field(
        default=["read", "submit"],
        min_length=1,
        max_length=len(SCOPES),
        description="of read, submit, admin (each includes the ones before); default read and submit, as "
        "`ganforge keys create`",
    )
    name: Annotated[Text, Field(max_length=200)] = Field(default="", description="what the key is for")
    expires_at: datetime | None = Field(default=None, description="when the key stops working (ISO 8601, with zone)")
    ttl: str | None = Field(default=None, description="or how long it works from now: 3600s, 90m, 12h, 30d, 2w")

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: list[str]) -> list[str]:
        return normalize_scopes(value)

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, value: str | None) -> str | None:
        if value is not None:
            parse_ttl(value)
        return value

    @field_validator("expires_at")
    @classmethod
    def _expires_at(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("give a time zone (2027-01-31T12:00:00Z)")
        now = utcnow()
        if value <= now:
            raise ValueError("must be in the future")
        if value > now + TTL_MAX:
            raise ValueError(f"must be at most {TTL_MAX.days} days from now")
        return value

    @model_validator(mode="after")
    def _one_expiry(self) -> KeyCreate:
        if self.expires_at is not None and self.ttl is not None:
            raise ValueError("give expires_at or ttl, not both")
        return self


class KeyOut(BaseModel):
    """A key as listed: never the key itself or its hash."""

    prefix: str
    owner: str
    name: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    revoked: bool
    active: bool
    parent_prefix: str | None = Field(
        default=None, description="the store key that made this one through POST /v1/keys (revoking it revokes this)"
    )

    @classmethod
    def of(cls, record: ApiKey) -> KeyOut:
        return cls(
            prefix=record.prefix,
            owner=record.owner,
            name=record.name,
            scopes=list(record.scopes),
            created_at=as_utc(record.created_at),
            expires_at=as_utc(record.expires_at),
            last_used_at=as_utc(record.last_used_at),
            revoked_at=as_utc(record.revoked_at),
            revoked=record.revoked_at is not None,
            active=is_active(record),
            parent_prefix=record.parent_prefix,
        )


class KeyCreated(KeyOut):
    """The 201 of POST /v1/keys: the key itself, shown this once."""

    key: str = Field(description="send as 'Authorization: Bearer <key>'; shown only now, store it safely")


class KeyRevoked(KeyOut):
    """The answer of DELETE /v1/keys/{prefix}: the key, and the keys made through it that were revoked with it."""

    also_revoked: list[str] = Field(description="prefixes of the keys made through this one, revoked now with it")


class KeyList(BaseModel):
    keys: list[KeyOut]


@router.post(
    "",
    status_code=201,
    response_model=KeyCreated,
    responses={
        403: {"description": "not an admin key, another owner named, or GANFORGE_MAX_KEYS_PER_OWNER active keys held"},
        422: {"description": "bad field"},
    },
)
async def create_key(body: KeyCreate, caller: AdminCaller, store: StoreDep, settings: SettingsDep) -> KeyCreated:
    """Create a key for the admin's own owner; the answer holds the key itself, shown only this once. Counted
    against GANFORGE_RATE_SUBMIT (api/ratelimit.py); an owner holding GANFORGE_MAX_KEYS_PER_OWNER active keys
    gets 403 quota_exceeded (revoke one first)."""
    if body.owner is not None and body.owner != caller.owner:
        raise ApiError(
            403,
            "forbidden",
            "an admin key creates keys for its own owner only",
            [{"field": "owner", "message": f"must be {caller.owner!r} (this key's owner) or left out"}],
        )
    if caller.key_id is None:
        # Auth is off: the first key would lock every other client out and hand `anonymous`'s data to this caller.
        raise ApiError(
            403,
            "forbidden",
            "auth is off: an operator creates the first key on the store (`ganforge keys create --scopes admin`)",
        )
    expires_at = utcnow() + parse_ttl(body.ttl) if body.ttl is not None else body.expires_at
    if (parent_prefix := caller.prefix) is not None:
        # A key never outlives the key that made it.
        parent = await run_in_threadpool(lambda: store.find_key(prefix=parent_prefix))
        limit = as_utc(parent.expires_at) if parent is not None else None
        if limit is not None and (expires_at is None or as_utc(expires_at) > limit):
            expires_at = limit
    try:
        record, key = await run_in_threadpool(
            lambda: store.create_key(
                owner=caller.owner,
                scopes=body.scopes,
                name=body.name,
                expires_at=expires_at,
                parent_prefix=parent_prefix,  # revoking the caller's key revokes this one
                max_active=settings.max_keys_per_owner,
            )
        )
    except ParentRevoked:  # revoked since the gate let it in
        raise ApiError(401, "unauthorized", UNAUTHORIZED_MESSAGE) from None
    except TooManyKeys as exc:
        raise ApiError(
            403,
            "quota_exceeded",
            f"owner {caller.owner!r} already holds {exc.limit} active API keys (GANFORGE_MAX_KEYS_PER_OWNER): "
            "revoke one (DELETE /v1/keys/{prefix}) before making another",
        ) from None
    return KeyCreated(**KeyOut.of(record).model_dump(), key=key)


@router.get("", response_model=KeyList)
def list_keys(caller: AdminCaller, store: StoreDep) -> KeyList:
    """The admin's owner's newest LIST_MAX keys, newest first: revoked and expired ones too; never a key or its
    hash."""
    return KeyList(keys=[KeyOut.of(record) for record in store.list_keys(owner=caller.owner, limit=LIST_MAX)])


@router.delete("/{prefix}", response_model=KeyRevoked, responses={404: {"description": "no such key of this owner"}})
def revoke_key(
    request: Request,
    caller: AdminCaller,
    store: StoreDep,
    prefix: Annotated[str, Path(description="the key's prefix, gf_ and 8 letters or digits")],
) -> KeyRevoked:
    """Revoke the key and every key made through it (their keys too, transitively), in one transaction; they stay
    listed, revoked. Revoking it again answers the same (and revokes a key it made since). Another owner's: 404.

    This process stops accepting them at once; another API process within KEY_CACHE_SECONDS (api/deps.py).
    """
    found = store.revoke_key(prefix=prefix, owner=caller.owner) if is_prefix(prefix) else None
    if found is None:
        raise ApiError(404, "not_found", f"no API key {prefix!r}" if is_prefix(prefix) else "no API key with this id")
    record, revoked = found
    authenticator_of(request.app).forget(record.prefix, *revoked)
    return KeyRevoked(**KeyOut.of(record).model_dump(), also_revoked=[p for p in revoked if p != record.prefix])


class WhoAmI(BaseModel):
    """GET /v1/whoami: who the key in the request is (any scope; with auth off, anonymous with every scope)."""

    owner: str = Field(description="the team the key acts for; 'anonymous' with auth off")
    key: str | None = Field(
        description="the key's id as events record it: a store key's prefix, env:<owner> for an environment key "
        "(GANFORGE_API_KEYS), null with auth off"
    )
    prefix: str | None = Field(description="the store key's prefix (null for an environment key or with auth off)")
    scopes: list[str]
    expires_at: datetime | None = Field(description="when the store key stops working; null: never")
    auth: bool = Field(description="whether the service asks for a key (false: every caller is anonymous)")


whoami_router = APIRouter(prefix="/v1", tags=["keys"])


@whoami_router.get("/whoami", response_model=WhoAmI)
def whoami(caller: CurrentCaller, store: StoreDep) -> WhoAmI:
    """The caller: owner, key id, scopes and expiry (any scope may ask)."""
    record = store.find_key(prefix=caller.prefix) if caller.prefix is not None else None
    return WhoAmI(
        owner=caller.owner,
        key=caller.key_id,
        prefix=caller.prefix,
        scopes=list(caller.scopes),
        expires_at=as_utc(record.expires_at) if record is not None else None,
        auth=caller.key_id is not None,
    )
