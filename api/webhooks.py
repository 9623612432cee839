"""The webhook sender: a background thread in every API process that sends the outbox's due deliveries.

Each pass claims due deliveries for its free sending slots under a lease (models/store/webhooks.py claim_deliveries: several API
processes never send one at once; a dead process's lease runs out and another sends it), POSTs each signed as the
Standard Webhooks spec says (https://www.standardwebhooks.com: `webhook-id`, `webhook-timestamp`,
`webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>`, signed by the `standardwebhooks` library), and
records the outcome: a 2xx is success; anything else is retried after an exponential, jittered delay
(GANFORGE_WEBHOOK_RETRY_BASE_SECONDS doubling up to GANFORGE_WEBHOOK_RETRY_MAX_SECONDS) until
GANFORGE_WEBHOOK_RETRY_WINDOW_SECONDS after the event; an endpoint failing that long is disabled with a WARNING.

The connection goes only to an address the URL guard (models/webhooks.py HostPolicy) passed at that moment: the
guard runs inside the HTTP client's connect, so a name that resolves elsewhere later (DNS rebinding) is checked
again; no redirects are followed, and no proxy from the environment is used.

Slow receivers: each attempt has a total deadline, GANFORGE_WEBHOOK_TIMEOUT_SECONDS from its start to the answer's
status line (connect, TLS, send, wait: every socket operation's timeout is cut to what is left, so a receiver
dripping a byte at a time is cut too), and its body is never read. Each delivery is sent on its own from a pool
of SENDERS threads, at most PER_ENDPOINT of one endpoint at once, and the sender goes on claiming while they run:
an endpoint that hangs holds at most PER_ENDPOINT slots for at most the deadline, and other endpoints' deliveries
go out meanwhile (until SENDERS / PER_ENDPOINT endpoints hang at once).

The delivery log's `error` is a short class of failure (`timeout`, `connection refused`, `connection failed`,
`tls error`, `protocol error`, `HTTP 500`, `refused: <the guard's reason>`), never the HTTP library's text, which
names addresses and errno strings (a port-probe oracle). The WARNING of a disabled endpoint names its id and its
URL's scheme://host:port only (a path or query may carry a token).

Latency: a commit of this process that wrote deliveries wakes the sender at once (models/store/outbox.py); others'
(a worker's) are found within GANFORGE_WEBHOOK_POLL_SECONDS.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import random
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import httpcore
import httpx
from prometheus_client import CollectorRegistry, Counter
from standardwebhooks import Webhook

from models.settings import Settings
from models.store import JobStore
from models.store.outbox import add_waker, remove_waker
from models.store.webhooks import DEAD, FAILED, SUCCEEDED, Claimed, Disabled
from models.webhooks import HostPolicy, UrlRefused

log = logging.getLogger(__name__)

SENDERS = 32  # POSTs in flight at once per API process (threads that mostly wait on sockets)
PER_ENDPOINT = 2  # of them, at most this many to one endpoint
USER_AGENT = "ganforge-webhooks/1.0"
OUTCOMES = (SUCCEEDED, FAILED, DEAD)

# The monotonic time the current thread's attempt must end by (None: no deadline), read by DeadlineStream.
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("webhook_deadline", default=None)


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Every guarded connection's socket operation in this block ends by `seconds` from now (raising httpcore's
    ConnectTimeout or ReadTimeout/WriteTimeout, which httpx raises as its own TimeoutException)."""
    token = _deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def _left(timeout: float | None, error: type[Exception]) -> float | None:
    """`timeout` cut to the time left before the deadline; raises `error` when none is left."""
    until = _deadline.get()
    if until is None:
        return timeout
    left = until - time.monotonic()
    if left <= 0:
        raise error("the webhook attempt's deadline passed")
    return left if timeout is None else min(timeout, left)


class DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every read, write and TLS handshake ends by the calling thread's deadline: httpx's
    timeouts are per operation, so a receiver sending a byte every few seconds would otherwise never time out."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self.inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.inner.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.inner.write(buffer, _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self.inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        tls = self.inner.start_tls(ssl_context, server_hostname, _left(timeout, httpcore.ConnectTimeout))
        return DeadlineStream(tls)

    def get_extra_info(self, info: str) -> Any:
        return self.inner.get_extra_info(info)


class GuardedBackend(httpcore.NetworkBackend):
    """httpcore's network backend that connects only to addresses `policy` allows, resolved here (so what is
    checked is what is connected to); a refused host raises UrlRefused."""

    def __init__(self, policy: HostPolicy) -> None:
        self.policy = policy
        self.inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        last: Exception | None = None
        for address in self.policy.resolve(host, port):
            try:
                left = _left(timeout, httpcore.ConnectTimeout)
                stream = self.inner.connect_tcp(str(address), port, left, local_address, socket_options)
                return DeadlineStream(stream)
            except httpcore.ConnectError as exc:
                last = exc
        raise last or httpcore.ConnectError(f"cannot connect to {host}")

    def connect_unix_socket(
        self,
        path: str,  # noqa: ARG002
        timeout: float | None = None,  # noqa: ARG002
        socket_options: Iterable[Any] | None = None,  # noqa: ARG002
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("webhooks do not use unix sockets")

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


def guarded_client(policy: HostPolicy, timeout: float) -> httpx.Client:
    """An httpx client for webhooks: connections through GuardedBackend, no redirects, no proxy or certificates
    from the environment, `timeout` seconds for each of connect, write, read and pool (and inside a `deadline`
    block, no socket operation past it)."""
    transport = httpx.HTTPTransport(retries=0, trust_env=False)
    # httpx does not take a network backend; its pool (httpcore) does.
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(trust_env=False),
        max_connections=SENDERS * 4,
        network_backend=GuardedBackend(policy),
    )
    return httpx.Client(
        transport=transport,
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
        headers={"user-agent": USER_AGENT},
    )


def signed_headers(secret: str, event_id: str, body: str, now: datetime | None = None) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt: webhook-id, webhook-timestamp (Unix seconds, now) and
    webhook-signature (`v1,<base64>`, by the spec's own library), and the JSON content type."""
    now = now or datetime.now(UTC)
    return {
        "content-type": "application/json",
        "webhook-id": event_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(event_id, now, body),
    }


def classify(exc: httpx.HTTPError) -> str:
    """A short class of a failed request for the delivery log: timeout, connection refused, tls error, connection
    failed, protocol error or request failed (the exception's text names addresses and errno strings)."""
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    causes: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(causes) < 10:
        causes.append(seen)
        seen = seen.__cause__ or seen.__context__
    if any(isinstance(cause, ssl.SSLError) for cause in causes):
        return "tls error"
    if isinstance(exc, httpx.ConnectError):
        refused = any(isinstance(cause, ConnectionRefusedError) for cause in causes)
        return "connection refused" if refused else "connection failed"
    if isinstance(exc, httpx.ProtocolError):
        return "protocol error"  # not HTTP/1.1 or HTTP/2, or it hung up before answering
    if isinstance(exc, httpx.NetworkError):
        return "connection failed"
    return "request failed"


def origin(url: str) -> str:
    """`url`'s scheme://host:port only (for the log: a path or query may carry a token)."""
    parsed = httpx.URL(url)
    port = parsed.port or {"http": 80, "https": 443}.get(parsed.scheme)
    host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
    return f"{parsed.scheme}://{host}:{port}"


def retry_delay(settings: Settings, attempts: int) -> float:
    """Seconds before the next attempt after `attempts` failed ones: the base doubled per attempt, capped, ±20%."""
    delay = min(settings.webhook_retry_base_seconds * 2 ** min(attempts - 1, 62), settings.webhook_retry_max_seconds)
    return float(delay * random.uniform(0.8, 1.2))


class WebhookSender:
    """The sender thread of one API process; `ganforge_webhook_deliveries_total{outcome}` counts its attempts
    on `registry` (succeeded, failed: to be retried, dead: given up)."""

    def __init__(self, store: JobStore, settings: Settings, registry: CollectorRegistry) -> None:
        self.store, self.settings = store, settings
        self.holder = f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.counter = Counter(
            "ganforge_webhook_deliveries", "webhook delivery attempts by outcome", ["outcome"], registry=registry
        )
        for outcome in OUTCOMES:
            self.counter.labels(outcome=outcome)
        self.client = guarded_client(HostPolicy(settings.webhook_allowed_hosts), settings.webhook_timeout_seconds)
        self.pool = ThreadPoolExecutor(SENDERS, thread_name_prefix="webhook-send")
        # Far past the deadline: a lease runs out only when its sender died.
        self.lease = timedelta(seconds=settings.webhook_timeout_seconds * 4 + 10)
        self._in_flight: dict[str, int] = {}  # endpoint id -> its deliveries being sent by this process
        self._idle = threading.Condition()
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="webhook-sender", daemon=True)

    def start(self) -> None:
        add_waker(self.wake)
        self._thread.start()

    def stop(self) -> None:
        """Stop claiming, let the attempts in flight end (at most the deadline) so they are recorded, and close."""
        remove_waker(self.wake)
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.wait_idle(self.settings.webhook_timeout_seconds + 2)
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()

    def wake(self) -> None:
        """Look for due deliveries now (called after a commit that wrote some, and when a send ends; thread-safe)."""
        self._wake.set()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no delivery of this sender is in flight; False when some still is after `timeout` s."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._in_flight, timeout)

    def _run(self) -> None:
        woken = True  # the first pass sends what waited while no API ran
        while not self._stop.is_set():
            try:
                sent = self.send_due(look_first=not woken)
            except Exception:  # the store away: try again after the poll interval
                log.warning("webhook sender pass failed", exc_info=True)
                sent = 0
            if sent:
                woken = True  # more may be due
                continue
            woken = self._wake.wait(self.settings.webhook_poll_seconds)
            self._wake.clear()

    def send_due(self, *, look_first: bool = True) -> int:
        """Claim due deliveries for the free slots and start sending each on its own (not waiting for them);
        returns how many were claimed. Endpoints with PER_ENDPOINT in flight are left out of the claim.
        `look_first`: claim only after a read found one due (a poll: no write transaction while there is nothing
        to send)."""
        with self._idle:
            busy = dict(self._in_flight)
        free = SENDERS - sum(busy.values())
        if free <= 0:
            return 0
        if look_first:
            due = self.store.next_delivery_due()
            if due is None or due > datetime.now(UTC):
                return 0
        claimed = self.store.claim_deliveries(
            holder=self.holder, limit=free, lease=self.lease, per_endpoint=PER_ENDPOINT, busy=busy
        )
        for delivery in claimed:
            with self._idle:
                self._in_flight[delivery.endpoint_id] = self._in_flight.get(delivery.endpoint_id, 0) + 1
            future = self.pool.submit(self.send_one, delivery)
            future.add_done_callback(partial(self._sent, endpoint_id=delivery.endpoint_id))
        return len(claimed)

    def _sent(self, done: Future[str | None], endpoint_id: str) -> None:
        with self._idle:
            left = self._in_flight.pop(endpoint_id, 1) - 1
            if left > 0:
                self._in_flight[endpoint_id] = left
            self._idle.notify_all()
        if not done.cancelled() and done.exception() is not None:
            log.warning("webhook delivery failed to record", exc_info=done.exception())
        self.wake()  # a slot is free: its endpoint's next delivery may be due

    def post(self, delivery: Claimed) -> tuple[int | None, str | None]:
        """POST one delivery within the deadline: (the answer's HTTP status or None, a short error or None)."""
        body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True)
        try:
            headers = signed_headers(delivery.secret, delivery.event_id, body)
            with (
                deadline(self.settings.webhook_timeout_seconds),
                self.client.stream("POST", delivery.url, content=body.encode(), headers=headers) as response,
            ):
                code = response.status_code  # the body is not read: closing drops the connection
        except UrlRefused as exc:
            return None, f"refused: {exc}"
        except httpx.HTTPError as exc:
            return None, classify(exc)
        if 200 <= code < 300:
            return code, None
        return code, f"HTTP {code}" + (" (redirects are not followed)" if 300 <= code < 400 else "")

    def send_one(self, delivery: Claimed) -> str | None:
        """POST one delivery and record the attempt; returns its new status (None: its lease was lost)."""
        started = time.perf_counter()
        code, error = self.post(delivery)
        latency_ms = (time.perf_counter() - started) * 1000
        settings = self.settings
        status, disabled = self.store.record_attempt(
            delivery_id=delivery.id,
            holder=self.holder,
            succeeded=error is None,
            response_code=code,
            error=error,
            latency_ms=latency_ms,
            retry_in=timedelta(seconds=retry_delay(settings, delivery.attempts + 1)),
            window=timedelta(seconds=settings.webhook_retry_window_seconds),
        )
        if status is not None:
            self.counter.labels(outcome=status).inc()
        if disabled is not None:
            self._log_disabled(disabled)
        return status

    @staticmethod
    def _log_disabled(disabled: Disabled) -> None:
        log.warning(
            "webhook endpoint %s of owner %s (%s) disabled: %s",
            disabled.id,
            disabled.owner,
            origin(disabled.url),
            disabled.reason,
        )
