"""The job read cache: `GET /v1/jobs/{id}` answered from memory while the job's row is unchanged.

Clients poll that route (the SDK's wait, the CLI's watch, dashboards, platform integrations), so it is the API's
most frequent call; issue 14 asks it to run at half the rate of a bare FastAPI endpoint. Its answer is a function
of the job's row alone (api/schemas.py JobOut.of), apart from a queued job's `queue_reason`. `JobReadCache` is a
pure ASGI middleware inside the gate (api/gate.py: the caller is authenticated and authorised before it runs):

- a miss goes to the route as ever; a 200 answer is kept as the bytes the route sent, under the job id, with the
  owner who read it;
- a hit (a GET with no query string, by the same owner, of an entry still valid) is sent back without the router,
  its dependencies or the store. Another owner's GET is a miss, so it gets the route's own 404.

Validity, so that an answer is never older than a store read made at the same moment would be (the staleness a
cache must not add, whichever process wrote):

- SQLite (the embedded default): `PRAGMA data_version`, on a connection of the cache's own, changes whenever any
  other connection (a worker process, this API's own pool) commits (https://sqlite.org/pragma.html). An entry is
  valid while the number read just before the route read the row still stands: any commit anywhere sends the
  next GET to the route. One call into SQLite, no round trip.
- PostgreSQL: the row's `xmin` (the id of the transaction that wrote its current version: any UPDATE changes it,
  and a DELETE leaves no row). Before answering, the cache reads the current `xmin` of the job on a connection of
  its own, in READ COMMITTED as the route would, and serves the kept answer only when it is the `xmin` read just
  before the route made that answer. One round trip, batched: the GETs that arrive while a check is in flight
  share the next one (`SELECT id, xmin FROM jobs WHERE id = ANY(...)`), so 32 waiting clients cost one query.
  A check that cannot be made (the server away) sends the GET to the route.
- A queued job's answer also says why it waits, which depends on other jobs and on the workers: on SQLite it is
  valid under data_version (every table) and at most QUEUED_TTL_SECONDS (a worker's liveness is a matter of
  time); on PostgreSQL it is not kept.

At most MAX_BYTES of answers are kept (about 2 KB each), the oldest dropped first; an entry older than
MAX_AGE_SECONDS is read again (a transaction id is reused only after billions of transactions).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from dataclasses import dataclass, replace
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import Engine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import CALLER_STATE, Caller
from models.db import driver_connect_args
from models.spec import is_id

log = logging.getLogger(__name__)

PATH_PREFIX = "/v1/jobs/"
ROUTE = "/v1/jobs/{job_id}"  # only that route's answers are kept (not /v1/jobs/{job_id}/metrics and the like)
MAX_BYTES = 64 * 1024**2  # the answers kept, all together; the oldest dropped first
MAX_ENTRY_BYTES = 256 * 1024  # a larger answer (a job with a very large spec) is not kept
QUEUED_TTL_SECONDS = 1.0
MAX_AGE_SECONDS = 3600.0
NO_ROW = "none"  # the stamp of a job id with no row (deleted, or never was): nothing is served or kept under it
CONNECT_TIMEOUT_SECONDS = 5
RETRY_SECONDS = 1.0  # after a failed check, every GET goes to the route this long before the next try


@dataclass(frozen=True)
class Entry:
    """One kept answer: who read it, the route that made it (for the request metrics' route label), its headers
    and body, what it is valid under (the data_version or xmin read before the route read the row), and the
    monotonic time it expires."""

    owner: str
    route: Any
    headers: list[tuple[bytes, bytes]]
    body: bytes
    stamp: str
    expires: float


class RowVersions:
    """The current `xmin` of job rows on PostgreSQL, read in batches on one async connection of its own (psycopg),
    made on first use in the serving loop. `await version(job_id)`: the xmin as text, NO_ROW when there is no such
    row, or None when the check could not be made."""

    def __init__(self, engine: Engine) -> None:
        self._connect_args = driver_connect_args(engine)
        self._connection: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: dict[str, list[asyncio.Future[str | None]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._retry_at = 0.0  # after a failure, no check (every GET to the route) until then

    async def version(self, job_id: str) -> str | None:
        loop = asyncio.get_running_loop()
        if time.monotonic() < self._retry_at:
            return None
        future: asyncio.Future[str | None] = loop.create_future()
        self._waiting.setdefault(job_id, []).append(future)
        if self._task is None:
            self._task = loop.create_task(self._run())
        return await future

    async def _run(self) -> None:
        try:
            while self._waiting:
                # Only GETs that arrived before this query is sent are answered by it.
                batch, self._waiting = self._waiting, {}
                found: dict[str, str] | None
                try:
                    found = await self._read(list(batch))
                except Exception as exc:  # the GETs go to the route, which reports the store itself
                    log.warning("job read cache: cannot check row versions (%s); reading the store", exc)
                    await self.close()
                    self._retry_at = time.monotonic() + RETRY_SECONDS
                    found = None
                for job_id, futures in batch.items():
                    result = None if found is None else found.get(job_id, NO_ROW)
                    for future in futures:
                        if not future.done():
                            future.set_result(result)
        finally:
            self._task = None

    async def _read(self, job_ids: list[str]) -> dict[str, str]:
        import psycopg  # the api extra's driver; imported here so that SQLite-only code never needs it

        loop = asyncio.get_running_loop()
        if self._connection is None or self._connection.closed or self._loop is not loop:
            args, params = self._connect_args
            self._connection = await psycopg.AsyncConnection.connect(
                *args, **{**params, "autocommit": True, "connect_timeout": CONNECT_TIMEOUT_SECONDS}
            )
            self._loop = loop
        cursor = await self._connection.execute("SELECT id, xmin::text FROM jobs WHERE id = ANY(%s)", (job_ids,))
        return {str(job_id): str(xmin) for job_id, xmin in await cursor.fetchall()}

    async def close(self) -> None:
        """Close the connection (the app's shutdown; a failed check)."""
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
            self._connection = None


class JobReadCache:
    """The kept answers and what keeps them valid (module docstring), for one API process and its `engine`.
    `ganforge_job_cache_requests_total{result="hit"|"miss"}` on `registry` counts the GETs it could answer."""

    def __init__(self, engine: Engine, registry: CollectorRegistry) -> None:
        self.entries: dict[str, Entry] = {}  # insertion order: the oldest first out
        # The job ids a request is reading through the route now; other GETs of one wait for its answer.
        self.filling: dict[str, asyncio.Future[None]] = {}
        self.bytes = 0
        requests = Counter(
            "ganforge_job_cache_requests",
            "GET /v1/jobs/{id} requests the job read cache could answer: from memory (hit) or by the route (miss)",
            ["result"],
            registry=registry,
        )
        self.hits, self.misses = requests.labels("hit"), requests.labels("miss")
        self._data_version: sqlite3.Connection | None = None
        self._rows: RowVersions | None = None
        if engine.dialect.name == "sqlite":
            database = engine.url.database
            if database and database != ":memory:" and not database.startswith("file::memory:"):
                # A connection that never writes: every commit anywhere moves its data_version.
                self._data_version = sqlite3.connect(database, check_same_thread=False, isolation_level=None)
        elif engine.dialect.name == "postgresql":
            self._rows = RowVersions(engine)

    async def stamp(self, job_id: str) -> str | None:
        """What an answer for `job_id` read now is valid under (SQLite: the data_version; PostgreSQL: the row's
        xmin, or NO_ROW), or None when nothing may be served from memory now."""
        if self._data_version is not None:
            return str(self._data_version.execute("PRAGMA data_version").fetchone()[0])
        if self._rows is not None:
            return await self._rows.version(job_id)
        return None

    def answer(self, job_id: str, owner: str, stamp: str) -> Entry | None:
        """The kept answer to `owner`'s GET of `job_id`, when there is one valid under `stamp` (what stamp() gave
        for this request); else None."""
        entry = self.entries.get(job_id)
        # No entry is kept under NO_ROW (keep), so a deleted job never matches.
        if entry is None or entry.owner != owner or entry.stamp != stamp:
            return None
        if time.monotonic() < entry.expires:
            return entry
        return None

    def keep(self, job_id: str, entry: Entry) -> Entry | None:
        """Keep the route's 200 answer for `job_id` and return it, unless it is too large or (PostgreSQL) a
        queued job's: then None."""
        if len(entry.body) > MAX_ENTRY_BYTES or entry.stamp == NO_ROW:
            return None
        if json.loads(entry.body).get("status") == "queued":
            if self._data_version is None:
                return None
            entry = replace(entry, expires=min(entry.expires, time.monotonic() + QUEUED_TTL_SECONDS))
        self._drop(job_id)
        while self.entries and self.bytes + len(entry.body) > MAX_BYTES:
            self._drop(next(iter(self.entries)))
        self.entries[job_id] = entry
        self.bytes += len(entry.body)
        return entry

    def _drop(self, job_id: str) -> None:
        entry = self.entries.pop(job_id, None)
        if entry is not None:
            self.bytes -= len(entry.body)

    async def close(self) -> None:
        """Release the cache's own store connection (the app's shutdown)."""
        if self._rows is not None:
            await self._rows.close()
        if self._data_version is not None:
            self._data_version.close()
            self._data_version = None


class JobCacheMiddleware:
    """ASGI middleware inside the gate: a plain GET /v1/jobs/{id} answered from `cache` while valid, else by the
    route and kept; every other request passes through untouched."""

    def __init__(self, app: ASGIApp, *, cache: JobReadCache) -> None:
        self.app, self.cache = app, cache

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cache = self.cache
        job_id = _job_id(scope)
        caller = scope.get("state", {}).get(CALLER_STATE) if job_id else None
        if job_id is None or not isinstance(caller, Caller):
            await self.app(scope, receive, send)
            return
        key, owner = job_id, caller.owner
        stamp = await cache.stamp(key)
        entry = cache.answer(key, owner, stamp) if stamp is not None else None
        filling = cache.filling.get(key) if entry is None and stamp is not None else None
        if filling is not None:  # another request is reading this job now: its answer, not one more read
            await asyncio.shield(filling)
            stamp = await cache.stamp(key)
            entry = cache.answer(key, owner, stamp) if stamp is not None else None
        if entry is not None:
            cache.hits.inc()
            scope["route"] = entry.route
            await send({"type": "http.response.start", "status": 200, "headers": entry.headers})
            await send({"type": "http.response.body", "body": entry.body, "more_body": False})
            return
        cache.misses.inc()
        if stamp is None:  # nothing may be kept now
            await self.app(scope, receive, send)
            return
        read = stamp
        start: Message | None = None
        chunks: list[bytes] = []

        async def keeping(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body" and start is not None:
                chunks.append(message.get("body", b""))
                route = scope.get("route")
                keep = start.get("status") == 200 and getattr(route, "path_format", None) == ROUTE
                if keep and not message.get("more_body", False):
                    headers = list(start.get("headers", []))
                    expires = time.monotonic() + MAX_AGE_SECONDS
                    cache.keep(key, Entry(owner, route, headers, b"".join(chunks), read, expires))
            await send(message)

        mine = key not in cache.filling
        if mine:
            cache.filling[key] = asyncio.get_running_loop().create_future()
        try:
            await self.app(scope, receive, keeping)
        finally:
            if mine:
                cache.filling.pop(key).set_result(None)


def _job_id(scope: Scope) -> str | None:
    """The job id of a plain `GET /v1/jobs/{id}` (no query string, no further path), else None."""
    if scope["type"] != "http" or scope["method"] != "GET" or scope.get("query_string"):
        return None
    path: str = scope["path"]
    if not path.startswith(PATH_PREFIX):
        return None
    job_id = path[len(PATH_PREFIX) :]
    return job_id if is_id(job_id) else None
