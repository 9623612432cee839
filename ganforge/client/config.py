"""Where the SDK connects and as whom: arguments first, then GANFORGE_URL / GANFORGE_API_KEY, then the defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import metadata

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "GANFORGE_URL"
KEY_ENV = "GANFORGE_API_KEY"
# An SSE stream is quiet between events; the API pings every 15 s, so a read timeout below that would cut it.
STREAM_READ_TIMEOUT = 60.0


def _version() -> str:
    try:
        return metadata.version("ganforge")
    except metadata.PackageNotFoundError:
        return "0"


@dataclass(frozen=True)
class Config:
    """The resolved settings of one client: base URL (no trailing slash), API key or None, timeout (s), retries."""

    base_url: str
    api_key: str | None
    timeout: float
    retries: int

    @classmethod
    def resolve(cls, base_url: str | None, api_key: str | None, timeout: float, retries: int) -> Config:
        """Settings from the arguments, else the environment, else the defaults; ValueError on a bad URL or number."""
        url = (base_url or os.environ.get(URL_ENV) or DEFAULT_URL).strip().rstrip("/")
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"base_url must be an http:// or https:// URL with a host, got {url!r}")
        key = api_key if api_key is not None else os.environ.get(KEY_ENV)
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        return cls(base_url=url, api_key=key or None, timeout=timeout, retries=retries)

    def headers(self) -> dict[str, str]:
        """Headers every request carries: the bearer key (when there is one) and the SDK's user agent."""
        headers = {"User-Agent": f"ganforge-client/{_version()}"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def stream_timeout(self) -> httpx.Timeout:
        """Timeouts for an SSE stream: connect and write as configured, reads long enough to span the pings."""
        return httpx.Timeout(self.timeout, read=max(self.timeout, STREAM_READ_TIMEOUT))
