"""Sending one request: retries with exponential backoff and jitter where that is safe, errors as exceptions.

A request is retried only when sending it twice cannot do harm: GET (and HEAD), a POST that carries an
Idempotency-Key (the API returns the job the first attempt created), and calls the SDK marks idempotent
(`validate`, which creates nothing; `cancel`, whose effect is the same however often it arrives). It is retried on
a connection error (refused, reset, timed out), on 429 (after the answer's Retry-After when it gives one) and on
5xx — never on another 4xx. Any other request is sent once. After `retries` retries the last failure is raised
(`ConnectionFailed`, `RateLimited`, `ServerError`).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

import httpx

from ganforge.client.errors import ConnectionFailed, error_from_response, retry_after_seconds


@dataclass(frozen=True)
class RetryPolicy:
    """retries: how many times a failed safe request is sent again (0: never); backoff: the first delay (s), doubled
    each retry up to max_backoff, each drawn uniformly from its upper half (jitter, so many clients do not retry in
    step); a Retry-After above max_retry_after (s) is not waited for: the error is raised at once."""

    retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 8.0
    max_retry_after: float = 120.0

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


def is_safe(request: httpx.Request) -> bool:
    """Whether sending `request` twice is harmless: GET/HEAD, or a POST with an Idempotency-Key."""
    return request.method in ("GET", "HEAD") or (request.method == "POST" and "idempotency-key" in request.headers)


def connection_failed(request: httpx.Request, exc: httpx.TransportError) -> ConnectionFailed:
    reason = str(exc) or type(exc).__name__
    return ConnectionFailed(f"could not reach {request.url.scheme}://{request.url.netloc.decode()}: {reason}")


def send(
    client: httpx.Client,
    request: httpx.Request,
    policy: RetryPolicy,
    *,
    idempotent: bool | None = None,
    stream: bool = False,
) -> httpx.Response:
    """Send `request` (retrying as the module says), return the successful answer (status < 400).

    idempotent: None decides by method and Idempotency-Key (`is_safe`). stream=True returns the answer unread
    (the caller closes it). Raises the `GanforgeError` for an error answer, `ConnectionFailed` when none came.
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
        else:
            if response.status_code < 400:
                return response
            wait = policy.delay(attempt, response) if safe and is_retryable(response) else None
            if wait is None:
                response.read()
                response.close()
                raise error_from_response(response)
            response.close()
        time.sleep(wait)
        attempt += 1


async def asend(
    client: httpx.AsyncClient,
    request: httpx.Request,
    policy: RetryPolicy,
    *,
    idempotent: bool | None = None,
    stream: bool = False,
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
        else:
            if response.status_code < 400:
                return response
            wait = policy.delay(attempt, response) if safe and is_retryable(response) else None
            if wait is None:
                await response.aread()
                await response.aclose()
                raise error_from_response(response)
            await response.aclose()
        await asyncio.sleep(wait)
        attempt += 1
