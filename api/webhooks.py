"""The webhook sender: a background thread in every API process that sends the outbox's due deliveries.

Each pass claims up to BATCH due deliveries under a lease (models/store/webhooks.py claim_deliveries: several API
processes never send one at once; a dead process's lease runs out and another sends it), POSTs each signed as the
Standard Webhooks spec says (https://www.standardwebhooks.com: `webhook-id`, `webhook-timestamp`,
`webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>`, signed by the `standardwebhooks` library), and
records the outcome: a 2xx is success; anything else is retried after an exponential, jittered delay
(GANFORGE_WEBHOOK_RETRY_BASE_SECONDS doubling up to GANFORGE_WEBHOOK_RETRY_MAX_SECONDS) until
GANFORGE_WEBHOOK_RETRY_WINDOW_SECONDS after the event; an endpoint failing that long is disabled with a WARNING.

The connection goes only to an address the URL guard (models/webhooks.py HostPolicy) passed at that moment: the
guard runs inside the HTTP client's connect, so a name that resolves elsewhere later (DNS rebinding) is checked
again; no redirects are followed, no proxy from the environment is used, and each POST has a timeout.

Latency: a commit of this process that wrote deliveries wakes the sender at once (models/store/outbox.py); others'
(a worker's) are found within GANFORGE_WEBHOOK_POLL_SECONDS.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpcore
import httpx
from prometheus_client import CollectorRegistry, Counter
from standardwebhooks import Webhook

from models.settings import Settings
from models.store import JobStore
from models.store.outbox import add_waker, remove_waker
from models.store.webhooks import DEAD, FAILED, SUCCEEDED, Claimed
from models.webhooks import HostPolicy, UrlRefused

log = logging.getLogger(__name__)

BATCH = 32  # deliveries one pass claims
SENDERS = 8  # POSTs in flight at once per API process
USER_AGENT = "ganforge-webhooks/1.0"
OUTCOMES = (SUCCEEDED, FAILED, DEAD)


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
                return self.inner.connect_tcp(str(address), port, timeout, local_address, socket_options)
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
    from the environment, `timeout` seconds for each of connect, write, read and pool."""
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
        self.lease = timedelta(seconds=settings.webhook_timeout_seconds * 4 + 10)
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="webhook-sender", daemon=True)

    def start(self) -> None:
        add_waker(self.wake)
        self._thread.start()

    def stop(self) -> None:
        remove_waker(self.wake)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=self.settings.webhook_timeout_seconds + 5)
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()

    def wake(self) -> None:
        """Look for due deliveries now (called after a commit that wrote some; thread-safe)."""
        self._wake.set()

    def _run(self) -> None:
        woken = True  # the first pass sends what waited while no API ran
        while not self._stop.is_set():
            try:
                sent = self.send_due(look_first=not woken)
            except Exception:  # the store away: try again after the poll interval
                log.warning("webhook sender pass failed", exc_info=True)
                sent = 0
            if sent == BATCH:
                woken = True  # more may be due
                continue
            woken = self._wake.wait(self.settings.webhook_poll_seconds)
            self._wake.clear()

    def send_due(self, *, look_first: bool = True) -> int:
        """Claim and send one batch of due deliveries; returns how many were claimed. `look_first`: claim only
        after a read found one due (a poll: no write transaction while there is nothing to send)."""
        if look_first:
            due = self.store.next_delivery_due()
            if due is None or due > datetime.now(UTC):
                return 0
        claimed = self.store.claim_deliveries(holder=self.holder, limit=BATCH, lease=self.lease)
        if len(claimed) == 1:  # the usual case: no hand-over to the pool
            self.send_one(claimed[0])
        else:
            list(self.pool.map(self.send_one, claimed))
        return len(claimed)

    def send_one(self, delivery: Claimed) -> str | None:
        """POST one delivery and record the attempt; returns its new status (None: its lease was lost)."""
        body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True)
        code: int | None = None
        error: str | None = None
        started = time.perf_counter()
        try:
            headers = signed_headers(delivery.secret, delivery.event_id, body)
            with self.client.stream("POST", delivery.url, content=body.encode(), headers=headers) as response:
                code = response.status_code
            if not 200 <= code < 300:
                error = f"HTTP {code}" + (" (redirects are not followed)" if 300 <= code < 400 else "")
        except UrlRefused as exc:
            error = f"refused: {exc}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
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
            log.warning(
                "webhook endpoint %s of owner %s (%s) disabled: %s",
                disabled.id,
                disabled.owner,
                disabled.url,
                disabled.reason,
            )
        return status
