"""Server-Sent Events for one job, resumable with Last-Event-ID.

Each event's id is its per-job sequence number in the job's event log, so a
client that reconnects with Last-Event-ID gets exactly what it missed. However
many clients follow a job, one poller per job per API process reads the store
(`JobFeed`); a client that is behind catches up with one read of its own.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from prometheus_client import CollectorRegistry, Counter
from starlette.concurrency import run_in_threadpool

from api.deps import OwnedJob, StoreDep
from models.records import JobStatus
from models.store import JobStore, as_utc

router = APIRouter(prefix="/v1/jobs/{job_id}", tags=["events"])

POLL_SECONDS = 0.2
KEEPALIVE_SECONDS = 15.0
RING = 2000


@dataclass(frozen=True)
class Event:
    seq: int
    kind: str
    time: datetime
    data: dict[str, Any]

    @property
    def final(self) -> bool:
        return self.kind == "status" and self.data.get("to") in JobStatus.FINAL

    def encode(self) -> str:
        payload = json.dumps({"time": self.time.isoformat(), **self.data}, separators=(",", ":"))
        return f"id: {self.seq}\nevent: {self.kind}\ndata: {payload}\n\n"


class JobFeed:
    """The recent events of one job, read by one poller and shared by its subscribers."""

    def __init__(self, hub: EventHub, job_id: str, start: int) -> None:
        self.hub, self.job_id = hub, job_id
        self.base = start  # the ring holds events (base, last]
        self.last = start
        self.ring: list[Event] = []
        self.finished = False
        self.subscribers = 0
        self.changed = asyncio.Condition()
        self.task: asyncio.Task[None] | None = None

    async def poll(self) -> None:
        while self.subscribers > 0 and not self.finished:
            try:
                events = await self.hub.read(self.job_id, self.last)
            except Exception:  # the store is away: subscribers wait, the poller tries again
                await asyncio.sleep(1.0)
                continue
            if events:
                self.ring.extend(events)
                if len(self.ring) > RING:
                    dropped = self.ring[: len(self.ring) - RING]
                    self.ring = self.ring[-RING:]
                    self.base = dropped[-1].seq
                self.last = events[-1].seq
                self.finished = any(event.final for event in events)
                async with self.changed:
                    self.changed.notify_all()
            else:
                await asyncio.sleep(POLL_SECONDS)
        self.hub.feeds.pop(self.job_id, None)

    async def wait(self, after: int, timeout: float) -> None:
        async with self.changed:
            try:
                await asyncio.wait_for(self.changed.wait_for(lambda: self.last > after or self.finished), timeout)
            except TimeoutError:
                pass


class EventHub:
    def __init__(self, store: JobStore, registry: CollectorRegistry) -> None:
        self.store = store
        self.feeds: dict[str, JobFeed] = {}
        self.reads = Counter("ganforge_event_store_reads", "event-log reads made for SSE clients", registry=registry)

    async def read(self, job_id: str, after: int) -> list[Event]:
        self.reads.inc()
        rows = await run_in_threadpool(self.store.events_after, job_id=job_id, after=after)
        return [Event(row.seq, row.kind, as_utc(row.time), row.data) for row in rows]

    async def follow(self, job_id: str, after: int, request: Request) -> AsyncIterator[str]:
        feed = self.feeds.get(job_id)
        if feed is None:
            feed = self.feeds[job_id] = JobFeed(self, job_id, after)
        feed.subscribers += 1
        if feed.task is None or feed.task.done():
            feed.task = asyncio.create_task(feed.poll())
        try:
            yield "retry: 1000\n\n"
            while True:
                if after < feed.base:  # behind the ring: catch up from the store
                    events = [e for e in await self.read(job_id, after) if e.seq <= feed.base]
                else:
                    events = [e for e in feed.ring if e.seq > after]
                for event in events:
                    after = event.seq
                    yield event.encode()
                    if event.final:
                        return
                if events:
                    continue
                if await request.is_disconnected():
                    return
                before = feed.last
                await feed.wait(after, KEEPALIVE_SECONDS)
                if feed.last == before and not feed.finished:
                    yield ": keep-alive\n\n"
        finally:
            feed.subscribers -= 1


@router.get("/events")
async def job_events(
    job: OwnedJob,
    store: StoreDep,
    request: Request,
    last_event_id: Annotated[str | None, Header()] = None,
    after: Annotated[int | None, Query(ge=0, description="start after this event id (as Last-Event-ID)")] = None,
) -> StreamingResponse:
    """status, metrics, sample and checkpoint events; the stream ends after the job's final status."""
    start = after if after is not None else (int(last_event_id) if last_event_id and last_event_id.isdigit() else 0)
    hub: EventHub = request.app.state.event_hub
    return StreamingResponse(
        hub.follow(job.id, start, request),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
