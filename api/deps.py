"""Request dependencies: the store, the caller (and the one API key lookup), and the caller's job (so no route
can forget ownership).

Also the integer types every path, query and header parameter uses, bounded by what the store holds, and the
text types: a path id outside the id alphabet is a 404, query and header text with control characters a 422;
no such string reaches SQL.
"""

from __future__ import annotations

import math
import re
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

import anyio.to_thread
from celery import Celery
from fastapi import Depends, Header, Path, Request
from pydantic import AfterValidator, BeforeValidator, Field
from sqlalchemy.exc import SQLAlchemyError

from api.errors import ApiError
from models.artifacts import ArtifactStore
from models.records import DB_INT_MAX, ApiKey, Job
from models.settings import Settings
from models.spec import is_id, plain_text
from models.store import JobStore, utcnow
from models.store.keys import SCOPES, KeysStore, has_scope, hash_key, is_active, key_prefix


# Dependencies that only read app.state or the request are `async def`: FastAPI runs a plain `def` dependency in
# its thread pool, a hop (and a wait for a free thread under load) per dependency per request.
async def get_settings(request: Request) -> Settings:
    """The app's settings."""
    return get_settings_now(request)


def get_settings_now(request: Request) -> Settings:
    """The app's settings, for code that has the request (get_settings is its dependency)."""
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_store(request: Request) -> JobStore:
    """The app's job store."""
    return get_store_now(request)


def get_store_now(request: Request) -> JobStore:
    """The app's job store, for code that has the request (get_store is its dependency)."""
    return request.app.state.store  # type: ignore[no-any-return]


async def get_artifacts(request: Request) -> ArtifactStore:
    """The app's artifact store."""
    return request.app.state.artifacts  # type: ignore[no-any-return]


async def get_broker(request: Request) -> Celery:
    """The app's Celery app (sends wake-ups to workers)."""
    return request.app.state.celery


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[JobStore, Depends(get_store)]
ArtifactsDep = Annotated[ArtifactStore, Depends(get_artifacts)]
BrokerDep = Annotated[Celery, Depends(get_broker)]


ANONYMOUS = "anonymous"
UNAUTHORIZED_MESSAGE = (
    "missing, unknown, expired or revoked API key: send 'Authorization: Bearer <key>' "
    "(`ganforge keys list` shows a store key's state)"
)
# A store key's record is reused this long before the store is asked again: a revoked key stops working within
# this many seconds (an expiry is checked on every request against the cached record's time, so it is exact).
KEY_CACHE_SECONDS = 5.0
# A key's last-used time is written at most this often (a hot key is not a write per request).
LAST_USED_EVERY = timedelta(seconds=60)
# Cached records (unknown prefixes too); past this many the cache starts over, so random prefixes cannot grow it.
KEY_CACHE_ENTRIES = 10_000
CALLER_STATE = "ganforge_caller"  # where the gate leaves the Caller in the request's scope["state"]


ENV_KEY_ID = "env:{owner}"  # the key id of an environment key (GANFORGE_API_KEYS): its owner, never the key


@dataclass(frozen=True)
class Caller:
    """Who is calling: the owner, the scopes (SCOPES order, a higher one includes the lower ones), the store
    key's prefix (None for an environment key or with auth off), and `key_id`, the non-secret id of the key used
    (what the job's event log records for an action): a store key's prefix (`gf_ab12cd34`), "env:<owner>" for an
    environment key (every environment key of one owner reads the same: it is an operator's key, and any part
    or hash of it could help guess a weak one), None with auth off (no key was used)."""

    owner: str
    scopes: tuple[str, ...]
    prefix: str | None = None
    key_id: str | None = None

    def may(self, scope: str) -> bool:
        """Whether the caller has `scope` ("read", "submit" or "admin")."""
        return has_scope(self.scopes, scope)


class _NeedsStore:
    """The answer needs a store query (which must not run on the event loop)."""


NEEDS_STORE = _NeedsStore()


def owner_for(keys: Mapping[str, str], authorization: str | None) -> str | None:
    """The owner of the bearer token in an Authorization header value among the environment's `keys`
    (GANFORGE_API_KEYS); 'anonymous' when `keys` is empty.

    None means unauthorized: no header, another scheme, an empty or unknown token. Every known token is compared
    in constant time, so the answer's timing does not tell how much of a token matched.
    """
    if not keys:
        return ANONYMOUS
    token = bearer_token(authorization)
    if token is None:
        return None
    found = None
    for known, owner in keys.items():
        if secrets.compare_digest(known.encode(), token.encode("utf-8", "surrogatepass")):
            found = owner
    return found


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value; None for none, another scheme, or empty."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


class Authenticator:
    """The one key lookup: the request gate (before the body is read) and `CurrentOwner` both use it.

    A caller is let in by an environment key (GANFORGE_API_KEYS: every scope) or by a store key (models/store/
    keys.py) that is neither expired nor revoked. Auth is on when GANFORGE_API_KEYS is set or the store has ever
    held a key (a revoked or expired one too: removing keys never turns auth off); with auth off every caller is
    'anonymous' with every scope. Store records are cached KEY_CACHE_SECONDS in this process; thread-safe.
    """

    def __init__(self, env_keys: Mapping[str, str], store: KeysStore) -> None:
        self.env_keys, self.store = env_keys, store
        self._lock = threading.Lock()
        self._records: dict[str, tuple[float, ApiKey | None]] = {}  # prefix: (monotonic time read, record)
        self._touched: dict[str, float] = {}  # prefix: monotonic time its last-used time was last written
        self._auth_on = bool(env_keys)
        self._auth_checked = -math.inf

    def authenticate(self, authorization: str | None, *, block: bool = True) -> Caller | None | _NeedsStore:
        """The caller an Authorization header value names; None for unauthorized (no key, an unknown, expired or
        revoked one). With block=False, NEEDS_STORE instead of any store query (call again with block=True off
        the event loop).

        Raises sqlalchemy.exc.SQLAlchemyError when the store cannot be read.
        """
        now = time.monotonic()
        if not self._auth_on:
            if now - self._auth_checked >= KEY_CACHE_SECONDS:
                if not block:
                    return NEEDS_STORE
                self._auth_on, self._auth_checked = self.store.has_keys(), now
            if not self._auth_on:
                return Caller(ANONYMOUS, SCOPES)
        token = bearer_token(authorization)
        if token is None:
            return None
        if self.env_keys:
            owner = owner_for(self.env_keys, authorization)
            if owner is not None:
                return Caller(owner, SCOPES, key_id=ENV_KEY_ID.format(owner=owner))
        prefix = key_prefix(token)
        if prefix is None:
            return None
        with self._lock:
            cached = self._records.get(prefix)
        if cached is None or now - cached[0] >= KEY_CACHE_SECONDS:
            if not block:
                return NEEDS_STORE
            cached = (now, self.store.find_key(prefix=prefix))
            with self._lock:
                if len(self._records) >= KEY_CACHE_ENTRIES:
                    self._records.clear()
                self._records[prefix] = cached
        record = cached[1]
        if record is None or not secrets.compare_digest(hash_key(token), record.secret_hash):
            return None
        if not is_active(record):
            return None
        if now - self._touched.get(prefix, -math.inf) >= LAST_USED_EVERY.total_seconds():
            if not block:
                return NEEDS_STORE
            with self._lock:
                if len(self._touched) >= KEY_CACHE_ENTRIES:
                    self._touched.clear()
                self._touched[prefix] = now
            self.store.touch_key(prefix=prefix, at=utcnow(), every=LAST_USED_EVERY)
        return Caller(record.owner, tuple(record.scopes), prefix, key_id=prefix)

    def forget(self, *prefixes: str) -> None:
        """Drop the cached records of `prefixes` (this process revoked them: no need to wait for the cache)."""
        with self._lock:
            for prefix in prefixes:
                self._records.pop(prefix, None)


class KeylessProduction(RuntimeError):
    """GANFORGE_ENVIRONMENT=production with no key that could let anyone in: the API refuses to start."""


def keyless_production_message(settings: Settings) -> str:
    """The refusal, with the `ganforge keys create` that reaches this store (models/hints.py)."""
    from models.hints import store_command, store_note

    return (
        "refusing to start: GANFORGE_API_KEYS must be set when GANFORGE_ENVIRONMENT=production and the store holds "
        "no active API key (`ganforge up` makes the first admin key, or "
        f"`{store_command(settings.data_dir, 'keys')} create --owner admin --scopes admin`{store_note()})"
    )


def refuse_keyless_production(settings: Settings, store: KeysStore) -> None:
    """Raise KeylessProduction when `settings` are production's and neither GANFORGE_API_KEYS nor an active store
    key exists (with neither, auth would be off: every caller anonymous). A store that cannot be read counts as
    holding none: production does not start without knowing a key guards it."""
    if settings.environment != "production" or settings.api_keys:
        return
    try:
        usable = store.has_usable_key()
    except SQLAlchemyError as exc:
        raise KeylessProduction(
            f"{keyless_production_message(settings)}; the store's keys could not be read ({type(exc).__name__}: is it migrated? ganforge migrate)"
        ) from None
    if not usable:
        raise KeylessProduction(keyless_production_message(settings))


_AUTHENTICATOR_LOCK = threading.Lock()


def authenticator_of(app: Any) -> Authenticator:
    """The app's one Authenticator, made on first use from its settings and store (app.state)."""
    state = app.state
    found: Authenticator | None = getattr(state, "authenticator", None)
    if found is None:
        with _AUTHENTICATOR_LOCK:
            found = getattr(state, "authenticator", None)
            if found is None:
                found = state.authenticator = Authenticator(state.settings.api_keys, state.store)
    return found


async def current_caller(request: Request, authorization: Annotated[str | None, Header()] = None) -> Caller:
    """The caller the gate let in (or, outside the gate, looked up here); 401 when the key lets no one in."""
    caller = request.scope.get("state", {}).get(CALLER_STATE)
    if not isinstance(caller, Caller):
        authenticator = authenticator_of(request.app)
        found = authenticator.authenticate(authorization, block=False)
        if found is NEEDS_STORE:  # a store query: in a worker thread, never on the event loop
            found = await anyio.to_thread.run_sync(authenticator.authenticate, authorization)
        if not isinstance(found, Caller):
            raise ApiError(401, "unauthorized", UNAUTHORIZED_MESSAGE)
        caller = found
    return caller


CurrentCaller = Annotated[Caller, Depends(current_caller)]


async def current_owner(caller: CurrentCaller) -> str:
    """The caller's owner name from `Authorization: Bearer <key>`; 'anonymous' when auth is off; else 401."""
    return caller.owner


async def current_key(caller: CurrentCaller) -> str | None:
    """The non-secret id of the caller's key (Caller.key_id): a store key's prefix `gf_xxxxxxxx`, "env:<owner>"
    for an environment key, None with auth off; else 401. Routes pass it to the store with each action they
    record (submit, cancel) as the status event's `key`."""
    return caller.key_id


async def admin_caller(caller: CurrentCaller) -> Caller:
    """The caller when its key has the admin scope; else 403 naming the scope."""
    if not caller.may("admin"):
        raise ApiError(403, "insufficient_scope", scope_message("admin"))
    return caller


AdminCaller = Annotated[Caller, Depends(admin_caller)]


def scope_message(scope: str) -> str:
    """The 403's message for a key lacking `scope`."""
    return f"this API key lacks the {scope!r} scope, which {SCOPE_USE[scope]}"


SCOPE_USE = {
    "read": "GET needs",
    "submit": "submitting, changing and deleting jobs, studies, data sets and generate requests needs",
    "admin": "managing API keys (/v1/keys) needs",
}


CurrentOwner = Annotated[str, Depends(current_owner)]
CurrentKey = Annotated[str | None, Depends(current_key)]


def not_found(what: str, given: str) -> ApiError:
    """404 for `what` (e.g. "job") named `given`; a string that is no id is not echoed back."""
    return ApiError(404, "not_found", f"no {what} {given!r}" if is_id(given) else f"no {what} with this id")


def caller_of(request: Request) -> Caller:
    """current_caller for a plain `def` (run in a worker thread, so a store lookup may block); 401 as it."""
    caller = request.scope.get("state", {}).get(CALLER_STATE)
    if isinstance(caller, Caller):
        return caller
    found = authenticator_of(request.app).authenticate(request.headers.get("authorization"))
    if not isinstance(found, Caller):
        raise ApiError(401, "unauthorized", UNAUTHORIZED_MESSAGE)
    return found


def owned_job(request: Request, job_id: Annotated[str, Path()]) -> Job:
    """The caller's job; another owner's job and a string that is no job id are as missing as a missing one (404)."""
    # The store and the caller straight from the request, not as StoreDep and CurrentOwner: FastAPI's work per
    # request grows with each dependency it solves, and every job route has this one.
    owner, store = caller_of(request).owner, get_store_now(request)
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
