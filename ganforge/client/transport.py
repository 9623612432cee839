"""Sending one request: retries with exponential backoff and jitter where that is safe, errors as exceptions.

A request is retried only when sending it twice cannot do harm: GET (and HEAD), a POST that carries an
Idempotency-Key (the API returns the job the first attempt created), and calls the SDK marks idempotent
(`validate`, which creates nothing; `cancel`, whose effect is the same however often it arrives). It is retried on
a connection error (refused, reset, timed out), on 429 (after the answer's Retry-After when it gives one) and on
5xx — never on another 4xx. Any other request is sent once, except after a 429: the API refused it without doing
anything (a rate limit or quota, checked before the body is read), so it is sent again after Retry-After too (an
upload's file is read again from its start), unless Retry-After is over the policy's max_retry_after (60 s by
default): then the 429 is raised at once. After `retries` retries the last failure is raised
(`ConnectionFailed`, `RateLimited`, `ServerError`).

Before each retry the policy's `on_retry(message)` hears why and how long it waits ("retrying GET /v1/jobs in 2.0 s
(503)", "rate limited: waiting 5 s (GET /v1/catalog)"), so a command line can say so instead of sitting silent.

A redirect (3xx) is never followed and never taken as an answer: the API does not redirect, so it is another
service or a proxy (`UnexpectedResponse`). A call that expects a file (`expect`: its media type) gets
`UnexpectedResponse` for an answer of another Content-Type (e.g. a proxy's HTML page), before anything is written.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from ganforge.client.errors import (
    ConnectionFailed,
    GanforgeError,
    UnexpectedResponse,
    error_from_response,
    retry_after_seconds,
    shown,
)

OnRetry = Callable[[str], None]
"""`on_retry(message)`: told, before each wait, what is retried and for how long (one line, no secrets)."""


@dataclass(frozen=True)
class RetryPolicy:
    """retries: how many times a failed safe request is sent again (0: never); backoff: the first delay (s), doubled
    each retry up to max_backoff, each drawn uniformly from its upper half (jitter, so many clients do not retry in
    step); a Retry-After above max_retry_after (s) is not waited for: the error is raised at once (an hourly quota's
    429 says when the next request fits; waiting an hour silently helps no one); on_retry: told before each wait
    (see the module), None: silent; what it raises ends the call. ValueError for backoff < 0 or max_retry_after < 0."""

    retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 8.0
    max_retry_after: float = 60.0
    on_retry: OnRetry | None = None

    def __post_init__(self) -> None:
        if not self.backoff >= 0:
            raise ValueError(f"backoff must be >= 0 seconds, got {self.backoff}")
        if not self.max_retry_after >= 0:
            raise ValueError(f"max_retry_after must be >= 0 seconds, got {self.max_retry_after}")

    def tell(self, message: str) -> None:
        """Pass `message` to `on_retry` (when there is one)."""
        if self.on_retry is not None:
            self.on_retry(message)

    def delay(self, attempt: int, response: httpx.Response | None = None) -> float | None:
        """Seconds to wait before retry number `attempt` + 1 (attempt counts from 0); None: do not retry."""
        if attempt >= self.retries:
            return None
        if response is not None and response.status_code in (429, 503):
            asked = retry_after_seconds(response)
            if asked is not None:
                return asked if asked <= self.max_retry_after else None
        return self.pause(attempt)

    def pause(self, attempt: int) -> float:
        """The backoff before retry number `attempt` + 1: backoff·2^attempt seconds, capped, from its upper half."""
        ceiling = min(self.max_backoff, self.backoff * 2 ** min(attempt, 30))
        return random.uniform(ceiling / 2, ceiling)


def is_retryable(response: httpx.Response) -> bool:
    """429 and 5xx answers may succeed when sent again; other errors will not."""
    return response.status_code == 429 or response.status_code >= 500


def may_retry(response: httpx.Response, safe: bool) -> bool:
    """Whether an error answer is worth sending the request again for: a retryable one of a safe request, or a 429
    of any request (the API refused it, so sending it again cannot do anything twice)."""
    return response.status_code == 429 or (safe and is_retryable(response))


def is_safe(request: httpx.Request) -> bool:
    """Whether sending `request` twice is harmless: GET/HEAD, or a POST with an Idempotency-Key."""
    return request.method in ("GET", "HEAD") or (request.method == "POST" and "idempotency-key" in request.headers)


def origin(request: httpx.Request) -> str:
    """scheme://host:port of `request`: never its user or password."""
    return f"{request.url.scheme}://{request.url.netloc.decode()}"


def _reason(exc: httpx.TransportError) -> str:
    # The type says which step failed (ConnectTimeout, ReadTimeout, RemoteProtocolError); httpx's text often does not.
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def connection_failed(request: httpx.Request, exc: httpx.TransportError) -> ConnectionFailed:
    return ConnectionFailed(f"could not reach {origin(request)}: {_reason(exc)}")


def announce(policy: RetryPolicy, request: httpx.Request, wait: float, why: str, limited: bool) -> None:
    """Tell `policy.on_retry` about the coming wait."""
    what = f"{request.method} {request.url.path}"
    if limited:
        policy.tell(f"rate limited: waiting {wait:.0f} s ({what})")
    else:
        policy.tell(f"retrying {what} in {wait:.1f} s ({why})")


def media_type(response: httpx.Response) -> str:
    """The answer's Content-Type without its parameters, lower case ("" when absent)."""
    return shown(str(response.headers.get("content-type", "")).partition(";")[0].strip().lower(), 100)


def not_an_answer(response: httpx.Response, expect: str | None) -> GanforgeError | None:
    """UnexpectedResponse for a redirect or (when `expect` is a media type) an answer of another type; else None."""
    request = response.request
    what = f"the answer to {request.method} {request.url.path}"
    if 300 <= response.status_code < 400:
        location = response.headers.get("location", "")[:200]
        return UnexpectedResponse(
            f"{what} is a redirect ({response.status_code} to {location!r}), not a ganforge answer",
            response.status_code,
        )
    if expect is not None and media_type(response) != expect:
        got = media_type(response) or "no content type"
        return UnexpectedResponse(f"{what} is not a ganforge answer: {got}, expected {expect}", response.status_code)
    return None


def send(
    client: httpx.Client,
    request: httpx.Request,
    policy: RetryPolicy,
    *,
    idempotent: bool | None = None,
    stream: bool = False,
    expect: str | None = None,
) -> httpx.Response:
    """Send `request` (retrying as the module says), return the successful answer (status 2xx).

    idempotent: None decides by method and Idempotency-Key (`is_safe`). stream=True returns the answer unread
    (the caller closes it). expect: the media type the answer must have. Raises the `GanforgeError` for an error
    answer, `UnexpectedResponse` for a redirect or another media type, `ConnectionFailed` when none came.
    """
    safe = is_safe(request) if idempotent is None else idempotent
    attempt = 0
    while True:
        try:
            response = client.send(request, stream=stream)
        except httpx.TransportError as exc:
            wait = policy.delay(attempt) if safe else None
            if wait is None:
                raise connection_failed(request, exc) from exc
            announce(policy, request, wait, _reason(exc), False)
        else:
            if response.status_code < 400:
                wrong = not_an_answer(response, expect)
                if wrong is not None:
                    response.close()
                    raise wrong
                return response
            wait = policy.delay(attempt, response) if may_retry(response, safe) else None
            if wait is None:
                response.read()
                response.close()
                raise error_from_response(response)
            response.close()
            announce(policy, request, wait, str(response.status_code), response.status_code == 429)
        time.sleep(wait)
        attempt += 1


async def asend(
    client: httpx.AsyncClient,
    request: httpx.Request,
    policy: RetryPolicy,
    *,
    idempotent: bool | None = None,
    stream: bool = False,
    expect: str | None = None,
) -> httpx.Response:
    """`send` for an `httpx.AsyncClient`."""
    safe = is_safe(request) if idempotent is None else idempotent
    attempt = 0
    while True:
        try:
            response = await client.send(request, stream=stream)
        except httpx.TransportError as exc:
            wait = policy.delay(attempt) if safe else None
            if wait is None:
                raise connection_failed(request, exc) from exc
            announce(policy, request, wait, _reason(exc), False)
        else:
            if response.status_code < 400:
                wrong = not_an_answer(response, expect)
                if wrong is not None:
                    await response.aclose()
                    raise wrong
                return response
            wait = policy.delay(attempt, response) if may_retry(response, safe) else None
            if wait is None:
                await response.aread()
                await response.aclose()
                raise error_from_response(response)
            await response.aclose()
            announce(policy, request, wait, str(response.status_code), response.status_code == 429)
        await asyncio.sleep(wait)
        attempt += 1
