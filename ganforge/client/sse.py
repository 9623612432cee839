"""Following a job's SSE stream (`GET /v1/jobs/{id}/events`) across dropped connections.

The SSE framing is parsed by httpx-sse. Each event's `id` is its number in the job's log, so the SDK keeps the
last id it yielded (`Cursor`) and, after a dropped connection or a stream the server ended early, reconnects with
`Last-Event-ID: <last id>`: the API sends exactly the events after it. An event at or before the last id (a
replay) is never yielded twice. Following ends after the status event that moves the job to a final status, or
when the API answers 204 (the job has finished and the client has every event).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from httpx_sse import ServerSentEvent

from ganforge.client.errors import UnexpectedResponse
from ganforge.client.types import Event

DEFAULT_RETRY_SECONDS = 1.0


@dataclass
class Cursor:
    """Where a follower is: the id of the last event it yielded (0: none yet), whether it saw the final status, and
    the reconnection delay the server last asked for (SSE `retry`, in seconds)."""

    last: int = 0
    done: bool = False
    retry_seconds: float = DEFAULT_RETRY_SECONDS

    def headers(self) -> dict[str, str]:
        """The Last-Event-ID header that resumes after the last event (none at the start)."""
        return {"Last-Event-ID": str(self.last)} if self.last > 0 else {}

    def accept(self, sse: ServerSentEvent) -> Event | None:
        """The typed event to yield for `sse`, or None: a retry-only message, one without a numeric id, or one
        already yielded. Raises UnexpectedResponse when a new event's data is not a JSON object."""
        if sse.retry is not None:
            self.retry_seconds = max(0.0, sse.retry / 1000)
        if not sse.data or not sse.id.isdigit():
            return None
        number = int(sse.id)
        if number <= self.last:
            return None
        try:
            data = json.loads(sse.data)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise UnexpectedResponse(f"event {number} ({sse.event}): data is not a JSON object: {sse.data[:200]!r}")
        event = Event(id=number, type=sse.event, data=data, time=data.get("time"))
        self.last = number
        self.done = event.final
        return event
