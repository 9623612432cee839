"""Server-Sent Events for one job, resumable with Last-Event-ID.

Each event's id is its per-job sequence number in the job's event log, so a
client that reconnects with Last-Event-ID gets exactly what it missed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.deps import OwnedJob, StoreDep
from models.records import JobStatus
from models.store import JobStore

router = APIRouter(prefix="/v1/jobs/{job_id}", tags=["events"])

POLL_SECONDS = 0.25
KEEPALIVE_SECONDS = 15.0


async def event_stream(store: JobStore, job_id: str, after: int, request: Request) -> AsyncIterator[str]:
    idle = 0.0
    yield "retry: 1000\n\n"
    while True:
        events = await run_in_threadpool(store.events_after, job_id=job_id, after=after)
        for event in events:
            after = event.seq
            yield f"id: {event.seq}\nevent: {event.kind}\ndata: {json.dumps(event.data, separators=(',', ':'))}\n\n"
            if event.kind == "status" and event.data.get("to") in JobStatus.FINAL:
                return
        if events:
            idle = 0.0
            continue
        if await request.is_disconnected():
            return
        await asyncio.sleep(POLL_SECONDS)
        idle += POLL_SECONDS
        if idle >= KEEPALIVE_SECONDS:
            idle = 0.0
            yield ": keep-alive\n\n"


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
    return StreamingResponse(
        event_stream(store, job.id, start, request),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
