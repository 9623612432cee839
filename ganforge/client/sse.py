"""Following a job's SSE stream (`GET /v1/jobs/{id}/events`) across dropped connections.

The SSE framing is parsed by httpx-sse. Each event's `id` is its number in the job's log, so the SDK keeps the
last id it yielded (`Cursor`) and, after a dropped connection or a stream the server ended early, reconnects with
`Last-Event-ID: <last id>`: the API sends exactly the events after it. An event at or before the last id (a
replay) is never yielded twice. Following ends after the status event that moves the job to a final status, or
when the API answers 204 (the job has finished and the client has every event).

A wrong or hostile server cannot make a follower spin, sleep forever or fill memory (`Reconnects`):

- the server's `retry` is clamped to 0.1-30 s;
- a connection that brings no new event (it closed at once, or broke) is a failed attempt; after `retries` of them
  in a row `ConnectionFailed` is raised (a new event, or a connection that stayed open for 30 s, starts the count
  again: a queued job may be quiet for long);
- an answer that is not `text/event-stream` is `UnexpectedResponse` at once;
- a line or an event over 8 MiB (`MAX_EVENT_BYTES`) is `UnexpectedResponse`.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx
from httpx_sse import ServerSentEvent

from ganforge.client.errors import ConnectionFailed, UnexpectedResponse
from ganforge.client.transport import RetryPolicy, media_type
from ganforge.client.types import Event

DEFAULT_RETRY_SECONDS = 1.0
MIN_RETRY_SECONDS, MAX_RETRY_SECONDS = 0.1, 30.0
HEALTHY_SECONDS = 30.0  # a connection open this long was not a failure, even without an event
# The API's largest event is a metrics flush; this leaves it room and still bounds a follower's memory.
MAX_EVENT_BYTES = 8 * 1024 * 1024
_BREAK = re.compile(rb"\r\n|\r|\n")


@dataclass
class Cursor:
    """Where a follower is: the id of the last event it yielded (0: none yet), whether it saw the final status, and
    the reconnection delay the server last asked for (SSE `retry`, in seconds, clamped to 0.1-30)."""

    last: int = 0
    done: bool = False
    retry_seconds: float = DEFAULT_RETRY_SECONDS

    def headers(self) -> dict[str, str]:
        """The Last-Event-ID header that resumes after the last event (none at the start)."""
        return {"Last-Event-ID": str(self.last)} if self.last > 0 else {}

    def accept(self, sse: ServerSentEvent) -> Event | None:
        """The typed event to yield for `sse`, or None: a retry-only message, one without a numeric id, or one
        already yielded. Raises UnexpectedResponse when a new event's data is not a JSON object or its type is not
        a short printable name."""
        if sse.retry is not None:
            self.retry_seconds = min(MAX_RETRY_SECONDS, max(MIN_RETRY_SECONDS, sse.retry / 1000))
        if not sse.data or not (sse.id.isascii() and sse.id.isdigit()):
            return None
        number = int(sse.id)
        if number <= self.last:
            return None
        try:
            data = json.loads(sse.data)
        except ValueError:
            data = None
        if not isinstance(data, dict) or len(sse.event) > 100 or not sse.event.isprintable():
            raise UnexpectedResponse(
                f"event {number} ({sse.event[:100]!r}) is not a ganforge event: {sse.data[:200]!r}"
            )
        event = Event(id=number, type=sse.event, data=data, time=data.get("time"))
        self.last = number
        self.done = self.done or event.final  # events after the final status (an integration's last word) follow
        return event


class _Meter:
    """Counts the bytes of the line and of the event being received; UnexpectedResponse past `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit, self.line, self.event, self.cr = limit, 0, 0, False

    def feed(self, chunk: bytes) -> None:
        start = 1 if self.cr and chunk.startswith(b"\n") else 0  # the LF of a CRLF split between two chunks
        self.cr = chunk.endswith(b"\r")
        for found in _BREAK.finditer(chunk, start):
            length = self.line + found.start() - start
            self.event = 0 if length == 0 else self.event + length  # an empty line ends the event
            self.line, start = 0, found.end()
            self._check()
        self.line += len(chunk) - start
        self.event += len(chunk) - start
        self._check()

    def _check(self) -> None:
        if self.line > self.limit or self.event > self.limit:
            raise UnexpectedResponse(f"an event of the stream is over {self.limit} bytes: not a ganforge answer")


class _Capped(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response's byte stream, metered as it is read."""

    def __init__(self, inner: httpx.SyncByteStream | httpx.AsyncByteStream, limit: int) -> None:
        self.inner, self.meter = inner, _Meter(limit)

    def __iter__(self) -> Iterator[bytes]:
        assert isinstance(self.inner, httpx.SyncByteStream)
        for chunk in self.inner:
            self.meter.feed(chunk)
            yield chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        assert isinstance(self.inner, httpx.AsyncByteStream)
        async for chunk in self.inner:
            self.meter.feed(chunk)
            yield chunk

    def close(self) -> None:
        if isinstance(self.inner, httpx.SyncByteStream):
            self.inner.close()

    async def aclose(self) -> None:
        if isinstance(self.inner, httpx.AsyncByteStream):
            await self.inner.aclose()


@dataclass
class Reconnects:
    """The reconnection rules of one follower of job `job_id` (see the module); `opened` before each connection's
    reading, `ended` after it, which says how long to wait before the next one or raises."""

    job_id: str
    policy: RetryPolicy
    cursor: Cursor
    failures: int = 0  # connections in a row that brought no new event
    since: float = field(default_factory=time.monotonic)
    seen: int = 0

    def opened(self, response: httpx.Response) -> None:
        """Check a 200 answer is an event stream and cap what it may send. Raises UnexpectedResponse."""
        if media_type(response) != "text/event-stream":
            request = response.request
            got = media_type(response) or "no content type"
            raise UnexpectedResponse(
                f"the answer to {request.method} {request.url.path} is not a ganforge answer: {got}, "
                "expected text/event-stream",
                response.status_code,
            )
        response.stream = _Capped(response.stream, MAX_EVENT_BYTES)
        self.since, self.seen = time.monotonic(), self.cursor.last

    def ended(self, broke: httpx.TransportError | None) -> float:
        """Seconds to wait before reconnecting after a connection ended (`broke`: how it broke, None: the server
        closed it). Raises ConnectionFailed after `retries` connections in a row brought nothing."""
        if self.cursor.last > self.seen or time.monotonic() - self.since >= HEALTHY_SECONDS:
            self.failures = 0
        else:
            self.failures += 1
        how = f"broke ({broke or type(broke).__name__})" if broke is not None else "ended"
        if self.failures > self.policy.retries:
            raise ConnectionFailed(
                f"the event stream of job {self.job_id} {how} {self.failures} times in a row without a new event"
            )
        wait = self.cursor.retry_seconds if broke is None else self.policy.pause(max(0, self.failures - 1))
        self.policy.tell(f"the event stream of job {self.job_id} {how}: reconnecting in {wait:.1f} s")
        return wait
