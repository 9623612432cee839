"""Event-log notifications between processes: PostgreSQL NOTIFY when an event is appended, one LISTEN per process.

The sending side (`notify_appended`) runs in the transaction that appends the events (models/store/base.py
append_event, transition_where): `pg_notify` is queued by PostgreSQL and delivered only when that transaction
commits (never for one that rolls back), so a listener that hears `job_id:seq` can read the event at once. The
payload is the job id and the event's per-job seq, so a listener skips events it has already read; distinct
payloads also keep PostgreSQL from folding the notifications of one transaction into one.

The listening side (`EventListener`) is one connection per process in LISTEN on `CHANNEL`, run as an asyncio task:
it hands each (job_id, seq) to a callback, checks every CHECK_SECONDS that it still hears (a NOTIFY of its own),
reconnects with backoff when the connection is lost or deaf, and reports when it goes live or down so that its
user can read what it may have missed (notifications sent while no connection listened are kept for nobody) and
poll meanwhile. api/events.py uses it to wake its per-job SSE feeds.

SQLite has no LISTEN: nothing is sent there, and its single API process polls (api/events.py). One channel for
every job keeps LISTEN static (no LISTEN/UNLISTEN as jobs gain and lose followers); each API process then hears
every job's appends, a dict lookup each. PostgreSQL serialises the commits of notifying transactions on one
lock: a worker makes about one such commit a second, so that lock matters only at thousands of workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from models.db import driver_connect_args

log = logging.getLogger(__name__)

CHANNEL = "ganforge_job_events"
APPLICATION_NAME = "ganforge-event-listener"  # how the listening session shows in pg_stat_activity
# This often the listener NOTIFYs a probe to itself and waits to hear it back: a connection that
# died without a word (a dropped network path), or one that cannot hear (behind a transaction-mode pooler), is
# noticed within about this long plus CHECK_TIMEOUT_SECONDS, and the feeds poll until a new one listens.
CHECK_SECONDS = 10.0
CHECK_TIMEOUT_SECONDS = 5.0
CONNECT_TIMEOUT_SECONDS = 5
# Reconnect backoff: doubled from the first to the most after each failed attempt, reset once connected.
BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 10.0


def notify_appended(session: Session, appended: Sequence[tuple[str, int]]) -> None:
    """Queue a notification on CHANNEL for each (job_id, seq) just appended in `session`'s transaction, sent by
    PostgreSQL when it commits; nothing on other databases. Payload: `job_id:seq`."""
    if not appended or session.get_bind().dialect.name != "postgresql":
        return
    payloads = [f"{job_id}:{seq}" for job_id, seq in appended]
    session.execute(
        text("SELECT pg_notify(:channel, payload) FROM unnest(CAST(:payloads AS text[])) AS payload"),
        {"channel": CHANNEL, "payloads": payloads},
    )


def parse_payload(payload: str) -> tuple[str, int] | None:
    """(job_id, seq) from a `job_id:seq` payload; None for anything else."""
    job_id, colon, seq = payload.rpartition(":")
    if not colon or not job_id or not seq.isdigit():
        return None
    return job_id, int(seq)


class ProbeUnheard(RuntimeError):
    """The listener's own NOTIFY did not come back to it."""


class EventListener:
    """One LISTEN connection on CHANNEL, kept by an asyncio task of the running event loop.

    `on_event(job_id, seq)` is called on the loop for each notification; `on_change(live)` each time the listener
    goes live (LISTEN registered) or down (connection lost or failed). Both must be quick: they run on the loop.
    `live` says whether a connection is listening now.
    """

    def __init__(
        self,
        engine: Engine,
        on_event: Callable[[str, int], None],
        on_change: Callable[[bool], None],
    ) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError(f"LISTEN needs PostgreSQL, not {engine.dialect.name}")
        self._connect_args = driver_connect_args(engine)
        self._on_event, self._on_change = on_event, on_change
        self._task: asyncio.Task[None] | None = None
        self._token = uuid.uuid4().hex  # this listener's probes, apart from other processes'
        self.live = False

    def start(self) -> None:
        """Start listening (from a coroutine on the loop that will run it); returns at once."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="event-listener")

    async def stop(self) -> None:
        """Stop listening and close the connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        import psycopg  # the api extra's driver; imported here so that SQLite-only code never needs it

        args, params = self._connect_args
        backoff = BACKOFF_FIRST_SECONDS
        while True:
            try:
                connection = await psycopg.AsyncConnection.connect(
                    *args,
                    **{
                        **params,
                        "autocommit": True,
                        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
                        "application_name": APPLICATION_NAME,
                    },
                )
                async with connection:
                    await connection.execute(f"LISTEN {CHANNEL}")
                    self._set_live(True)
                    backoff = BACKOFF_FIRST_SECONDS
                    await self._listen(connection)
            except (psycopg.Error, OSError, TimeoutError, ProbeUnheard) as exc:
                log.warning("event listener: %s: %s; reconnecting in %.1f s", type(exc).__name__, exc, backoff)
            except Exception:  # a bug must not end the task: its users would poll slowly until the process ends
                log.exception("event listener failed; reconnecting in %.1f s", backoff)
            finally:
                self._set_live(False)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)

    async def _listen(self, connection: Any) -> None:
        probes = 0
        while True:
            # notifies() keeps what arrives between two of its calls (psycopg >= 3.2), so the probe loses nothing.
            async for notify in connection.notifies(timeout=CHECK_SECONDS):
                self._heard(notify.payload)
            probes += 1
            await self._probe(connection, f"probe {self._token} {probes}")

    async def _probe(self, connection: Any, token: str) -> None:
        """NOTIFY `token` from this connection and hear it back, or raise ProbeUnheard: that checks the connection
        and that notifications reach it (behind a transaction-mode pooler such as PgBouncer's they do not)."""
        await asyncio.wait_for(connection.execute("SELECT pg_notify(%s, %s)", (CHANNEL, token)), CHECK_TIMEOUT_SECONDS)
        # aclosing: the generator holds the connection's lock until it is closed, and we leave it early.
        async with contextlib.aclosing(connection.notifies(timeout=CHECK_TIMEOUT_SECONDS)) as notifies:
            async for notify in notifies:
                if notify.payload == token:
                    return
                self._heard(notify.payload)
        raise ProbeUnheard(
            f"this connection did not hear its own NOTIFY within {CHECK_TIMEOUT_SECONDS:g} s (PgBouncer in "
            "transaction mode? then set GANFORGE_SSE_LISTEN=false)"
        )

    def _heard(self, payload: str) -> None:
        parsed = parse_payload(payload)
        if parsed is not None:  # probes (no colon) included: they are another process's checks
            self._on_event(*parsed)

    def _set_live(self, live: bool) -> None:
        if live != self.live:
            self.live = live
            self._on_change(live)
