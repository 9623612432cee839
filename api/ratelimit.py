"""Rate limits: submissions and uploads per key, and failed authentications per client IP (api/gate.py applies them).

- `GANFORGE_RATE_SUBMIT` counts POST /v1/jobs, /v1/studies, /v1/jobs/{job_id}/generate and /v1/keys together,
  `GANFORGE_RATE_UPLOAD` POST /v1/datasets, per key: a store key's prefix (`gf_ab12cd34`), an environment key's
  `env:<owner>`, the client IP with auth off; with auth on, each also counts against its owner's (the same rate,
  all the owner's keys together), so making more keys does not make more room. Every such request is
  counted when it arrives (a refused one, 413 or 422, too), before its body is read.
- `GANFORGE_RATE_UNAUTHENTICATED` counts the 401s of each client IP. Once an IP is over it, this process refuses
  that IP's requests that would need a key lookup in the store with a 429 until the window frees, without the
  lookup; a key this process already knows (an environment key, a store key read in the last few seconds) still
  gets in. The client IP is the socket's peer, or X-Forwarded-For only from a proxy the operator names in
  FORWARDED_ALLOW_IPS (`ganforge api`/`up` read no forwarded header without it: ganforge/supervisor.py).

Counted by the `limits` library in a moving window: a request is let in when fewer than N were let in during the
last period, so no burst of 2N straddles a window edge (as with fixed windows), and Retry-After is exact: the
moment the oldest counted request leaves the window. It keeps one timestamp per counted request (at most N per
key), which the rates here (tens to hundreds a minute) make cheap.

Where the counts live: with a Redis broker (GANFORGE_BROKER_URL redis:// or rediss://) in that Redis, under
`ganforge:<queue>:rate:`, so every API process counts together; else in this process's memory (the embedded
default runs one API process). When Redis does not answer, requests pass uncounted (fail open: a broken limiter
must not stop the service) with a logged warning, and Redis is tried again STORAGE_RETRY_SECONDS later for that
rate (each rate backs off on its own: one rate's error leaves the others counted).
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from models.settings import Settings

log = logging.getLogger(__name__)

# The rate each limited operation counts against, as OpenAPI names it (api/openapi.py declares their 429).
LIMITED_OPERATIONS: dict[tuple[str, str], str] = {
    ("post", "/v1/jobs"): "submit",
    ("post", "/v1/studies"): "submit",
    ("post", "/v1/jobs/{job_id}/generate"): "submit",
    ("post", "/v1/datasets"): "upload",
    ("post", "/v1/keys"): "submit",  # a new key is a new count: making keys must not multiply the rates
    ("post", "/v1/webhooks"): "submit",
    # each redeliver queues a POST retried for a day: unlimited, it would be an amplifier against any host
    ("post", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"): "submit",
}
_LIMITED_PATHS = [
    (method.upper(), re.compile(re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(path))), rate)
    for (method, path), rate in LIMITED_OPERATIONS.items()
]
# After Redis failed to answer, requests pass uncounted this long before it is asked again (no timeout per request).
STORAGE_RETRY_SECONDS = 5.0
# How long one Redis call may take before the request passes uncounted.
STORAGE_TIMEOUT_SECONDS = 0.5
# Client IPs over the unauthenticated rate, remembered by this process; past this many it starts over.
BLOCKED_ENTRIES = 10_000
RATE_WORDS = {"submit": "submission", "upload": "upload", "unauthenticated": "failed authentication"}


@dataclass(frozen=True)
class Rate:
    """One configured rate: its name (submit, upload, unauthenticated), the setting that gave it, and the item."""

    name: str
    setting: str
    item: RateLimitItem

    def __str__(self) -> str:
        """E.g. "3 per 10 seconds", "120 per minute"."""
        period, multiples = self.item.GRANULARITY.name, self.item.multiples
        return f"{self.item.amount} per {period if multiples == 1 else f'{multiples} {period}s'}"


@dataclass(frozen=True)
class Verdict:
    """The count of one request against `rate`: let in or not, how many more the window takes now, and in how many
    whole seconds (at least 1) the oldest counted request leaves it."""

    rate: Rate
    allowed: bool
    remaining: int
    reset_seconds: int

    def headers(self) -> dict[str, str]:
        """The IETF RateLimit headers (draft-ietf-httpapi-ratelimit-headers), and Retry-After when refused."""
        headers = {
            "ratelimit-limit": str(self.rate.item.amount),
            "ratelimit-remaining": str(self.remaining),
            "ratelimit-reset": str(self.reset_seconds),
        }
        if not self.allowed:
            headers["retry-after"] = str(self.reset_seconds)
        return headers

    def message(self, whose: str) -> str:
        """The 429's message: the limit, its setting, and when to retry."""
        amount, _, period = str(self.rate).partition(" per ")
        plural = "" if amount == "1" else "s"
        return (
            f"rate limit reached: {amount} {RATE_WORDS[self.rate.name]}{plural} per {period} {whose} "
            f"({self.rate.setting}); retry after {self.reset_seconds} s"
        )

    def extra(self) -> dict[str, str]:
        """The 429's error object members beside code and message: the rate and the setting that sets it."""
        return {"rate": str(self.rate), "setting": self.rate.setting}


def seconds_until(moment: float) -> int:
    """Whole seconds from now (time.time()) to `moment`, rounded up, at least 1."""
    return max(1, math.ceil(moment - time.time()))


def storage_for(settings: Settings) -> tuple[Storage, str]:
    """The storage the counts live in, and its name for the log: the broker's Redis, or this process's memory."""
    url = settings.broker_url
    if url.startswith(("redis://", "rediss://")):
        options: dict[str, Any] = {
            "socket_timeout": STORAGE_TIMEOUT_SECONDS,
            "socket_connect_timeout": STORAGE_TIMEOUT_SECONDS,
            "retry_on_timeout": False,
        }
        storage = RedisStorage(
            f"async+{url}",
            implementation="redispy",
            key_prefix=f"ganforge:{settings.queue}:rate",
            wrap_exceptions=True,
            **options,
        )
        return storage, "redis"
    return MemoryStorage(), "memory"


def rate_of(value: str, name: str) -> Rate | None:
    """The Rate a setting's text gives (settings validated it); None for "" (no limit)."""
    if not value.strip():
        return None
    return Rate(name, f"GANFORGE_RATE_{name.upper()}", parse(value))


class RateLimits:
    """The service's rates and their counts (one per API process; with Redis, the counts are shared)."""

    def __init__(self, settings: Settings) -> None:
        self.rates = {
            "submit": rate_of(settings.rate_submit, "submit"),
            "upload": rate_of(settings.rate_upload, "upload"),
        }
        self.unauthenticated = rate_of(settings.rate_unauthenticated, "unauthenticated")
        self.storage, self.where = storage_for(settings)
        self.limiter = MovingWindowRateLimiter(self.storage)
        self._blocked: dict[str, tuple[float, Verdict]] = {}  # client IP: (time.time() it is let in again, verdict)
        self._retry_at: dict[str, float] = {}  # rate name: time.monotonic() before which it is not counted (failed)

    def rate_for(self, method: str, path: str) -> Rate | None:
        """The rate a request counts against, or None when it counts against none."""
        for limited_method, pattern, name in _LIMITED_PATHS:
            if method == limited_method and pattern.fullmatch(path):
                return self.rates[name]
        return None

    async def hit(self, rate: Rate, who: str) -> Verdict | None:
        """Count one request of `who` against `rate`; None when the storage does not answer (let it in)."""
        if time.monotonic() < self._retry_at.get(rate.name, 0.0):
            return None
        try:
            allowed = await self.limiter.hit(rate.item, rate.name, who)
            reset, remaining = await self.limiter.get_window_stats(rate.item, rate.name, who)
        except Exception as exc:  # limits' StorageError, or whatever else the client raises: fail open
            self._retry_at[rate.name] = time.monotonic() + STORAGE_RETRY_SECONDS
            log.warning(
                "rate limits not applied for %g s (%s): the rate-limit storage (%s) does not answer (%s)",
                STORAGE_RETRY_SECONDS,
                rate.setting,
                self.where,
                type(getattr(exc, "storage_error", None) or exc).__name__,  # limits wraps the client's error
            )
            return None
        return Verdict(rate, allowed, max(0, remaining), seconds_until(reset))

    async def hit_both(self, rate: Rate, key: str, owner: str | None) -> tuple[Verdict | None, bool]:
        """Count one request against `rate` for the key and, when `owner` is given, for the owner too (all its keys
        together). Returns the verdict to answer with (a refusal first, else the one with fewer left; None when
        the storage does not answer) and whether it is the owner's."""
        verdict = await self.hit(rate, key)
        if owner is None or (verdict is not None and not verdict.allowed):
            return verdict, False
        owners = await self.hit(rate, f"owner:{owner}")
        if owners is not None and (verdict is None or not owners.allowed or owners.remaining < verdict.remaining):
            return owners, True
        return verdict, False

    def blocked(self, ip: str) -> Verdict | None:
        """The refusal for a client IP this process saw go over the unauthenticated rate, while it lasts."""
        found = self._blocked.get(ip)
        if found is None:
            return None
        until, verdict = found
        if time.time() >= until:
            self._blocked.pop(ip, None)
            return None
        return Verdict(verdict.rate, False, 0, seconds_until(until))

    async def failed_authentication(self, ip: str) -> Verdict | None:
        """Count one 401 of client `ip`; a refusal also blocks the IP in this process until the window frees.
        None: no unauthenticated rate, or the storage does not answer."""
        if self.unauthenticated is None:
            return None
        verdict = await self.hit(self.unauthenticated, ip)
        if verdict is not None and not verdict.allowed:
            if len(self._blocked) >= BLOCKED_ENTRIES:
                self._blocked.clear()
            self._blocked[ip] = (time.time() + verdict.reset_seconds, verdict)
        return verdict
