"""Server-Sent Events for one job, resumable with Last-Event-ID.

Each event's id is its per-job sequence number in the job's event log, so a
client that reconnects with Last-Event-ID gets exactly what it missed. The SSE
protocol itself (framing, the retry field, pings, disconnect detection) is
sse-starlette's; the fan-out is ours: however many clients follow a running job,
one feed per job per API process reads the store (`JobFeed`), and a client
that is behind the feed's ring catches up with reads of its own.

What makes a feed read: on PostgreSQL, the process's one LISTEN connection
(models/store/notify.py `EventListener`, started in the app's lifespan) hears
each commit that appends to a job's log, from any process (a worker, another
API process), and wakes that job's feed, which reads once for however many
clients follow it; a slow safety poll (SAFETY_POLL_SECONDS) covers a missed
notification, and while the listener is down (reconnecting with backoff) the
feeds poll every POLL_SECONDS. On SQLite (the embedded default: one API
process, no LISTEN), and with GANFORGE_SSE_LISTEN=false, each feed polls every
POLL_SECONDS. So the store's reads follow the number of followed jobs and
appends, never the number of clients. The log keeps a `metrics` event
as its step range, count and latest values (the points are stored once, in the
series); the points are read back and inlined when the event is read
(`EventHub.with_points`), so clients get `points` as before.

Where a stream starts, given the client's position `after` and the job row read
for this request (its status and `last_event`, the head of its log):

- a finished job: the events after `after` straight from the store, then the
  end; nothing left (`after` at or past the end) is 204 No Content, the status
  that tells a browser's EventSource to stop reconnecting;
- a running job: `after` past the head is treated as the head (the client gets
  the next events, as a new follower would); no client's position ever sets the
  shared feed's state, which starts at the head the job row shows.

Each owner holds at most GANFORGE_MAX_SSE_PER_OWNER (Settings.max_sse_per_owner, 16)
streams at once in one API process; the next is a 429 with Retry-After, so one client
cannot hold every connection and poller of the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from prometheus_client import CollectorRegistry, Counter, Gauge
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from api.deps import CurrentOwner, EventId, OwnedJob, SettingsDep
from api.errors import ApiError
from api.schemas import checkpoint_urls, sample_urls
from api.slots import OwnerSlots
from models.records import JobEvent, JobStatus
from models.store import JobStore, as_utc
from models.store.notify import EventListener

router = APIRouter(prefix="/v1/jobs/{job_id}", tags=["events"])

POLL_SECONDS = 0.2  # how often a feed reads without a listener (SQLite, listening off, the listener down)
# With the listener up a feed reads when told; this slow poll is the safety net for an append nobody announced (a
# write path that skips append_event, a notification a dying connection took with it): such an event waits at most
# this long. Slower would strand such a follower longer; faster would cost each followed job more idle reads.
SAFETY_POLL_SECONDS = 5.0
STORE_AWAY_SECONDS = 1.0
PING_SECONDS = 15.0
RETRY_MS = 1000
RING = 2000
# A client over the cap is told to come back after this long (an EventSource reconnects by itself meanwhile).
SSE_RETRY_AFTER_SECONDS = 5


@dataclass(frozen=True)
class Event:
    seq: int
    kind: str
    time: datetime
    data: dict[str, Any]

    @property
    def final(self) -> bool:
        return self.kind == "status" and self.data.get("to") in JobStatus.FINAL

    @cached_property
    def sse(self) -> bytes:
        """The event as the stream sends it; encoded once, however many subscribers send it (sse-starlette passes
        bytes through as they are)."""
        payload = json.dumps({"time": self.time.isoformat(), **self.data}, separators=(",", ":"))
        return ServerSentEvent(payload, event=self.kind, id=str(self.seq), sep="\n").encode()


def with_urls(job_id: str, kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """A `sample` event's data with png_url and npy_url, a `checkpoint` event's with url and state_url (the paths
    GET .../samples and .../checkpoints give); added when served, so events stored before them have them too."""
    step = data.get("step")
    if not isinstance(step, int):
        return data
    if kind == "sample":
        return {**sample_urls(job_id, step), **data}
    if kind == "checkpoint":
        return {**checkpoint_urls(job_id, step), **data}
    return data


class JobFeed:
    """The recent events of one running job, read by one poller and shared by its subscribers.

    The ring holds events (base, last]; `base` starts at the head of the log when the feed is made and only moves
    forward as the ring drops old events. Subscribers only read the feed's state. The poller reads when woken
    (`heard`: an append was announced; `poke`: read anyway) or when its poll interval (EventHub.poll_seconds)
    runs out.
    """

    def __init__(self, hub: EventHub, job_id: str, head: int) -> None:
        self.hub, self.job_id = hub, job_id
        self.base = head
        self.last = head
        self.ring: list[Event] = []
        self.finished = False
        self.subscribers = 0
        # Set (and replaced) when the feed gains events or ends. An Event wakes every waiting subscriber at once,
        # where a Condition's waiters take its lock back one at a time: a loop pass each, per event, per client.
        self.changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.announced = head  # the highest seq announced by the listener
        self.stale = False  # read without waiting: something may have been appended unannounced
        self.woken = asyncio.Event()

    def heard(self, seq: int) -> None:
        """The listener heard that event `seq` was appended: read, unless the feed already has it."""
        self.announced = max(self.announced, seq)
        if seq > self.last:
            self.woken.set()

    def poke(self) -> None:
        """Read at once (the listener came up or went down, or a subscriber left)."""
        self.stale = True
        self.woken.set()

    async def poll(self) -> None:
        try:
            while self.subscribers > 0 and not self.finished:
                self.stale = False
                try:
                    events = await self.hub.read(self.job_id, self.last)
                except Exception:  # the store is away: subscribers wait, the poller tries again
                    await asyncio.sleep(STORE_AWAY_SECONDS)
                    continue
                if events:
                    self.ring.extend(events)
                    if len(self.ring) > RING:
                        self.base = self.ring[-RING - 1].seq
                        self.ring = self.ring[-RING:]
                    self.last = events[-1].seq
                    self.finished = any(event.final for event in events)
                    self.announce()
                    if not self.hub.listening:
                        continue  # polling: read until the log has nothing more
                if self.stale or self.announced > self.last:
                    continue  # told of more while reading (or a page did not hold all)
                # No await between the checks above and the wait's start: a wake-up cannot fall between them.
                self.woken.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.woken.wait(), self.hub.poll_seconds)
        finally:
            if self.hub.feeds.get(self.job_id) is self:
                del self.hub.feeds[self.job_id]
            self.announce()  # wake subscribers so a finished feed ends their streams

    async def wait(self, after: int) -> None:
        """Until the feed holds an event after `after`, or it has finished, or its poller stopped."""
        while not (self.last > after or self.finished or (self.task is not None and self.task.done())):
            await self.changed.wait()

    def announce(self) -> None:
        """Wake every subscriber waiting in `wait`."""
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()


class EventHub:
    """The per-process registry of job feeds, and the one place SSE reads the store (counted for /metrics)."""

    def __init__(self, store: JobStore, registry: CollectorRegistry) -> None:
        self.store = store
        self.feeds: dict[str, JobFeed] = {}
        self.reads = Counter("ganforge_event_store_reads", "event-log reads made for SSE clients", registry=registry)
        self.listener_up = Gauge(
            "ganforge_event_listener_up",
            "1 while this process LISTENs for event-log appends (PostgreSQL); 0 while its feeds poll",
            registry=registry,
        )
        self.streams = OwnerSlots()  # open streams per owner
        self.listener: EventListener | None = None

    def start(self, *, listen: bool) -> None:
        """Start listening for appends when `listen` and the store is PostgreSQL (call on the serving loop, e.g.
        in the app's lifespan); otherwise the feeds poll."""
        if listen and self.store.engine.dialect.name == "postgresql" and self.listener is None:
            self.listener = EventListener(self.store.engine, self.heard, self.listener_changed)
            self.listener.start()

    async def stop(self) -> None:
        """Stop listening (the feeds poll until their streams end)."""
        if self.listener is not None:
            await self.listener.stop()
            self.listener = None

    @property
    def listening(self) -> bool:
        """Whether a LISTEN connection is live now, so that feeds are woken by appends."""
        return self.listener is not None and self.listener.live

    @property
    def poll_seconds(self) -> float:
        """How long a feed waits for a wake-up before it reads anyway."""
        return SAFETY_POLL_SECONDS if self.listening else POLL_SECONDS

    def heard(self, job_id: str, seq: int) -> None:
        """The listener's callback: event `seq` was appended to `job_id`'s log (a job not followed here: nothing)."""
        feed = self.feeds.get(job_id)
        if feed is not None:
            feed.heard(seq)

    def listener_changed(self, live: bool) -> None:
        """The listener's callback when it comes up or goes down: every feed reads once, since appends made while
        no connection listened were announced to nobody, and then waits the interval `live` gives."""
        self.listener_up.set(1 if live else 0)
        for feed in list(self.feeds.values()):
            feed.poke()

    def admit(
        self, owner: str, cap: int, stream: AsyncIterator[ServerSentEvent | bytes]
    ) -> AsyncIterator[ServerSentEvent | bytes]:
        """`stream`, counted as one of `owner`'s open streams until it ends or is dropped; ApiError 429 (with
        Retry-After) when `owner` already has `cap` open."""
        if not self.streams.take(owner, cap):
            message = f"this owner already has {cap} event streams open: close one, or retry later"
            headers = {"Retry-After": str(SSE_RETRY_AFTER_SECONDS)}
            raise ApiError(429, "too_many_streams", message, headers=headers)
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.streams.give_back(owner)

        async def counted() -> AsyncIterator[ServerSentEvent | bytes]:
            try:
                async for event in stream:
                    yield event
            finally:
                release()

        wrapped = counted()
        # A response dropped before it streamed (the client left at once) never runs the finally: release then.
        weakref.finalize(wrapped, release)
        return wrapped

    async def read(self, job_id: str, after: int) -> list[Event]:
        """One batch (at most the store's page) of the job's events with seq > after, in order, with each
        `metrics` event's points inlined (`with_points`)."""
        self.reads.inc()
        return await run_in_threadpool(self._read, job_id, after)

    def _read(self, job_id: str, after: int) -> list[Event]:
        rows = self.store.events_after(job_id=job_id, after=after)
        return [
            Event(row.seq, row.kind, as_utc(row.time), with_urls(job_id, row.kind, self.with_points(job_id, row)))
            for row in rows
        ]

    def with_points(self, job_id: str, row: JobEvent) -> dict[str, Any]:
        """A `metrics` event's data with `points` ([[name, step, value], ...] by step then name): the store logs a
        batch as its step range, count and latest values only (models/store/results.py write_metrics), and the
        points are read back from the series here, once per event per API process (the feed shares them with
        every subscriber). Events stored with their points (before migration 0009) are served as they are."""
        data = row.data
        if row.kind != "metrics" or "points" in data:
            return data
        first, last, latest = data.get("first_step"), data.get("last_step"), data.get("latest")
        if not isinstance(first, int) or not isinstance(last, int) or not isinstance(latest, dict):
            return data
        points = self.store.metric_points(job_id=job_id, names=list(latest), first_step=first, last_step=last)
        return {**data, "points": [list(point) for point in points]}

    async def replay(self, job_id: str, after: int, head: int) -> AsyncIterator[ServerSentEvent | bytes]:
        """A finished job's events after `after`, to `head`, the end of its log."""
        yield ServerSentEvent(retry=RETRY_MS, sep="\n")
        while after < head and (events := await self.read(job_id, after)):
            for event in events:
                yield event.sse
            after = events[-1].seq

    async def follow(self, job_id: str, head: int, after: int) -> AsyncIterator[ServerSentEvent | bytes]:
        """A running job's events after `after` (at most `head`), live, until its final status."""
        feed = self.feeds.get(job_id)
        if feed is None:
            feed = self.feeds[job_id] = JobFeed(self, job_id, head)
        feed.subscribers += 1
        if feed.task is None:
            feed.task = asyncio.create_task(feed.poll())
        try:
            yield ServerSentEvent(retry=RETRY_MS, sep="\n")
            while True:
                if after < feed.base:  # behind the ring: catch up from the store
                    events = [e for e in await self.read(job_id, after) if e.seq <= feed.base]
                    if not events:  # the log holds nothing more up to the ring's base
                        after = feed.base
                        continue
                else:
                    events = [e for e in feed.ring if e.seq > after]
                for event in events:
                    after = event.seq
                    yield event.sse
                    if event.final:
                        return
                if events:
                    continue
                if feed.finished or feed.task.done():
                    return  # nothing more will come (or the poller stopped): the client reconnects from `after`
                await feed.wait(after)
        finally:
            feed.subscribers -= 1
            if feed.subscribers == 0:
                feed.poke()  # the poller ends now, not after its wait


@router.get(
    "/events",
    response_class=EventSourceResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "the events after the client's position"},
        204: {"description": "the job has finished and the client has every event: stop reconnecting"},
    },
)
async def job_events(
    job: OwnedJob,
    request: Request,
    owner: CurrentOwner,
    settings: SettingsDep,
    last_event_id: Annotated[EventId | None, Header(description="resume after this event id")] = None,
    after: Annotated[EventId | None, Query(description="start after this event id (as Last-Event-ID)")] = None,
) -> Response:
    """status, metrics, sample, checkpoint, attempt and alert events; the stream ends after the job's final status.

    A `sample` event carries `png_url` and `npy_url`, a `checkpoint` event `url` and `state_url`: the same paths
    GET .../samples and .../checkpoints give. 429 with Retry-After when the owner already has
    GANFORGE_MAX_SSE_PER_OWNER streams (16 by default) open on this API process.
    """
    position = after if after is not None else (last_event_id or 0)
    hub: EventHub = request.app.state.event_hub
    if job.status in JobStatus.FINAL:
        if position >= job.last_event:
            return Response(status_code=204)
        stream = hub.replay(job.id, position, job.last_event)
    else:
        stream = hub.follow(job.id, job.last_event, min(position, job.last_event))
    return EventSourceResponse(hub.admit(owner, settings.max_sse_per_owner, stream), ping=PING_SECONDS, sep="\n")
