"""The job read cache: `GET /v1/jobs/{id}` answered from memory while the job's row is unchanged.

Clients poll that route (the SDK's wait, the CLI's watch, dashboards, platform integrations), so it is the API's
most frequent call; issue 14 asks it to run at half the rate of a bare FastAPI endpoint. Its answer is a function
of the job's row alone (api/schemas.py JobOut.of), apart from a queued job's `queue_reason`. `JobReadCache` is a
pure ASGI middleware inside the gate (api/gate.py: the caller is authenticated and authorised before it runs):

- a miss goes to the route as ever; a 200 answer is kept as the bytes the route sent, under the job id, with the
  owner who read it;
- a hit (a GET with no query string, by the same owner, of an entry still valid) is sent back without the router,
  its dependencies or the store. Another owner's GET is a miss, so it gets the route's own 404.

Validity, so that an answer is never older than the store (the kind of staleness a cache must not add):

- SQLite (the embedded default): `PRAGMA data_version` on a connection of the cache's own changes whenever any
  other connection (a worker process, this API's own pool) commits; an entry is valid while the number read
  just before the route read the row still stands: any commit anywhere empties it, the answer is exactly as fresh
  as a store read (https://sqlite.org/pragma.html#pragma_data_version).
- PostgreSQL: a trigger (migration 0011) NOTIFYs `job <id>` on the event channel for every UPDATE or DELETE of a
  job row, delivered at commit; the API's one LISTEN connection (models/store/notify.py) drops the entry. Commits
  made by this process drop every entry at once (the engine's `commit` event), so a client reads its own writes
  on the process it wrote through; another process's change is seen once its notification arrives (a
  millisecond on one network). Without a live listener (reconnecting, GANFORGE_SSE_LISTEN=false, a pooler that
  cannot LISTEN) nothing is served from memory. An entry is kept only when no notification arrived while the
  route read it, so a notification that raced the read never leaves an older answer behind.
- A queued job's answer also says why it waits, which depends on other jobs and on workers' heartbeats: it is
  kept QUEUED_TTL_SECONDS at most and (PostgreSQL) dropped on any job's change.

At most MAX_BYTES of answers are kept (about 2 KB each), the oldest dropped first.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import Engine, event
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import CALLER_STATE, Caller
from models.spec import is_id

PATH_PREFIX = "/v1/jobs/"
ROUTE = "/v1/jobs/{job_id}"  # only that route's answers are kept (not /v1/jobs/{job_id}/metrics and the like)
MAX_BYTES = 64 * 1024**2  # the answers kept, all together; the oldest dropped first
MAX_ENTRY_BYTES = 256 * 1024  # a larger answer (a job with a very large spec) is not kept
QUEUED_TTL_SECONDS = 1.0
WROTE = "ganforge_job_cache_wrote"  # in a connection's info: it ran a statement that may write, not yet committed


@dataclass(frozen=True)
class Entry:
    """One kept answer: who read it, the route that made it (for the request metrics' route label), its headers
    and body, and what it is valid under: the data_version (SQLite) or epoch (PostgreSQL) read before the route
    read the row, the count of job notifications heard then, and for a queued job's answer the monotonic time it
    expires."""

    owner: str
    route: Any
    headers: list[tuple[bytes, bytes]]
    body: bytes
    stamp: int
    heard: int
    expires: float | None


class JobReadCache:
    """The kept answers and what keeps them valid (module docstring), for one API process and its `engine`.
    `ganforge_job_cache_requests_total{result="hit"|"miss"}` on `registry` counts the GETs it could answer."""

    def __init__(self, engine: Engine, registry: CollectorRegistry) -> None:
        self.entries: dict[str, Entry] = {}  # insertion order: the oldest first out
        # The job ids a request is reading through the route now; other GETs of one wait for its answer.
        self.filling: dict[str, asyncio.Future[Entry | None]] = {}
        self.bytes = 0
        requests = Counter(
            "ganforge_job_cache_requests",
            "GET /v1/jobs/{id} requests the job read cache could answer: from memory (hit) or by the route (miss)",
            ["result"],
            registry=registry,
        )
        self.hits, self.misses = requests.labels("hit"), requests.labels("miss")
        self.listening = False  # PostgreSQL: whether notifications arrive (set by the event hub)
        # PostgreSQL: bumped by this process's commits (any thread) and the listener's transitions; an entry is
        # valid only under the epoch it was read in.
        self.epoch = 0
        self.heard = 0  # PostgreSQL: job notifications heard (any job)
        self._lock = threading.Lock()
        self._version: sqlite3.Connection | None = None
        if engine.dialect.name == "sqlite":
            database = engine.url.database
            if database and database != ":memory:" and not database.startswith("file::memory:"):
                # A connection that never writes: every commit anywhere moves its data_version.
                self._version = sqlite3.connect(database, check_same_thread=False, isolation_level=None)
        elif engine.dialect.name == "postgresql":
            event.listen(engine, "before_cursor_execute", _note_write)
            event.listen(engine, "commit", self._committed)
            event.listen(engine, "rollback", _forget_write)

    # The event hub's callbacks (api/events.py), on the event loop.
    def job_changed(self, job_id: str) -> None:
        """A job's row changed or was deleted in some process (PostgreSQL NOTIFY from migration 0011's trigger)."""
        self.heard += 1
        self._drop(job_id)

    def listener_changed(self, live: bool) -> None:
        """The LISTEN connection went live or down: what changed meanwhile was announced to nobody."""
        self.listening = live
        self._committed(None)

    def _committed(self, connection: Any) -> None:
        # The engine's commit event, in the committing thread: when this process wrote (which jobs is not known
        # here) every entry goes; a read-only transaction (the reconciler's idle rounds) keeps them.
        if connection is None or connection.info.pop(WROTE, False):
            with self._lock:
                self.epoch += 1

    def stamp(self) -> int | None:
        """What an entry read now is valid under, or None when nothing may be served from memory."""
        if self._version is not None:
            return int(self._version.execute("PRAGMA data_version").fetchone()[0])
        return self.epoch if self.listening else None

    def answer(self, job_id: str, owner: str, stamp: int) -> Entry | None:
        """The kept answer to `owner`'s GET of `job_id`, when there is one valid under `stamp` (what stamp() gave
        for this request); else None."""
        entry = self.entries.get(job_id)
        if entry is None or entry.owner != owner or entry.stamp != stamp:
            return None
        if entry.expires is None or (time.monotonic() < entry.expires and entry.heard == self.heard):
            return entry
        return None

    def keep(self, job_id: str, entry: Entry) -> Entry | None:
        """Keep the route's 200 answer for `job_id` and return it, unless it is too large or (PostgreSQL) may be
        stale: then None."""
        if len(entry.body) > MAX_ENTRY_BYTES:
            return None
        if self._version is None and (self.heard != entry.heard or self.stamp() != entry.stamp):
            return None  # PostgreSQL: a notification or a commit came while the route read the row; may be older
        if json.loads(entry.body).get("status") == "queued":
            entry = replace(entry, expires=time.monotonic() + QUEUED_TTL_SECONDS)
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
        stamp = cache.stamp()
        if stamp is None:  # nothing may be served from memory now (PostgreSQL without a live listener)
            cache.misses.inc()
            await self.app(scope, receive, send)
            return
        key, owner = job_id, caller.owner
        entry = cache.answer(key, owner, stamp)
        filling = cache.filling.get(key) if entry is None else None
        if filling is not None:  # another request is reading this job now: its answer, not one more read
            await asyncio.shield(filling)
            stamp = cache.stamp()
            entry = cache.answer(key, owner, stamp) if stamp is not None else None
        if entry is not None:
            cache.hits.inc()
            scope["route"] = entry.route
            await send({"type": "http.response.start", "status": 200, "headers": entry.headers})
            await send({"type": "http.response.body", "body": entry.body, "more_body": False})
            return
        cache.misses.inc()
        if stamp is None:
            await self.app(scope, receive, send)
            return
        heard, read = cache.heard, stamp
        start: Message | None = None
        chunks: list[bytes] = []
        kept: Entry | None = None

        async def keeping(message: Message) -> None:
            nonlocal start, kept
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body" and start is not None:
                chunks.append(message.get("body", b""))
                route = scope.get("route")
                keep = start.get("status") == 200 and getattr(route, "path_format", None) == ROUTE
                if keep and not message.get("more_body", False):
                    headers = list(start.get("headers", []))
                    kept = cache.keep(key, Entry(owner, route, headers, b"".join(chunks), read, heard, None))
            await send(message)

        mine = filling is None and key not in cache.filling
        if mine:
            cache.filling[key] = asyncio.get_running_loop().create_future()
        try:
            await self.app(scope, receive, keeping)
        finally:
            if mine:
                cache.filling.pop(key).set_result(kept)


def _note_write(connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
    # Anything but a SELECT may write (a WITH may hold an UPDATE): noted on the connection until its commit.
    if statement.lstrip()[:6].upper() != "SELECT":
        connection.info[WROTE] = True


def _forget_write(connection: Any) -> None:
    connection.info.pop(WROTE, None)


def _job_id(scope: Scope) -> str | None:
    """The job id of a plain `GET /v1/jobs/{id}` (no query string, no further path), else None."""
    if scope["type"] != "http" or scope["method"] != "GET" or scope.get("query_string"):
        return None
    path: str = scope["path"]
    if not path.startswith(PATH_PREFIX):
        return None
    job_id = path[len(PATH_PREFIX) :]
    return job_id if is_id(job_id) else None
